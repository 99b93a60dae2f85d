"""``torch-classifier``: an image classifier checkpoint as a labeler.

Three ways to give the network (exactly one):

- ``architecture: resnet18`` + ``weights: state_dict.pt`` — a torchvision classification architecture, built with
  ``weights=None`` (nothing is downloaded) and its output layer sized to the number of ``outputs``, then the state
  dict loaded with ``torch.load(..., weights_only=True)`` (tensors only: the file holds no code that runs);
- ``checkpoint: model.pt`` — what ``latentatlas train-labeler`` writes: one ``weights_only`` file holding the
  architecture, the state dict, the output names and the preprocessing the network was trained with;
- ``torchscript: model.pt`` + ``allow_code_execution: true`` — a TorchScript file (``torch.jit.save``), loaded with
  ``torch.jit.load``. **A TorchScript file is a program, not weights**: loading it runs its ``__setstate__``
  methods, and every batch runs its ``forward``, with your permissions — it can read and write your files (e.g.
  through ``torch.from_file``). It is refused unless ``allow_code_execution: true`` says you trust the file as you
  would Python code.

The kwargs are validated by :class:`TorchClassifierParams` (when params.yaml is loaded, and again when the labeler is
built), so a TorchScript file without the opt-in is never opened.

Output names: ``outputs: [smiling, male]`` (one per network output, in order) or ``outputs: celeba40`` (CelebA's 40
attributes in their official order). A checkpoint from ``train-labeler`` carries its names; ``outputs`` may rename
them (same count).

Preprocessing, applied to the pipeline's (N, 3, H, W) RGB images in [-1, 1], in this order:

    resize     (interpolation)      int: shorter side → this, aspect kept;  [h, w]: exactly;  null: as given
    crop                            int or [h, w]: the centred crop;  null: none
    input_range                     [-1, 1] → [low, high] (e.g. [0, 1], [0, 255], [-1, 1]), linear
    channel_order                   RGB or BGR (BGR: channels reversed)
    mean, std                       (x - mean) / std per channel, in input_range units and channel_order order
  → network → (N, K) → activation   sigmoid (multi-label probabilities) | softmax (rows sum to 1) | none (raw)

The fingerprint holds the sha256 of the checkpoint file and every preprocessing and activation setting, so a new
checkpoint or another preprocessing relabels the run.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import pydantic
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from latentatlas.params import PathStr, PluginParams, format_validation_error
from stages.plugins.labelers.base import LABELERS, LabelerError, TorchLabeler, file_sha256, run_in_chunks
from stages.runtime.weight_files import WeightFileError, checked_torch_load

#: CelebA's 40 binary attributes, in the order of ``list_attr_celeba.txt``.
CELEBA40: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
#: ``outputs: <preset>`` names.
OUTPUT_PRESETS: dict[str, tuple[str, ...]] = {"celeba40": CELEBA40}
#: The format tag of the checkpoints ``train-labeler`` writes (``checkpoint:``).
CHECKPOINT_FORMAT = "latentatlas-classifier/1"
#: Bumped whenever the preprocessing code below changes what a network sees.
PREPROCESSING_VERSION = "torch-classifier-v1"
Activation = Literal["sigmoid", "softmax", "none"]
Interpolation = Literal["bilinear", "bicubic", "nearest", "area"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
ChannelOrder = Literal["RGB", "BGR"]
CHANNEL_ORDERS: tuple[str, ...] = get_args(ChannelOrder)
LABELER_NAME = "torch-classifier"


def _fail(message: str) -> LabelerError:
    return LabelerError(f"labeler {LABELER_NAME!r}: {message}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _size_pair(value: Any, allow_int: bool) -> tuple[int, int] | int | None:
    """``null``, a positive int (kept when ``allow_int``, else ``(n, n)``) or ``[h, w]`` of positive ints.

    Raises:
        ValueError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("expected a positive size")
        return value if allow_int else (value, value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError("expected a positive int or [height, width] of positive ints")


def _triple(value: Any, positive: bool) -> tuple[float, float, float] | None:
    """``null`` or three finite numbers (positive ones when ``positive``) as floats.

    Raises:
        ValueError: anything else.
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_number(v) for v in value):
        raise ValueError("expected three finite numbers (one per channel, R G B)")
    if positive and min(value) <= 0:
        raise ValueError("expected positive values")
    return float(value[0]), float(value[1]), float(value[2])


def _output_names(outputs: Any) -> tuple[str, ...] | None:
    """``outputs`` as a tuple of names (a preset name expanded): non-empty, distinct strings; None stays None.

    Raises:
        ValueError: an unknown preset, an empty or non-string name, or a repeated one.
    """
    if outputs is None:
        return None
    if isinstance(outputs, str):
        if outputs not in OUTPUT_PRESETS:
            raise ValueError(
                f"{outputs!r} is no preset (presets: {sorted(OUTPUT_PRESETS)}); give a list of names, "
                f"one per network output"
            )
        return OUTPUT_PRESETS[outputs]
    if not (isinstance(outputs, (list, tuple)) and outputs and all(isinstance(n, str) and n for n in outputs)):
        raise ValueError(f"expected a preset name {sorted(OUTPUT_PRESETS)} or a non-empty list of names")
    names = tuple(outputs)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"names {repeated} are given more than once")
    return names


class PreprocessingSettings(PluginParams):
    """The preprocessing keys (see the module docstring), each checked and normalised (``[h, w]`` → a tuple,
    ``bgr`` → ``BGR``); null keeps the default, or for a checkpoint what its network was trained with."""

    resize: int | tuple[int, int] | None = Field(None, description="int: shorter side; [h, w]: exactly")
    crop: tuple[int, int] | None = Field(None, description="int or [h, w]: the centred crop")
    input_range: tuple[float, float] | None = Field(None, description="[-1, 1] → [low, high], linear")
    channel_order: ChannelOrder | None = Field(None, description="RGB or BGR (channels reversed)")
    mean: tuple[float, float, float] | None = Field(None, description="per channel, in input_range units")
    std: tuple[float, float, float] | None = Field(None, description="per channel, positive")
    interpolation: Interpolation | None = Field(None, description="of resize")

    @field_validator("resize", "crop", mode="before")
    @classmethod
    def _size(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        return _size_pair(value, allow_int=info.field_name == "resize")

    @field_validator("input_range", mode="before")
    @classmethod
    def _range(cls, value: Any) -> Any:
        if value is None:
            return None
        if not (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(_number(v) for v in value)
            and value[0] < value[1]
        ):
            raise ValueError("expected [low, high] with low < high, e.g. [0, 1], [0, 255] or [-1, 1]")
        return float(value[0]), float(value[1])

    @field_validator("channel_order", mode="before")
    @classmethod
    def _order(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or value.upper() not in CHANNEL_ORDERS:
            raise ValueError(f"expected one of {list(CHANNEL_ORDERS)}")
        return value.upper()

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _per_channel(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        return _triple(value, positive=info.field_name == "std")

    def applied_to(self, base: Preprocessing) -> Preprocessing:
        """``base`` with every setting given here (not null) replacing its own."""
        return replace(
            base,
            **{key: getattr(self, key) for key in PreprocessingSettings.model_fields if getattr(self, key) is not None},
        )


@dataclass(frozen=True)
class Preprocessing:
    """How (N, 3, H, W) RGB images in [-1, 1] become the network's input (see the module docstring)."""

    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    input_range: tuple[float, float] = (0.0, 1.0)
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], base: Preprocessing | None = None, source: str = "preprocessing"
    ) -> Preprocessing:
        """``base`` (defaults if None) with the non-None ``settings`` applied, each checked
        (:class:`PreprocessingSettings`).

        Raises:
            LabelerError: an unknown key or a value of the wrong kind, one line each, naming ``source`` and the key.
        """
        try:
            checked = PreprocessingSettings.model_validate(dict(settings))
        except pydantic.ValidationError as error:
            raise LabelerError(
                format_validation_error(
                    f"labeler {LABELER_NAME!r}: {source}",
                    error,
                    unknown_key=f"unknown preprocessing setting; expected {sorted(PreprocessingSettings.model_fields)}",
                )
            ) from None
        return checked.applied_to(base or cls())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings (lists for tuples), as stored in checkpoints and fingerprints."""
        return json.loads(json.dumps(asdict(self)))

    def output_size(self) -> tuple[int, int] | None:
        """The (h, w) the network sees when it is fixed by the settings, else None (depends on the images)."""
        if self.crop is not None:
            return self.crop
        if isinstance(self.resize, tuple):
            return self.resize
        return None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [-1, 1] → (N, 3, h, w) float32 network input."""
        x = images
        if self.resize is not None:
            height, width = x.shape[-2:]
            if isinstance(self.resize, tuple):
                size = self.resize
            else:  # shorter side → resize, aspect kept (torchvision's Resize(int))
                short = min(height, width)
                size = (round(height * self.resize / short), round(width * self.resize / short))
            if size != (height, width):
                smooth = self.interpolation in ("bilinear", "bicubic")  # antialiased, as PIL and torchvision
                x = F.interpolate(
                    x,
                    size=size,
                    mode=self.interpolation,
                    **({"align_corners": False, "antialias": True} if smooth else {}),
                )
        if self.crop is not None:
            crop_height, crop_width = self.crop
            height, width = x.shape[-2:]
            if crop_height > height or crop_width > width:
                raise _fail(
                    f"crop {crop_height}×{crop_width} is larger than the (resized) images, "
                    f"{height}×{width}; set resize to at least the crop size"
                )
            top, left = (height - crop_height) // 2, (width - crop_width) // 2  # torchvision's CenterCrop
            x = x[..., top : top + crop_height, left : left + crop_width]
        low, high = self.input_range
        x = (x + 1) * ((high - low) / 2) + low
        if self.channel_order == "BGR":
            x = x.flip(1)
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


