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
from stages.runtime.chunked import ChunkedStage, MemoryNeed
from stages.runtime.device import CPU_THREADS, inference_context, resolve_device
from stages.plugins.generators.synthesis import ImageSynthesizer
from stages.plugins.generators import Generator, generator_for


class SynthesizeStage(ChunkedStage):
    name = "synthesize"

    def __init__(self, params: Params, data_dir: Path, generator: Generator | None = None, *,
                 attach: str | None = None) -> None:
        """``attach``: worker mode (the driver's store fingerprint), see :class:`stages.runtime.chunked.ChunkedStage`."""
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
