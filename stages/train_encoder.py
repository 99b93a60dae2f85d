"""Stage train-encoder: train the photo encoder (:mod:`stages.photo.encoder`) on the run's own (image, latent) pairs.

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

from latentatlas.atomic import atomic_write_bytes, atomic_write_json
from latentatlas.layout import ENCODER_WORK_DIR, IMAGES_STORE, LATENTS_STORE, LOCKS_DIR
from latentatlas.locations import StorePath, store_path
from latentatlas.params import Params
from latentatlas.stores import StoreError, ZarrChunkStore, fingerprint_of, store_lock, store_read_lock
from stages.photo.encoder import (
    ENCODER_FILE,
    ENCODER_VERSION,
    METRICS_FILE,
    EncoderError,
    EncoderSettings,
    LatentEncoder,
    encoder_payload,
)
from stages.plugins.generators import generator_for
from stages.plugins.generators.synthesis import ImageSynthesizer, uint8_to_images
from stages.runtime.device import CPU_THREADS, pinned_threads, resolve_device


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

    def __init__(
        self,
        params: Params,
        data_dir: str | StorePath,
        out_dir: Path,
        settings: EncoderSettings,
        work_root: Path = Path(ENCODER_WORK_DIR),
        lock_dir: Path = Path(LOCKS_DIR),
        generator: Any = None,
    ) -> None:
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
            raise StoreError(
                f"{self.images.path} was synthesized from other latents than {self.latents.path}; rerun `dvc repro`"
            )
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
            raise EncoderError(
                f"{self.latents.path}: {n_samples} samples are too few to train an encoder (it holds "
                f"out the last {self.n_val} and needs at least 2 more)"
            )
        self.fingerprint = fingerprint_of(
            {
                "version": ENCODER_VERSION,
                "settings": settings.model_dump(mode="json"),
                "latents": self.latents.info.fingerprint,
                "images": self.images.info.fingerprint,
                "device_type": self.device.type,
                "cpu_threads": CPU_THREADS,
            }
        )
        self.work_dir = Path(work_root) / self.fingerprint
        self._synthesizer: ImageSynthesizer | None = None

    def __enter__(self) -> EncoderTraining:
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
        latents = {
            space: torch.from_numpy(np.asarray(self.latents.read_chunk(space, index))[:count]).to(self.device)
            for space in self.spaces
        }
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
                history.append(
                    {
                        "epoch": epoch,
                        "train_loss": train_loss,
                        "validation": validation,
                        "seconds": round(result.seconds, 2),
                    }
                )
                buffer = io.BytesIO()
                torch.save(
                    {
                        "model": network.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "history": history,
                        "epoch": epoch,
                    },
                    buffer,
                )
                atomic_write_bytes(checkpoint, buffer.getvalue())
                if on_epoch is not None:
                    on_epoch(result)
            metrics = {
                "fingerprint": self.fingerprint,
                "generator_fingerprint": self.generator_fingerprint,
                "n_train": self.n_train,
                "n_val": self.n_val,
                "epochs": history,
                "validation": history[-1]["validation"] if history else {},
            }
            meta = {
                "generator_fingerprint": self.generator_fingerprint,
                "fingerprint": self.fingerprint,
                "latents_fingerprint": self.latents.info.fingerprint,
                "images_fingerprint": self.images.info.fingerprint,
                "settings": self.settings.model_dump(mode="json"),
                "validation": metrics["validation"],
            }
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
                rows = order[start : start + self.settings.batch_size]
                predicted = network.standardised(images[rows])
                loss = sum(
                    F.mse_loss(predicted[space], network.standardise(space, latents[space][rows]))
                    for space in self.spaces
                ) / len(self.spaces)
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
                sums[space]["squared_error"] += float((standard_error**2).mean(1).sum())
                sums[space]["cosine"] += float(F.cosine_similarity(predicted[space], true, dim=1).sum())
                sums[space]["n"] += true.shape[0]
                targets[space].append(network.standardise(space, true))
        result = {}
        for space, values in sums.items():
            standardised_targets = torch.cat(targets[space])
            variance = float(standardised_targets.var(0).mean())
            mse = values["squared_error"] / values["n"]
            result[space] = {
                "mse": round(mse, 5),
                "r2": round(1 - mse / max(variance, 1e-12), 5),
                "cosine": round(values["cosine"] / values["n"], 5),
            }
        return result


def train_encoder(
    params: Params,
    data_dir: str | StorePath,
    out_dir: Path,
    settings: EncoderSettings,
    work_root: Path = Path(ENCODER_WORK_DIR),
    lock_dir: Path = Path(LOCKS_DIR),
    on_epoch: Callable[[EpochResult], None] | None = None,
    generator: Any = None,
) -> dict[str, Any]:
    """Train the encoder on ``data_dir``'s stores into ``out_dir`` (see :class:`EncoderTraining`)."""
    with EncoderTraining(params, data_dir, out_dir, settings, work_root, lock_dir, generator) as training:
        return training.run(on_epoch)
