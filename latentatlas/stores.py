"""Chunked stores: Zarr arrays and Parquet part files, split along samples into pipeline chunks.

Every store carries a :class:`StoreInfo` (what produced it, as a fingerprint) and obeys four rules:

1. **Recorded chunks.** Chunk i is one Zarr chunk per array or one Parquet file, each written durably (temp file,
   fsync, rename, fsync of the folder) and then given a record beside it (:mod:`latentatlas.chunk_records`: its size,
   CRC32C, and the upstream chunks it was computed from). A chunk is done only when every file of it matches its
   record; readers check each chunk against its record by default (``verify=False`` skips the checksum), so a
   missing chunk never reads as zeros and a damaged one is never used. A stage rerun recomputes exactly the chunks
   that are missing, damaged, unrecorded or computed from other upstream chunks.
2. **Fingerprints.** :meth:`ChunkedStore.prepare` reopens a store only when its fingerprint equals the one asked
   for; a store made by other params/models/upstream data is wiped and rebuilt (said loudly), never silently reused.
   So is a store of ours (its chunk records say so) whose metadata is lost (:class:`LostMetadataError`); a folder
   that is not ours is left alone. A store computed from an upstream store that has been rebuilt since is *stale*
   (:func:`inspect_store`): its chunks are not compared with the new upstream's one by one (their chunking may
   differ).
3. **Atomic creation and wipe.** A store is created in a hidden sibling folder and renamed into place, and a stale
   one is renamed away before it is deleted: the path holds a whole, initialised store or nothing.
4. **One writer, no writer under a reader.** :func:`store_lock` takes an exclusive ``flock`` on a sibling lock
   file; a second run fails fast. A stage holds its input stores with :func:`store_read_lock` (a shared ``flock`` on
   the same file) for its whole run, so an upstream writer is refused (naming the reader's pid) instead of changing
   the chunks under it. The kernel drops a lock when its holder dies (even by SIGKILL), so a killed run never blocks
   its resume.

Stores may also live in an object store (``s3://…``, ``gs://…``, see :mod:`latentatlas.locations`). There each chunk,
Parquet part and metadata file is one put (atomic: an object appears only when complete); creating or wiping a
store is bracketed by a ``.latentatlas-partial`` marker object, so a store left half made or half wiped by a crash
is recognised as ours and rebuilt, never taken for a foreign one; and there is no lock (rule 4 is the user's).
"""

from __future__ import annotations

import abc
import contextlib
import errno
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
from zarr.storage import FsspecStore, LocalStore

from latentatlas.atomic import atomic_write_bytes, atomic_write_json, fsync_folder
from latentatlas.chunk_records import (
    BAD_RECORD,
    DAMAGED,
    FOREIGN_RECORD,
    GAP_KINDS,
    MISPLACED_RECORD,
    MISSING,
    NOT_WRITTEN,
    OTHER_UPSTREAM,
    RECORDS_DIR,
    UNRECORDED,
    WRONG_SIZE,
    ChecksummingZarrStore,
    ChunkProblem,
    ChunkRecord,
    crc32c_hex,
    upstream_mismatch,
)
from latentatlas.errors import LatentAtlasError
from latentatlas.layout import IMAGES_STORE, LABELS_STORE, LATENTS_STORE
from latentatlas.locations import StorePath, is_remote, store_path, zarr_storage_options

STORE_FORMAT = "latentatlas/1"
ATTRS_KEY = "latentatlas"
PARQUET_INFO_FILE = "_latentatlas.json"  # leading underscore: pyarrow.dataset and DuckDB globs skip it
PARTIAL_MARKER = ".latentatlas-partial"  # object stores: present while a store is being created or wiped


class StoreError(LatentAtlasError, RuntimeError):
    """A store is missing, foreign, corrupted, incomplete, or from other params."""


class StoreLockedError(StoreError):
    """Another run is writing this store (or, for a writer, reading it)."""


class LostMetadataError(StoreError):
    """A store of ours (its chunk records say so) whose metadata is missing or unreadable. It cannot be read, and
    the stage that writes it rebuilds it (:meth:`ChunkedStore.prepare` wipes it, loudly, as it is ours).

    Attributes:
        detail: what is lost (``its zarr.json is missing``).
    """

    def __init__(self, path: StorePath, detail: str, kind: str | None = None) -> None:
        self.detail = detail
        super().__init__(f"{path} lost its metadata ({detail}); {rebuild_hint(path, kind)}")


#: The stage that writes each kind of store: what to rerun when one of its chunks is bad.
PRODUCING_STAGE = {"latents": "sample", "images": "synthesize", "labels": "label", "evaluation": "evaluate"}
#: The same by the store's name in a data dir, for a store whose metadata (and so its kind) is lost.
PRODUCING_STAGE_BY_NAME = {LATENTS_STORE: "sample", IMAGES_STORE: "synthesize", LABELS_STORE: "label"}


def rebuild_hint(path: StorePath, kind: str | None = None) -> str:
    """What to run to rebuild the store at ``path`` (of ``kind``, when known)."""
    stage = PRODUCING_STAGE.get(kind or "") or PRODUCING_STAGE_BY_NAME.get(store_path(path).name)
    return f"rerun `latentatlas {stage}` to rebuild it" if stage else "rerun the stage that writes it to rebuild it"


