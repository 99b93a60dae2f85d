"""Stage 1, sample: z ~ N(0, I), chunk by chunk, each chunk reproducible on its own.

Chunk i draws from numpy's PCG64 seeded with the pair (seed, i), so any chunk can be regenerated alone and the
result does not depend on worker count or order. Store ``latents.zarr``: array ``z`` (N, z_dim) float32, plus one
array per extra latent space of the generator (e.g. ``w`` (N, w_dim) for a mapping network), one Zarr chunk per
pipeline chunk.
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentatlas.layout import LATENTS_STORE
from latentatlas.params import Params
from latentatlas.stores import ArraySpec, StoreInfo, ZarrChunkStore
from stages.latent.streams import sample_latents_z
from stages.plugins.generators import Generator, generator_for
from stages.runtime.chunked import ChunkedStage, MemoryNeed
from stages.runtime.device import CPU_THREADS, inference_context, resolve_device


class SampleStage(ChunkedStage):
    name = "sample"

    def __init__(
        self, params: Params, data_dir: Path, generator: Generator | None = None, *, attach: str | None = None
    ) -> None:
        """``attach``: worker mode (the driver's store fingerprint), see
        :class:`stages.runtime.chunked.ChunkedStage`."""
        super().__init__(params, data_dir, attach=attach, injected=generator is not None)
        self.generator = generator_for(params.generator, generator)
        # Stored: z and every space `map` gives (w); W+ is w repeated per layer, never stored.
        self.extra_spaces = [space for space in self.generator.latent_spaces if space not in ("z", "w+")]
        self.device = resolve_device(params.synthesize.device)
        if self.extra_spaces:
            self.generator.to(self.device)
        path = self.data_dir / LATENTS_STORE
        arrays = {"z": ArraySpec((self.generator.z_dim,), "float32", ("sample", "z_dim"))}
        inputs = {
            "stage": "sample",
            "generator": params.generator.name,
            "z_dim": self.generator.z_dim,
            "seed": params.sample.seed,
            "spaces": ["z", *self.extra_spaces],
        }
        if self.extra_spaces:
            # w = mapping(z) depends on the weights and on the device's arithmetic.
            inputs |= {
                "generator_fingerprint": self.generator.fingerprint,
                "device_type": self.device.type,
                "cpu_threads": CPU_THREADS,
            }
            probe = self.generator.map(torch.zeros(1, self.generator.z_dim, device=self.device))
            for space in self.extra_spaces:
                arrays[space] = ArraySpec((probe[space].shape[1],), "float32", ("sample", f"{space}_dim"))
        info = StoreInfo(
            "latents",
            inputs,
            params.sample.n_samples,
            params.sample.chunk_size,
            details={"spaces": ["z", *self.extra_spaces]},
        )
        rows = min(info.chunk_size, info.n_samples)
        # Zarr holds a whole chunk (chunk_size rows, even past N) of each array while it encodes it.
        needs = [
            MemoryNeed(
                f"{LATENTS_STORE} chunk" + (f" ({space})" if len(arrays) > 1 else ""),
                info.chunk_size,
                spec.tail_shape,
                spec.dtype,
            )
            for space, spec in arrays.items()
        ]
        needs += [
            MemoryNeed(f"the chunk's {space}", rows, spec.tail_shape, spec.dtype) for space, spec in arrays.items()
        ]
        needs += [
            MemoryNeed(f"the chunk's {space} as mapped", rows, arrays[space].tail_shape, "float32", str(self.device))
            for space in self.extra_spaces
        ]
        keys = "sample.chunk_size"
        if info.chunk_size > info.n_samples:
            keys += f" (above sample.n_samples, {info.n_samples}, it only pads the one chunk)"
        self.store: ZarrChunkStore = self._open_output(ZarrChunkStore, path, info, arrays=arrays, memory=(needs, keys))

    def run_chunk(self, index: int) -> None:
        latents_z = sample_latents_z(self.params.sample.seed, index, self.chunk_length(index), self.generator.z_dim)
        values = {"z": latents_z}
        if self.extra_spaces:
            with inference_context(self.device, amp=False):
                mapped = self.generator.map(torch.from_numpy(latents_z).to(self.device))
            values |= {space: mapped[space].float().cpu().numpy() for space in self.extra_spaces}
        self.store.write_chunk(index, values)
