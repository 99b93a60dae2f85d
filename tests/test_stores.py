"""Chunked stores: fingerprints, resume, wipe on mismatch, foreign/corrupted stores, locks, atomic parts."""

from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np
import pyarrow as pa
import pytest

from latentatlas.stores import (
    ArraySpec,
    ParquetChunkStore,
    StoreError,
    StoreInfo,
    StoreLockedError,
    ZarrChunkStore,
    fingerprint_of,
    store_lock,
)

SPEC = {"z": ArraySpec((4,), "float32", ("sample", "z_dim"))}


def _info(seed: int = 0, n: int = 10, chunk: int = 4) -> StoreInfo:
    return StoreInfo("latents", {"seed": seed}, n, chunk)


def _values(index: int, length: int) -> dict[str, np.ndarray]:
    return {"z": np.full((length, 4), index + 0.5, dtype=np.float32)}


def test_fingerprint_is_stable_and_sensitive() -> None:
    assert fingerprint_of({"a": 1, "b": [1, 2]}) == fingerprint_of({"b": [1, 2], "a": 1})
    assert fingerprint_of({"a": 1}) != fingerprint_of({"a": 2})
    assert _info(0).fingerprint != _info(1).fingerprint
    assert _info(0, chunk=4).fingerprint != _info(0, chunk=5).fingerprint


def test_chunking_covers_samples_exactly() -> None:
    info = _info(n=10, chunk=4)
    assert info.n_chunks == 3
    assert [info.chunk_slice(i) for i in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 10)]
    with pytest.raises(IndexError):
        info.chunk_slice(3)


def test_resume_keeps_written_chunks_and_completion_needs_all(tmp_path) -> None:
    path = tmp_path / "latents.zarr"
    store = ZarrChunkStore.prepare(path, _info(), arrays=SPEC)
    assert store.pending_chunks() == [0, 1, 2]
    store.write_chunk(1, _values(1, 4))
    with pytest.raises(StoreError, match=r"chunks \[0, 2\] are missing"):
        store.mark_complete()

    reopened = ZarrChunkStore.prepare(path, _info(), arrays=SPEC)
    assert reopened.pending_chunks() == [0, 2]
    np.testing.assert_array_equal(reopened.read_chunk("z", 1), _values(1, 4)["z"])
    with pytest.raises(StoreError, match="incomplete"):
        ZarrChunkStore.open(path, require_complete=True)
    reopened.write_chunk(0, _values(0, 4))
    reopened.write_chunk(2, _values(2, 2))
    reopened.mark_complete()
    assert ZarrChunkStore.open(path, "latents", require_complete=True).info.complete


def test_other_fingerprint_wipes_and_rebuilds(tmp_path) -> None:
    path = tmp_path / "latents.zarr"
    ZarrChunkStore.prepare(path, _info(seed=0), arrays=SPEC).write_chunk(0, _values(0, 4))
    with pytest.warns(UserWarning, match="produced by other inputs"):
        rebuilt = ZarrChunkStore.prepare(path, _info(seed=1), arrays=SPEC)
    assert rebuilt.pending_chunks() == [0, 1, 2]
    assert rebuilt.info.inputs == {"seed": 1}
    assert not list(tmp_path.glob(".latents.zarr.*"))  # no staging or stale folders left behind


