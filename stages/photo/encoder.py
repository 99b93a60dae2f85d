"""Stage train-encoder: a small CNN from images to latents, trained on the pipeline's own (image, latent) pairs.

The "hybrid" inversion (Zhu et al., "Generative Visual Manipulation on the Natural Image Manifold", 2016; and
In-Domain GAN Inversion) starts the per-image optimisation from an encoder's guess instead of the mean latent: the
guess already has the pose, colouring and layout, so a few optimisation steps do what hundreds would from the mean.
The training pairs cost nothing here: ``data/images.zarr`` holds G(z) for every z of ``data/latents.zarr``.

Network, for (N, 3, S, S) images in [-1, 1] (S = ``input_size``, other sizes are resized to it first) and
``width`` w:

    conv 3×3/2 (w) → conv 3×3/2 (2w) → conv 3×3 (2w) → conv 3×3/2 (4w) → conv 3×3 (4w) → … until 4×4 (≤ 8w ch.)
      each followed by GroupNorm(8) and LeakyReLU(0.2) → flatten → Linear (512) + LeakyReLU → Linear (Σ dims)

One output per stored latent space (``z`` (N, z_dim), and ``w`` (N, w_dim) for a style-based generator); the
targets are standardised per dimension (mean and standard deviation of the first training chunk, kept as buffers)
and the loss is their mean squared error. The encoder is a starting point, not an inverter: it predicts E[latent |
image], which is shrunk towards the mean, and the optimisation does the rest (:mod:`stages.photo.invert`).

Training streams the stores chunk by chunk (chunks and the rows within them shuffled per epoch by numpy's PCG64
seeded with (seed, epoch)), holds out the last ``val_samples`` samples, writes a checkpoint after every epoch
(model, optimiser, history; atomically) to ``.cache/encoder/<fingerprint>/`` and resumes from it, so a
killed run loses at most one epoch and ends with the same weights. Outputs (``models/encoder/``, a DVC output):
``encoder.pt`` (state dict + architecture + provenance: the generator's fingerprint, the stores it was trained on)
and ``metrics.json`` (per epoch: training loss; validation MSE, R² and cosine of the prediction per space).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError
from torch import nn

from latentatlas.atomic import atomic_write_bytes, atomic_write_json
from latentatlas.errors import LatentAtlasError
from latentatlas.layout import ENCODER_WORK_DIR, IMAGES_STORE, LATENTS_STORE, LOCKS_DIR
from latentatlas.locations import StorePath, store_path
from latentatlas.params import Params
from latentatlas.stores import StoreError, ZarrChunkStore, fingerprint_of, store_lock, store_read_lock
from stages.runtime.device import CPU_THREADS, pinned_threads, resolve_device
from stages.plugins.generators import generator_for
from stages.synthesize import ImageSynthesizer, uint8_to_images

ENCODER_FILE = "encoder.pt"
METRICS_FILE = "metrics.json"
#: Bumped whenever the architecture or the training recipe changes (part of the fingerprint).
ENCODER_VERSION = "cnn-v1"


class EncoderError(LatentAtlasError, ValueError):
    """Bad encoder settings, an encoder file that cannot be read, or one trained for another generator."""


class EncoderSettings(BaseModel):
    """How the encoder is trained (``latentatlas train-encoder`` options)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    epochs: PositiveInt = Field(3, description="passes over the training samples")
    batch_size: PositiveInt = Field(64, description="images per optimisation step")
    learning_rate: float = Field(2e-3, gt=0, description="Adam's peak learning rate (5 % warm-up, cosine decay)")
    width: PositiveInt = Field(32, description="channels of the first conv (doubling per halving, at most 8×)")
    input_size: int = Field(32, ge=8, le=1024, description="side the images are resized to (a power of two)")
    val_samples: PositiveInt = Field(500, description="held-out samples (the last ones) for validation")
    max_train_samples: PositiveInt | None = Field(None, description="use only the first N training samples")
    seed: int = Field(0, ge=0, description="initial weights and shuffling")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto | cpu | cuda | cuda:<k>")

    def model_post_init(self, context: Any) -> None:
        if self.input_size & (self.input_size - 1):
            raise ValueError(f"input_size must be a power of two, got {self.input_size}")


