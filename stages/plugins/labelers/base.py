"""Image labelers behind one small protocol, found by name in ``params.yaml: label.labeler``.

A labeler scores a batch of images on named attributes; a suite (e.g. ``faces``) is itself a labeler that
concatenates the columns of several. Images always arrive as (N, 3, H, W) float tensors in [-1, 1], RGB, on the
labeler's device (:func:`check_images`); each labeler resizes/crops to what its network needs. A labeler of labels
the user already has (``table``) looks samples up by id instead (:class:`SampleIdLabeler`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import nn

from latentatlas.errors import LatentAtlasError
from latentatlas.params import LabelParams
from latentatlas.registry import Registry, RegistryError


@runtime_checkable
class Labeler(Protocol):
    """What the pipeline needs of a labeler.

    Attributes:
        name: registry name, stored in the label files' metadata.
        attributes: names of the (A,) columns that ``score`` returns, in order.
        fingerprint: changes whenever its scores would (weights hashes, preprocessing version).
    """

    name: str
    attributes: tuple[str, ...]
    fingerprint: str

    def to(self, device: torch.device) -> Labeler: ...

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [-1, 1] → (N, A) float32 scores, columns in ``attributes`` order."""
        ...


@runtime_checkable
class SampleIdLabeler(Protocol):
    """A labeler that looks up labels a user already has, by ``sample_id``, instead of looking at images (e.g. the
    ``table`` labeler). The label stage prefers ``score_ids`` over ``score`` for such a labeler (also inside a suite)
    and calls ``check_sample_ids`` once with the run's N before it writes anything.
    """

    name: str
    attributes: tuple[str, ...]
    fingerprint: str

    def to(self, device: torch.device) -> SampleIdLabeler: ...

    def check_sample_ids(self, n_samples: int) -> None:
        """Raise :class:`LabelerError` unless it has labels for exactly the samples ``0 … n_samples - 1``."""
        ...

    def score_ids(self, sample_ids: np.ndarray) -> torch.Tensor:
        """(N,) int64 sample ids → (N, A) float32 labels, columns in ``attributes`` order."""
        ...


def reads_sample_ids(labeler: object) -> bool:
    """Whether ``labeler`` labels by sample id (has ``score_ids`` and ``check_sample_ids``)."""
    return callable(getattr(labeler, "score_ids", None)) and callable(getattr(labeler, "check_sample_ids", None))


def labeler_members(labeler: Labeler) -> list[Labeler]:
    """The labelers a suite runs (in column order), or ``[labeler]`` for a single one."""
    return list(labeler.labelers) if isinstance(labeler, LabelerSuite) else [labeler]


class LabelerError(LatentAtlasError, ValueError):
    """A labeler cannot take what it was given: images that break its input contract (shape, dtype, device,
    range), or a suite whose labelers give clashing attribute names."""


#: Images may overshoot [-1, 1] by this much (float error of a tanh output, resampling) before they are refused.
RANGE_TOLERANCE = 1e-3
#: Smallest side a labeler accepts; below it every network would see mostly interpolation.
MIN_IMAGE_SIDE = 16
#: Images per network call on the CPU (see ``run_in_chunks``).
CPU_CHUNK_SIZE = 64

T = TypeVar("T", torch.Tensor, tuple[torch.Tensor, ...])


def check_images(images: torch.Tensor, labeler: str, device: torch.device) -> torch.Tensor:
    """Validate a batch against the labeler contract and return it as float32.

    Args:
        images: (N, 3, H, W) floating tensor, RGB, values in [-1, 1], on ``device``; N ≥ 1, H and W ≥ 16.
        labeler: name used in the error messages.
        device: the labeler's device.

    Returns:
        (N, 3, H, W) float32 tensor (the input itself when it already is float32).

    Raises:
        LabelerError: not a floating tensor of that shape, not on ``device``, empty, non-finite, or outside [-1, 1].
    """
    if not isinstance(images, torch.Tensor):
        raise LabelerError(f"labeler {labeler!r}: expected a torch.Tensor of images, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise LabelerError(
            f"labeler {labeler!r}: expected images of shape (N, 3, H, W) (RGB), got {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise LabelerError(f"labeler {labeler!r}: expected at least one image, got an empty batch")
    if min(images.shape[2:]) < MIN_IMAGE_SIDE:
        raise LabelerError(
            f"labeler {labeler!r}: expected images at least {MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE}, "
            f"got {images.shape[2]}×{images.shape[3]}"
        )
    if not images.is_floating_point():
        raise LabelerError(
            f"labeler {labeler!r}: expected floating-point images in [-1, 1], got dtype {images.dtype} "
            "(convert uint8 images with x / 127.5 - 1)"
        )
    if images.device != device:
        raise LabelerError(
            f"labeler {labeler!r}: images are on {images.device} but the labeler is on {device} "
            "(call .to(device) on one of them)"
        )
    images = images.float()
    low, high = torch.aminmax(images)
    low, high = float(low), float(high)  # one sync per batch; also catches NaN (comparisons below fail)
    if not (low >= -1 - RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE):
        raise LabelerError(
            f"labeler {labeler!r}: expected finite image values in [-1, 1], got range "
            f"[{low:.4g}, {high:.4g}] (images in [0, 1] or [0, 255] must be mapped to [-1, 1] first)"
        )
    return images


def run_in_chunks(network: Callable[[torch.Tensor], T], inputs: torch.Tensor, chunk_size: int | None = None) -> T:
    """``network(inputs)``, computed on consecutive chunks of the batch and concatenated (tensor or tuple of them).

    On the CPU the networks run on chunks of ``CPU_CHUNK_SIZE`` images by default, so that their activations stay in
    the caches (measured per core: 1.4× faster for the mini-Xception, 1.6× for ONet, same for the age network, than
    whole batches of 256); elsewhere the whole batch goes at once.
    Every image is computed independently, so the result does not depend on the chunking.
    """
    if chunk_size is None:
        chunk_size = CPU_CHUNK_SIZE if inputs.device.type == "cpu" else inputs.shape[0]
    if inputs.shape[0] <= chunk_size:
        return network(inputs)
    outputs = [network(chunk) for chunk in inputs.split(chunk_size)]
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))  # type: ignore[return-value]
    return torch.cat(outputs)  # type: ignore[arg-type]


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB blocks: what a labeler's fingerprint names its files by."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


