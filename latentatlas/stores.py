"""Chunked stores: Zarr arrays and Parquet part files, split along samples into pipeline chunks.

Every store carries a :class:`StoreInfo` (what produced it, as a fingerprint) and obeys four rules:

1. **Atomic chunks.** Chunk i is one Zarr chunk per array (Zarr's LocalStore writes each chunk file via a temp file
   and a rename) or one Parquet file (written to a temp name, then ``os.replace``). A chunk that exists is complete.
2. **Fingerprints.** :func:`prepare_store` reopens a store only when its fingerprint equals the one asked for; a
   store made by other params/models/upstream data is wiped and rebuilt (said loudly), never silently reused.
3. **Atomic creation and wipe.** A store is created in a hidden sibling folder and renamed into place, and a stale
   one is renamed away before it is deleted: the path holds a whole, initialised store or nothing.
4. **One writer.** :func:`store_lock` takes an exclusive ``flock`` on a sibling lock file; a second run fails fast.
   The kernel drops the lock when its holder dies (even by SIGKILL), so a killed run never blocks its resume.

Stores may also live in an object store (``s3://…``, ``gs://…``, see :mod:`latentatlas.locations`). There each chunk,
Parquet part and metadata file is one put (atomic: an object appears only when complete); creating or wiping a
store is bracketed by a ``.latentatlas-partial`` marker object, so a store left half made or half wiped by a crash
is recognised as ours and rebuilt, never taken for a foreign one; and there is no lock (rule 4 is the user's).
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.core.sync import sync

from latentatlas.locations import StorePath, arrow_source, is_remote, store_path, zarr_storage_options
from latentatlas.atomic import atomic_write_json
from latentatlas.errors import LatentAtlasError

STORE_FORMAT = "latentatlas/1"
ATTRS_KEY = "latentatlas"
PARQUET_INFO_FILE = "_latentatlas.json"  # leading underscore: pyarrow.dataset and DuckDB globs skip it
PARTIAL_MARKER = ".latentatlas-partial"  # object stores: present while a store is being created or wiped


class StoreError(LatentAtlasError, RuntimeError):
    """A store is missing, foreign, corrupted, incomplete, or from other params."""


class StoreLockedError(StoreError):
    """Another run is writing this store."""


def fingerprint_of(inputs: Mapping[str, Any]) -> str:
    """A stable hash of what produced a store (canonical JSON → sha256, 24 hex digits)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class StoreInfo:
    """What a store holds and what produced it.

    Attributes:
        kind: ``latents`` | ``images`` | ``labels``.
        inputs: everything its contents depend on (params, upstream fingerprints, model hashes); hashed into
            ``fingerprint``.
        n_samples, chunk_size: the chunking along samples; chunk i holds samples [i·chunk_size, (i+1)·chunk_size).
        details: facts for readers that do not change the contents' identity beyond ``inputs`` (array names,
            attribute names, whether images were kept).
    """

    kind: str
    inputs: dict[str, Any]
    n_samples: int
    chunk_size: int
    details: dict[str, Any] = field(default_factory=dict)
    complete: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint_of({"kind": self.kind, "n_samples": self.n_samples, "chunk_size": self.chunk_size,
                               "inputs": self.inputs})

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk_size)

    def chunk_slice(self, index: int) -> slice:
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} out of range 0..{self.n_chunks - 1}")
        return slice(index * self.chunk_size, min((index + 1) * self.chunk_size, self.n_samples))

    def to_json(self) -> dict[str, Any]:
        return {"format": STORE_FORMAT, "fingerprint": self.fingerprint, **asdict(self)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], where: Path) -> "StoreInfo":
        if raw.get("format") != STORE_FORMAT:
            raise StoreError(f"{where}: store format {raw.get('format')!r}, expected {STORE_FORMAT!r}")
        try:
            info = cls(kind=raw["kind"], inputs=raw["inputs"], n_samples=raw["n_samples"],
                       chunk_size=raw["chunk_size"], details=raw.get("details", {}), complete=raw["complete"])
        except (KeyError, TypeError) as error:
            raise StoreError(f"{where}: corrupted store metadata (missing {error})") from None
        if info.fingerprint != raw.get("fingerprint"):
            raise StoreError(f"{where}: corrupted store metadata (its fingerprint does not match its inputs)")
        return info


