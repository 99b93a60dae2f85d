"""Train a multi-label attribute classifier, as in Pham Van et al., "Interpreting the Latent Space of Generative
Adversarial Networks using Supervised Learning": a ResNet trained on CelebA's 40 attributes with a one-cycle learning
rate and progressive resizing, judged per attribute by accuracy at a threshold and F-beta (their Table I). The
checkpoint it writes is what the ``torch-classifier`` labeler loads (``checkpoint: models/…/model.pt``), so
``train-labeler → label → fit`` is one ``dvc repro``.

Data: an image folder plus either

- CelebA's ``list_attr_celeba.txt`` (line 1: the count, line 2: the attribute names, then ``file.jpg v1 … vA`` with
  values −1/1) and optionally ``list_eval_partition.txt`` (``file.jpg k``: 0 train, 1 validation, 2 test); or
- a CSV ``file,attr1,attr2,…`` (values 0/1 or −1/1), with a ``split_column`` (train/val/test or 0/1/2) or not.

Without a split, ``val_fraction`` of the images (seeded) is held out for validation.

Each image: decoded to RGB, its centred square (or ``crop``) taken, mapped to [−1, 1], then exactly the labeler's
preprocessing (:class:`stages.plugins.labelers.torch_classifier.Preprocessing`: antialiased bilinear resize to the
epoch's size, [0, 1], ImageNet mean/std), so training and labeling see the same input; random horizontal flips in
training.

Training: ``torchvision`` ResNet built with ``weights=None`` (random init, or an ImageNet state dict file the user
gives in ``init_weights``; its 1000-class head is dropped), output layer sized to the attributes, BCE-with-logits,
AdamW under ``OneCycleLR``, the image size of epoch e ``image_sizes[min(e, len - 1)]``, fp16 autocast on CUDA
(``amp``). After every epoch the whole training state is written atomically to the work folder, keyed by the
fingerprint of the settings and label files; a rerun with the same settings resumes after the last finished epoch
(shuffling and flips are seeded per epoch, so a resumed run gives the weights of an uninterrupted one).

Outputs in ``out``: ``model.pt`` (the labeler checkpoint) and ``metrics.json`` (per epoch, and per attribute on the
validation and test splits).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator
from torch import nn

from latentatlas.atomic import atomic_write_bytes, atomic_write_json
from latentatlas.errors import LatentAtlasError
from latentatlas.params import format_validation_error
from latentatlas.stores import fingerprint_of
from stages.plugins.labelers.base import file_sha256
from stages.plugins.labelers.torch_classifier import (
    CHECKPOINT_FORMAT,
    Preprocessing,
    build_architecture,
    output_layer_key,
)
from stages.runtime.device import resolve_device
from stages.runtime.weight_files import WeightFileError, checked_torch_load

#: Architectures ``train-labeler`` builds (torchvision, ``weights=None``).
ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = {"train": 0, "val": 1, "test": 2}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


class TrainLabelerError(LatentAtlasError, ValueError):
    """The training settings or data cannot be used: bad config, unreadable label files, missing images."""


class TrainLabelerParams(BaseModel):
    """The settings of ``latentatlas train-labeler --config FILE`` (a YAML mapping of these keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    images: str = Field(description="folder of the training images (file names as in the label file)")
    labels: str = Field(description="CelebA list_attr_celeba.txt, or a CSV: file,attr1,attr2,...")
    partition: str | None = Field(None, description="CelebA list_eval_partition.txt (file → 0 train/1 val/2 test)")
    split_column: str | None = Field(None, description="CSV: the column holding train/val/test (or 0/1/2)")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="held out for validation when there is no split")
    attributes: list[str] | None = Field(None, min_length=1, description="attributes to learn (null: all)")
    architecture: str = Field("resnet18", description=f"one of {list(ARCHITECTURES)}")
    init_weights: str | None = Field(None, description="an ImageNet state dict file to start from (null: random)")
    epochs: PositiveInt = 5
    image_sizes: list[PositiveInt] = Field(
        [128], min_length=1, description="image side by epoch (progressive resizing); the last repeats"
    )
    crop: list[PositiveInt] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[h, w] centred crop of the source images (null: the largest centred square)",
    )
    batch_size: PositiveInt = 64
    max_lr: PositiveFloat = 1e-3
    pct_start: float = Field(0.25, gt=0, lt=1, description="share of the steps spent raising the learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    flip: bool = Field(True, description="random horizontal flips in training")
    threshold: float = Field(0.5, gt=0, lt=1, description="probability above which an attribute is predicted")
    beta: PositiveFloat = Field(1.0, description="F-beta's beta")
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:<k>")
    amp: bool = Field(True, description="fp16 autocast on CUDA")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes decoding images")
    limit: PositiveInt | None = Field(None, description="use only the first N training images (quick runs)")
    out: str = Field("models/attribute-classifier", description="folder for model.pt and metrics.json")
    work_dir: str = Field(".cache/train-labeler", description="where the per-epoch training state is kept")

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"expected one of {list(ARCHITECTURES)}")
        return value

    def fingerprint_settings(self) -> dict[str, Any]:
        """The settings that change the trained weights (paths to outputs, workers and the device index do not)."""
        return self.model_dump(mode="json", exclude={"out", "work_dir", "num_workers", "device"})