def encoder_settings(**values: Any) -> EncoderSettings:
    """:class:`EncoderSettings` from keyword values, or an EncoderError naming the bad one."""
    try:
        return EncoderSettings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise EncoderError(f"encoder {where}: {first['msg']} (got {first.get('input')!r})") from None


class LatentEncoder(nn.Module):
    """(N, 3, H, W) images in [-1, 1] → ``{space: (N, dim)}`` latent predictions (see the module docstring).

    Args:
        outputs: latent dimension per space, e.g. ``{"z": 100}`` or ``{"z": 512, "w": 512}``.
        input_size: side the images are resized to (a power of two ≥ 8).
        width: channels of the first conv.
    """

    def __init__(self, outputs: dict[str, int], input_size: int = 64, width: int = 32) -> None:
        super().__init__()
        self.outputs = dict(outputs)
        self.input_size = int(input_size)
        self.width = int(width)
        layers: list[nn.Module] = []
        channels, side, c_in = width, input_size, 3
        while side > 4:
            layers += _conv_block(c_in, channels, stride=2)
            side //= 2
            if side < input_size // 2 and side > 4:  # a second conv at the middle resolutions
                layers += _conv_block(channels, channels, stride=1)
            c_in, channels = channels, min(channels * 2, width * 8)
        self.features = nn.Sequential(*layers)
        flat = c_in * side * side
        total = sum(self.outputs.values())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 512), nn.LeakyReLU(0.2), nn.Linear(512, total))
        for space, dim in self.outputs.items():
            self.register_buffer(f"mean_{_buffer_name(space)}", torch.zeros(dim))
            self.register_buffer(f"std_{_buffer_name(space)}", torch.ones(dim))

    def set_target_statistics(self, space: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise the ``space`` targets with these (dim,) statistics."""
        getattr(self, f"mean_{_buffer_name(space)}").copy_(mean)
        getattr(self, f"std_{_buffer_name(space)}").copy_(std.clamp_min(1e-6))

    def standardised(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] → ``{space: (N, dim)}`` standardised predictions (what the loss compares)."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   antialias=images.shape[-1] > self.input_size, align_corners=False)
        flat = self.head(self.features(images))
        out, start = {}, 0
        for space, dim in self.outputs.items():
            out[space] = flat[:, start:start + dim]
            start += dim
        return out

    def standardise(self, space: str, latents: torch.Tensor) -> torch.Tensor:
        name = _buffer_name(space)
        return (latents - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] → ``{space: (N, dim)}`` latents in the generator's units."""
        return {space: value * getattr(self, f"std_{_buffer_name(space)}") + getattr(self, f"mean_{_buffer_name(space)}")
                for space, value in self.standardised(images).items()}


def _buffer_name(space: str) -> str:
    return space.replace("+", "_plus")


def _conv_block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(min(8, c_out), c_out), nn.LeakyReLU(0.2)]


# --------------------------------------------------------------------------------------------------- saved files


@dataclass(frozen=True)
class TrainedEncoder:
    """An encoder loaded from ``encoder.pt`` with what it was trained for."""

    network: LatentEncoder
    generator_fingerprint: str
    meta: dict[str, Any]
    sha256: str