@contextlib.contextmanager
def store_lock(path: StorePath, lock_dir: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the store at ``path`` (a sibling ``.<name>.lock`` file, or ``<name>.lock`` in
    ``lock_dir`` for outputs whose folder DVC tracks as a whole) or fail at once.

    Object stores have no lock that a killed holder releases: there this warns and locks nothing.

    Raises:
        StoreLockedError: another process holds it.
    """
    path = store_path(path)
    if is_remote(path):
        warnings.warn(f"{path}: object stores have no locks; make sure no other run writes this store now",
                      stacklevel=3)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if lock_dir is not None:
        Path(lock_dir).mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock" if lock_dir is None else Path(lock_dir) / f"{path.name}.lock"
    handle = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StoreLockedError(f"{path} is being written by another run (pid {holder} holds {lock_path}); "
                                   f"wait for it to finish or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the flock


class _HalfMade:
    """What :func:`_read_info` returns for an object-store store a crash left half created or half wiped."""


HALF_MADE = _HalfMade()


def _read_info(path: StorePath) -> StoreInfo | _HalfMade | None:
    """The store's info; None if ``path`` holds no store; :data:`HALF_MADE` for one of ours that a crash left half
    created or wiped (object stores). Raises StoreError for a foreign/corrupted one."""
    if not path.exists():
        return None
    if is_remote(path) and (path / PARTIAL_MARKER).exists():
        return HALF_MADE
    if not path.is_dir():
        raise StoreError(f"{path}: expected a latentatlas store folder, found a file; remove it or pick another path")
    if path.suffix == ".zarr":
        meta_file = path / "zarr.json"
        if not meta_file.is_file():
            if not any(path.iterdir()):
                return None  # an empty folder (e.g. made by hand or by a tool): nothing to lose
            raise StoreError(f"{path}: not a Zarr store (no zarr.json); it is not ours, so it is left alone — "
                             f"remove it or pick another path")
        try:
            attributes = json.loads(meta_file.read_text()).get("attributes", {})
        except json.JSONDecodeError as error:
            raise StoreError(f"{meta_file}: corrupted store metadata ({error}); remove {path} to rebuild") from None
    else:
        meta_file = path / PARQUET_INFO_FILE
        if not meta_file.is_file():
            if not any(path.iterdir()):
                return None
            raise StoreError(f"{path}: not a latentatlas Parquet store (no {PARQUET_INFO_FILE}); it is not ours, "
                             f"so it is left alone — remove it or pick another path")
        try:
            attributes = {ATTRS_KEY: json.loads(meta_file.read_text())}
        except json.JSONDecodeError as error:
            raise StoreError(f"{meta_file}: corrupted store metadata ({error}); remove {path} to rebuild") from None
    if ATTRS_KEY not in attributes:
        raise StoreError(f"{meta_file}: a Zarr store without latentatlas metadata (a foreign store); it is left "
                         f"alone — remove it or pick another path")
    return StoreInfo.from_json(attributes[ATTRS_KEY], meta_file)


def _remove_tree(path: StorePath) -> None:
    """Rename ``path`` away, then delete it: a crash mid-way leaves only a hidden ``.stale`` folder.

    Object store: mark it partial, delete everything else, then the marker (a crash leaves a marked store)."""
    if is_remote(path):
        marker = path / PARTIAL_MARKER
        marker.write_bytes(b"wiping\n")
        keys = [key for key in path.fs.find(path.path) if not key.endswith(f"/{PARTIAL_MARKER}")]
        if keys:
            path.fs.rm(keys)
        path.fs.rm(marker.path)
        return
    graveyard = path.parent / f".{path.name}.stale-{os.getpid()}"
    os.rename(path, graveyard)
    shutil.rmtree(graveyard)


def _clean_leftovers(path: StorePath) -> None:
    if is_remote(path):
        return  # nothing is staged beside a store there
    for leftover in path.parent.glob(f".{path.name}.*-*"):
        if leftover.is_dir() and (".stale-" in leftover.name or ".creating-" in leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)


def _remove_partial_writes(path: StorePath) -> None:
    """Delete the temp files a killed writer left inside a store it was resuming: Zarr's ``<key>.<uuid>.partial``
    and our ``.<name>.<...>.tmp``. They were never renamed into place, so no reader took them for chunks; removing
    them (under the store lock, so no writer is alive) makes a resumed store byte-identical to an uninterrupted one.
    Object stores have none: every write there is one put.
    """
    if is_remote(path):
        return
    for leftover in path.rglob("*"):
        if leftover.is_file() and (leftover.name.endswith(".partial")
                                   or (leftover.name.startswith(".") and leftover.name.endswith(".tmp"))):
            leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class ArraySpec:
    """One Zarr array of a store: (n_samples, *tail_shape) of ``dtype``, chunked along samples."""

    tail_shape: tuple[int, ...]
    dtype: str
    dimension_names: tuple[str, ...]


class ChunkedStore(abc.ABC):
    """A store folder split into chunks along samples. Subclasses say how chunks are written and found."""

    def __init__(self, path: StorePath, info: StoreInfo) -> None:
        self.path = store_path(path)
        self.info = info

    # -- subclass interface -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def chunk_done(self, index: int) -> bool:
        """Whether chunk ``index`` is fully written."""

    @abc.abstractmethod
    def _write_info(self, info: StoreInfo) -> None:
        """Persist ``info`` atomically."""

    @classmethod
    @abc.abstractmethod
    def _create(cls, path: StorePath, info: StoreInfo, **layout: Any) -> None:
        """Initialise an empty store at ``path`` (a fresh folder) holding ``info``."""

    # -- shared logic -------------------------------------------------------------------------------------------
    def pending_chunks(self) -> list[int]:
        return [index for index in range(self.info.n_chunks) if not self.chunk_done(index)]

    def mark_complete(self) -> None:
        missing = self.pending_chunks()
        if missing:
            raise StoreError(f"{self.path}: cannot mark complete, chunks {missing[:10]} are missing")
        self.info = StoreInfo(**{**asdict(self.info), "complete": True})
        self._write_info(self.info)

    @classmethod
    def prepare(cls, path: StorePath, info: StoreInfo, **layout: Any) -> "ChunkedStore":
        """Open the store at ``path`` for writing ``info``'s contents: resume it if its fingerprint matches,
        else wipe and create it. Call under :func:`store_lock`.

        Raises:
            StoreError: ``path`` holds something that is not a latentatlas store (left untouched).
        """
        path = store_path(path)
        _clean_leftovers(path)
        existing = _read_info(path)
        if existing is HALF_MADE:
            warnings.warn(f"{path}: a run stopped while creating or wiping this store; rebuilding it", stacklevel=2)
            _remove_tree(path)
            existing = None
        elif existing is not None and existing.fingerprint != info.fingerprint:
            warnings.warn(f"{path} was produced by other inputs (fingerprint {existing.fingerprint} ≠ "
                          f"{info.fingerprint}): wiping it and rebuilding", stacklevel=2)
            _remove_tree(path)
            existing = None
        elif existing is None and path.exists() and not is_remote(path):
            os.rmdir(path)  # an empty folder
        if existing is None and is_remote(path):
            (path / PARTIAL_MARKER).write_bytes(b"creating\n")
            cls._create(path, info, **layout)
            path.fs.rm((path / PARTIAL_MARKER).path)
        elif existing is None:
            staging = path.parent / f".{path.name}.creating-{os.getpid()}"
            cls._create(staging, info, **layout)
            os.rename(staging, path)
        else:
            _remove_partial_writes(path)
        return cls.open(path, expected_kind=info.kind)

    @classmethod
    def open(cls, path: StorePath, expected_kind: str | None = None, require_complete: bool = False) -> "ChunkedStore":
        """Open an existing store for reading (or resuming).

        Raises:
            StoreError: missing, foreign, corrupted, of another kind, or (with ``require_complete``) unfinished.
        """
        path = store_path(path)
        info = _read_info(path)
        if info is None:
            raise StoreError(f"{path}: no store here; run the stage that produces it first (e.g. `dvc repro`)")
        if info is HALF_MADE:
            raise StoreError(f"{path}: a run stopped while creating or wiping this store; rerun the stage that "
                             f"produces it")
        if expected_kind is not None and info.kind != expected_kind:
            raise StoreError(f"{path}: holds a {info.kind!r} store, expected {expected_kind!r}")
        if require_complete and not info.complete:
            raise StoreError(f"{path}: store is incomplete (a run stopped before finishing); rerun `dvc repro` "
                             f"to complete it")
        return cls(path, info)


class ZarrChunkStore(ChunkedStore):
    """A Zarr group with arrays chunked along samples, one Zarr chunk per pipeline chunk."""

    def __init__(self, path: StorePath, info: StoreInfo) -> None:
        super().__init__(path, info)
        self.group = zarr.open_group(str(self.path), mode="r+", storage_options=zarr_storage_options(self.path))
        self.arrays = {name: self.group[name] for name in info.details.get("arrays", [])}

    @classmethod
    def _create(cls, path: StorePath, info: StoreInfo, arrays: Mapping[str, ArraySpec] | None = None) -> None:
        arrays = dict(arrays or {})
        info = StoreInfo(**{**asdict(info), "details": {**info.details, "arrays": sorted(arrays)}})
        # A fresh prefix: "a" creates the group ("w" would also delete an object store's partial marker).
        group = zarr.open_group(str(path), mode="a", storage_options=zarr_storage_options(path))
        for name, spec in arrays.items():
            group.create_array(name, shape=(info.n_samples, *spec.tail_shape),
                               chunks=(info.chunk_size, *spec.tail_shape), dtype=spec.dtype,
                               dimension_names=spec.dimension_names, fill_value=0,
                               config={"write_empty_chunks": True})
        group.attrs[ATTRS_KEY] = info.to_json()

    @classmethod
    def prepare(cls, path: StorePath, info: StoreInfo,
                arrays: Mapping[str, ArraySpec] | None = None) -> "ZarrChunkStore":
        # "arrays" is part of what a reader needs, so it joins the details before the fingerprint comparison.
        info = StoreInfo(**{**asdict(info), "details": {**info.details, "arrays": sorted(arrays or {})}})
        return super().prepare(path, info, arrays=arrays)  # type: ignore[return-value]

    def _write_info(self, info: StoreInfo) -> None:
        self.group.attrs[ATTRS_KEY] = info.to_json()

    def chunk_done(self, index: int) -> bool:
        for array in self.arrays.values():
            coords = (index,) + (0,) * (array.ndim - 1)
            key = f"{array.path}/{array.metadata.encode_chunk_key(coords)}"
            if not sync(array.store.exists(key)):
                return False
        return True

    def write_chunk(self, index: int, values: Mapping[str, np.ndarray]) -> None:
        """Write chunk ``index`` of every array (each value: (chunk length, *tail_shape))."""
        if set(values) != set(self.arrays):
            raise StoreError(f"{self.path}: chunk {index} needs arrays {sorted(self.arrays)}, got {sorted(values)}")
        rows = self.info.chunk_slice(index)
        for name, value in values.items():
            array = self.arrays[name]
            expected = (rows.stop - rows.start, *array.shape[1:])
            if value.shape != expected or value.dtype != array.dtype:
                raise StoreError(f"{self.path}/{name}: chunk {index} must be {expected} {array.dtype}, "
                                 f"got {value.shape} {value.dtype}")
            array[rows] = value

    def read_chunk(self, name: str, index: int) -> np.ndarray:
        return self.arrays[name][self.info.chunk_slice(index)]


class ParquetChunkStore(ChunkedStore):
    """A folder of Parquet files ``part-00000.parquet``…, one per pipeline chunk, plus ``_latentatlas.json``.

    A chunk of n samples has n rows, or n × ``info.details["rows_per_sample"]`` for long tables (e.g. one row per
    sample, direction and edit strength in the evaluation store).

    ``pyarrow.dataset``, pandas and DuckDB read the folder as one table (they skip the underscored info file).
    """

    @classmethod
    def _create(cls, path: StorePath, info: StoreInfo) -> None:
        path.mkdir(parents=True, exist_ok=is_remote(path))
        atomic_write_json(path / PARQUET_INFO_FILE, info.to_json())

    def _write_info(self, info: StoreInfo) -> None:
        atomic_write_json(self.path / PARQUET_INFO_FILE, info.to_json())

    def part_path(self, index: int) -> StorePath:
        return self.path / f"part-{index:05d}.parquet"

    def chunk_done(self, index: int) -> bool:
        return self.part_path(index).is_file()

    def write_chunk(self, index: int, table: pa.Table) -> None:
        """Write chunk ``index`` as one Parquet file: temp name, then ``os.replace``."""
        rows = self.info.chunk_slice(index)
        expected = (rows.stop - rows.start) * int(self.info.details.get("rows_per_sample", 1))
        if table.num_rows != expected:
            raise StoreError(f"{self.path}: chunk {index} must have {expected} rows, got {table.num_rows}")
        target = self.part_path(index)
        if is_remote(target):  # one upload: the object appears only once complete
            source, filesystem = arrow_source(target)
            pq.write_table(table, source, filesystem=filesystem, compression="zstd", use_dictionary=False)
            return
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(table, staging, compression="zstd", use_dictionary=False)
            os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)

    def read_chunk(self, index: int) -> pa.Table:
        source, filesystem = arrow_source(self.part_path(index))
        return pq.read_table(source, filesystem=filesystem)