def load_train_params(path: str | Path) -> TrainLabelerParams:
    """Read and validate a train-labeler YAML file.

    Raises:
        TrainLabelerError: missing, not YAML, or a key with a wrong value (one line per problem).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainLabelerError(f"{path}: train-labeler config not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise TrainLabelerError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise TrainLabelerError(f"{path}: expected a mapping of train-labeler settings, got {type(raw).__name__}")
    return parse_train_params(raw, str(path))


def parse_train_params(raw: dict[str, Any], source: str = "train-labeler") -> TrainLabelerParams:
    try:
        return TrainLabelerParams.model_validate(raw)
    except pydantic.ValidationError as error:
        raise TrainLabelerError(format_validation_error(source, error, unknown_key="unknown key")) from None


# ------------------------------------------------------------------------------------------------------- label files


@dataclass(frozen=True)
class AttributeTable:
    """Image files with binary attributes: ``files`` (N,), ``names`` (A,), ``targets`` (N, A) float32 in {0, 1},
    ``splits`` (N,) int8 in {0 train, 1 val, 2 test} or None (no split given)."""

    files: tuple[str, ...]
    names: tuple[str, ...]
    targets: np.ndarray
    splits: np.ndarray | None


def _binary(values: np.ndarray, where: str) -> np.ndarray:
    """−1/1 or 0/1 values → {0, 1} float32.

    Raises:
        TrainLabelerError: other values, or a mix of −1 and 0.
    """
    seen = set(np.unique(values).tolist())
    if seen <= {0, 1}:
        return values.astype(np.float32)
    if seen <= {-1, 1}:
        return (values > 0).astype(np.float32)
    raise TrainLabelerError(f"{where}: attribute values must be 0/1 or -1/1, found {sorted(seen)[:6]}")


def read_celeba_attributes(path: Path) -> AttributeTable:
    """CelebA's ``list_attr_celeba.txt``: count, names, then ``file v1 … vA`` (−1/1), whitespace-separated.

    Raises:
        TrainLabelerError: unreadable, a count that is not the number of rows, or a row of the wrong length.
    """
    lines = [line for line in _read_text(path).splitlines() if line.strip()]
    if len(lines) < 3:
        raise TrainLabelerError(f"{path}: expected a count line, a line of attribute names and one line per image")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise TrainLabelerError(f"{path}: line 1 must be the number of images, got {lines[0].strip()[:40]!r}") from None
    names = tuple(lines[1].split())
    rows = [line.split() for line in lines[2:]]
    if count != len(rows):
        raise TrainLabelerError(f"{path}: line 1 says {count} images, the file lists {len(rows)}")
    bad = next((k for k, row in enumerate(rows) if len(row) != len(names) + 1), None)
    if bad is not None:
        raise TrainLabelerError(
            f"{path}: line {bad + 3} has {len(rows[bad]) - 1} values, expected {len(names)} (one per attribute)"
        )
    try:
        values = np.array([[int(value) for value in row[1:]] for row in rows], dtype=np.int64)
    except ValueError as error:
        raise TrainLabelerError(f"{path}: attribute values must be integers ({error})") from None
    return AttributeTable(tuple(row[0] for row in rows), names, _binary(values, str(path)), None)


def read_celeba_partition(path: Path, files: Sequence[str]) -> np.ndarray:
    """(N,) int8 split of each of ``files`` from CelebA's ``list_eval_partition.txt`` (``file k``, k ∈ {0, 1, 2}).

    Raises:
        TrainLabelerError: a malformed line, a split other than 0/1/2, or an image the file does not list.
    """
    split_of: dict[str, int] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise TrainLabelerError(f"{path}: line {number}: expected 'file.jpg 0|1|2', got {line.strip()[:60]!r}")
        split_of[parts[0]] = int(parts[1])
    missing = [name for name in files if name not in split_of]
    if missing:
        raise TrainLabelerError(f"{path}: no split for {len(missing)} images of the label file, e.g. {missing[:3]}")
    return np.array([split_of[name] for name in files], dtype=np.int8)


def read_attribute_csv(path: Path, split_column: str | None) -> AttributeTable:
    """A CSV ``file,attr1,…`` (first column: the file names; values 0/1 or −1/1), with an optional split column
    (``train``/``val``/``test`` or 0/1/2).

    Raises:
        TrainLabelerError: no header, a missing split column, non-integer values, an unknown split.
    """
    rows = list(csv.reader(io.StringIO(_read_text(path))))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise TrainLabelerError(f"{path}: expected a header 'file,attr1,...' and one row per image")
    header = [cell.strip() for cell in rows[0]]
    if split_column is not None and split_column not in header[1:]:
        raise TrainLabelerError(f"{path}: split_column {split_column!r} is not a column (columns: {header[:10]})")
    bad = next((k for k, row in enumerate(rows[1:]) if len(row) != len(header)), None)
    if bad is not None:
        raise TrainLabelerError(f"{path}: row {bad + 2} has {len(rows[bad + 1])} cells, the header {len(header)}")
    attribute_columns = [k for k in range(1, len(header)) if header[k] != split_column]
    try:
        values = np.array(
            [
                [int(float(row[k])) if float(row[k]).is_integer() else math.nan for k in attribute_columns]
                for row in rows[1:]
            ],
            dtype=np.float64,
        )
    except ValueError as error:
        raise TrainLabelerError(f"{path}: attribute values must be 0/1 or -1/1 ({error})") from None
    if np.isnan(values).any():
        raise TrainLabelerError(f"{path}: attribute values must be 0/1 or -1/1, found non-integers")
    splits = None
    if split_column is not None:
        index = header.index(split_column)
        names = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2, "0": 0, "1": 1, "2": 2}
        cells = [row[index].strip().lower() for row in rows[1:]]
        unknown = sorted({cell for cell in cells if cell not in names})
        if unknown:
            raise TrainLabelerError(
                f"{path}: split_column {split_column!r}: unknown splits {unknown[:5]} "
                f"(expected train/val/test or 0/1/2)"
            )
        splits = np.array([names[cell] for cell in cells], dtype=np.int8)
    return AttributeTable(
        tuple(row[0].strip() for row in rows[1:]),
        tuple(header[k] for k in attribute_columns),
        _binary(values.astype(np.int64), str(path)),
        splits,
    )


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise TrainLabelerError(f"{path}: file not found")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise TrainLabelerError(f"{path}: cannot be read ({error})") from None


def load_attribute_table(params: TrainLabelerParams) -> AttributeTable:
    """The label file(s) of ``params`` as one table: the chosen attributes, a split for every image (from the
    partition file, the split column, or a seeded ``val_fraction`` hold-out), files checked in the image folder.

    Raises:
        TrainLabelerError: unreadable files, unknown attributes, images missing from the folder, an empty split.
    """
    labels = Path(params.labels)
    if params.partition is not None and params.split_column is not None:
        raise TrainLabelerError("give either partition (CelebA's split file) or split_column (a CSV column), not both")
    if labels.suffix.lower() == ".csv":
        if params.partition is not None:
            raise TrainLabelerError(
                f"{labels}: partition is CelebA's split file; a CSV gives its split with split_column"
            )
        table = read_attribute_csv(labels, params.split_column)
    else:
        if params.split_column is not None:
            raise TrainLabelerError(
                f"{labels}: split_column is for a CSV label file; CelebA's text format takes "
                f"partition: list_eval_partition.txt"
            )
        table = read_celeba_attributes(labels)
        if params.partition is not None:
            table = AttributeTable(
                table.files, table.names, table.targets, read_celeba_partition(Path(params.partition), table.files)
            )
    repeated = len(table.files) - len(set(table.files))
    if repeated:
        raise TrainLabelerError(f"{labels}: {repeated} image files are listed more than once")
    names, targets = table.names, table.targets
    if params.attributes is not None:
        unknown = [name for name in params.attributes if name not in names]
        if unknown:
            raise TrainLabelerError(f"attributes: {unknown} are not in {labels} (it has {list(names)[:12]}…)")
        columns = [names.index(name) for name in params.attributes]
        names, targets = tuple(params.attributes), targets[:, columns]
    folder = Path(params.images)
    if not folder.is_dir():
        raise TrainLabelerError(f"images: folder {folder} not found")
    present = set(os.listdir(folder))
    absent = [name for name in table.files if name not in present]
    if absent:
        raise TrainLabelerError(f"images: {len(absent)} files of {labels} are not in {folder}, e.g. {absent[:3]}")
    splits = table.splits
    if splits is None:
        order = np.random.default_rng(params.seed).permutation(len(table.files))
        n_val = max(1, round(params.val_fraction * len(table.files)))
        splits = np.zeros(len(table.files), dtype=np.int8)
        splits[order[:n_val]] = SPLITS["val"]
    for split in ("train", "val"):
        if not (splits == SPLITS[split]).any():
            raise TrainLabelerError(f"{labels}: the {split} split is empty")
    return AttributeTable(table.files, names, targets, splits)


# ----------------------------------------------------------------------------------------------------------- images


def decode_image(path: Path, crop: Sequence[int] | None) -> torch.Tensor:
    """An image file → (3, s, s) float32 in [−1, 1]: RGB, its centred square (or the centred ``crop`` [h, w]).

    Raises:
        TrainLabelerError: the file cannot be decoded, or is smaller than ``crop``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise TrainLabelerError(f"{path}: not an image PIL can decode ({error})") from None
    height, width = pixels.shape[:2]
    crop_height, crop_width = (min(height, width),) * 2 if crop is None else crop
    if crop_height > height or crop_width > width:
        raise TrainLabelerError(f"{path}: {height}×{width} is smaller than crop {crop_height}×{crop_width}")
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    square = pixels[top : top + crop_height, left : left + crop_width]
    return torch.from_numpy(np.array(square)).permute(2, 0, 1).float() / 127.5 - 1  # a writable copy