def _existing_file(value: str, key: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise _fail(f"{key}: file {path} not found")
    return path


def resolve_outputs(outputs: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``outputs`` as a tuple of names (a preset name expanded), checked: non-empty, distinct strings.

    Raises:
        LabelerError: an unknown preset, a non-string or repeated name.
    """
    try:
        return _output_names(outputs)
    except ValueError as error:
        raise _fail(f"outputs: {error}") from None


def classification_architectures() -> list[str]:
    """torchvision's classification model names (``resnet18``, ``resnet50``, ``convnext_tiny``, …)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def build_architecture(architecture: str, n_outputs: int) -> nn.Module:
    """A torchvision classification network with random weights (``weights=None``: nothing is downloaded) and its
    output layer sized to ``n_outputs``.

    Raises:
        LabelerError: ``architecture`` is not a torchvision classification model.
    """
    import torchvision

    names = classification_architectures()
    if architecture not in names:
        resnets = [name for name in names if name.startswith("resn")]
        raise _fail(
            f"architecture {architecture!r} is not a torchvision classification model; expected e.g. "
            f"{resnets} (all: torchvision.models.list_models(module=torchvision.models))"
        )
    return torchvision.models.get_model(architecture, weights=None, num_classes=n_outputs)


def output_layer_key(network: nn.Module) -> str:
    """State-dict key of the weight of the network's last Linear (or, failing one, last Conv2d) layer."""
    last = None
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        last = [name for name, module in network.named_modules() if isinstance(module, nn.Conv2d)][-1]
    return f"{last}.weight"


def _torch_load(path: Path, what: str) -> Any:
    """The checkpoint or state dict at ``path``, read as data only
    (:func:`stages.runtime.weight_files.checked_torch_load`:
    bounded pickle, no zip bomb, every tensor backed by its own bytes)."""
    try:
        return checked_torch_load(path)
    except WeightFileError as error:
        raise _fail(f"{what} {error}") from None


def load_state_dict_into(network: nn.Module, state: Any, path: Path, architecture: str) -> nn.Module:
    """Load ``state`` (a state dict, or ``{"state_dict": ...}``; a ``module.`` prefix from DataParallel is dropped)
    into ``network``, strictly.

    Raises:
        LabelerError: not a mapping of tensors, an output count other than the network's, or keys/shapes that do
            not fit ``architecture``.
    """
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(f"weights {path}: expected a state dict (parameter name → tensor), got {type(state).__name__}")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    expected = network.state_dict()
    head = output_layer_key(network)
    n_outputs = expected[head].shape[0]
    if head in state and state[head].shape[0] != n_outputs:
        raise _fail(
            f"weights {path}: the checkpoint's output layer has {state[head].shape[0]} outputs, but outputs "
            f"names {n_outputs}"
        )
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    if missing or unexpected or misshapen:
        problems = [
            f"{label} {keys[:3]}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", misshapen))
            if keys
        ]
        raise _fail(f"weights {path} do not fit architecture {architecture!r}: {'; '.join(problems)}")
    network.load_state_dict(state, strict=True)
    return network


