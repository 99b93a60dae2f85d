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

Every chunk read is checked (``verify=True``, the default): each file against its record (missing, wrong size or
damaged chunks raise :class:`~latentatlas.stores.StoreError` naming the store and chunk, never read as zeros), and
each chunk's lineage: the labels of chunk i were computed from the images of chunk i, those from the latents of
chunk i, as they are now, and no store was rebuilt since the dataset was opened. ``verify=False`` skips the
checksums and lineage checks (a missing chunk still raises).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from latentatlas.layout import IMAGES_STORE, LABELS_STORE, LATENTS_STORE
from latentatlas.locations import StorePath, arrow_source, store_path
from latentatlas.stores import ChunkedStore, ParquetChunkStore, StoreError, ZarrChunkStore, store_read_lock


class LatentDataset:
    """Latents, (optionally) images and labels of one pipeline run, aligned by ``sample_id`` = row index.

    Args:
        data_dir: the folder (or object-store URL) holding the stores.
        verify: check every chunk read against its record and its lineage (see the module).
        read_lock: hold the three stores read-locked until :meth:`close` (stages reading them do), so no run
            rewrites them meanwhile; a run writing one now makes opening fail, naming its pid.
    """

    def __init__(self, data_dir: str | StorePath, verify: bool = True, read_lock: bool = False) -> None:
        self.data_dir = store_path(data_dir)
        self.verify = verify
        self._locks = contextlib.ExitStack()
        try:
            if read_lock:
                for name in (LATENTS_STORE, IMAGES_STORE, LABELS_STORE):
                    self._locks.enter_context(store_read_lock(self.data_dir / name))
            self._open_stores()
        except BaseException:
            self._locks.close()
            raise

    def _open_stores(self) -> None:
        verify = self.verify
        self.latents_store = ZarrChunkStore.open(
            self.data_dir / LATENTS_STORE, "latents", require_complete=True, verify=verify
        )
        self.images_store = ZarrChunkStore.open(
            self.data_dir / IMAGES_STORE, "images", require_complete=True, verify=verify
        )
        self.labels_store = ParquetChunkStore.open(
            self.data_dir / LABELS_STORE, "labels", require_complete=True, verify=verify
        )
        if self.images_store.info.inputs.get("latents") != self.latents_store.info.fingerprint:
            raise StoreError(
                f"{self.images_store.path} was synthesized from other latents than "
                f"{self.latents_store.path}; rerun `dvc repro`"
            )
        if self.labels_store.info.inputs.get("images") != self.images_store.info.fingerprint:
            raise StoreError(
                f"{self.labels_store.path} was computed from other images than "
                f"{self.images_store.path}; rerun `dvc repro`"
            )

    def close(self) -> None:
        """Release the read locks (if any were taken); the stores stay readable."""
        self._locks.close()

    def __enter__(self) -> LatentDataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_chunk(self, index: int) -> None:
        """Check chunk ``index``'s records and lineage across the three stores (no checksums: reads do those).

        Raises:
            StoreError: a file of the chunk is missing, unrecorded or of the wrong size, a store was rebuilt since
                this dataset was opened, or a chunk was computed from other upstream chunks than the current ones
                (each names the store, the chunk and what to rerun).
        """
        if not self.verify:
            return
        upstream_of_labels: dict[str, ChunkedStore] = {IMAGES_STORE: self.images_store}
        if not self.has_images:
            upstream_of_labels[LATENTS_STORE] = self.latents_store
        self.latents_store.require_chunk(index, upstream={})
        self.images_store.require_chunk(index, upstream={LATENTS_STORE: self.latents_store})
        self.labels_store.require_chunk(index, upstream=upstream_of_labels)

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
        """The labels as a ``pyarrow.dataset`` (lazy, columnar; filter and project before reading). Checks that
        every part is there with the size its record gives (pyarrow reads whatever parts it finds, unverified:
        :meth:`labels_frame` and :meth:`arrays` verify every byte).

        Raises:
            StoreError: a part is missing, unrecorded or of the wrong size.
        """
        if self.verify:
            problems = self.labels_store.check_chunks(deep=False, lineage=False)
            if problems:
                raise StoreError(f"{problems[0].message}; {self.labels_store.stage_hint()}")
        source, filesystem = arrow_source(self.labels_store.path)
        return pads.dataset(source, format="parquet", filesystem=filesystem)

    def labels_frame(self, attributes: Sequence[str] | None = None) -> pd.DataFrame:
        """Labels as pandas, indexed by ``sample_id`` and sorted by it: every part read and checked.

        Raises:
            StoreError: a part is missing or does not match its record or lineage (see :meth:`check_chunk`).
        """
        columns = ["sample_id", *self._check_attributes(attributes)]
        tables = []
        for index in range(self.labels_store.info.n_chunks):
            self.check_chunk(index)
            tables.append(self._labels_chunk(index, columns))
        frame = pa.concat_tables(tables).to_pandas()
        return frame.set_index("sample_id").sort_index()

    def _labels_chunk(self, index: int, columns: list[str] | None = None) -> pa.Table:
        """Part ``index`` of the labels, its ``sample_id`` checked against the chunk's rows."""
        table = self.labels_store.read_chunk(index, columns=columns)
        rows = self.labels_store.info.chunk_slice(index)
        if not np.array_equal(table.column("sample_id").to_numpy(), np.arange(rows.start, rows.stop)):
            raise StoreError(
                f"{self.labels_store.part_path(index)}: sample_id does not match its chunk rows "
                f"{rows.start}..{rows.stop - 1}; rerun `latentatlas label`"
            )
        return table

    def arrays(self, attributes: Sequence[str] | None = None, space: str = "z") -> tuple[np.ndarray, np.ndarray]:
        """(N, dim) float32 latents and (N, A) float32 scores of ``attributes``, rows aligned by sample_id."""
        attributes = self._check_attributes(attributes)
        latents = np.empty(self.latents(space).shape, dtype=np.float32)
        scores = np.empty((self.n_samples, len(attributes)), dtype=np.float32)
        for index in range(self.labels_store.info.n_chunks):
            rows = self.labels_store.info.chunk_slice(index)
            self.check_chunk(index)
            latents[rows] = self.latents_store.read_chunk(space, index)
            table = self._labels_chunk(index, ["sample_id", *attributes])
            scores[rows] = (
                np.stack([table.column(name).to_numpy() for name in attributes], axis=1)
                if attributes
                else np.empty((rows.stop - rows.start, 0), np.float32)
            )
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


def open(
    data_dir: str | Path = "data",
    verify: bool = True,  # noqa: A001 (mirrors zarr.open / xr.open_dataset)
    read_lock: bool = False,
) -> LatentDataset:
    """Open the labeled latent dataset under ``data_dir`` (what ``dvc repro`` wrote).

    Args:
        verify: check every chunk read against its record and lineage; False skips it (faster, unchecked).
        read_lock: hold the stores read-locked until ``close()`` (see :class:`LatentDataset`).

    Raises:
        StoreError: a store is missing, incomplete, foreign, or from another upstream run.
        StoreLockedError: (``read_lock``) a run is writing one of the stores now.
    """
    return LatentDataset(store_path(data_dir), verify=verify, read_lock=read_lock)