def test_foreign_and_corrupted_stores_are_refused_and_left_alone(tmp_path) -> None:
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a Zarr store"):
        ZarrChunkStore.prepare(foreign, _info(), arrays=SPEC)
    assert (foreign / "notes.txt").read_text() == "mine"

    other_zarr = tmp_path / "other.zarr"
    import zarr

    zarr.open_group(str(other_zarr), mode="w").attrs["someone"] = "else"
    with pytest.raises(StoreError, match="foreign store"):
        ZarrChunkStore.prepare(other_zarr, _info(), arrays=SPEC)

    corrupted = tmp_path / "corrupted.zarr"
    ZarrChunkStore.prepare(corrupted, _info(), arrays=SPEC)
    (corrupted / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupted store metadata"):
        ZarrChunkStore.open(corrupted)

    tampered = tmp_path / "tampered.zarr"
    ZarrChunkStore.prepare(tampered, _info(), arrays=SPEC)
    meta = json.loads((tampered / "zarr.json").read_text())
    meta["attributes"]["latentatlas"]["inputs"]["seed"] = 99
    (tampered / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="fingerprint does not match"):
        ZarrChunkStore.open(tampered)


def test_a_file_where_a_store_belongs_is_an_error(tmp_path) -> None:
    path = tmp_path / "labels"
    path.write_text("x")
    with pytest.raises(StoreError, match="found a file"):
        ParquetChunkStore.prepare(path, StoreInfo("labels", {}, 4, 2))


def test_wrong_kind_and_missing_store(tmp_path) -> None:
    path = tmp_path / "latents.zarr"
    ZarrChunkStore.prepare(path, _info(), arrays=SPEC)
    with pytest.raises(StoreError, match="expected 'images'"):
        ZarrChunkStore.open(path, expected_kind="images")
    with pytest.raises(StoreError, match="no store here"):
        ZarrChunkStore.open(tmp_path / "absent.zarr")


def test_chunk_shape_and_dtype_are_checked(tmp_path) -> None:
    store = ZarrChunkStore.prepare(tmp_path / "latents.zarr", _info(), arrays=SPEC)
    with pytest.raises(StoreError, match=r"must be \(4, 4\) float32"):
        store.write_chunk(0, {"z": np.zeros((3, 4), np.float32)})
    with pytest.raises(StoreError, match="float32"):
        store.write_chunk(0, {"z": np.zeros((4, 4), np.float64)})


def test_parquet_parts_are_atomic_and_counted(tmp_path) -> None:
    store = ParquetChunkStore.prepare(tmp_path / "labels", StoreInfo("labels", {"x": 1}, 5, 2))
    table = pa.table({"sample_id": pa.array([0, 1], pa.int64()), "happy": pa.array([0.1, 0.9], pa.float32())})
    store.write_chunk(0, table)
    assert store.pending_chunks() == [1, 2]
    with pytest.raises(StoreError, match="must have 1 rows"):
        store.write_chunk(2, table)
    assert not store.part_path(2).exists()
    assert [p.name for p in (tmp_path / "labels").iterdir() if p.name.startswith(".")] == []
    assert store.read_chunk(0).equals(table)


def _hold_lock(path, ready, release) -> None:
    with store_lock(path):
        ready.set()
        release.wait(30)


def test_second_writer_fails_fast_and_a_dead_holder_releases(tmp_path) -> None:
    path = tmp_path / "images.zarr"
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(path, ready, release))
    holder.start()
    assert ready.wait(10)
    # A blocking lock would wait until the holder gives up (30 s) and then succeed: no error, test fails.
    with pytest.raises(StoreLockedError, match=rf"pid {holder.pid} holds"):
        with store_lock(path):
            pass
    os.kill(holder.pid, 9)  # a SIGKILLed holder must not block the resume
    holder.join()
    with store_lock(path):
        pass


def test_resume_removes_temp_files_a_killed_writer_left(tmp_path) -> None:
    path = tmp_path / "latents.zarr"
    store = ZarrChunkStore.prepare(path, _info(), arrays=SPEC)
    store.write_chunk(0, _values(0, 4))
    chunk_dir = path / "z" / "c" / "1"
    chunk_dir.mkdir(parents=True)
    (chunk_dir / "0.3f2a9c.partial").write_bytes(b"half a chunk")  # Zarr's temp name, killed before the rename
    (path / ".zarr.json.x1.tmp").write_text("{")  # ours (latentatlas.atomic), killed before os.replace
    reopened = ZarrChunkStore.prepare(path, _info(), arrays=SPEC)
    assert reopened.pending_chunks() == [1, 2]
    assert not list(path.rglob("*.partial")) and not list(path.rglob(".*.tmp"))
    np.testing.assert_array_equal(reopened.read_chunk("z", 0), _values(0, 4)["z"])