class AttributeImages(torch.utils.data.Dataset):
    """Rows ``indices`` of a table as (network input (3, S, S) float32, targets (A,) float32) pairs, S = the
    preprocessing's size; ``flips`` (one bool per row, or None) mirrors images horizontally."""

    def __init__(
        self,
        folder: Path,
        table: AttributeTable,
        indices: np.ndarray,
        preprocessing: Preprocessing,
        crop: Sequence[int] | None,
        flips: np.ndarray | None = None,
    ) -> None:
        self.folder = folder
        self.table = table
        self.indices = indices
        self.preprocessing = preprocessing
        self.crop = crop
        self.flips = flips

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.indices[position])
        image = decode_image(self.folder / self.table.files[row], self.crop)
        if self.flips is not None and self.flips[position]:
            image = image.flip(-1)
        network_input = self.preprocessing(image.unsqueeze(0))[0]
        return network_input, torch.from_numpy(self.table.targets[row])


# ---------------------------------------------------------------------------------------------------------- metrics


def attribute_metrics(
    probabilities: np.ndarray, targets: np.ndarray, threshold: float, beta: float
) -> dict[str, np.ndarray]:
    """Per-attribute accuracy and F-beta of (N, A) probabilities against (N, A) {0, 1} targets.

    A prediction is positive when its probability exceeds ``threshold``. F-beta = (1 + β²)·P·R / (β²·P + R) with
    precision P and recall R of the positive class; 0 when it has no true positive.

    Returns:
        ``accuracy``, ``fbeta``, ``precision``, ``recall``: (A,) float64 each.
    """
    predicted = probabilities > threshold
    actual = targets > 0.5
    true_positive = (predicted & actual).sum(axis=0).astype(np.float64)
    false_positive = (predicted & ~actual).sum(axis=0)
    false_negative = (~predicted & actual).sum(axis=0)
    precision = np.divide(
        true_positive,
        true_positive + false_positive,
        out=np.zeros_like(true_positive),
        where=(true_positive + false_positive) > 0,
    )
    recall = np.divide(
        true_positive,
        true_positive + false_negative,
        out=np.zeros_like(true_positive),
        where=(true_positive + false_negative) > 0,
    )
    denominator = beta**2 * precision + recall
    fbeta = np.divide(
        (1 + beta**2) * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0
    )
    accuracy = (predicted == actual).mean(axis=0).astype(np.float64)
    return {"accuracy": accuracy, "fbeta": fbeta, "precision": precision, "recall": recall}


