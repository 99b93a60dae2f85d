"""Read a labeled latent dataset: latents (Zarr) joined with labels (Parquet) by ``sample_id``.

    >>> from latentatlas import dataset
    >>> data = dataset.open("data")
    >>> data.attributes                      # ['angry', ..., 'happy', ..., 'age', 'male', 'yaw', ...]
    >>> latents_z, scores = data.arrays(["happy", "age"])           # (N, 100) float32, (N, 2) float32
    >>> frame = data.labels_frame()          # pandas, one row per sample, indexed by sample_id
    >>> torch_data = data.torch_dataset(["happy"], images=True)     # items: {"z", "labels", "image"}

Only complete stores open, and only when the labels were computed from these latents (fingerprints checked).
Nothing loads all N rows unless asked: ``arrays`` reads chunk by chunk into one output array, and the torch dataset
reads one chunk at a time and caches it.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from latentatlas.layout import IMAGES_STORE, LABELS_STORE, LATENTS_STORE
from latentatlas.locations import StorePath, arrow_source, store_path
from latentatlas.stores import ParquetChunkStore, StoreError, ZarrChunkStore


class LatentDataset:
    """Latents, (optionally) images and labels of one pipeline run, aligned by ``sample_id`` = row index."""

    def __init__(self, data_dir: str | StorePath) -> None:
        self.data_dir = store_path(data_dir)
        self.latents_store = ZarrChunkStore.open(self.data_dir / LATENTS_STORE, "latents", require_complete=True)
        self.images_store = ZarrChunkStore.open(self.data_dir / IMAGES_STORE, "images", require_complete=True)
        self.labels_store = ParquetChunkStore.open(self.data_dir / LABELS_STORE, "labels", require_complete=True)
        if self.images_store.info.inputs.get("latents") != self.latents_store.info.fingerprint:
            raise StoreError(f"{self.images_store.path} was synthesized from other latents than "
                             f"{self.latents_store.path}; rerun `dvc repro`")
        if self.labels_store.info.inputs.get("images") != self.images_store.info.fingerprint:
            raise StoreError(f"{self.labels_store.path} was computed from other images than "
                             f"{self.images_store.path}; rerun `dvc repro`")

    @property
    def n_samples(self) -> int:
        return self.latents_store.info.n_samples

    @property
    def spaces(self) -> list[str]:
        return list(self.latents_store.info.details["spaces"])

    @property
    def attributes(self) -> list[str]:
        return list(self.labels_store.info.details["attributes"])

    @property
    def has_images(self) -> bool:
        return bool(self.images_store.info.details.get("images_kept"))

    def latents(self, space: str = "z"):
        """The (N, dim) Zarr array of latent space ``space`` (lazy: index it to read)."""
        if space not in self.spaces:
            raise KeyError(f"latent space {space!r} not stored; available: {self.spaces}")
        return self.latents_store.arrays[space]

    def images(self):
        """The (N, R, R, 3) uint8 Zarr array of images (lazy)."""
        if not self.has_images:
            raise StoreError(f"{self.images_store.path}: images were not kept (synthesize.keep_images: false)")
        return self.images_store.arrays["images"]

    def labels_table(self) -> pads.Dataset:
        """The labels as a ``pyarrow.dataset`` (lazy, columnar; filter and project before reading)."""
        source, filesystem = arrow_source(self.labels_store.path)
        return pads.dataset(source, format="parquet", filesystem=filesystem)

    def labels_frame(self, attributes: Sequence[str] | None = None) -> pd.DataFrame:
        """Labels as pandas, indexed by ``sample_id`` and sorted by it."""
        columns = ["sample_id", *self._check_attributes(attributes)]
        frame = self.labels_table().to_table(columns=columns).to_pandas()
        return frame.set_index("sample_id").sort_index()

    def arrays(self, attributes: Sequence[str] | None = None, space: str = "z") -> tuple[np.ndarray, np.ndarray]:
        """(N, dim) float32 latents and (N, A) float32 scores of ``attributes``, rows aligned by sample_id."""
        attributes = self._check_attributes(attributes)
        latents = np.empty(self.latents(space).shape, dtype=np.float32)
        scores = np.empty((self.n_samples, len(attributes)), dtype=np.float32)
        for index in range(self.labels_store.info.n_chunks):
            rows = self.labels_store.info.chunk_slice(index)
            latents[rows] = self.latents_store.read_chunk(space, index)
            table = self.labels_store.read_chunk(index)
            if not np.array_equal(table.column("sample_id").to_numpy(), np.arange(rows.start, rows.stop)):
                raise StoreError(f"{self.labels_store.part_path(index)}: sample_id does not match its chunk rows")
            scores[rows] = np.stack([table.column(name).to_numpy() for name in attributes], axis=1) \
                if attributes else np.empty((rows.stop - rows.start, 0), np.float32)
        return latents, scores

    def torch_dataset(self, attributes: Sequence[str] | None = None, space: str = "z", images: bool = False):
        """A ``torch.utils.data.Dataset`` of ``{"sample_id", space, "labels"[, "image"]}`` items."""
        from latentatlas.torch_dataset import LatentTorchDataset

        return LatentTorchDataset(self, self._check_attributes(attributes), space, images)

    def _check_attributes(self, attributes: Sequence[str] | None) -> list[str]:
        if attributes is None:
            return self.attributes
        unknown = [name for name in attributes if name not in self.attributes]
        if unknown:
            raise KeyError(f"attributes {unknown} are not in the labels; available: {self.attributes}")
        return builtins.list(attributes)


def open(data_dir: str | Path = "data") -> LatentDataset:  # noqa: A001 (mirrors zarr.open / xr.open_dataset)
    """Open the labeled latent dataset under ``data_dir`` (what ``dvc repro`` wrote).

    Raises:
        StoreError: a store is missing, incomplete, foreign, or from another upstream run.
    """
    return LatentDataset(store_path(data_dir))