def encoder_payload(network: LatentEncoder, meta: dict[str, Any]) -> bytes:
    """The bytes of ``encoder.pt``: a plain dict of tensors and containers (loads with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save({"format": f"latentatlas-encoder/{ENCODER_VERSION}", "outputs": network.outputs,
                "input_size": network.input_size, "width": network.width,
                "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()}, "meta": meta}, buffer)
    return buffer.getvalue()


def load_encoder(path: Path, generator_fingerprint: str | None = None,
                 device: torch.device | str = "cpu") -> TrainedEncoder:
    """The encoder saved at ``path``, in eval mode on ``device``.

    Args:
        generator_fingerprint: when given, the generator the encoder must have been trained for.

    Raises:
        EncoderError: the file is missing or not an encoder of this version, or was trained for another generator.
    """
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"{path}: no encoder here; train one with `latentatlas train-encoder` (or `dvc repro "
                           f"train-encoder`), or invert without it (--init mean)")
    payload = path.read_bytes()
    try:
        saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        if saved.get("format") != f"latentatlas-encoder/{ENCODER_VERSION}":
            raise KeyError(f"format {saved.get('format')!r}")
        network = LatentEncoder(dict(saved["outputs"]), int(saved["input_size"]), int(saved["width"]))
        network.load_state_dict(saved["state_dict"], strict=True)
        meta = dict(saved["meta"])
    except (KeyError, RuntimeError, TypeError, AttributeError, EOFError, io.UnsupportedOperation) as error:
        raise EncoderError(f"{path}: not a latentatlas encoder of version {ENCODER_VERSION} ({error}); retrain it "
                           f"with `latentatlas train-encoder`") from None
    trained_for = str(meta.get("generator_fingerprint"))
    if generator_fingerprint is not None and trained_for != generator_fingerprint:
        raise EncoderError(f"{path}: trained for generator {trained_for}, but params.yaml's generator is "
                           f"{generator_fingerprint}; retrain it (`latentatlas train-encoder`) or invert without it "
                           f"(--init mean)")
    network.requires_grad_(False)
    return TrainedEncoder(network.eval().to(device), trained_for, meta, hashlib.sha256(payload).hexdigest())


# ------------------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class EpochResult:
    """What one epoch gave: its mean training loss and the validation metrics per space."""

    epoch: int
    train_loss: float
    validation: dict[str, dict[str, float]]
    seconds: float


class EncoderTraining:
    """Training an encoder on the stores of ``data_dir`` (used as a context manager: it holds the output lock and
    the stores' read locks).

    Args:
        params: the run's params (the generator, only to re-synthesize when images were not kept).
        data_dir: folder with ``latents.zarr`` and ``images.zarr``.
        out_dir: where ``encoder.pt`` and ``metrics.json`` go.
        settings: the training settings.
        work_root: where per-fingerprint checkpoint folders go.
        lock_dir: the output's lock folder (never inside ``out_dir``, which DVC hashes).
    """

    def __init__(self, params: Params, data_dir: str | StorePath, out_dir: Path, settings: EncoderSettings,
                 work_root: Path = Path(ENCODER_WORK_DIR), lock_dir: Path = Path(LOCKS_DIR),
                 generator: Any = None) -> None:
        self.params, self.settings = params, settings
        self.data_dir, self.out_dir = store_path(data_dir), Path(out_dir)
        self._exit_stack = contextlib.ExitStack()
        try:
            self._exit_stack.enter_context(store_lock(self.out_dir, lock_dir=lock_dir))
            for name in (LATENTS_STORE, IMAGES_STORE):
                self._exit_stack.enter_context(store_read_lock(self.data_dir / name))
            self.latents = ZarrChunkStore.open(self.data_dir / LATENTS_STORE, "latents", require_complete=True)
            self.images = ZarrChunkStore.open(self.data_dir / IMAGES_STORE, "images", require_complete=True)
        except BaseException:
            self._exit_stack.close()
            raise
        if self.images.info.inputs.get("latents") != self.latents.info.fingerprint:
            self.close()
            raise StoreError(f"{self.images.path} was synthesized from other latents than {self.latents.path}; "
                             f"rerun `dvc repro`")
        self.spaces = [space for space in self.latents.info.details["spaces"] if space != "w+"]
        self.outputs = {space: int(self.latents.arrays[space].shape[1]) for space in self.spaces}
        self.generator_fingerprint = str(self.images.info.inputs.get("generator"))
        self.images_kept = bool(self.images.info.details.get("images_kept"))
        self._generator = generator
        self.device = resolve_device(settings.device)
        n_samples = self.latents.info.n_samples
        self.n_val = min(settings.val_samples, n_samples // 5)
        self.n_train = n_samples - self.n_val
        if settings.max_train_samples is not None:
            self.n_train = min(self.n_train, settings.max_train_samples)
        if self.n_train < 2 or self.n_val < 1:
            self.close()
            raise EncoderError(f"{self.latents.path}: {n_samples} samples are too few to train an encoder (it holds "
                               f"out the last {self.n_val} and needs at least 2 more)")
        self.fingerprint = fingerprint_of({"version": ENCODER_VERSION, "settings": settings.model_dump(mode="json"),
                                           "latents": self.latents.info.fingerprint,
                                           "images": self.images.info.fingerprint,
                                           "device_type": self.device.type, "cpu_threads": CPU_THREADS})
        self.work_dir = Path(work_root) / self.fingerprint
        self._synthesizer: ImageSynthesizer | None = None

    def __enter__(self) -> "EncoderTraining":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._exit_stack.close()

    # -- data ---------------------------------------------------------------------------------------------------
    def chunk_pairs(self, index: int, stop: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rows of chunk ``index`` below sample ``stop``: ((n, 3, R, R) float images in [-1, 1] on the device,
        ``{space: (n, dim)}`` float32 latents on the device)."""
        rows = self.latents.info.chunk_slice(index)
        count = max(0, min(rows.stop, stop) - rows.start)
        latents = {space: torch.from_numpy(np.asarray(self.latents.read_chunk(space, index))[:count]).to(self.device)
                   for space in self.spaces}
        if self.images_kept:
            images = uint8_to_images(np.asarray(self.images.read_chunk("images", index))[:count], self.device)
        else:
            if self._synthesizer is None:
                generator = generator_for(self.params.generator, self._generator)
                self._synthesizer = ImageSynthesizer(generator, self.params.synthesize)
            images = self._synthesizer(np.asarray(self.latents.read_chunk("z", index))[:count]).to(self.device)
        return images.float(), latents

    def validation_pairs(self) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """The held-out samples (the last ``n_val``), chunk by chunk."""
        n_samples = self.latents.info.n_samples
        first = n_samples - self.n_val
        for index in range(self.latents.info.n_chunks):
            rows = self.latents.info.chunk_slice(index)
            if rows.stop <= first:
                continue
            images, latents = self.chunk_pairs(index, n_samples)
            keep = slice(max(0, first - rows.start), None)
            yield images[keep], {space: value[keep] for space, value in latents.items()}

    # -- training -----------------------------------------------------------------------------------------------
    def _new_state(self) -> tuple[LatentEncoder, torch.optim.Optimizer]:
        torch.manual_seed(self.settings.seed)
        network = LatentEncoder(self.outputs, self.settings.input_size, self.settings.width)
        _, first_latents = self.chunk_pairs(0, self.n_train)
        for space, values in first_latents.items():
            network.set_target_statistics(space, values.float().mean(0).cpu(), values.float().std(0).cpu())
        network.to(self.device)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.settings.learning_rate)
        return network, optimizer

    def learning_rate(self, step: int) -> float:
        """Linear warm-up over the first 5 % of the steps, then cosine decay to 0 (by the global step)."""
        total = self.settings.epochs * self.steps_per_epoch
        warmup = max(1, round(0.05 * total))
        if step < warmup:
            return self.settings.learning_rate * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return self.settings.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    @functools.cached_property
    def steps_per_epoch(self) -> int:
        """Optimisation steps of one epoch (batches never straddle chunks)."""
        total = 0
        for index in range(self.latents.info.n_chunks):
            rows = self.latents.info.chunk_slice(index)
            count = max(0, min(rows.stop, self.n_train) - rows.start)
            total += math.ceil(count / self.settings.batch_size)
        return total

    def _checkpoint_path(self) -> Path:
        return self.work_dir / "checkpoint.pt"

    def run(self, on_epoch: Callable[[EpochResult], None] | None = None) -> dict[str, Any]:
        """Train (resuming from the last finished epoch), then write ``encoder.pt`` and ``metrics.json``.

        Returns:
            The metrics written to ``metrics.json``.
        """
        with pinned_threads():
            network, optimizer = self._new_state()
            history: list[dict[str, Any]] = []
            start_epoch = 0
            checkpoint = self._checkpoint_path()
            if checkpoint.is_file():
                saved = torch.load(checkpoint, map_location=self.device, weights_only=True)
                network.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                history, start_epoch = list(saved["history"]), int(saved["epoch"]) + 1
            for epoch in range(start_epoch, self.settings.epochs):
                started = time.perf_counter()
                train_loss = self._train_epoch(network, optimizer, epoch)
                validation = self.validate(network)
                result = EpochResult(epoch, train_loss, validation, time.perf_counter() - started)
                history.append({"epoch": epoch, "train_loss": train_loss, "validation": validation,
                                "seconds": round(result.seconds, 2)})
                buffer = io.BytesIO()
                torch.save({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                            "history": history, "epoch": epoch}, buffer)
                atomic_write_bytes(checkpoint, buffer.getvalue())
                if on_epoch is not None:
                    on_epoch(result)
            metrics = {"fingerprint": self.fingerprint, "generator_fingerprint": self.generator_fingerprint,
                       "n_train": self.n_train, "n_val": self.n_val, "epochs": history,
                       "validation": history[-1]["validation"] if history else {}}
            meta = {"generator_fingerprint": self.generator_fingerprint, "fingerprint": self.fingerprint,
                    "latents_fingerprint": self.latents.info.fingerprint,
                    "images_fingerprint": self.images.info.fingerprint,
                    "settings": self.settings.model_dump(mode="json"), "validation": metrics["validation"]}
            atomic_write_bytes(self.out_dir / ENCODER_FILE, encoder_payload(network, meta))
            atomic_write_json(self.out_dir / METRICS_FILE, metrics)
            return metrics

    def _train_epoch(self, network: LatentEncoder, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        rng = np.random.Generator(np.random.PCG64([self.settings.seed, epoch]))
        network.train()
        total, count = 0.0, 0
        step = epoch * self.steps_per_epoch
        for index in rng.permutation(self.latents.info.n_chunks):
            if self.latents.info.chunk_slice(int(index)).start >= self.n_train:
                continue
            images, latents = self.chunk_pairs(int(index), self.n_train)
            order = torch.from_numpy(rng.permutation(images.shape[0])).to(self.device)
            for start in range(0, len(order), self.settings.batch_size):
                rows = order[start:start + self.settings.batch_size]
                predicted = network.standardised(images[rows])
                loss = sum(F.mse_loss(predicted[space], network.standardise(space, latents[space][rows]))
                           for space in self.spaces) / len(self.spaces)
                for group in optimizer.param_groups:
                    group["lr"] = self.learning_rate(step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                total += float(loss.detach()) * len(rows)
                count += len(rows)
        network.eval()
        return total / max(count, 1)

    @torch.no_grad()
    def validate(self, network: LatentEncoder) -> dict[str, dict[str, float]]:
        """Per space, on the held-out samples: standardised MSE, R² (1 − MSE / variance of the targets) and the
        mean cosine between predicted and true latents."""
        network.eval()
        sums = {space: {"squared_error": 0.0, "cosine": 0.0, "n": 0} for space in self.spaces}
        targets: dict[str, list[torch.Tensor]] = {space: [] for space in self.spaces}
        for images, latents in self.validation_pairs():
            predicted = network(images)
            for space in self.spaces:
                true = latents[space].float()
                standard_error = network.standardise(space, predicted[space]) - network.standardise(space, true)
                sums[space]["squared_error"] += float((standard_error ** 2).mean(1).sum())
                sums[space]["cosine"] += float(F.cosine_similarity(predicted[space], true, dim=1).sum())
                sums[space]["n"] += true.shape[0]
                targets[space].append(network.standardise(space, true))
        result = {}
        for space, values in sums.items():
            standardised_targets = torch.cat(targets[space])
            variance = float(standardised_targets.var(0).mean())
            mse = values["squared_error"] / values["n"]
            result[space] = {"mse": round(mse, 5), "r2": round(1 - mse / max(variance, 1e-12), 5),
                             "cosine": round(values["cosine"] / values["n"], 5)}
        return result


def train_encoder(params: Params, data_dir: str | StorePath, out_dir: Path, settings: EncoderSettings,
                  work_root: Path = Path(ENCODER_WORK_DIR), lock_dir: Path = Path(LOCKS_DIR),
                  on_epoch: Callable[[EpochResult], None] | None = None, generator: Any = None) -> dict[str, Any]:
    """Train the encoder on ``data_dir``'s stores into ``out_dir`` (see :class:`EncoderTraining`)."""
    with EncoderTraining(params, data_dir, out_dir, settings, work_root, lock_dir, generator) as training:
        return training.run(on_epoch)
