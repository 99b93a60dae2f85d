"""Stage 2, synthesize: latents → images, batched, no autograd, AMP on CUDA, stored as uint8.

Store ``images.zarr``: array ``images`` (N, R, R, 3) uint8 RGB at ``store_resolution`` R, one Zarr chunk per
pipeline chunk. With ``keep_images: false`` the store holds no array, only its fingerprint; the label stage then
synthesizes each chunk again and scores the generator's float output directly (for runs where N images would not
fit on disk).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentatlas.layout import IMAGES_STORE, LATENTS_STORE
from latentatlas.params import Params, SynthesizeParams
from latentatlas.stores import ArraySpec, StoreInfo, ZarrChunkStore
from stages.chunked import ChunkedStage, MemoryNeed
from stages.device import CPU_THREADS, inference_context, resolve_device
from stages.generators import Generator, generator_for

def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] → (N, H, W, 3) uint8 (round to nearest, clamped)."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def uint8_to_images(pixels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [-1, 1] on ``device``."""
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    return tensor.permute(0, 3, 1, 2).float() / 127.5 - 1.0


class ImageSynthesizer:
    """A generator on a device, run in batches: (N, z_dim) latents → (N, 3, R, R) float images in [-1, 1]."""

    def __init__(self, generator: Generator, settings: SynthesizeParams) -> None:
        self.device = resolve_device(settings.device)
        self.generator = generator.to(self.device)
        self.batch_size = settings.batch_size
        self.amp = settings.amp and self.device.type == "cuda"
        self.resolution = settings.store_resolution or generator.resolution

    def batches(self, latents: np.ndarray | torch.Tensor, space: str = "z") -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, (b, 3, R, R) float images in [-1, 1] on the device) for each batch of ``latents``."""
        latents = torch.as_tensor(latents)
        with inference_context(self.device, self.amp):
            for start in range(0, latents.shape[0], self.batch_size):
                batch = latents[start:start + self.batch_size].to(self.device, non_blocking=True)
                images = self.generator.synthesize(batch, space=space).float()
                if images.shape[-1] != self.resolution:
                    images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear",
                                           antialias=True, align_corners=False)
                yield start, images

    def __call__(self, latents: np.ndarray | torch.Tensor, space: str = "z") -> torch.Tensor:
        """(N, z_dim) latents → (N, 3, R, R) float images in [-1, 1] on the device."""
        return torch.cat([images for _, images in self.batches(latents, space)])

    def uint8(self, latents: np.ndarray | torch.Tensor, space: str = "z") -> np.ndarray:
        """(N, z_dim) latents → (N, R, R, 3) uint8 on the host, converted batch by batch: memory is one uint8
        chunk plus one float batch, not the whole chunk in float (4× its bytes, times the conversion's temporaries).
        Equal to ``images_to_uint8(self(latents))``, element for element."""
        pixels = np.empty((len(latents), self.resolution, self.resolution, 3), dtype=np.uint8)
        for start, images in self.batches(latents, space):
            pixels[start:start + images.shape[0]] = images_to_uint8(images)
        return pixels

    def memory_needs(self, n_latents: int) -> list[MemoryNeed]:
        """The buffers on the device while ``n_latents`` latents are synthesized batch by batch: the generator's
        float output of one batch, and that batch resized to the stored resolution (its activations come on
        top)."""
        batch = min(self.batch_size, n_latents)
        native = self.generator.resolution
        needs = [MemoryNeed("generator batch", batch, (3, native, native), "float32", str(self.device))]
        if native != self.resolution:
            needs.append(MemoryNeed("resized batch", batch, (3, self.resolution, self.resolution), "float32",
                                    str(self.device)))
        return needs

    def fingerprint_inputs(self) -> dict:
        return {"generator": self.generator.fingerprint, "resolution": self.resolution,
                "batch_size": self.batch_size, "amp": self.amp, "device_type": self.device.type,
                "cpu_threads": CPU_THREADS}


class SynthesizeStage(ChunkedStage):
    name = "synthesize"

    def __init__(self, params: Params, data_dir: Path, generator: Generator | None = None, *,
                 attach: str | None = None) -> None:
        """``attach``: worker mode (the driver's store fingerprint), see :class:`stages.chunked.ChunkedStage`."""
        super().__init__(params, data_dir, attach=attach, injected=generator is not None)
        self.latents: ZarrChunkStore = self._open_input(ZarrChunkStore, self.data_dir / LATENTS_STORE, "latents")
        self.synthesizer = ImageSynthesizer(generator_for(params.generator, generator), params.synthesize)
        self.keep_images = params.synthesize.keep_images
        resolution = self.synthesizer.resolution
        arrays = {"images": ArraySpec((resolution, resolution, 3), "uint8", ("sample", "y", "x", "rgb"))}
        inputs = {"stage": "synthesize", "latents": self.latents.info.fingerprint, "keep_images": self.keep_images,
                  **self.synthesizer.fingerprint_inputs()}
        latents_info = self.latents.info
        info = StoreInfo("images", inputs, latents_info.n_samples, latents_info.chunk_size,
                         details={"images_kept": self.keep_images, "resolution": resolution,
                                  "generator": params.generator.name})
        path = self.data_dir / IMAGES_STORE
        needs: list[MemoryNeed] = []
        if self.keep_images:  # else no chunk is computed here (the label stage synthesizes them)
            rows = min(latents_info.chunk_size, latents_info.n_samples)
            z_shape = tuple(self.latents.arrays["z"].shape[1:])
            needs = [MemoryNeed(f"{LATENTS_STORE} chunk", latents_info.chunk_size, z_shape, "float32"),
                     MemoryNeed("the chunk's pixels", rows, arrays["images"].tail_shape, "uint8"),
                     MemoryNeed(f"{IMAGES_STORE} chunk", latents_info.chunk_size, arrays["images"].tail_shape,
                                "uint8"),
                     *self.synthesizer.memory_needs(rows)]
        self.store: ZarrChunkStore = self._open_output(
            ZarrChunkStore, path, info, arrays=arrays if self.keep_images else {},
            memory=(needs, "sample.chunk_size, synthesize.batch_size or synthesize.store_resolution"))

    def run_chunk(self, index: int) -> None:
        self.store.write_chunk(index, {"images": self.synthesizer.uint8(self.latents.read_chunk("z", index))},
                               upstream=self.upstream_of(index))