class TorchLabeler:
    """The shell every network labeler shares: torch modules that move together, a device, the input check.

    A subclass sets ``name`` and ``attributes`` (class attributes), calls ``super().__init__(*modules,
    fingerprint=...)`` with every module holding its weights or constant buffers, and implements ``score``,
    starting with ``images = self.check(images)``.
    """

    name: str
    attributes: tuple[str, ...]

    def __init__(self, *modules: nn.Module, fingerprint: str) -> None:
        if not modules:
            raise ValueError(f"{type(self).__name__}: a torch labeler needs at least one module")
        self._modules = [module.eval() for module in modules]
        self.fingerprint = fingerprint

    @property
    def device(self) -> torch.device:
        return module_device(self._modules[0])

    def to(self, device: torch.device) -> TorchLabeler:
        for module in self._modules:
            module.to(device)
        return self

    def check(self, images: torch.Tensor) -> torch.Tensor:
        """The batch checked against the labeler contract (:func:`check_images`), as float32."""
        return check_images(images, self.name, self.device)


class LabelerSuite:
    """Several labelers run on the same batch, their columns concatenated (attribute names must not clash)."""

    def __init__(self, name: str, labelers: Sequence[Labeler]) -> None:
        attributes = [attribute for labeler in labelers for attribute in labeler.attributes]
        clashes = sorted({a for a in attributes if attributes.count(a) > 1})
        if clashes:
            raise LabelerError(f"labeler suite {name!r}: attribute names {clashes} come from more than one labeler")
        self.name = name
        self.labelers = list(labelers)
        self.attributes = tuple(attributes)
        self.fingerprint = f"{name}[" + ";".join(labeler.fingerprint for labeler in self.labelers) + "]"

    def to(self, device: torch.device) -> LabelerSuite:
        for labeler in self.labelers:
            labeler.to(device)
        return self

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([labeler.score(images).float() for labeler in self.labelers], dim=1)


#: Built-in labelers by name; each module registers its own (imported when the name is first used).
LABELERS: Registry[Labeler] = Registry(
    "labeler",
    builtins={
        "faces": "stages.plugins.labelers.faces",
        "torch-classifier": "stages.plugins.labelers.torch_classifier",
        "table": "stages.plugins.labelers.table",
        "http": "stages.plugins.labelers.http",
    },
)


def build_labeler(name: str, /, **kwargs: Any) -> Labeler:
    """Build the labeler registered (or importable) as ``name``, checking it meets the protocol."""
    labeler = LABELERS.build(name, **kwargs)
    missing = [attr for attr in ("attributes", "fingerprint", "score", "to") if not hasattr(labeler, attr)]
    if missing:
        raise RegistryError(f"labeler {name!r} does not meet the Labeler protocol: missing {missing}")
    return labeler


def labeler_for(section: LabelParams, given: Labeler | None = None) -> Labeler:
    """``given`` (a labeler a caller injected), else the one ``params.yaml: label`` names: ``labeler`` with its
    ``kwargs``, or the suite of ``labelers`` (columns concatenated in their order)."""
    if given is not None:
        return given
    entries = section.entries()
    if len(entries) == 1:
        return build_labeler(entries[0].name, **entries[0].kwargs)
    return LabelerSuite(
        "+".join(entry.name for entry in entries), [build_labeler(entry.name, **entry.kwargs) for entry in entries]
    )
