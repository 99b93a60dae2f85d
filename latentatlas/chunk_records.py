"""Per-chunk records: what each chunk file of a store holds (size, CRC32C) and what it was computed from.

Every chunk file of a store (one Zarr chunk of one array, or one Parquet part) gets one small JSON record beside it,
written atomically (temp file, fsync, rename; one put in an object store) *after* the chunk file itself is durable:

    latents.zarr/z/c/6/0                 the chunk        latents.zarr/z/_records/00006.json     its record
    labels/part-00006.parquet            the chunk        labels/_records/part-00006.json        its record

A record names the store it belongs to (its fingerprint), the chunk and file, the file's size and CRC32C, and, for
every upstream store the chunk was computed from, that store's fingerprint and the digests of the upstream chunk
files it read. One file per chunk file means concurrent writers (threads, Dask worker processes, hosts sharing an
object store) never rewrite each other's records. Zarr never lists inside an array folder and pyarrow, pandas and
DuckDB skip ``_``-prefixed folders, so other tools read the stores as before.

A chunk counts as done only when its record exists and the file matches it; a crash between the chunk write and its
record leaves an unrecorded chunk, which is recomputed. Records hold no timestamps or pids: rewriting a chunk from
the same inputs gives the same record, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from latentatlas.atomic import atomic_write_bytes

RECORD_FORMAT = "latentatlas-chunk/1"
RECORDS_DIR = "_records"  # "_": pyarrow.dataset, pandas and DuckDB skip it; zarr never lists inside an array


def crc32c_hex(data: bytes) -> str:
    """The CRC32C of ``data`` as 8 hex digits (hardware-accelerated: ≈10 GB/s here)."""
    return f"{google_crc32c.value(data):08x}"


@dataclass(frozen=True)
class ChunkRecord:
    """The record of one chunk file.

    Attributes:
        store: fingerprint of the store the file belongs to.
        chunk: the pipeline chunk index.
        file: the file's key relative to the store (``z/c/6/0``, ``part-00006.parquet``).
        size, crc32c: the file's length in bytes and CRC32C (8 hex digits).
        upstream: upstream store name (``latents.zarr``) → ``{"fingerprint": ..., "files": {key: digest}}`` of the
            upstream chunk this one was computed from; empty for a stage without chunked inputs.
    """

    store: str
    chunk: int
    file: str
    size: int
    crc32c: str
    upstream: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """What a downstream record stores about this file: ``crc32c:<hex>/<size>``."""
        return f"crc32c:{self.crc32c}/{self.size}"

    def to_bytes(self) -> bytes:
        raw = {
            "format": RECORD_FORMAT,
            "store": self.store,
            "chunk": self.chunk,
            "file": self.file,
            "size": self.size,
            "crc32c": self.crc32c,
            "upstream": self.upstream,
        }
        return (json.dumps(raw, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> ChunkRecord:
        """Raises: ValueError: not a record of this format (the message says what is wrong)."""
        try:
            raw = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"not JSON ({error})") from None
        if not isinstance(raw, dict) or raw.get("format") != RECORD_FORMAT:
            raise ValueError(
                f"format {raw.get('format') if isinstance(raw, dict) else None!r}, expected {RECORD_FORMAT!r}"
            )
        try:
            return cls(
                store=str(raw["store"]),
                chunk=int(raw["chunk"]),
                file=str(raw["file"]),
                size=int(raw["size"]),
                crc32c=str(raw["crc32c"]),
                upstream=dict(raw["upstream"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"missing or bad field {error}") from None


#: Problem kinds of a chunk file. The first two are what an unfinished (or killed) run leaves: no damage.
NOT_WRITTEN = "not written"
UNRECORDED = "unrecorded"
MISSING = "missing"
WRONG_SIZE = "wrong size"
DAMAGED = "damaged"
OTHER_UPSTREAM = "computed from other upstream chunks"
FOREIGN_RECORD = "record of another store"
MISPLACED_RECORD = "record of another chunk"  # this store's record, of another chunk: files moved or swapped
BAD_RECORD = "unreadable record"
GAP_KINDS = frozenset({NOT_WRITTEN, UNRECORDED})


@dataclass(frozen=True)
class ChunkProblem:
    """Why chunk ``index`` of a store is not done: ``kind`` (one of the constants above) and a detail."""

    store: str  # the store's path, as text
    index: int
    file: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"chunk {self.index} ({self.file}) {self.kind}: {self.detail}"

    @property
    def message(self) -> str:
        return f"{self.store}: {self}"


class ChecksummingZarrStore(WrapperStore[Store]):
    """A Zarr store wrapper that sees every chunk's encoded bytes.

    Writes: every key is written durably (local: temp file, fsync, rename, fsync of the folder; object stores: one
    put); for a chunk key, ``on_chunk_written(key, size, crc32c)`` is called once the file is in place.
    Reads: for a chunk key, ``on_chunk_read(key, data)`` is called with the bytes (None when the chunk file does
    not exist) before Zarr decodes them; it raises to refuse them. Zarr would otherwise fill a missing chunk with
    the fill value (zeros) and decode whatever bytes it finds.

    Args:
        store: the underlying Zarr store (``LocalStore`` or ``FsspecStore``).
        local_root: the folder of a ``LocalStore`` (written by this wrapper itself); None for an object store.
        chunk_key: ``key → True`` for the keys that are chunks (metadata keys pass through unchecked).
    """

    def __init__(
        self,
        store: Store,
        *,
        local_root: Path | None,
        chunk_key: Callable[[str], bool],
        on_chunk_written: Callable[[str, int, str], None],
        on_chunk_read: Callable[[str, bytes | None], None],
    ) -> None:
        super().__init__(store)
        self.local_root = local_root
        self.chunk_key = chunk_key
        self.on_chunk_written = on_chunk_written
        self.on_chunk_read = on_chunk_read

    def _with_store(self, store: Store) -> ChecksummingZarrStore:
        return type(self)(
            store,
            local_root=self.local_root,
            chunk_key=self.chunk_key,
            on_chunk_written=self.on_chunk_written,
            on_chunk_read=self.on_chunk_read,
        )

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        if byte_range is None and self.chunk_key(key):
            await asyncio.to_thread(self.on_chunk_read, key, None if value is None else value.to_bytes())
        return value

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def set(self, key: str, value: Buffer) -> None:
        payload = value.to_bytes()
        if self.local_root is not None:
            await asyncio.to_thread(atomic_write_bytes, self.local_root / key, payload)
        else:
            await self._store.set(key, value)
        if self.chunk_key(key):
            self.on_chunk_written(key, len(payload), crc32c_hex(payload))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not await self._store.exists(key):
            await self.set(key, value)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        for key, value in values:
            await self.set(key, value)


def upstream_mismatch(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """A one-line description of how a record's ``upstream`` differs from the current upstream chunks; None when
    they are equal."""
    if dict(recorded) == dict(expected):
        return None
    parts = []
    for name in sorted(set(recorded) | set(expected)):
        was, now = recorded.get(name), expected.get(name)
        if was == now:
            continue
        if was is None:
            parts.append(f"recorded without {name}")
        elif now is None:
            parts.append(f"recorded from {name}, which is not an input now")
        elif was.get("fingerprint") != now.get("fingerprint"):
            parts.append(f"{name} had fingerprint {was.get('fingerprint')}, now {now.get('fingerprint')}")
        else:
            changed = sorted(
                key
                for key in set(was.get("files", {})) | set(now.get("files", {}))
                if was.get("files", {}).get(key) != now.get("files", {}).get(key)
            )
            details = ", ".join(
                f"{key} was {was.get('files', {}).get(key)}, is {now.get('files', {}).get(key)}" for key in changed[:2]
            )
            parts.append(f"{name}: {details}")
    return "; ".join(parts)