_OS_ERROR_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space and rerun (finished chunks are kept)",
    errno.EDQUOT: "the disk quota is exhausted: free some space and rerun (finished chunks are kept)",
    errno.EACCES: "permission denied: make the data dir writable or choose another --data-dir",
    errno.EPERM: "operation not permitted: make the data dir writable or choose another --data-dir",
    errno.EROFS: "the filesystem is read-only: choose another --data-dir",
    errno.ENOTDIR: "a folder on the way is a file: remove it or choose another --data-dir",
    errno.EEXIST: "a file is in the way of a folder: remove it or choose another --data-dir",
}


def os_error(error: OSError, doing: str) -> StoreError:
    """A one-line StoreError for an OSError met while ``doing`` (``"<store>: cannot write chunk 3"``)."""
    advice = _OS_ERROR_ADVICE.get(error.errno or -1)
    reason = error.strerror or type(error).__name__
    if advice is None:
        return StoreError(
            f"{doing}: {reason} ({error.filename or 'no file named'}); nothing half-written is left, "
            f"rerun when the cause is fixed"
        )
    return StoreError(f"{doing}: {advice} [{reason}]")


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
        return fingerprint_of(
            {"kind": self.kind, "n_samples": self.n_samples, "chunk_size": self.chunk_size, "inputs": self.inputs}
        )

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
    def from_json(cls, raw: Mapping[str, Any], where: Path) -> StoreInfo:
        if raw.get("format") != STORE_FORMAT:
            raise StoreError(f"{where}: store format {raw.get('format')!r}, expected {STORE_FORMAT!r}")
        try:
            info = cls(
                kind=raw["kind"],
                inputs=raw["inputs"],
                n_samples=raw["n_samples"],
                chunk_size=raw["chunk_size"],
                details=raw.get("details", {}),
                complete=raw["complete"],
            )
        except (KeyError, TypeError) as error:
            raise LostMetadataError(where.parent, f"{where.name} is corrupted: missing {error}") from None
        if info.fingerprint != raw.get("fingerprint"):
            raise LostMetadataError(
                where.parent, f"{where.name} is corrupted: its fingerprint does not match its inputs", info.kind
            )
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
        warnings.warn(
            f"{path}: object stores have no locks; make sure no other run writes this store now", stacklevel=3
        )
        yield
        return
    check_data_dir(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if lock_dir is not None:
            Path(lock_dir).mkdir(parents=True, exist_ok=True)
        lock_path = _lock_path(path, lock_dir)
        handle = open(lock_path, "a+")
    except OSError as error:
        raise os_error(error, f"{path}: cannot create its lock file") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            readers = _lock_holders(lock_path, "READ")
            if readers:
                raise StoreLockedError(
                    f"{path} is being read by another run (pid {', '.join(map(str, readers))} "
                    f"holds a read lock on {lock_path}); wait for it to finish or stop it"
                ) from None
            raise StoreLockedError(
                f"{path} is being written by another run (pid {holder} holds {lock_path}); "
                f"wait for it to finish or stop it"
            ) from None
        try:  # the holder's pid, for the message of a run refused meanwhile
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        except OSError as error:
            raise os_error(error, f"{path}: cannot write its lock file") from None
        yield
    finally:
        with contextlib.suppress(OSError):  # a pid left unflushed by a full disk: nothing to keep
            handle.close()  # closing releases the flock


@contextlib.contextmanager
def store_read_lock(path: StorePath) -> Iterator[None]:
    """Hold a shared lock on the store at ``path`` (the lock file :func:`store_lock` locks exclusively) or fail at
    once: readers share it, a writer can take it from none of them. A stage holds its inputs this way for its whole
    run, so no upstream rerun rewrites chunks it is reading.

    Object stores have no locks (this locks nothing there); neither does a read-only data dir without a lock file
    (no writer can take one there either).

    Raises:
        StoreLockedError: a run is writing the store now (its pid is named).
        StoreError: the data dir is a file.
    """
    path = store_path(path)
    if is_remote(path):
        yield
        return
    check_data_dir(path.parent)
    lock_path = _lock_path(path, None)
    try:
        handle = open(lock_path, "a+")
    except FileNotFoundError:  # no data dir: the store is absent, which opening it reports
        yield
        return
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise os_error(error, f"{path}: cannot open its lock file") from None
        try:
            handle = open(lock_path)  # a read-only data dir: lock the file if it is there
        except FileNotFoundError:
            yield
            return
        except OSError as second_error:
            raise os_error(second_error, f"{path}: cannot open its lock file") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StoreLockedError(
                f"{path} is being written by another run (pid {holder} holds {lock_path}); "
                f"wait for it to finish before reading it"
            ) from None
        yield
    finally:
        handle.close()


def _lock_path(path: Path, lock_dir: Path | None) -> Path:
    return path.parent / f".{path.name}.lock" if lock_dir is None else Path(lock_dir) / f"{path.name}.lock"


def check_data_dir(folder: StorePath) -> None:
    """Raises: StoreError: ``folder`` (or a folder above it) is a file (local paths; object stores have no files in
    the way of folders)."""
    if is_remote(folder):
        return
    folder = Path(folder)
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise StoreError(
                    f"{candidate}: the data dir is a file, expected a folder; remove it or choose another --data-dir"
                )
            return


def _lock_holders(lock_path: Path, kind: str) -> list[int]:
    """Pids holding a ``flock`` of ``kind`` (READ or WRITE) on ``lock_path``, from ``/proc/locks`` (Linux); empty
    where that is not readable."""
    try:
        status = os.stat(lock_path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    inode = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    pids = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == kind and fields[5] == inode:
            pids.append(int(fields[4]))
    return sorted(set(pids))


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
            if _has_records(path):
                raise LostMetadataError(path, "its zarr.json is missing; its chunk records show it is ours")
            raise StoreError(
                f"{path}: not a Zarr store (no zarr.json); it is not ours, so it is left alone — "
                f"remove it or pick another path"
            )
        try:
            raw = json.loads(meta_file.read_text())
            attributes = raw.get("attributes", {}) if isinstance(raw, dict) else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if _has_records(path):
                raise LostMetadataError(path, f"its zarr.json is corrupted: {error}") from None
            raise StoreError(f"{meta_file}: corrupted store metadata ({error}); remove {path} to rebuild") from None
    else:
        meta_file = path / PARQUET_INFO_FILE
        if not meta_file.is_file():
            if not any(path.iterdir()):
                return None
            if _has_records(path):
                raise LostMetadataError(path, f"its {PARQUET_INFO_FILE} is missing; its chunk records show it is ours")
            raise StoreError(
                f"{path}: not a latentatlas Parquet store (no {PARQUET_INFO_FILE}); it is not ours, "
                f"so it is left alone — remove it or pick another path"
            )
        try:
            attributes = {ATTRS_KEY: json.loads(meta_file.read_text())}
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LostMetadataError(path, f"its {PARQUET_INFO_FILE} is corrupted: {error}") from None
    if ATTRS_KEY not in attributes:
        raise StoreError(
            f"{meta_file}: a Zarr store without latentatlas metadata (a foreign store); it is left "
            f"alone — remove it or pick another path"
        )
    return StoreInfo.from_json(attributes[ATTRS_KEY], meta_file)


def _has_records(path: StorePath) -> bool:
    """Whether ``path`` holds chunk records (``_records/`` of a Parquet store, ``<array>/_records/`` of a Zarr one):
    the mark of a latentatlas store, even one whose metadata is gone."""
    if (path / RECORDS_DIR).is_dir():
        return True
    return any(child.is_dir() and (child / RECORDS_DIR).is_dir() for child in path.iterdir())


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
        if leftover.is_file() and (
            leftover.name.endswith(".partial") or (leftover.name.startswith(".") and leftover.name.endswith(".tmp"))
        ):
            leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class ArraySpec:
    """One Zarr array of a store: (n_samples, *tail_shape) of ``dtype``, chunked along samples."""

    tail_shape: tuple[int, ...]
    dtype: str
    dimension_names: tuple[str, ...]


class ChunkedStore(abc.ABC):
    """A store folder split into chunks along samples. Subclasses say which files make a chunk and how they are
    written and read; this class keeps each file's record (:mod:`latentatlas.chunk_records`) and checks files
    against them.

    Args:
        path, info: where the store is and what it holds.
        verify: check every chunk file read against its record (size and CRC32C) and refuse it on a mismatch;
            False skips the checksum (a missing chunk is still refused).
    """

    def __init__(self, path: StorePath, info: StoreInfo, verify: bool = True) -> None:
        self.path = store_path(path)
        self.info = info
        self.verify = verify

    # -- subclass interface -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def chunk_files(self, index: int) -> list[str]:
        """The keys (relative to the store) of the files that make chunk ``index``; empty for a store that holds
        no data (an images store without kept images)."""

    @abc.abstractmethod
    def record_key(self, file_key: str) -> str:
        """The key of the record of chunk file ``file_key``."""

    @abc.abstractmethod
    def _write_info(self, info: StoreInfo) -> None:
        """Persist ``info`` atomically."""

    @classmethod
    @abc.abstractmethod
    def _create(cls, path: StorePath, info: StoreInfo, **layout: Any) -> None:
        """Initialise an empty store at ``path`` (a fresh folder) holding ``info``."""

    # -- records ------------------------------------------------------------------------------------------------
    def stage_hint(self) -> str:
        """What to run to recompute this store's bad chunks."""
        stage = PRODUCING_STAGE.get(self.info.kind)
        return f"rerun `latentatlas {stage}` to recompute it" if stage else "rerun the stage that writes it"

    def _file_bytes(self, key: str) -> bytes | None:
        """The bytes of the store's file ``key``; None when it does not exist."""
        path = self.path / key
        try:
            if is_remote(path):
                return path.fs.cat_file(path.path)
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def _file_size(self, key: str) -> int | None:
        path = self.path / key
        try:
            return int(path.fs.size(path.path)) if is_remote(path) else path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_record(self, file_key: str) -> ChunkRecord | None:
        """The record of chunk file ``file_key`` as it is now on disk; None when there is none.

        Raises:
            StoreError: the record exists but is not one (named, with what is wrong).
        """
        payload = self._file_bytes(self.record_key(file_key))
        if payload is None:
            return None
        try:
            return ChunkRecord.from_bytes(payload)
        except ValueError as error:
            raise StoreError(
                f"{self.path / self.record_key(file_key)}: not a chunk record ({error}); {self.stage_hint()}"
            ) from None

    def _write_record(self, record: ChunkRecord) -> None:
        atomic_write_bytes(self.path / self.record_key(record.file), record.to_bytes())

    def _drop_records(self, index: int) -> None:
        """Delete chunk ``index``'s records before rewriting it: a crash mid-rewrite leaves it unrecorded
        (recomputed), never a record that describes other bytes."""
        for key in self.chunk_files(index):
            record_path = self.path / self.record_key(key)
            if is_remote(record_path):
                if record_path.exists():
                    record_path.fs.rm(record_path.path)
            else:
                record_path.unlink(missing_ok=True)

    def lineage(self, index: int) -> dict[str, Any]:
        """What a downstream chunk computed from chunk ``index`` of this store records about it:
        ``{"fingerprint": ..., "files": {key: digest or None}}`` (None: the file has no record now)."""
        files: dict[str, str | None] = {}
        for key in self.chunk_files(index):
            try:
                record = self.read_record(key)
            except StoreError:
                record = None
            files[key] = record.digest if record is not None else None
        return {"fingerprint": self.info.fingerprint, "files": files}

    def check_file(
        self, index: int, key: str, record: ChunkRecord | None, data: bytes | None, size: int | None, deep: bool
    ) -> ChunkProblem | None:
        """Whether chunk file ``key`` (its ``data``, or only its ``size`` when not ``deep``) matches ``record``.
        Returns the problem, or None."""

        def problem(kind: str, detail: str) -> ChunkProblem:
            return ChunkProblem(str(self.path), index, key, kind, detail)

        if data is not None:
            size = len(data)
        if record is None:
            if size is None:
                return problem(NOT_WRITTEN, "no file, no record")
            return problem(UNRECORDED, "the file has no record (a run stopped between writing it and recording it)")
        if record.store != self.info.fingerprint:
            return problem(
                FOREIGN_RECORD,
                f"the record belongs to chunk {record.chunk} ({record.file}) of store "
                f"{record.store}, this store is {self.info.fingerprint} (the store was "
                f"rebuilt or replaced since it was opened, or files were copied in)",
            )
        if record.chunk != index or record.file != key:
            if size == record.size and (data is None or crc32c_hex(data) == record.crc32c):
                return problem(
                    MISPLACED_RECORD,
                    f"the file and its record are chunk {record.chunk}'s ({record.file}) "
                    f"of this store: chunk files were moved or swapped",
                )
            return problem(
                MISPLACED_RECORD,
                f"its record is chunk {record.chunk}'s ({record.file}) of this store: records were moved or swapped",
            )
        if size is None:
            return problem(MISSING, f"the file is gone; its record says {record.size} bytes")
        if size != record.size:
            return problem(WRONG_SIZE, f"{size} bytes, its record says {record.size}")
        if deep and data is not None and crc32c_hex(data) != record.crc32c:
            return problem(DAMAGED, f"crc32c {crc32c_hex(data)}, its record says {record.crc32c}")
        return None

    def check_chunk(
        self,
        index: int,
        deep: bool = True,
        upstream: Mapping[str, ChunkedStore] | None = None,
        lineage: bool = True,
        _siblings: dict[str, ChunkedStore | StoreError] | None = None,
    ) -> list[ChunkProblem]:
        """The problems of chunk ``index`` (empty: it is done and matches its records).

        Args:
            deep: read every file and compare its CRC32C (else: presence and size only).
            upstream: the upstream stores by name (``latents.zarr``) the chunk must have been computed from, as
                they are now; None checks each record's own upstream against the sibling stores it names.
            lineage: check the upstream at all (False: only the chunk's own files).
        """
        problems = []
        siblings = {} if _siblings is None else _siblings
        for key in self.chunk_files(index):
            try:
                record = self.read_record(key)
            except StoreError as error:
                problems.append(ChunkProblem(str(self.path), index, key, BAD_RECORD, str(error)))
                continue
            data = self._file_bytes(key) if deep else None
            size = None if deep else self._file_size(key)
            found = self.check_file(index, key, record, data, size, deep)
            if found is None and record is not None and lineage:
                found = self._check_upstream(index, key, record, upstream, siblings)
            if found is not None:
                problems.append(found)
        return problems

    def _check_upstream(
        self,
        index: int,
        key: str,
        record: ChunkRecord,
        upstream: Mapping[str, ChunkedStore] | None,
        siblings: dict[str, ChunkedStore | StoreError],
    ) -> ChunkProblem | None:
        """Whether ``record``'s upstream is what ``upstream`` holds now for chunk ``index`` (None: the sibling
        stores the record names, opened once into ``siblings``)."""
        if upstream is None:
            upstream = {}
            for name in record.upstream:
                if name not in siblings:
                    try:
                        siblings[name] = open_store(self.path.parent / name)
                    except StoreError as error:
                        siblings[name] = error
                if isinstance(siblings[name], StoreError):
                    return ChunkProblem(
                        str(self.path),
                        index,
                        key,
                        OTHER_UPSTREAM,
                        f"its upstream {name} cannot be opened ({siblings[name]})",
                    )
                upstream[name] = siblings[name]  # type: ignore[assignment]
        expected = {}
        for name, store in upstream.items():
            recorded = record.upstream.get(name) or {}
            if recorded.get("fingerprint") != store.info.fingerprint:
                # Another upstream store (rebuilt since, perhaps with another chunking): its chunk ``index`` is no
                # lineage of this one, and may not even exist.
                expected[name] = {"fingerprint": store.info.fingerprint}
            elif index >= store.info.n_chunks:
                return ChunkProblem(
                    str(self.path),
                    index,
                    key,
                    OTHER_UPSTREAM,
                    f"its upstream {name} has only {store.info.n_chunks} chunks",
                )
            else:
                expected[name] = store.lineage(index)
        difference = upstream_mismatch(record.upstream, expected)
        if difference is None:
            return None
        return ChunkProblem(str(self.path), index, key, OTHER_UPSTREAM, difference)

    def check_chunks(
        self, deep: bool = True, upstream: Mapping[str, ChunkedStore] | None = None, lineage: bool = True
    ) -> list[ChunkProblem]:
        """The problems of every chunk, in chunk order (see :meth:`check_chunk`)."""
        siblings: dict[str, ChunkedStore | StoreError] = {}
        return [
            problem
            for index in range(self.info.n_chunks)
            for problem in self.check_chunk(index, deep, upstream, lineage, siblings)
        ]

    def recorded_upstream(self) -> dict[str, set[str]]:
        """The upstream stores this store's chunks were computed from, by name, each with the fingerprints its
        records name (normally one: every chunk computed from the same upstream store)."""
        recorded: dict[str, set[str]] = {}
        for index in range(self.info.n_chunks):
            for key in self.chunk_files(index):
                try:
                    record = self.read_record(key)
                except StoreError:
                    continue
                for name, lineage in (record.upstream if record is not None else {}).items():
                    recorded.setdefault(name, set()).add(str((lineage or {}).get("fingerprint")))
        return recorded

    def check_chunks_at_start(self, upstream: Mapping[str, ChunkedStore] | None = None) -> list[ChunkProblem]:
        """What a stage start checks, without reading chunk data: every chunk's records, file sizes and lineage;
        a chunk with a file modified after its record was written (a change in place, even one that kept the size)
        is also checksummed. Cost: a few ``stat`` calls and small record reads per chunk, whatever the store's
        size. A file damaged without its size or modification time changing (silent media corruption) is left to
        :meth:`check_chunks` (``latentatlas verify``) and to every reader, which checksum what they read."""
        problems = []
        for index in range(self.info.n_chunks):
            found = self.check_chunk(index, deep=False, upstream=upstream)
            if not found and any(self._modified_after_record(key) for key in self.chunk_files(index)):
                found = self.check_chunk(index, deep=True, upstream=upstream)
            problems += found
        return problems

    def _modified_after_record(self, key: str) -> bool:
        """Whether chunk file ``key`` changed after its record was written (its modification time is later than
        the record's; the record is written after the file). Unknown times count as changed."""
        file_time, record_time = self._modified_time(key), self._modified_time(self.record_key(key))
        return file_time is None or record_time is None or file_time > record_time

    def _modified_time(self, key: str) -> float | None:
        """The modification time of the store's file ``key`` (ns since the epoch locally; seconds in an object
        store, from whichever time its listing gives), or None when unknown or absent."""
        path = self.path / key
        try:
            if not is_remote(path):
                return float(path.stat().st_mtime_ns)
            info = path.fs.info(path.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
            value = info.get(name)
            if hasattr(value, "timestamp"):
                return float(value.timestamp())
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None

    def require_chunk(self, index: int, upstream: Mapping[str, ChunkedStore] | None = None) -> None:
        """Check chunk ``index``'s records, file sizes and lineage (no checksum: reads do that).

        Raises:
            StoreError: the first problem, naming the store, the chunk and what to run.
        """
        problems = self.check_chunk(index, deep=False, upstream=upstream)
        if problems:
            raise StoreError(f"{problems[0].message}; {self.stage_hint()}")

    def _verified_bytes(self, index: int, key: str) -> bytes:
        """The bytes of chunk file ``key``, checked against its record (unless ``verify`` is off).

        Raises:
            StoreError: the file is missing, or (verifying) unrecorded, of the wrong size, or damaged.
        """
        data = self._file_bytes(key)
        if data is None and not self.verify:
            raise StoreError(f"{self.path}: chunk {index} ({key}) is missing; {self.stage_hint()}")
        if self.verify:
            self.check_data(index, key, data)
        return data  # type: ignore[return-value]

    def check_data(self, index: int, key: str, data: bytes | None) -> None:
        """Raises: StoreError: ``data`` (None: no file) is not what chunk file ``key``'s record says."""
        try:
            record = self.read_record(key)
        except StoreError as error:
            raise StoreError(f"{self.path}: chunk {index} ({key}): {error}") from None
        problem = self.check_file(index, key, record, data, None, deep=True)
        if problem is not None:
            raise StoreError(f"{problem.message}; {self.stage_hint()}")

    # -- shared logic -------------------------------------------------------------------------------------------
    def chunk_done(self, index: int, deep: bool = False) -> bool:
        """Whether every file of chunk ``index`` is there and matches its record (sizes; checksums if ``deep``)."""
        return not self.check_chunk(index, deep=deep, lineage=False)

    def pending_chunks(self, deep: bool = False) -> list[int]:
        """Chunks that are not done: a file without a matching record (only presence and sizes unless ``deep``)."""
        return sorted({problem.index for problem in self.check_chunks(deep=deep, lineage=False)})

    def mark_complete(self) -> None:
        missing = self.pending_chunks()
        if missing:
            raise StoreError(f"{self.path}: cannot mark complete, chunks {missing[:10]} are missing")
        self._set_complete(True)

    def mark_incomplete(self) -> None:
        """Record that some chunks are being recomputed: readers refuse the store until it is complete again."""
        self._set_complete(False)

    def _set_complete(self, complete: bool) -> None:
        info = StoreInfo(**{**asdict(self.info), "complete": complete})
        try:
            self._write_info(info)
        except OSError as error:
            raise os_error(error, f"{self.path}: cannot update its metadata") from None
        self.info = info

    @classmethod
    def prepare(cls, path: StorePath, info: StoreInfo, **layout: Any) -> ChunkedStore:
        """Open the store at ``path`` for writing ``info``'s contents: resume it if its fingerprint matches,
        else wipe and create it. Call under :func:`store_lock`.

        A store of ours that lost its metadata (:class:`LostMetadataError`) is rebuilt too, said loudly.

        Raises:
            StoreError: ``path`` holds something that is not a latentatlas store (left untouched), or the store
                cannot be created (no space, no permission: one line naming the path).
        """
        path = store_path(path)
        try:
            _clean_leftovers(path)
            try:
                existing = _read_info(path)
                if isinstance(existing, StoreInfo) and existing.fingerprint == info.fingerprint:
                    cls.open(path, expected_kind=info.kind)  # the metadata of its arrays too
            except LostMetadataError as error:
                warnings.warn(f"{path} lost its metadata ({error.detail}): rebuilding it", stacklevel=2)
                _remove_tree(path)
                existing = None
            if existing is HALF_MADE:
                warnings.warn(f"{path}: a run stopped while creating or wiping this store; rebuilding it", stacklevel=2)
                _remove_tree(path)
                existing = None
            elif existing is not None and existing.fingerprint != info.fingerprint:
                warnings.warn(
                    f"{path} was produced by other inputs (fingerprint {existing.fingerprint} ≠ "
                    f"{info.fingerprint}): wiping it and rebuilding",
                    stacklevel=2,
                )
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
                try:
                    cls._create(staging, info, **layout)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                os.rename(staging, path)
                fsync_folder(path.parent)
            else:
                _remove_partial_writes(path)
        except OSError as error:
            raise os_error(error, f"{path}: cannot create or open the store") from None
        return cls.open(path, expected_kind=info.kind)

    @classmethod
    def open(
        cls, path: StorePath, expected_kind: str | None = None, require_complete: bool = False, verify: bool = True
    ) -> ChunkedStore:
        """Open an existing store for reading (or resuming).

        Args:
            verify: check each chunk read against its record (see the class).

        Raises:
            StoreError: missing, foreign, corrupted, of another kind, or (with ``require_complete``) unfinished.
        """
        path = store_path(path)
        info = _read_info(path)
        if info is None:
            raise StoreError(f"{path}: no store here; run the stage that produces it first (e.g. `dvc repro`)")
        if info is HALF_MADE:
            raise StoreError(
                f"{path}: a run stopped while creating or wiping this store; rerun the stage that produces it"
            )
        if expected_kind is not None and info.kind != expected_kind:
            raise StoreError(f"{path}: holds a {info.kind!r} store, expected {expected_kind!r}")
        if require_complete and not info.complete:
            raise StoreError(
                f"{path}: store is incomplete (a run stopped before finishing, or bad chunks are being "
                f"recomputed); rerun `dvc repro` to complete it"
            )
        return cls(path, info, verify=verify)


def open_store(path: StorePath, verify: bool = True) -> ChunkedStore:
    """Open the store at ``path`` whatever its kind (``*.zarr``: Zarr, else Parquet parts).

    Raises:
        StoreError: as :meth:`ChunkedStore.open`.
    """
    path = store_path(path)
    store_cls = ZarrChunkStore if path.name.endswith(".zarr") else ParquetChunkStore
    return store_cls.open(path, verify=verify)


class ZarrChunkStore(ChunkedStore):
    """A Zarr group with arrays chunked along samples, one Zarr chunk per pipeline chunk.

    Zarr reads and writes go through a :class:`~latentatlas.chunk_records.ChecksummingZarrStore`: every file is
    written durably, each chunk's size and CRC32C are taken from the very bytes written, and each chunk read is
    checked against its record before it is decoded (also for the lazy arrays in :attr:`arrays`).
    """

    def __init__(self, path: StorePath, info: StoreInfo, verify: bool = True) -> None:
        super().__init__(path, info, verify)
        self._written: dict[str, tuple[int, str]] = {}  # chunk key → (size, crc32c) of the bytes just written
        self._array_names = list(info.details.get("arrays", []))
        self.zarr_store = _checksumming_zarr_store(self.path, self._is_chunk_key, self._chunk_written, self._chunk_read)
        try:
            self.group = zarr.open_group(store=self.zarr_store, mode="r+")
            # Zarr does not persist write_empty_chunks: without it, a chunk equal to the fill value (all zeros)
            # would be deleted instead of written, and never be done.
            self.arrays = {
                name: self.group[name].with_config({"write_empty_chunks": True}) for name in self._array_names
            }
        except (KeyError, FileNotFoundError) as error:
            raise LostMetadataError(self.path, f"the zarr.json of its array {error} is missing", info.kind) from None

    @classmethod
    def _create(cls, path: StorePath, info: StoreInfo, arrays: Mapping[str, ArraySpec] | None = None) -> None:
        arrays = dict(arrays or {})
        info = StoreInfo(**{**asdict(info), "details": {**info.details, "arrays": sorted(arrays)}})
        # A fresh prefix: "a" creates the group ("w" would also delete an object store's partial marker).
        zarr_store = _checksumming_zarr_store(store_path(path), lambda key: False, lambda *_: None, lambda *_: None)
        group = zarr.open_group(store=zarr_store, mode="a")
        for name, spec in arrays.items():
            group.create_array(
                name,
                shape=(info.n_samples, *spec.tail_shape),
                chunks=(info.chunk_size, *spec.tail_shape),
                dtype=spec.dtype,
                dimension_names=spec.dimension_names,
                fill_value=0,
                config={"write_empty_chunks": True},
            )
        group.attrs[ATTRS_KEY] = info.to_json()

    @classmethod
    def prepare(cls, path: StorePath, info: StoreInfo, arrays: Mapping[str, ArraySpec] | None = None) -> ZarrChunkStore:
        # "arrays" is part of what a reader needs, so it joins the details before the fingerprint comparison.
        info = StoreInfo(**{**asdict(info), "details": {**info.details, "arrays": sorted(arrays or {})}})
        return super().prepare(path, info, arrays=arrays)  # type: ignore[return-value]

    def _write_info(self, info: StoreInfo) -> None:
        self.group.attrs[ATTRS_KEY] = info.to_json()

    def chunk_key(self, name: str, index: int) -> str:
        """The key of chunk ``index`` of array ``name`` (``z/c/6/0``)."""
        array = self.arrays[name]
        return f"{name}/{array.metadata.encode_chunk_key((index,) + (0,) * (array.ndim - 1))}"

    def chunk_files(self, index: int) -> list[str]:
        self.info.chunk_slice(index)  # raises IndexError out of range
        return [self.chunk_key(name, index) for name in self._array_names]

    def record_key(self, file_key: str) -> str:
        name, _, rest = file_key.partition("/c/")
        return f"{name}/{RECORDS_DIR}/{int(rest.split('/')[0]):05d}.json"

    def _chunk_index(self, key: str) -> int | None:
        name, separator, rest = key.partition("/c/")
        if not separator or name not in self._array_names:
            return None
        parts = rest.split("/")
        if not all(part.isdigit() for part in parts) or any(part != "0" for part in parts[1:]):
            return None
        return int(parts[0])

    def _is_chunk_key(self, key: str) -> bool:
        return self._chunk_index(key) is not None

    def _chunk_written(self, key: str, size: int, crc32c: str) -> None:
        self._written[key] = (size, crc32c)

    def _chunk_read(self, key: str, data: bytes | None) -> None:
        index = self._chunk_index(key)
        if data is None:
            raise StoreError(
                f"{self.path}: chunk {index} ({key}) is missing (it would read as zeros); {self.stage_hint()}"
            )
        if self.verify:
            self.check_data(index, key, data)  # type: ignore[arg-type]

    def write_chunk(
        self, index: int, values: Mapping[str, np.ndarray], upstream: Mapping[str, Any] | None = None
    ) -> None:
        """Write chunk ``index`` of every array (each value: (chunk length, *tail_shape)), then its records.

        Args:
            upstream: what the chunk was computed from (:meth:`ChunkedStore.lineage` of each input store, by name).

        Raises:
            StoreError: wrong arrays, shapes or dtypes; or the write failed (no space, no permission), leaving the
                chunk unrecorded (to be recomputed) and every other chunk as it was.
        """
        if set(values) != set(self.arrays):
            raise StoreError(f"{self.path}: chunk {index} needs arrays {sorted(self.arrays)}, got {sorted(values)}")
        rows = self.info.chunk_slice(index)
        for name, value in values.items():
            array = self.arrays[name]
            expected = (rows.stop - rows.start, *array.shape[1:])
            if value.shape != expected or value.dtype != array.dtype:
                raise StoreError(
                    f"{self.path}/{name}: chunk {index} must be {expected} {array.dtype}, "
                    f"got {value.shape} {value.dtype}"
                )
        try:
            self._drop_records(index)
            for name, value in values.items():
                key = self.chunk_key(name, index)
                self.arrays[name][rows] = value
                if key not in self._written:
                    raise RuntimeError(f"{self.path}: chunk {index} ({key}) was not written by Zarr (a bug)")
                size, crc32c = self._written.pop(key)
                self._write_record(ChunkRecord(self.info.fingerprint, index, key, size, crc32c, dict(upstream or {})))
        except OSError as error:
            raise os_error(error, f"{self.path}: cannot write chunk {index}") from None

    def read_chunk(self, name: str, index: int) -> np.ndarray:
        """Chunk ``index`` of array ``name``: (chunk length, *tail_shape).

        Raises:
            StoreError: the chunk is missing, or (verifying) does not match its record.
        """
        return self.arrays[name][self.info.chunk_slice(index)]


def _checksumming_zarr_store(path: StorePath, chunk_key, on_written, on_read) -> ChecksummingZarrStore:
    if is_remote(path):
        base = FsspecStore.from_url(str(path), storage_options=zarr_storage_options(path))
        return ChecksummingZarrStore(
            base, local_root=None, chunk_key=chunk_key, on_chunk_written=on_written, on_chunk_read=on_read
        )
    return ChecksummingZarrStore(
        LocalStore(str(path)),
        local_root=Path(path),
        chunk_key=chunk_key,
        on_chunk_written=on_written,
        on_chunk_read=on_read,
    )


class ParquetChunkStore(ChunkedStore):
    """A folder of Parquet files ``part-00000.parquet``…, one per pipeline chunk, plus ``_latentatlas.json`` and
    the parts' records in ``_records/``.

    A chunk of n samples has n rows, or n × ``info.details["rows_per_sample"]`` for long tables (e.g. one row per
    sample, direction and edit strength in the evaluation store).

    ``pyarrow.dataset``, pandas and DuckDB read the folder as one table (they skip underscored files and folders).
    """

    @classmethod
    def _create(cls, path: StorePath, info: StoreInfo) -> None:
        path.mkdir(parents=True, exist_ok=is_remote(path))
        atomic_write_json(path / PARQUET_INFO_FILE, info.to_json())

    def _write_info(self, info: StoreInfo) -> None:
        atomic_write_json(self.path / PARQUET_INFO_FILE, info.to_json())

    def part_path(self, index: int) -> StorePath:
        return self.path / self.part_key(index)

    @staticmethod
    def part_key(index: int) -> str:
        return f"part-{index:05d}.parquet"

    def chunk_files(self, index: int) -> list[str]:
        self.info.chunk_slice(index)  # raises IndexError out of range
        return [self.part_key(index)]

    def record_key(self, file_key: str) -> str:
        return f"{RECORDS_DIR}/{file_key.removesuffix('.parquet')}.json"

    def write_chunk(self, index: int, table: pa.Table, upstream: Mapping[str, Any] | None = None) -> None:
        """Write chunk ``index`` as one Parquet file (durably: temp name, fsync, ``os.replace``), then its record.

        Args:
            upstream: what the chunk was computed from (:meth:`ChunkedStore.lineage` of each input store, by name).

        Raises:
            StoreError: the wrong number of rows; or the write failed (no space, no permission), leaving the chunk
                unrecorded (to be recomputed) and every other chunk as it was.
        """
        rows = self.info.chunk_slice(index)
        expected = (rows.stop - rows.start) * int(self.info.details.get("rows_per_sample", 1))
        if table.num_rows != expected:
            raise StoreError(f"{self.path}: chunk {index} must have {expected} rows, got {table.num_rows}")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", use_dictionary=False)
        payload = sink.getvalue().to_pybytes()
        key = self.part_key(index)
        try:
            self._drop_records(index)
            atomic_write_bytes(self.path / key, payload)
            self._write_record(
                ChunkRecord(self.info.fingerprint, index, key, len(payload), crc32c_hex(payload), dict(upstream or {}))
            )
        except OSError as error:
            raise os_error(error, f"{self.path}: cannot write chunk {index}") from None

    def read_chunk(self, index: int, columns: list[str] | None = None) -> pa.Table:
        """Part ``index`` as a table (only ``columns`` if given).

        Raises:
            StoreError: the part is missing, or (verifying) does not match its record.
        """
        key = self.part_key(index)
        data = self._verified_bytes(index, key)
        try:
            return pq.read_table(pa.BufferReader(data), columns=columns)
        except (pa.ArrowException, OSError) as error:
            raise StoreError(
                f"{self.path}: chunk {index} ({key}) cannot be read ({error}); {self.stage_hint()}"
            ) from None


@dataclass(frozen=True)
class StoreReport:
    """What :func:`inspect_store` found.

    Attributes:
        store: the store; None when there is none (``exists`` False) or it cannot be opened (``error`` says why).
        problems: its bad chunks (their own files, and their lineage unless the store is stale).
        done: chunks whose files match their records.
        inputs: the upstream stores its chunks were computed from, by name (``latents.zarr``).
        stale: why the store as a whole was computed from other inputs than the ones there now (one line each):
            an input was rebuilt since (other params, another chunking).
        unchecked: why its lineage could not be checked (an input cannot be opened).
    """

    path: StorePath
    store: ChunkedStore | None
    error: str | None = None
    problems: tuple[ChunkProblem, ...] = ()
    done: int = 0
    exists: bool = True
    inputs: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    unchecked: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        """``complete`` | ``incomplete`` (a run has not finished) | ``damaged`` (bad chunks) | ``stale`` (computed
        from an input that has been rebuilt since) | ``absent`` (no store) | ``unreadable`` (foreign, or its
        metadata is lost)."""
        if self.store is None:
            return "unreadable" if self.exists else "absent"
        if self.stale:
            return "stale"
        damage = [p for p in self.problems if p.kind not in GAP_KINDS or self.store.info.complete]
        if damage:
            return "damaged"
        return "complete" if self.store.info.complete else "incomplete"

    @property
    def bad(self) -> list[ChunkProblem]:
        """Problems worth naming: all of them in a store marked complete, else all but unwritten chunks."""
        if self.store is None:
            return []
        return [p for p in self.problems if self.store.info.complete or p.kind not in GAP_KINDS]


def inspect_store(path: StorePath, deep: bool = True) -> StoreReport:
    """Open the store at ``path`` and check every chunk against its record and its upstream (the sibling stores
    its records name); ``deep`` compares checksums (reads everything), else sizes only. Never raises StoreError.

    A store whose records name an input store by a fingerprint that input no longer has (it was rebuilt since:
    other params, another chunk count) is *stale* as a whole: its chunks are not compared with that input's chunks
    one by one (they need not even exist there)."""
    path = store_path(path)
    try:
        if _read_info(path) is None:
            return StoreReport(
                path,
                None,
                error=f"{path}: no store here; run the stage that produces it first (e.g. `dvc repro`)",
                exists=False,
            )
        store = open_store(path)
        recorded = store.recorded_upstream()
        inputs: dict[str, ChunkedStore] = {}
        stale, unchecked = [], []
        for name, fingerprints in sorted(recorded.items()):
            try:
                inputs[name] = open_store(path.parent / name)
            except StoreError:
                unchecked.append(f"its lineage is not checked: its input {name} cannot be opened")
                continue
            if inputs[name].info.fingerprint not in fingerprints:
                stale.append(
                    f"computed from {name} {', '.join(sorted(fingerprints))}, which has been rebuilt since "
                    f"(now {inputs[name].info.fingerprint}: other params or chunking)"
                )
        lineage = not stale and not unchecked
        problems = store.check_chunks(deep=deep, upstream=inputs if lineage else None, lineage=lineage)
    except StoreError as error:
        return StoreReport(path, None, error=str(error))
    bad_indices = {problem.index for problem in problems}
    return StoreReport(
        store.path,
        store,
        problems=tuple(problems),
        done=store.info.n_chunks - len(bad_indices),
        inputs=tuple(sorted(recorded)),
        stale=tuple(stale),
        unchecked=tuple(unchecked),
    )
