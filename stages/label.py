"""Stage 3, label: score every image with the labeler suite; one Parquet file per chunk.

Store ``labels/``: ``part-00000.parquet``… with columns ``sample_id`` (int64) and one float32 column per attribute;
each file's schema metadata names the labeler, its fingerprint and the store's fingerprint. ``pyarrow.dataset``,
pandas and DuckDB read the folder as one table. Also writes ``contact_sheet.png``: the first samples with their
labels drawn under them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from latentatlas.layout import CONTACT_SHEET, IMAGES_STORE, LABELS_STORE, LATENTS_STORE
from latentatlas.params import Params
from latentatlas.stores import ParquetChunkStore, StoreInfo, ZarrChunkStore
from stages.plugins.generators import Generator, generator_for
from stages.plugins.generators.synthesis import ImageSynthesizer, images_to_uint8, uint8_to_images
from stages.plugins.labelers import Labeler, labeler_for
from stages.plugins.labelers.base import labeler_members, reads_sample_ids
from stages.plugins.labelers.scoring import check_sample_ids, score_samples
from stages.reporting.contact_sheet import render_contact_sheet, write_contact_sheet
from stages.runtime.chunked import ChunkedStage, MemoryNeed
from stages.runtime.device import CPU_THREADS, inference_context, resolve_device


class LabelStage(ChunkedStage):
    name = "label"

    def __init__(
        self,
        params: Params,
        data_dir: Path,
        labeler: Labeler | None = None,
        generator: Generator | None = None,
        *,
        attach: str | None = None,
    ) -> None:
        """``attach``: worker mode (the driver's store fingerprint), see
        :class:`stages.runtime.chunked.ChunkedStage`."""
        super().__init__(params, data_dir, attach=attach, injected=labeler is not None or generator is not None)
        self.images: ZarrChunkStore = self._open_input(ZarrChunkStore, self.data_dir / IMAGES_STORE, "images")
        self.images_kept = bool(self.images.info.details.get("images_kept"))
        self.synthesizer: ImageSynthesizer | None = None
        if not self.images_kept:  # label straight from the generator's output
            self.latents: ZarrChunkStore = self._open_input(ZarrChunkStore, self.data_dir / LATENTS_STORE, "latents")
            self.synthesizer = ImageSynthesizer(generator_for(params.generator, generator), params.synthesize)
        else:  # the images were made from the latents: no sample rerun may change them while these are labeled
            self._read_lock(self.data_dir / LATENTS_STORE)
        self.device = resolve_device(params.label.device)
        self.labeler = labeler_for(params.label, labeler).to(self.device)
        self.attributes = list(self.labeler.attributes)
        check_sample_ids(self.labeler, self.images.info.n_samples)  # labels looked up by id: all N, no other
        inputs = {
            "stage": "label",
            "images": self.images.info.fingerprint,
            "labeler": params.label.labeler,
            "labeler_fingerprint": self.labeler.fingerprint,
            "attributes": self.attributes,
            "batch_size": params.label.batch_size,
            "device_type": self.device.type,
            "cpu_threads": CPU_THREADS,
        }
        info = StoreInfo(
            "labels",
            inputs,
            self.images.info.n_samples,
            self.images.info.chunk_size,
            details={"attributes": self.attributes, "labeler": params.label.labeler},
        )
        path = self.data_dir / LABELS_STORE
        self.store: ParquetChunkStore = self._open_output(
            ParquetChunkStore, path, info, memory=self._memory_needs(info)
        )
        self.schema = pa.schema(
            [("sample_id", pa.int64())] + [(name, pa.float32()) for name in self.attributes],
            metadata={
                "latentatlas.labeler": params.label.labeler,
                "latentatlas.labeler_fingerprint": self.labeler.fingerprint,
                "latentatlas.store_fingerprint": info.fingerprint,
            },
        )

    def _memory_needs(self, info: StoreInfo) -> tuple[list[MemoryNeed], str]:
        """The buffers one chunk needs at once (:func:`stages.runtime.chunked.check_memory`) and the params that size
        them: the chunk's images (read from the store, or synthesized again) as float on the device, and the labeler's
        batch; none when every labeler looks its scores up by sample id."""
        if all(reads_sample_ids(member) for member in labeler_members(self.labeler)):
            return [], "sample.chunk_size"
        rows = min(info.chunk_size, info.n_samples)
        side = int(self.images.info.details["resolution"])  # what the images store holds, or would
        float_image = (3, side, side)
        device = str(self.device)
        if self.synthesizer is None:
            needs = [MemoryNeed(f"{IMAGES_STORE} chunk", info.chunk_size, (side, side, 3), "uint8")]
            keys = "sample.chunk_size or label.batch_size"
        else:
            synthesizer_device = str(self.synthesizer.device)
            z_shape = tuple(self.latents.arrays["z"].shape[1:])
            needs = [
                MemoryNeed(f"{LATENTS_STORE} chunk", info.chunk_size, z_shape, "float32"),
                *self.synthesizer.memory_needs(rows),
                MemoryNeed("the chunk's synthesized batches", rows, float_image, "float32", synthesizer_device),
            ]
            keys = "sample.chunk_size, label.batch_size, synthesize.batch_size or synthesize.store_resolution"
        needs += [
            MemoryNeed("the chunk's float images", rows, float_image, "float32", device),
            MemoryNeed("labeler batch", min(self.params.label.batch_size, rows), float_image, "float32", device),
        ]
        return needs, keys

    def images_for_chunk(self, index: int, limit: int | None = None) -> torch.Tensor:
        """(n, 3, R, R) float images in [-1, 1] of chunk ``index`` (its first ``limit`` rows), on the device."""
        rows = self.store.info.chunk_slice(index)
        stop = rows.stop if limit is None else min(rows.stop, rows.start + limit)
        if self.synthesizer is not None:
            return self.synthesizer(self.latents.arrays["z"][rows.start : stop]).to(self.device)
        return uint8_to_images(self.images.arrays["images"][rows.start : stop], self.device)

    def run_chunk(self, index: int) -> None:
        rows = self.store.info.chunk_slice(index)
        sample_ids = np.arange(rows.start, rows.stop, dtype=np.int64)
        with inference_context(self.device, amp=False):
            scores = score_samples(
                self.labeler, sample_ids, lambda: self.images_for_chunk(index), self.params.label.batch_size
            )
        columns = [pa.array(sample_ids)]
        columns += [pa.array(scores[:, k]) for k in range(len(self.attributes))]
        self.store.write_chunk(
            index, pa.Table.from_arrays(columns, schema=self.schema), upstream=self.upstream_of(index)
        )

    def finish(self) -> None:
        """Write the contact sheet, then mark the store complete: labels whose sheet could not be written (a full
        disk) stay incomplete, and the rerun writes it."""
        if not self.attached and not self.store.pending_chunks():
            self.write_contact_sheet()
        super().finish()

    def write_contact_sheet(self) -> None:
        """``contact_sheet.png``: the first samples of chunk 0 with their labels.

        Raises:
            StoreError: it cannot be written (no space, no permission), in one line.
        """
        n_sheet = min(self.params.label.contact_sheet_samples, self.store.info.chunk_size, self.store.info.n_samples)
        if n_sheet == 0:
            return
        images = self.images_for_chunk(0, limit=n_sheet)
        table = self.store.read_chunk(0).slice(0, n_sheet)
        scores = np.stack([table.column(name).to_numpy() for name in self.attributes], axis=1)
        sheet = render_contact_sheet(
            images_to_uint8(images), table.column("sample_id").to_pylist(), self.attributes, scores
        )
        write_contact_sheet(self.data_dir / CONTACT_SHEET, sheet, what="the contact sheet")