class TorchClassifierLabeler(TorchLabeler):
    """A classifier network as a labeler: (N, 3, H, W) RGB in [-1, 1] → preprocessing → network → activation →
    (N, A) float32, one column per output name.

    Args:
        network: a module (or TorchScript module) mapping (N, 3, h, w) → (N, A) logits.
        outputs: the A column names, in the network's output order.
        preprocessing: how images become the network's input.
        activation: ``sigmoid``, ``softmax`` or ``none``.
        source: what the network was loaded from and its sha256, for the fingerprint (``torchscript@<sha256>``).
    """

    name = LABELER_NAME

    def __init__(
        self, network: nn.Module, outputs: Sequence[str], preprocessing: Preprocessing, activation: str, source: str
    ) -> None:
        if activation not in ACTIVATIONS:
            raise _fail(f"activation: expected one of {list(ACTIVATIONS)}, got {activation!r}")
        self.network = network
        self.attributes = tuple(outputs)
        self.preprocessing = preprocessing
        self.activation = activation
        settings = {
            "outputs": list(self.attributes),
            "preprocessing": preprocessing.as_dict(),
            "activation": activation,
            "version": PREPROCESSING_VERSION,
        }
        super().__init__(network, fingerprint=f"{LABELER_NAME}:{source}:{json.dumps(settings, sort_keys=True)}")

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [-1, 1] (checked) → (N, A) float32 network outputs before the activation.

        Raises:
            LabelerError: the network does not return one row of A values per image.
        """
        inputs = self.preprocessing(self.check(images))
        outputs = run_in_chunks(self.network, inputs)
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or outputs.shape[1] != len(self.attributes):
            got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise _fail(
                f"the network returns {got} for {inputs.shape[0]} images, but outputs names "
                f"{len(self.attributes)} columns: expected ({inputs.shape[0]}, {len(self.attributes)})"
            )
        return outputs.float()

    @torch.inference_mode()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [-1, 1] → (N, A) float32: probabilities (sigmoid, softmax) or raw outputs (none)."""
        logits = self.logits(images)
        if self.activation == "sigmoid":
            return torch.sigmoid(logits)
        if self.activation == "softmax":
            return torch.softmax(logits, dim=1)
        return logits


