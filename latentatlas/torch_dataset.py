"""A ``torch.utils.data.Dataset`` over a run's stores (a :class:`~latentatlas.dataset.LatentDataset` opens it with
``torch_dataset``), reading one chunk at a time. It needs only :class:`ChunkSource` of the dataset, so this module
never imports the reader back (torch stays out of ``from latentatlas import dataset``)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from latentatlas.stores import ParquetChunkStore, StoreError, ZarrChunkStore


class ChunkSource(Protocol):
    """What the torch dataset reads: a run's three stores, checked chunk by chunk."""

    n_samples: int
    has_images: bool
    latents_store: ZarrChunkStore
    labels_store: ParquetChunkStore
    images_store: ZarrChunkStore

    def latents(self, space: str) -> object:
        """Validates ``space`` (raises for a space the run did not store)."""
        ...

    def check_chunk(self, index: int) -> None:
        """Raises when chunk ``index`` of any store does not match its records and lineage."""
        ...


class LatentTorchDataset(Dataset):
    """Items ``{"sample_id": int, <space>: (dim,) float32, "labels": (A,) float32[, "image": (3, R, R) in [-1, 1]]}``.

    Reads whole store chunks and keeps the last one, so sequential or chunk-local access (a sampler over shuffled
    chunks) costs one read per chunk; memory stays at one chunk. Safe with ``num_workers > 0`` (each worker has
    its own cache).
    """

    def __init__(self, source: ChunkSource, attributes: list[str], space: str, images: bool) -> None:
        self.source = source
        self.attributes = attributes
        self.space = space
        self.images = images
        if images and not source.has_images:
            raise ValueError("images=True, but this run did not keep images (synthesize.keep_images: false)")
        source.latents(space)  # validates the space
        self.chunk_size = source.latents_store.info.chunk_size
        self._cached_index: int | None = None
        self._cached: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.source.n_samples

    def _chunk(self, index: int) -> dict[str, np.ndarray]:
        if index != self._cached_index:
            self.source.check_chunk(index)  # records and lineage; the reads below check the checksums
            table = self.source.labels_store.read_chunk(index)
            rows = self.source.labels_store.info.chunk_slice(index)
            sample_ids = table.column("sample_id").to_numpy()
            if not np.array_equal(sample_ids, np.arange(rows.start, rows.stop)):
                raise StoreError(
                    f"{self.source.labels_store.part_path(index)}: holds sample_id "
                    f"{sample_ids[0]}..{sample_ids[-1]}, but chunk {index} is rows {rows.start}.."
                    f"{rows.stop - 1}; the labels store was altered: rerun `latentatlas label`"
                )
            chunk = {
                "latents": self.source.latents_store.read_chunk(self.space, index),
                "labels": np.stack([table.column(name).to_numpy() for name in self.attributes], axis=1),
            }
            if self.images:
                chunk["images"] = self.source.images_store.read_chunk("images", index)
            self._cached_index, self._cached = index, chunk
        return self._cached

    def __getitem__(self, sample_id: int) -> dict[str, torch.Tensor | int]:
        if not 0 <= sample_id < len(self):
            raise IndexError(f"sample_id {sample_id} out of range 0..{len(self) - 1}")
        chunk = self._chunk(sample_id // self.chunk_size)
        row = sample_id % self.chunk_size
        item: dict[str, torch.Tensor | int] = {
            "sample_id": sample_id,
            self.space: torch.from_numpy(chunk["latents"][row].copy()),
            "labels": torch.from_numpy(chunk["labels"][row].astype(np.float32)),
        }
        if self.images:
            item["image"] = torch.from_numpy(chunk["images"][row].copy()).permute(2, 0, 1).float() / 127.5 - 1.0
        return item
