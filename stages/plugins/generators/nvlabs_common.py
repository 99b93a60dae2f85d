"""Parts StyleGAN2 (:mod:`stages.plugins.generators.nvlabs_stylegan2`) and StyleGAN3
(:mod:`stages.plugins.generators.nvlabs_stylegan3`) share: equalized-learning-rate linear layers, the mapping network z
(+ class) → w, FIR resampling, and the wrapper that puts a mapping + synthesis network behind the
:class:`~stages.plugins.generators.base.Generator` protocol after loading an NVlabs snapshot pickle.

Written from the papers (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020; "Training
Generative Adversarial Networks with Limited Data", 2020; "Alias-Free Generative Adversarial Networks", 2021); the
parameter names follow the snapshot files so that their tensors load by name.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from latentatlas.params import AsList, PathStr, PluginParams
from stages.plugins.generators.base import GeneratorFileError
from stages.plugins.generators.nvlabs_pickle import NVlabsSnapshot, RecordedModule, read_nvlabs_snapshot
from stages.runtime.weight_files import bounded_repr, bounded_text, build_on_meta, materialize

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' second moment through a leaky ReLU of slope 0.2
NOISE_MODES = ("const", "none")


def compute_dtype(use_fp16: bool, device: torch.device) -> torch.dtype:
    """The dtype a layer runs in: fp16 where the file's ``num_fp16_res`` put it (the highest resolutions), on CUDA
    only, as NVlabs runs them; fp32 everywhere else (the CPU, and every layer of a file trained without fp16)."""
    return torch.float16 if use_fp16 and device.type == "cuda" else torch.float32


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(N, F) → (N, F) rows scaled to unit mean square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def bias_lrelu_clamp(
    x: torch.Tensor, bias: torch.Tensor | None, slope: float | None, gain: float, clamp: float | None
) -> torch.Tensor:
    """(N, C, ...) → same shape: add the (C,) bias, leaky ReLU of ``slope`` (None: linear), times ``gain``, then
    clip to [-clamp, clamp] (None: no clipping). The order NVlabs' networks use."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.dim() - 2))
    if slope is not None and slope != 1:
        x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalized learning rate: y = act(x · (weight · weight_gain)ᵀ + bias · bias_gain).

    Stored weights are the trained ones divided by the runtime scale, as in the files: ``weight`` (out, in) is
    multiplied by ``lr_multiplier / sqrt(in)``, ``bias`` (out,) by ``lr_multiplier``.

    Args:
        in_features, out_features: sizes of x (N, in) and y (N, out).
        activation: ``"linear"`` or ``"lrelu"`` (slope 0.2, gain √2).
        lr_multiplier: the learning-rate multiplier the network was trained with (0.01 in mapping layers).
        bias_init: initial bias (only matters for freshly built networks).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"activation must be 'linear' or 'lrelu', got {activation!r}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        initial_bias = torch.tensor(np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features]).copy())
        self.bias = nn.Parameter(initial_bias / lr_multiplier)

    def effective_weight(self) -> torch.Tensor:
        """(out, in) matrix applied to x at run time."""
        return self.weight * self.weight_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) → (N, out)."""
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            bias = bias * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(bias.unsqueeze(0), x, weight.t())
        return bias_lrelu_clamp(x.matmul(weight.t()), bias, LRELU_SLOPE, LRELU_GAIN, None)


class MappingNetwork(nn.Module):
    """z (N, z_dim) [+ one-hot class c (N, c_dim)] → w (N, w_dim): an MLP of ``num_layers`` lrelu layers.

    z is normalised to unit mean square; a class label is embedded by a linear layer to ``embed_features``,
    normalised the same way and concatenated after z. ``w_avg`` (w_dim,) is the running mean of w over training,
    the centre of the truncation trick.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_layers: int,
        embed_features: int | None = None,
        layer_features: int | None = None,
        lr_multiplier: float = 0.01,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be ≥ 1, got {num_layers}")
        self.z_dim, self.c_dim, self.w_dim, self.num_layers = z_dim, c_dim, w_dim, num_layers
        embed_features = w_dim if embed_features is None else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        if c_dim > 0:
            self.embed = EqualizedLinear(c_dim, embed_features)
        widths = [z_dim + (embed_features if c_dim > 0 else 0)] + [layer_features] * (num_layers - 1) + [w_dim]
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            setattr(self, f"fc{index}", EqualizedLinear(width_in, width_out, "lrelu", lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(N, z_dim) z and (N, c_dim) labels (conditional networks) → (N, w_dim) w, not truncated."""
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"a class-conditional mapping needs labels of shape ({z.shape[0]}, {self.c_dim})")
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.to(torch.float32)))], dim=1)
        for index in range(self.num_layers):
            x = getattr(self, f"fc{index}")(x)
        return x

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """(N, w_dim) → w_avg + ψ (w − w_avg) (every row; ψ = 1 returns w itself)."""
        return w if psi == 1 else self.w_avg.lerp(w, psi)


def upfirdn2d(
    x: torch.Tensor,
    fir: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Sequence[int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with a FIR, downsample by dropping samples.

    Args:
        x: (N, C, H, W).
        fir: (k,) separable filter (applied along W, then H), (kh, kw) 2-D filter, or None (identity, 1 tap).
        up, down: integer factors.
        padding: (x_before, x_after, y_before, y_after) after upsampling; negative values crop.
        gain: overall gain of the filter (``up ** 2`` keeps the mean after zero insertion).

    Returns:
        (N, C, (H·up + y_before + y_after − kh + 1) / down, likewise along W), rounded up by the stride.
    """
    batch, channels, height, width = x.shape
    if up > 1:  # put each sample at the top-left of an up × up cell of zeros
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(batch, channels, height * up, width * up)
    pad_x0, pad_x1, pad_y0, pad_y1 = padding
    x = F.pad(x, [max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
    x = x[:, :, max(-pad_y0, 0) : x.shape[2] - max(-pad_y1, 0), max(-pad_x0, 0) : x.shape[3] - max(-pad_x1, 0)]
    if fir is None:  # one tap of 1: the identity, times the gain (reads no tensor value: no graph break)
        if gain != 1:
            x = x * gain
    else:  # flipped: a convolution, not conv2d's correlation (a single tap is a product: the same values)
        kernel = (fir * gain ** (fir.dim() / 2)).to(x.dtype).flip(list(range(fir.dim())))
        if kernel.dim() == 2:
            x = F.conv2d(x, kernel[None, None].repeat(channels, 1, 1, 1), groups=channels)
        else:
            taps = kernel.numel()
            x = F.conv2d(x, kernel.reshape(1, 1, 1, taps).repeat(channels, 1, 1, 1), groups=channels)
            x = F.conv2d(x, kernel.reshape(1, 1, taps, 1).repeat(channels, 1, 1, 1), groups=channels)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample_polyphase(
    x: torch.Tensor, fir: torch.Tensor | None, up: int, padding: Sequence[int], gain: float
) -> torch.Tensor:
    """:func:`upfirdn2d` with ``down = 1`` and a separable (k,) filter (or None), without multiplying the inserted
    zeros: a stride-``up`` transposed convolution per axis (the polyphase form), then the same padding / cropping.
    Equal to ``upfirdn2d(x, fir, up=up, padding=padding, gain=gain)`` up to float rounding, with 1/up of its
    multiplications per axis. (N, C, H, W) → the shape :func:`upfirdn2d` gives."""
    pad_x0, pad_x1, pad_y0, pad_y1 = padding
    if fir is None:  # one tap: only the zero insertion (up = 1 here: SG3 uses no filter exactly then) and padding
        if up != 1:
            raise ValueError("upsample_polyphase: a filter is needed to upsample")
        x = F.pad(x, [pad_x0, pad_x1, pad_y0, pad_y1])
        return x * gain if gain != 1 else x
    if fir.dim() != 1:
        raise ValueError(f"upsample_polyphase needs a separable (k,) filter, got shape {tuple(fir.shape)}")
    channels, taps = x.shape[1], fir.numel()
    kernel = (fir * gain**0.5).to(x.dtype)
    for axis, (before, after) in ((3, (pad_x0, pad_x1)), (2, (pad_y0, pad_y1))):
        length = x.shape[axis]
        shape = (channels, 1, 1, taps) if axis == 3 else (channels, 1, taps, 1)
        stride = (1, up) if axis == 3 else (up, 1)
        x = F.conv_transpose2d(x, kernel.reshape(1, 1, *shape[2:]).expand(shape), stride=stride, groups=channels)
        # upfirdn2d's output sample m is the transposed convolution's sample m + taps − 1 − before.
        offset = taps - 1 - before
        wanted = length * up + before + after - taps + 1
        crop = [-offset, offset + wanted - x.shape[axis]]
        x = F.pad(x, crop + [0, 0]) if axis == 3 else F.pad(x, [0, 0] + crop)
    return x


def downsample_strided(x: torch.Tensor, fir: torch.Tensor | None, down: int) -> torch.Tensor:
    """:func:`upfirdn2d` with ``up = 1``, no padding and gain 1, computing only the samples it keeps: a
    stride-``down`` convolution (per axis for a (k,) filter; one 2-D pass for a radial (k, k) one). Equal to
    ``upfirdn2d(x, fir, down=down)`` up to float rounding, with 1/down of its multiplications per axis."""
    if fir is None:
        return x[:, :, ::down, ::down] if down > 1 else x
    channels = x.shape[1]
    kernel = fir.to(x.dtype).flip(list(range(fir.dim())))  # a convolution, not conv2d's correlation
    if kernel.dim() == 2:
        return F.conv2d(x, kernel[None, None].expand(channels, 1, *kernel.shape), stride=down, groups=channels)
    taps = kernel.numel()
    x = F.conv2d(x, kernel.reshape(1, 1, 1, taps).expand(channels, 1, 1, taps), stride=(1, down), groups=channels)
    return F.conv2d(x, kernel.reshape(1, 1, taps, 1).expand(channels, 1, taps, 1), stride=(down, 1), groups=channels)


class StyleGANNet(nn.Module):
    """``mapping`` (:class:`MappingNetwork`) and ``synthesis`` under the names the snapshot files use.

    The synthesis network has ``num_ws``, ``w_dim``, ``img_resolution``, ``forward(ws (N, num_ws, w_dim),
    noise_mode) → (N, img_channels, R, R) float32`` and ``style_layers() → [(name, EqualizedLinear)]``.
    """

    def __init__(self, mapping: MappingNetwork, synthesis: nn.Module) -> None:
        super().__init__()
        self.mapping = mapping
        self.synthesis = synthesis


def label_vector(
    c_dim: int, class_index: int | None, class_onehot: Sequence[float] | None, source: str
) -> torch.Tensor | None:
    """The (c_dim,) float label a conditional generator is built for, or None for an unconditional one.

    Raises:
        GeneratorFileError: a class for an unconditional file, none for a conditional one, both kinds given,
            an index outside 0..c_dim−1 or a vector of the wrong length / non-finite values.
    """
    if c_dim == 0:
        if class_index is not None or class_onehot is not None:
            raise GeneratorFileError(
                f"{source}: this generator is unconditional (c_dim 0); remove class_index / "
                f"class_onehot from generator.kwargs"
            )
        return None
    if class_index is not None and class_onehot is not None:
        raise GeneratorFileError(f"{source}: give either class_index or class_onehot, not both")
    if class_index is None and class_onehot is None:
        raise GeneratorFileError(
            f"{source}: this generator is class-conditional (c_dim {c_dim}): set "
            f"generator.kwargs.class_index (0..{c_dim - 1}) or class_onehot (a list of {c_dim})"
        )
    if class_index is not None:
        if (
            isinstance(class_index, bool)
            or not isinstance(class_index, (int, np.integer))
            or not 0 <= int(class_index) < c_dim
        ):
            raise GeneratorFileError(f"{source}: class_index must be an integer in 0..{c_dim - 1}, got {class_index!r}")
        return F.one_hot(torch.tensor(int(class_index)), c_dim).to(torch.float32)
    values = list(class_onehot) if isinstance(class_onehot, Iterable) and not isinstance(class_onehot, str) else None
    if (
        values is None
        or len(values) != c_dim
        or not all(
            isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v) for v in values
        )
    ):
        raise GeneratorFileError(
            f"{source}: class_onehot must be a list of {c_dim} finite numbers, got {class_onehot!r}"
        )
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def split_kwargs(
    kwargs: Mapping[str, Any], known: Mapping[str, Any], ignored: Iterable[str], source: str, what: str
) -> dict[str, Any]:
    """``known`` defaults overridden by ``kwargs``; keys in ``ignored`` (training-only) dropped.

    Raises:
        GeneratorFileError: a recorded argument this implementation does not know (it might change the outputs).
    """
    unknown = sorted(set(kwargs) - set(known) - set(ignored))
    if unknown:
        raise GeneratorFileError(
            f"{source}: {what} records constructor arguments this loader does not implement: {bounded_repr(unknown)}"
        )
    return {**known, **{key: value for key, value in kwargs.items() if key in known}}


#: G_ema's top-level constructor arguments, all sizes.
GENERATOR_SIZES = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
#: Recorded numbers that set no tensor size by themselves: caps and divisors of the channel counts, the clamp.
UNBOUNDED_NUMBERS = ("channel_base", "channel_max", "conv_clamp")


def generator_arguments(snapshot: NVlabsSnapshot) -> tuple[dict[str, int], dict[str, Any], dict[str, Any]]:
    """G_ema's recorded constructor arguments: the sizes of :data:`GENERATOR_SIZES` as ints, the mapping
    arguments, and the synthesis arguments (nested in ``synthesis_kwargs`` as StyleGAN2-ADA records them, or flat
    as the stylegan3 repository does).

    Raises:
        GeneratorFileError: a size that is missing or not an integer, or argument groups that are not mappings.
    """
    source = snapshot.path
    kwargs = dict(snapshot.kwargs)
    sizes: dict[str, int] = {}
    for name in GENERATOR_SIZES:
        if name not in kwargs:
            raise GeneratorFileError(f"{source}: G_ema's recorded arguments lack {name!r}")
        value = kwargs.pop(name)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise GeneratorFileError(f"{source}: G_ema's recorded {name} is {bounded_repr(value)}, expected an integer")
        sizes[name] = int(value)
    groups: dict[str, dict[str, Any]] = {}
    for name in ("mapping_kwargs", "synthesis_kwargs"):
        value = kwargs.pop(name, None)
        value = {} if value is None else value
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise GeneratorFileError(
                f"{source}: G_ema's recorded {name} is {bounded_repr(value)}, expected a mapping of argument names"
            )
        groups[name] = dict(value)
    return sizes, groups["mapping_kwargs"], {**groups["synthesis_kwargs"], **kwargs}


def bound_recorded_arguments(
    snapshot: NVlabsSnapshot, arguments: Mapping[str, Any], layer_counts: Mapping[str, Any]
) -> None:
    """Bound the recorded arguments by G_ema's own tensors before any network is built from them: every integer
    (but :data:`UNBOUNDED_NUMBERS`) by the number of weights the tensors hold, as each is a size of some tensor;
    each layer count by the number of tensors, as each layer has at least one; every float finite.

    Raises:
        GeneratorFileError: the first argument out of bounds, naming it and the bound.
    """
    source = snapshot.path
    weights = sum(tensor.numel() for tensor in snapshot.tensors.values())
    for name, value in arguments.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values[: weights + 1]:
            if isinstance(item, (bool, np.bool_)) or item is None or isinstance(item, str):
                continue
            if isinstance(item, (float, np.floating)) and not math.isfinite(item):
                raise GeneratorFileError(
                    f"{source}: refused: G_ema's recorded {name} is {bounded_repr(value)}, not a finite number"
                )
            if isinstance(item, (int, np.integer)) and name not in UNBOUNDED_NUMBERS and not 0 <= item <= weights:
                raise GeneratorFileError(
                    f"{source}: refused: G_ema's recorded {name} is {bounded_repr(value)}, "
                    f"outside 0..{weights:,}: a recorded size may not exceed the number of "
                    f"weights G_ema's tensors hold"
                )
        if len(values) > weights:
            raise GeneratorFileError(
                f"{source}: refused: G_ema's recorded {name} has {len(values):,} entries, more "
                f"than the {weights:,} weights G_ema's tensors hold"
            )
    tensors = len(snapshot.tensors)
    for name, count in layer_counts.items():
        if isinstance(count, (int, np.integer)) and not isinstance(count, bool) and count > tensors:
            raise GeneratorFileError(
                f"{source}: refused: G_ema's recorded {name} is {count:,}, more layers than "
                f"the {tensors:,} tensors G_ema holds (each layer has at least one)"
            )


def load_recorded_tensors(net: nn.Module, snapshot: NVlabsSnapshot, expected: str) -> None:
    """Copy the snapshot's G_ema tensors into ``net`` (built on the meta device: names and shapes, no memory) by
    name, requiring the same names and shapes first; ``net`` gets memory only then.

    Raises:
        GeneratorFileError: a missing or extra tensor, or one of another shape (the file is not what the recorded
            constructor arguments describe, or not the ``expected`` network).
    """
    ours = net.state_dict()
    theirs = snapshot.tensors
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing or extra:
        raise GeneratorFileError(
            f"{snapshot.path}: G_ema's tensors do not match a {expected} built from its recorded "
            f"arguments: missing {bounded_repr(missing[:5])}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {bounded_repr(extra[:5])}{'...' if len(extra) > 5 else ''}"
        )
    wrong = [
        f"{name} {tuple(theirs[name].shape)} vs {tuple(ours[name].shape)}"
        for name in ours
        if theirs[name].shape != ours[name].shape
    ]
    if wrong:
        raise GeneratorFileError(
            f"{snapshot.path}: G_ema's tensor shapes differ from a {expected} built from its "
            f"recorded arguments: {bounded_repr(wrong[:3], 300)}"
        )
    materialize(net, theirs)


def assemble_from_snapshot(
    snapshot: NVlabsSnapshot, source: str, family: str, mapping: Any, synthesis: Any, recorded_attributes: Sequence[str]
) -> StyleGANNet:
    """Build ``StyleGANNet(mapping(), synthesis())`` from the recorded arguments (the two zero-argument callables
    construct the project's modules) on the meta device, load G_ema's tensors into it once their names and shapes
    match, and check its recorded per-layer attributes. Call :func:`bound_recorded_arguments` first.

    Raises:
        GeneratorFileError: the recorded arguments do not describe a ``family`` network, or its tensors or
            attributes do not fit the one they describe.
    """
    try:  # on the meta device: sizes from the file's records cost no memory until they match its tensors
        net = build_on_meta(lambda: StyleGANNet(mapping(), synthesis()))
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as error:
        raise GeneratorFileError(
            f"{source}: G_ema's recorded arguments do not describe a {family} ({bounded_text(str(error))})"
        ) from None
    load_recorded_tensors(net, snapshot, f"{family} generator")
    check_recorded_attributes(snapshot.generator, net, recorded_attributes, source)
    return net


def check_recorded_attributes(
    record: RecordedModule, module: nn.Module, names: Sequence[str], source: str, path: str = "G_ema"
) -> None:
    """Compare the plain attributes ``names`` the file recorded on each network with ours, where both have them.

    This catches a default of NVIDIA's constructors that differs from ours (e.g. a layer's padding or gains)
    instead of silently producing other images.

    Raises:
        GeneratorFileError: an attribute that differs (beyond float rounding).
    """
    for name in names:
        if name in record.state and hasattr(module, name):
            recorded, derived = record.state[name], getattr(module, name)
            if not same_value(recorded, derived):
                raise GeneratorFileError(
                    f"{source}: {path}.{name} is {bounded_repr(recorded)} in the file but "
                    f"{bounded_repr(derived)} when derived from the recorded arguments; this "
                    f"loader cannot reproduce it"
                )
    children = dict(module.named_children())
    for child_name, child_record in record.children().items():
        if child_name in children:
            check_recorded_attributes(child_record, children[child_name], names, source, f"{path}.{child_name}")


def _plain(value: Any) -> Any:
    """numpy scalars and 0-d arrays as Python values, other arrays as lists (of numpy values)."""
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else list(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same_value(recorded: Any, derived: Any) -> bool:
    """Whether an attribute the file records equals ours, for every kind of value NVIDIA's constructors record:
    None only equals None; strings equal strings; bools equal bools; numbers (int or float, numpy's too) agree
    within float rounding; lists, tuples and arrays agree element by element; a number stands for a sequence of
    equal numbers (NVIDIA stores some sizes as [x, y] pairs). Anything else is not the same."""
    recorded, derived = _plain(recorded), _plain(derived)
    if recorded is None or derived is None:
        return recorded is None and derived is None
    if isinstance(recorded, str) or isinstance(derived, str):
        return isinstance(recorded, str) and isinstance(derived, str) and recorded == derived
    if isinstance(recorded, bool) or isinstance(derived, bool):
        return isinstance(recorded, bool) and isinstance(derived, bool) and recorded == derived
    if _is_number(recorded) and _is_number(derived):
        try:
            return math.isclose(float(recorded), float(derived), rel_tol=1e-6, abs_tol=1e-9)
        except OverflowError:  # an integer beyond float range: compare exactly
            return recorded == derived
    sequences = [value if isinstance(value, (list, tuple)) else None for value in (recorded, derived)]
    if sequences[0] is not None and sequences[1] is not None:
        return len(recorded) == len(derived) and all(same_value(a, b) for a, b in zip(recorded, derived))
    for sequence, other in ((sequences[0], derived), (sequences[1], recorded)):
        if sequence is not None and _is_number(other):
            return len(sequence) > 0 and all(same_value(item, other) for item in sequence)
    return False


class StyleGANGenerator:
    """A style-based generator (mapping z → w, synthesis W+ → image) behind the Generator protocol.

    Attributes:
        name: registry name (``"stylegan2"`` / ``"stylegan3"``).
        latent_spaces: ``("z", "w", "w+")``.
        z_dim, w_dim, num_ws, resolution: from the file.
        c_dim: label size of the file (0: unconditional).
        truncation_psi: ψ of the truncation trick, applied by :meth:`map` towards ``w_avg``.
        noise_mode: ``'const'`` (the file's fixed per-layer noise) or ``'none'``.
        fingerprint: ``name``, sha256 of the file, ψ, noise mode, class label and this implementation's version.

    Args:
        net: :class:`StyleGANNet` with the file's weights.
        label: (c_dim,) class label (conditional files) or None.
    """

    latent_spaces = ("z", "w", "w+")

    def __init__(
        self,
        net: StyleGANNet,
        name: str,
        sha256: str,
        truncation_psi: float,
        noise_mode: str,
        label: torch.Tensor | None,
        implementation: str,
    ) -> None:
        self.net = net.eval().requires_grad_(False)
        self.name = name
        self.z_dim = net.mapping.z_dim
        self.c_dim = net.mapping.c_dim
        self.w_dim = net.mapping.w_dim
        self.num_ws = net.synthesis.num_ws
        self.resolution = net.synthesis.img_resolution
        self.truncation_psi = float(truncation_psi)
        self.noise_mode = noise_mode
        self.label = label
        label_text = "none" if label is None else ",".join(f"{v:g}" for v in label.tolist())
        self.fingerprint = (
            f"{name}:{implementation}:sha256={sha256}:psi={self.truncation_psi!r}:noise={noise_mode}:class={label_text}"
        )
        #: True: NVIDIA's reference formulation (grouped modulated convolutions, zero-insertion resampling: the
        #: official code's outputs); False: the compiler's (see :meth:`for_compiler`).
        self.reference_ops = True

    def for_compiler(self) -> StyleGANGenerator:
        """This generator (the same network and weights, shared) in the form ``torch.compile`` makes fast: every
        modulated convolution one shared-weight convolution between two channel scales (NVlabs'
        ``fused_modconv=False``), resampling without the multiplications by inserted zeros or by dropped samples
        (StyleGAN3). Outputs equal this generator's up to float rounding."""
        variant = copy.copy(self)
        variant.reference_ops = False
        return variant

    @property
    def device(self) -> torch.device:
        return self.net.mapping.w_avg.device

    def to(self, device: torch.device) -> StyleGANGenerator:
        self.net.to(device)
        return self

    def w_plus(self, latents_w: torch.Tensor) -> torch.Tensor:
        """(N, w_dim) w → (N, num_ws, w_dim): w repeated for every synthesis layer (NVlabs truncates w itself)."""
        return latents_w[:, None, :].expand(-1, self.num_ws, -1).contiguous()

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, z_dim) z → ``{"w": (N, w_dim)}`` float32, truncated by ψ towards ``w_avg``."""
        self._check(latents_z, (self.z_dim,), "z")
        with torch.autocast(self.device.type, enabled=False):
            z = latents_z.to(self.device, torch.float32)
            labels = None if self.label is None else self.label.to(self.device).expand(z.shape[0], -1)
            w = self.net.mapping(z, labels)
            return {"w": self.net.mapping.truncate(w, self.truncation_psi)}

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """z (N, z_dim), w (N, w_dim; fed to all num_ws layers) or w+ (N, num_ws, w_dim) → (N, 3, R, R) float32.

        The network keeps its own precision plan (fp16 in the layers the file marks, on CUDA only) and runs
        outside any caller's autocast."""
        if space == "z":
            ws = self.map(latents)["w"].unsqueeze(1).expand(-1, self.num_ws, -1)
        elif space == "w":
            self._check(latents, (self.w_dim,), space)
            ws = latents.unsqueeze(1).expand(-1, self.num_ws, -1)
        elif space == "w+":
            self._check(latents, (self.num_ws, self.w_dim), space)
            ws = latents
        else:
            raise ValueError(f"generator {self.name!r} has latent spaces {list(self.latent_spaces)}, not {space!r}")
        with torch.autocast(self.device.type, enabled=False):
            return self.net.synthesis(
                ws.to(self.device, torch.float32), noise_mode=self.noise_mode, reference_ops=self.reference_ops
            )

    def style_layer_names(self, include_torgb: bool = False) -> list[str]:
        """Names of the layers whose style weights :meth:`style_weights` returns, in the same order."""
        return [name for name, _ in self.net.synthesis.style_layers(include_torgb)]

    def style_weights(self, include_torgb: bool = False) -> list[torch.Tensor]:
        """The matrices A_l that map w to each modulated convolution's styles, s_l = A_l w + b_l, as used at run
        time (stored weight × its gain): one (C_in of layer l, w_dim) tensor per layer, in synthesis order (names:
        :meth:`style_layer_names`), for SeFa (Shen & Zhou 2021, which factorises the concatenated A_l) and similar
        closed-form methods in W.

        StyleGAN2: entry i is fed by W+ row i (num_ws − 1 entries: b4.conv1, b8.conv0, b8.conv1, ...).
        StyleGAN3: entry i is layer L_i, fed by W+ row i + 1 (num_ws − 2 entries; row 0 drives the Fourier input's
        rotation/translation, not a style). ``include_torgb`` adds the ToRGB layers' affines (StyleGAN2: after each
        block's convs; StyleGAN3: the last layer), whose styles are further scaled by the constant 1/√C_in."""
        return [layer.effective_weight().detach() for _, layer in self.net.synthesis.style_layers(include_torgb)]

    def _check(self, latents: torch.Tensor, shape: tuple[int, ...], space: str) -> None:
        if latents.dim() != 1 + len(shape) or tuple(latents.shape[1:]) != shape:
            raise ValueError(
                f"generator {self.name!r} expects {space} latents of shape (N, "
                f"{', '.join(map(str, shape))}), got {tuple(latents.shape)}"
            )


class NVlabsSnapshotParams(PluginParams):
    """``generator.kwargs`` of ``stylegan2`` and ``stylegan3`` (an NVlabs snapshot pickle): ``class_index`` /
    ``class_onehot`` are checked against the file's c_dim when it is read."""

    path: PathStr = Field(description="the .pkl (~ expanded)")
    truncation_psi: float = Field(1.0, description="ψ of the truncation trick towards the file's w_avg (1: none)")
    noise_mode: str = Field("const", description="'const' (the file's fixed noise images) or 'none'")
    class_index: int | None = Field(None, ge=0, description="the class (0..c_dim−1) a class-conditional file generates")
    class_onehot: Annotated[list[float], AsList] | None = Field(
        None, min_length=1, description="or its label vector (c_dim numbers)"
    )

    @field_validator("noise_mode")
    @classmethod
    def _deterministic_noise(cls, noise_mode: str) -> str:
        if noise_mode not in NOISE_MODES:
            raise ValueError(
                f"expected one of {list(NOISE_MODES)} ('random' is refused: images must be a function "
                f"of the latents, for resumable chunks and re-synthesis)"
            )
        return noise_mode


def generator_from_snapshot(
    params: NVlabsSnapshotParams,
    name: str,
    build_net: Callable[[NVlabsSnapshot], StyleGANNet],
    implementation: str,
) -> StyleGANGenerator:
    """The generator plugin over ``params.path``'s ``G_ema``: the snapshot read as data, the network built by
    ``build_net``, the class label checked against its c_dim."""
    snapshot = read_nvlabs_snapshot(params.path)
    net = build_net(snapshot)
    label = label_vector(net.mapping.c_dim, params.class_index, params.class_onehot, str(snapshot.path))
    return StyleGANGenerator(
        net, name, snapshot.sha256, params.truncation_psi, params.noise_mode, label, implementation
    )