def _load_torchscript(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():  # deprecated in torch 2.14, yet the format users have
            warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # noqa: BLE001
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _fail(f"torchscript {path} is not a TorchScript file torch.jit.load can read: {detail[:200]}") from None


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """The dict of a ``train-labeler`` checkpoint: ``format``, ``architecture``, ``outputs``, ``preprocessing``,
    ``activation`` and ``state_dict`` (read with ``weights_only=True``).

    Raises:
        LabelerError: unreadable, or not that format.
    """
    payload = _torch_load(path, "checkpoint")
    if not isinstance(payload, Mapping) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise _fail(
            f"checkpoint {path}: expected a {CHECKPOINT_FORMAT!r} file written by `latentatlas "
            f"train-labeler`, found {found!r} (a plain state dict goes under weights: with architecture:)"
        )
    missing = [
        key for key in ("architecture", "outputs", "preprocessing", "activation", "state_dict") if key not in payload
    ]
    if missing:
        raise _fail(f"checkpoint {path}: entries {missing} are missing")
    return dict(payload)


#: Why a TorchScript file needs ``allow_code_execution: true``.
TORCHSCRIPT_RUNS_CODE = (
    "a TorchScript file is a program, not weights: torch.jit.load runs its code (its __setstate__ when the file is "
    "loaded, its forward on every batch) with your permissions, and that code can read and write your files; set "
    "allow_code_execution: true only for a file you trust as you would Python code, or give architecture + weights "
    "or checkpoint (tensors only, read with weights_only=True)"
)


class TorchClassifierParams(PreprocessingSettings):
    """``label.kwargs`` of ``torch-classifier`` (see the module docstring): exactly one network source, the output
    names, the preprocessing settings (:class:`PreprocessingSettings`) and the activation."""

    outputs: tuple[str, ...] | None = Field(
        None, description="one name per network output, or a preset (celeba40); a checkpoint carries its own"
    )
    torchscript: PathStr | None = Field(
        None, description="a TorchScript file: runs code, needs allow_code_execution: true"
    )
    architecture: str | None = Field(None, min_length=1, description="a torchvision classification model name")
    weights: PathStr | None = Field(None, description="its state dict (torch.load with weights_only=True)")
    checkpoint: PathStr | None = Field(None, description="a file written by latentatlas train-labeler")
    activation: Activation | None = Field(None, description="default: sigmoid, or the checkpoint's")
    allow_code_execution: bool = Field(False, description="load a TorchScript file, which runs its code")

    @field_validator("outputs", mode="before")
    @classmethod
    def _names(cls, outputs: Any) -> tuple[str, ...] | None:
        return _output_names(outputs)

    @model_validator(mode="after")
    def _one_network(self) -> TorchClassifierParams:
        sources = [key for key in ("torchscript", "architecture", "checkpoint") if getattr(self, key) is not None]
        if len(sources) != 1:
            raise ValueError(
                f"give exactly one of torchscript: FILE, architecture: NAME (+ weights: FILE) or "
                f"checkpoint: FILE; got {sources or 'none'}"
            )
        if self.weights is not None and self.architecture is None:
            raise ValueError("weights: a state dict needs architecture: (e.g. resnet18) to build the network")
        if self.architecture is not None and self.weights is None:
            raise ValueError(
                f"architecture {self.architecture!r} needs weights: FILE (a state dict); random weights label nothing"
            )
        if self.checkpoint is None and self.outputs is None:
            raise ValueError("outputs: name the network's outputs (a list, one per output, or the preset 'celeba40')")
        if self.torchscript is not None and not self.allow_code_execution:
            raise ValueError(f"torchscript: refused without allow_code_execution: true; {TORCHSCRIPT_RUNS_CODE}")
        return self


@LABELERS.register(LABELER_NAME, params=TorchClassifierParams)
def build_torch_classifier(params: TorchClassifierParams) -> TorchClassifierLabeler:
    """The ``torch-classifier`` labeler from validated ``label.kwargs`` (see the module docstring).

    Raises:
        LabelerError: a missing or unreadable file, an unknown architecture, an output count other than the names
            given, or a checkpoint whose contents do not fit — each in one line.
    """
    names = params.outputs
    if params.checkpoint is not None:
        path = _existing_file(params.checkpoint, "checkpoint")
        payload = read_training_checkpoint(path)
        stored = resolve_outputs(list(payload["outputs"]))
        if names is not None and len(names) != len(stored):
            raise _fail(
                f"outputs: names {len(names)} columns, but checkpoint {path} has {len(stored)} outputs "
                f"({list(stored)[:5]}{' …' if len(stored) > 5 else ''})"
            )
        base = Preprocessing.from_settings(payload["preprocessing"], source=f"checkpoint {path}: preprocessing")
        network = load_state_dict_into(
            build_architecture(str(payload["architecture"]), len(stored)),
            payload["state_dict"],
            path,
            str(payload["architecture"]),
        )
        return TorchClassifierLabeler(
            network,
            names or stored,
            params.applied_to(base),
            params.activation or str(payload["activation"]),
            f"checkpoint@{file_sha256(path)}",
        )

    assert names is not None  # the model requires outputs without a checkpoint
    preprocessing = params.applied_to(Preprocessing())
    activation = params.activation or "sigmoid"
    if params.architecture is not None:
        assert params.weights is not None  # the model requires weights with an architecture
        path = _existing_file(params.weights, "weights")
        network = build_architecture(params.architecture, len(names))
        load_state_dict_into(network, _torch_load(path, "weights"), path, params.architecture)
        return TorchClassifierLabeler(
            network, names, preprocessing, activation, f"{params.architecture}@{file_sha256(path)}"
        )

    assert params.torchscript is not None  # the model requires exactly one source
    if not params.allow_code_execution:  # the model refuses it too; also when built without validation
        raise _fail(f"torchscript: refused without allow_code_execution: true; {TORCHSCRIPT_RUNS_CODE}")
    path = _existing_file(params.torchscript, "torchscript")
    network = _load_torchscript(path).eval()
    labeler = TorchClassifierLabeler(network, names, preprocessing, activation, f"torchscript@{file_sha256(path)}")
    size = preprocessing.output_size()
    if size is not None:  # check the output count now, not at the first chunk
        probe = torch.zeros(1, 3, *size)
        try:
            with torch.inference_mode():
                result = network(probe)
        except Exception as error:  # noqa: BLE001 (a scripted network raises its own errors)
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise _fail(f"torchscript {path} fails on a (1, 3, {size[0]}, {size[1]}) input: {detail[:200]}") from None
        if not isinstance(result, torch.Tensor) or result.dim() != 2 or result.shape[1] != len(names):
            got = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            raise _fail(f"torchscript {path} returns {got} per image batch, but outputs names {len(names)} columns")
    return labeler
