"""Latents → images: a generator on a device run in batches (AMP on CUDA, no autograd, optionally compiled), and the
uint8 conversion every store and consumer shares.

**Compiled synthesis** (``synthesize.compile: true``): the generator's ``synthesize`` goes through ``torch.compile``
(TorchInductor: fused C++/OpenMP kernels on the CPU, Triton kernels on CUDA: what replaces NVIDIA's hand-written
CUDA kernels). The first batch pays a one-off compile (tens of seconds to minutes; cached on disk by inductor for
later processes); outputs agree with the eager path within float tolerance, not bit for bit, so a compiled run's
stores have their own fingerprint. Every batch is run at the full ``batch_size`` (a short last batch is padded by
repeating its last latent, the padding dropped), so one compiled graph serves a whole run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from latentatlas.errors import LatentAtlasError
from latentatlas.params import SynthesizeParams
from stages.plugins.generators import Generator
from stages.runtime.chunked import MemoryNeed
from stages.runtime.device import CPU_THREADS, inference_context, resolve_device

#: A generator's ``synthesize``: (latents, space) → (N, 3, R, R) float images.
SynthesizeFn = Callable[[torch.Tensor, str], torch.Tensor]


class CompileUnavailableError(LatentAtlasError, RuntimeError):
    """``synthesize.compile`` was asked for, and torch.compile's backend cannot run on this machine."""


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


def check_compile_backend(device: torch.device, backend: str) -> None:
    """Raise when ``backend`` (``inductor``) cannot generate code for ``device`` here: inductor needs a C++
    compiler for the CPU and Triton for CUDA. Other backends (``eager``, ``aot_eager``: tracing only) need nothing.

    Raises:
        CompileUnavailableError: naming what is missing and how to turn compilation off.
    """
    if backend != "inductor":
        return
    if device.type == "cpu":
        compilers = [os.environ.get("CXX") or "g++", "c++", "clang++"]
        if not any(shutil.which(name) for name in compilers):
            raise CompileUnavailableError(
                "synthesize.compile: torch.compile (inductor) needs a C++ compiler on this "
                "machine for CPU kernels (g++ or clang++, or $CXX); none was found. "
                "Install one, or set synthesize.compile: false"
            )
    elif device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise CompileUnavailableError(
            "synthesize.compile: torch.compile (inductor) needs Triton for CUDA kernels "
            "and it is not installed; install the triton package matching torch, or set "
            "synthesize.compile: false"
        )


def compile_synthesize(generator: Generator, backend: str = "inductor") -> SynthesizeFn:
    """``synthesize`` of ``generator.for_compiler()`` (a generator may offer a form of itself a compiler makes
    faster, equal up to float rounding; else the generator itself) through ``torch.compile``: static shapes; the
    weights frozen into the graph (inductor packs them for the CPU's convolution kernels once); graph breaks
    allowed, so a plugin generator with Python-side branches still runs, only less fused."""
    target = generator.for_compiler() if hasattr(generator, "for_compiler") else generator
    options = {"freezing": True} if backend == "inductor" else None
    return torch.compile(target.synthesize, dynamic=False, backend=backend, options=options)


class ImageSynthesizer:
    """A generator on a device, run in batches: (N, z_dim) latents → (N, 3, R, R) float images in [-1, 1].

    Args:
        generator: the network, moved to ``settings.device``.
        settings: batch size, device, AMP, stored resolution, compile.
        compile_backend: the ``torch.compile`` backend used when ``settings.compile`` (tests trace with ``eager``).
    """

    def __init__(self, generator: Generator, settings: SynthesizeParams, *, compile_backend: str = "inductor") -> None:
        self.device = resolve_device(settings.device)
        self.generator = generator.to(self.device)
        self.batch_size = settings.batch_size
        self.amp = settings.amp and self.device.type == "cuda"
        self.resolution = settings.store_resolution or generator.resolution
        self.compiled = settings.compile
        self.compile_backend = compile_backend
        self._synthesize: SynthesizeFn = generator.synthesize
        if self.compiled:
            check_compile_backend(self.device, compile_backend)
            self._synthesize = compile_synthesize(self.generator, compile_backend)

    def batches(self, latents: np.ndarray | torch.Tensor, space: str = "z") -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, (b, 3, R, R) float images in [-1, 1] on the device) for each batch of ``latents``."""
        latents = torch.as_tensor(latents)
        with inference_context(self.device, self.amp):
            for start in range(0, latents.shape[0], self.batch_size):
                batch = latents[start : start + self.batch_size].to(self.device, non_blocking=True)
                images = self._generate(batch, space).float()
                if images.shape[-1] != self.resolution:
                    images = F.interpolate(
                        images,
                        size=(self.resolution, self.resolution),
                        mode="bilinear",
                        antialias=True,
                        align_corners=False,
                    )
                yield start, images

    def _generate(self, batch: torch.Tensor, space: str) -> torch.Tensor:
        """One batch through the generator; compiled, a short batch is padded to ``batch_size`` (its last latent
        repeated) so that every call has the shape the graph was compiled for, and the padding is dropped."""
        rows = batch.shape[0]
        if not self.compiled or rows == self.batch_size:
            return self._synthesize(batch, space)
        padding = batch[-1:].expand(self.batch_size - rows, *batch.shape[1:])
        return self._synthesize(torch.cat([batch, padding]), space)[:rows]

    def __call__(self, latents: np.ndarray | torch.Tensor, space: str = "z") -> torch.Tensor:
        """(N, z_dim) latents → (N, 3, R, R) float images in [-1, 1] on the device."""
        return torch.cat([images for _, images in self.batches(latents, space)])

    def uint8(self, latents: np.ndarray | torch.Tensor, space: str = "z") -> np.ndarray:
        """(N, z_dim) latents → (N, R, R, 3) uint8 on the host, converted batch by batch on the device (resize,
        clamp, round, uint8, channels last) before the transfer: memory is one uint8 chunk plus one float batch,
        and a quarter of the float bytes cross to the host. Equal to ``images_to_uint8(self(latents))``, element
        for element."""
        pixels = np.empty((len(latents), self.resolution, self.resolution, 3), dtype=np.uint8)
        for start, images in self.batches(latents, space):
            pixels[start : start + images.shape[0]] = images_to_uint8(images)
        return pixels

    def memory_needs(self, n_latents: int) -> list[MemoryNeed]:
        """The buffers on the device while ``n_latents`` latents are synthesized batch by batch: the generator's
        float output of one batch, and that batch resized to the stored resolution (its activations come on
        top)."""
        batch = min(self.batch_size, n_latents)
        native = self.generator.resolution
        needs = [MemoryNeed("generator batch", batch, (3, native, native), "float32", str(self.device))]
        if native != self.resolution:
            needs.append(
                MemoryNeed("resized batch", batch, (3, self.resolution, self.resolution), "float32", str(self.device))
            )
        return needs

    def fingerprint_inputs(self) -> dict:
        inputs = {
            "generator": self.generator.fingerprint,
            "resolution": self.resolution,
            "batch_size": self.batch_size,
            "amp": self.amp,
            "device_type": self.device.type,
            "cpu_threads": CPU_THREADS,
        }
        if self.compiled:  # only when on: the default stores keep their fingerprints (and bytes)
            inputs["compiled"] = f"torch.compile/{self.compile_backend}/torch-{torch.__version__}"
        return inputs
