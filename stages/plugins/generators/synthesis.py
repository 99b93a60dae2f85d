"""Latents → images: a generator on a device run in batches (AMP on CUDA, no autograd), and the uint8 conversion
every store and consumer shares."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from latentatlas.params import SynthesizeParams
from stages.plugins.generators import Generator
from stages.runtime.chunked import MemoryNeed
from stages.runtime.device import CPU_THREADS, inference_context, resolve_device


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