def metrics_summary(metrics: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, Any]:
    """JSON-ready: each metric by attribute, plus ``accuracy_mean`` and ``fbeta_mean``."""
    summary: dict[str, Any] = {
        key: {name: round(float(value), 6) for name, value in zip(names, values)} for key, values in metrics.items()
    }
    summary["accuracy_mean"] = round(float(metrics["accuracy"].mean()), 6)
    summary["fbeta_mean"] = round(float(metrics["fbeta"].mean()), 6)
    return summary


# --------------------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch: its index (0-based), image side, mean training loss, validation loss and means, wall
    seconds."""

    epoch: int
    image_size: int
    train_loss: float
    val_loss: float
    val_accuracy_mean: float
    val_fbeta_mean: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "image_size": self.image_size,
            "train_loss": round(self.train_loss, 6),
            "val_loss": round(self.val_loss, 6),
            "val_accuracy_mean": round(self.val_accuracy_mean, 6),
            "val_fbeta_mean": round(self.val_fbeta_mean, 6),
            "seconds": round(self.seconds, 3),
        }


def _preprocessing(size: int) -> Preprocessing:
    return Preprocessing(resize=(size, size), input_range=(0.0, 1.0), mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _save(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class AttributeTrainer:
    """Train one classifier from ``params`` (see the module docstring): ``run()`` trains the epochs not yet done
    and writes ``model.pt`` and ``metrics.json``.

    Args:
        params: the settings.
        on_epoch: called after each finished (and saved) epoch with its result.

    Raises:
        TrainLabelerError: (at construction) bad label files, images or init weights.
    """

    def __init__(self, params: TrainLabelerParams, on_epoch: Callable[[EpochResult], None] | None = None) -> None:
        self.params = params
        self.on_epoch = on_epoch or (lambda result: None)
        self.device = resolve_device(params.device)
        self.amp = params.amp and self.device.type == "cuda"
        self.table = load_attribute_table(params)
        self.names = self.table.names
        self.train_rows = np.flatnonzero(self.table.splits == SPLITS["train"])
        if params.limit is not None:
            self.train_rows = self.train_rows[: params.limit]
        self.val_rows = np.flatnonzero(self.table.splits == SPLITS["val"])
        self.test_rows = np.flatnonzero(self.table.splits == SPLITS["test"])
        if len(self.train_rows) < 2:
            raise TrainLabelerError(f"{params.labels}: {len(self.train_rows)} training images; need at least 2")
        self.batch_size = min(params.batch_size, len(self.train_rows))
        self.steps_per_epoch = len(self.train_rows) // self.batch_size  # whole batches: BatchNorm needs > 1 sample
        total_steps = params.epochs * self.steps_per_epoch
        if params.pct_start * total_steps < 2:  # OneCycleLR needs a warm-up phase of at least two steps
            raise TrainLabelerError(
                f"{total_steps} optimizer steps in all ({len(self.train_rows)} training images, "
                f"batch_size {self.batch_size}, {params.epochs} epochs) are too few for the "
                f"one-cycle schedule (pct_start {params.pct_start}: at least "
                f"{math.ceil(2 / params.pct_start)}); add epochs or lower batch_size"
            )
        inputs = {
            "settings": params.fingerprint_settings(),
            "labels_sha256": file_sha256(Path(params.labels)),
            "partition_sha256": file_sha256(Path(params.partition)) if params.partition else None,
            "device_type": self.device.type,
            "format": CHECKPOINT_FORMAT,
        }
        if params.init_weights is not None:
            inputs["init_weights_sha256"] = self._init_weights_file_sha256()
        self.fingerprint = fingerprint_of(inputs)
        self.state_path = Path(params.work_dir) / self.fingerprint / STATE_FILE
        self.out = Path(params.out)

    def _init_weights_file_sha256(self) -> str:
        path = Path(self.params.init_weights or "")
        if not path.is_file():
            raise TrainLabelerError(f"init_weights: file {path} not found")
        return file_sha256(path)

    def image_size(self, epoch: int) -> int:
        sizes = self.params.image_sizes
        return sizes[min(epoch, len(sizes) - 1)]

    def build_model(self) -> nn.Module:
        """The architecture with random weights (seeded), or the user's ImageNet weights without their head."""
        with torch.random.fork_rng(devices=[]):  # seeded init, the caller's random state untouched
            torch.manual_seed(self.params.seed)
            model = build_architecture(self.params.architecture, len(self.names))
        if self.params.init_weights is not None:
            path = Path(self.params.init_weights)
            try:
                state = checked_torch_load(path)
            except WeightFileError as error:
                raise TrainLabelerError(f"init_weights {error}") from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise TrainLabelerError(f"init_weights {path}: expected a state dict (name → tensor)")
            head = output_layer_key(model).removesuffix(".weight")
            state = {key: value for key, value in state.items() if not key.startswith(head + ".")}
            expected = {key for key in model.state_dict() if not key.startswith(head + ".")}
            if set(state) != expected or any(state[key].shape != model.state_dict()[key].shape for key in state):
                raise TrainLabelerError(
                    f"init_weights {path}: not a {self.params.architecture} state dict (keys "
                    f"or shapes differ: {sorted(set(state) ^ expected)[:3]})"
                )
            model.load_state_dict(state, strict=False)
        return model.to(self.device)

    def loader(self, rows: np.ndarray, size: int, epoch: int | None) -> torch.utils.data.DataLoader:
        """Batches of ``rows`` at side ``size``: shuffled, flipped and whole-batch only in training (``epoch``
        given, seeded by it), in order otherwise."""
        flips = None
        if epoch is not None:
            generator = np.random.default_rng([self.params.seed, epoch])
            rows = rows[generator.permutation(len(rows))]
            flips = generator.random(len(rows)) < 0.5 if self.params.flip else None
        dataset = AttributeImages(
            Path(self.params.images), self.table, rows, _preprocessing(size), self.params.crop, flips
        )
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            drop_last=epoch is not None,
            num_workers=self.params.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def predict(self, model: nn.Module, rows: np.ndarray, size: int) -> tuple[np.ndarray, float]:
        """(len(rows), A) probabilities of ``rows`` at side ``size``, and the mean BCE loss against their targets."""
        model.eval()
        probabilities, losses = [], []
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            for inputs, targets in self.loader(rows, size, epoch=None):
                logits = model(inputs.to(self.device, non_blocking=True)).float()
                targets = targets.to(self.device)
                losses.append(float(nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")))
                probabilities.append(torch.sigmoid(logits).cpu().numpy())
        return np.concatenate(probabilities), sum(losses) / (len(rows) * len(self.names))

    def evaluate(self, model: nn.Module, rows: np.ndarray, size: int) -> tuple[dict[str, np.ndarray], float]:
        probabilities, loss = self.predict(model, rows, size)
        return attribute_metrics(probabilities, self.table.targets[rows], self.params.threshold, self.params.beta), loss

    def run(self) -> dict[str, Any]:
        """Train the remaining epochs (resuming from the saved state), write ``model.pt`` and ``metrics.json``.

        Returns:
            The metrics written to ``metrics.json``.
        """
        params = self.params
        model = self.build_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.max_lr, weight_decay=params.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=params.max_lr,
            total_steps=params.epochs * self.steps_per_epoch,
            pct_start=params.pct_start,
        )
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        history: list[dict[str, Any]] = []
        start = 0
        if self.state_path.is_file():
            state = torch.load(self.state_path, map_location=self.device, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            history, start = list(state["history"]), int(state["epochs_done"])
        loss_function = nn.BCEWithLogitsLoss()
        for epoch in range(start, params.epochs):
            began = time.perf_counter()
            size = self.image_size(epoch)
            model.train()
            total, batches = 0.0, 0
            for inputs, targets in self.loader(self.train_rows, size, epoch):
                inputs = inputs.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                    loss = loss_function(model(inputs).float(), targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total, batches = total + float(loss.detach()), batches + 1
            metrics, val_loss = self.evaluate(model, self.val_rows, size)
            result = EpochResult(
                epoch,
                size,
                total / max(batches, 1),
                val_loss,
                float(metrics["accuracy"].mean()),
                float(metrics["fbeta"].mean()),
                time.perf_counter() - began,
            )
            history.append(result.as_dict())
            _save(
                self.state_path,
                {
                    "fingerprint": self.fingerprint,
                    "epochs_done": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": history,
                },
            )
            self.on_epoch(result)
        return self.finish(model, history)

    def finish(self, model: nn.Module, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Judge the trained model at the last image size on the validation (and test) split, write ``model.pt``
        (what ``torch-classifier``'s ``checkpoint:`` loads) and ``metrics.json``."""
        size = self.image_size(self.params.epochs - 1)
        val_metrics, val_loss = self.evaluate(model, self.val_rows, size)
        test = None
        if len(self.test_rows):
            test_metrics, test_loss = self.evaluate(model, self.test_rows, size)
            test = {
                **metrics_summary(test_metrics, self.names),
                "loss": round(test_loss, 6),
                "n_images": int(len(self.test_rows)),
            }
        summary = {
            "architecture": self.params.architecture,
            "attributes": list(self.names),
            "threshold": self.params.threshold,
            "beta": self.params.beta,
            "fingerprint": self.fingerprint,
            "n_train": int(len(self.train_rows)),
            "n_val": int(len(self.val_rows)),
            "epochs": history,
            "val": {**metrics_summary(val_metrics, self.names), "loss": round(val_loss, 6)},
            "test": test,
        }
        model_state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        _save(
            self.out / MODEL_FILE,
            {
                "format": CHECKPOINT_FORMAT,
                "architecture": self.params.architecture,
                "outputs": list(self.names),
                "preprocessing": _preprocessing(size).as_dict(),
                "activation": "sigmoid",
                "state_dict": model_state,
                "threshold": self.params.threshold,
                "fingerprint": self.fingerprint,
                "val_accuracy_mean": summary["val"]["accuracy_mean"],
                "val_fbeta_mean": summary["val"]["fbeta_mean"],
            },
        )
        atomic_write_json(self.out / METRICS_FILE, summary)
        return summary


def train_labeler(params: TrainLabelerParams, on_epoch: Callable[[EpochResult], None] | None = None) -> dict[str, Any]:
    """Train (or resume training) the attribute classifier of ``params``; returns the metrics written."""
    with warnings.catch_warnings():
        # GradScaler skips the optimizer step of a batch whose fp16 gradients overflowed (CUDA); the schedule still
        # advances, which is intended, and torch warns about it.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()` before", category=UserWarning)
        return AttributeTrainer(params, on_epoch).run()
