"""Stores that cannot lie: every chunk is recorded (size, CRC32C, the upstream chunks it was computed from), so a
missing, damaged, truncated or mixed chunk is named by `status`/`verify`, refused by every reader and recomputed
alone by a stage rerun; stages hold their inputs read-locked; filesystem failures end in one line."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from latentatlas import dataset
from latentatlas.locations import store_path
from latentatlas.stores import (
    ArraySpec,
    ParquetChunkStore,
    StoreError,
    StoreInfo,
    StoreLockedError,
    ZarrChunkStore,
    open_store,
)
from pipeline.cli import main
from stages.label import LabelStage
from stages.runtime.chunked import run_stage
from stages.sample import SampleStage
from stages.synthesize import SynthesizeStage
from tests.conftest import COLOR_LABELER, make_params, tree_digest

TINY_RAW = {
    "sample": {"n_samples": 300, "chunk_size": 100, "seed": 7},
    "synthesize": {"batch_size": 64, "device": "cpu"},
    "label": {"labeler": COLOR_LABELER, "batch_size": 64, "device": "cpu", "contact_sheet_samples": 8},
}

# (store, damaged chunk, its file, the stage that writes it)
TARGETS = {
    "latents": ("latents.zarr", 1, "z/c/1/0", SampleStage),
    "images": ("images.zarr", 2, "images/c/2/0/0/0", SynthesizeStage),
    "labels": ("labels", 0, "part-00000.parquet", LabelStage),
}


def _damage(file: Path, how: str) -> None:
    if how == "deleted":
        file.unlink()
    elif how == "flipped byte":
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))
    elif how == "zero length":  # what a power loss after an un-fsynced rename leaves
        file.write_bytes(b"")
    else:
        raise ValueError(how)


def _cli(*args: str, params_dir: Path | None = None):
    extra: list[str] = []
    if params_dir is not None:
        params_path = params_dir / "params.yaml"
        params_path.write_text(yaml.safe_dump(TINY_RAW))
        extra = ["--params", str(params_path), "--engine", "local"]
    return CliRunner().invoke(main, [*args, *extra])


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _mtimes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_mtime_ns
        for path in folder.rglob("*")
        if path.is_file() and not path.name.endswith(".lock")
    }


@pytest.mark.parametrize("how", ["deleted", "flipped byte", "zero length"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_bad_chunk_is_named_refused_and_recomputed_alone(tmp_path, tiny_run, target: str, how: str) -> None:
    store_name, index, file_key, stage_cls = TARGETS[target]
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    reference = tree_digest(data_dir)
    _damage(data_dir / store_name / file_key, how)
    before = _mtimes(data_dir)

    # status and verify name the chunk and what is wrong with it
    kind = {"deleted": "missing", "flipped byte": "damaged", "zero length": "wrong size"}[how]
    status = _cli("status", "--data-dir", str(data_dir))
    assert status.exit_code == 1, status.output  # a damaged store needs repair
    assert f"chunk {index} ({file_key}) {kind}" in status.output
    assert f"{store_name:14s} damaged" in status.output
    verify = _cli("verify", "--data-dir", str(data_dir))
    assert verify.exit_code == 1 and f"chunk {index} ({file_key}) {kind}" in verify.output

    # every reader refuses it, naming the store and the chunk
    expected = rf"{store_name}: chunk {index} \({file_key}\)"
    with pytest.raises(StoreError, match=expected):
        store = open_store(data_dir / store_name)
        if isinstance(store, ParquetChunkStore):
            store.read_chunk(index)
        else:
            store.read_chunk(file_key.split("/")[0], index)
    data = dataset.open(data_dir)
    if target != "images" or how != "flipped byte":  # arrays() reads no image bytes: it checks their records only
        with pytest.raises(StoreError, match=expected):
            data.arrays()
    with pytest.raises(StoreError, match=expected):
        data.torch_dataset(images=True)[index * 100 + 5]
    if target == "labels":
        with pytest.raises(StoreError, match=expected):
            data.labels_frame()  # pyarrow alone would return 200 rows without a word
    if target == "latents":
        with pytest.raises(StoreError, match=expected):
            data.latents()[100:110]  # the lazy Zarr array too: never zeros

    # the stage rerun recomputes exactly that chunk; the store ends byte-identical
    with pytest.warns(UserWarning, match=rf"recomputing 1 bad chunks: chunk {index} \({file_key}\) {kind}"):
        with stage_cls(make_params(), data_dir) as stage:
            assert stage.pending == [index]
    with pytest.raises(StoreError, match="incomplete"):  # marked so until repaired: downstream waits
        dataset.open(data_dir)
    run_stage(stage_cls(make_params(), data_dir))
    assert tree_digest(data_dir) == reference
    after = _mtimes(data_dir)
    rewritten = {name for name in before if after.get(name) != before[name]}
    store_files = {name for name in rewritten if name.startswith(store_name + "/")}
    assert {
        name for name in store_files if "_records" not in name and not name.endswith(("zarr.json", "_latentatlas.json"))
    } <= {f"{store_name}/{file_key}"}
    assert not rewritten - store_files - {"contact_sheet.png"}  # no other store touched
    assert _cli("verify", "--data-dir", str(data_dir)).exit_code == 0


def test_unrecorded_chunk_is_recomputed_quietly(tmp_path, tiny_run, recwarn) -> None:
    """A run killed between writing a chunk and recording it: the chunk is redone on resume (no damage warning)."""
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    reference = tree_digest(data_dir)
    (data_dir / "latents.zarr" / "z" / "_records" / "00002.json").unlink()
    store = ZarrChunkStore.open(data_dir / "latents.zarr")
    assert [problem.kind for problem in store.check_chunks()] == ["unrecorded"]
    assert store.pending_chunks() == [2]
    store.mark_incomplete()  # as a killed run leaves it
    with SampleStage(make_params(), data_dir) as stage:
        assert stage.pending == [2]
    assert not [w for w in recwarn if "bad chunks" in str(w.message)]
    run_stage(SampleStage(make_params(), data_dir))
    assert tree_digest(data_dir) == reference


def test_chunk_computed_from_other_upstream_is_detected_and_recomputed(tmp_path, tiny_run) -> None:
    """What a lock-less run leaves when `sample` reran with another seed while `synthesize` read the latents (and
    the seed was then reverted): image chunk 1 computed from other latents. It is named, refused and redone."""
    data_dir, other = tmp_path / "data", tmp_path / "other"
    shutil.copytree(tiny_run, data_dir)
    reference = tree_digest(data_dir)
    run_stage(SampleStage(make_params(sample={"seed": 8}), other))
    other_latents = ZarrChunkStore.open(other / "latents.zarr")
    with SynthesizeStage(make_params(sample={"seed": 8}), other) as foreign:
        pixels = foreign.synthesizer.uint8(other_latents.read_chunk("z", 1))
    images = ZarrChunkStore.open(data_dir / "images.zarr")
    images.write_chunk(1, {"images": pixels}, upstream={"latents.zarr": other_latents.lineage(1)})

    verify = _cli("verify", "--data-dir", str(data_dir))
    assert verify.exit_code == 1
    assert (
        "chunk 1 (images/c/1/0/0/0) computed from other upstream chunks: latents.zarr had fingerprint" in verify.output
    )
    assert "labels         damaged" in verify.output  # labels of chunk 1 came from the old images chunk 1
    with pytest.raises(StoreError, match=r"images.zarr: chunk 1 .* computed from other upstream chunks"):
        dataset.open(data_dir).arrays()
    with pytest.warns(UserWarning, match="recomputing 1 bad chunks"):
        run_stage(SynthesizeStage(make_params(), data_dir))
    assert tree_digest(data_dir) == reference
    assert _cli("verify", "--data-dir", str(data_dir)).exit_code == 0


def test_upstream_writer_is_refused_while_a_stage_reads_its_input(tmp_path, tiny_run) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    reference = tree_digest(data_dir)
    with SynthesizeStage(make_params(), data_dir) as stage:
        with pytest.raises(
            StoreLockedError,
            match=rf"latents.zarr is being read by another run \(pid {os.getpid()} "
            rf"holds a read lock",
        ):
            SampleStage(make_params(sample={"seed": 8}), data_dir)
        line = _one_error_line(_cli("sample", "--data-dir", str(data_dir), params_dir=tmp_path))
        assert f"latents.zarr is being read by another run (pid {os.getpid()}" in line
        # an attached worker (the driver holds the locks) takes none and is not refused
        worker = SynthesizeStage(make_params(), data_dir, attach=stage.store.info.fingerprint)
        worker.run_chunk(0)
        worker.close()
    with SampleStage(make_params(), data_dir):  # a writer holds latents: its readers are refused
        with pytest.raises(
            StoreLockedError,
            match=rf"latents.zarr is being written by another run \(pid "
            rf"{os.getpid()} holds",
        ):
            SynthesizeStage(make_params(), data_dir)
    assert tree_digest(data_dir) == reference


def test_a_running_stage_sees_its_input_rebuilt_under_it(tiny_run) -> None:
    """Object stores have no locks: there a stage whose input is rebuilt mid-run stops at the next chunk instead
    of mixing two runs' chunks."""
    location = store_path(f"memory://latentatlas-tests/{uuid.uuid4().hex}")
    try:
        with pytest.warns(UserWarning, match="no locks"):
            run_stage(SampleStage(make_params(), location))
            with SynthesizeStage(make_params(), location) as stage:
                stage.run_chunk(0)
                with pytest.warns(UserWarning, match="produced by other inputs"):
                    run_stage(SampleStage(make_params(sample={"seed": 8}), location))
                with pytest.raises(StoreError, match=r"latents.zarr: chunk 1 \(z/c/1/0\) record of another store"):
                    stage.run_chunk(1)
    finally:
        location.fs.rm(location.path, recursive=True)


def test_open_dataset_detects_stores_changed_since_it_was_opened(tmp_path, tiny_run) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    data = dataset.open(data_dir)
    torch_data = data.torch_dataset(["red"])
    with pytest.warns(UserWarning, match="produced by other inputs"):
        run_stage(SampleStage(make_params(sample={"seed": 8}), data_dir))
    with pytest.raises(StoreError, match=r"latents.zarr: chunk 0 .*rebuilt or replaced since it was opened"):
        data.arrays()
    with pytest.raises(StoreError, match=r"latents.zarr: chunk 1 .*since it was opened"):
        torch_data[150]
    with pytest.raises(StoreError, match="images.zarr was synthesized from other latents"):
        dataset.open(data_dir)


def test_verification_can_be_skipped_but_a_missing_chunk_never_reads_as_zeros(tmp_path, tiny_run) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    _damage(data_dir / "latents.zarr" / "z" / "c" / "1" / "0", "flipped byte")
    fast = dataset.open(data_dir, verify=False)
    assert fast.labels_frame().shape == (300, 4)  # unchecked: the caller asked for speed
    (data_dir / "latents.zarr" / "z" / "c" / "2" / "0").unlink()
    with pytest.raises(StoreError, match=r"chunk 2 \(z/c/2/0\) is missing \(it would read as zeros\)"):
        fast.latents()[200:210]


def _write_chunks(path: str, indices: list[int]) -> None:
    store = ZarrChunkStore.open(Path(path))
    for index in indices:
        store.write_chunk(index, {"z": np.full((1, 4), index, np.float32)})


def test_concurrent_writers_never_lose_each_others_records(tmp_path) -> None:
    path = tmp_path / "latents.zarr"
    store = ZarrChunkStore.prepare(
        path, StoreInfo("latents", {"seed": 0}, 48, 1), arrays={"z": ArraySpec((4,), "float32", ("sample", "z_dim"))}
    )
    with ThreadPoolExecutor(8) as pool:  # threads of one process, one store object
        list(pool.map(lambda index: store.write_chunk(index, {"z": np.full((1, 4), index, np.float32)}), range(24)))
    context = multiprocessing.get_context("spawn")  # fresh interpreters (fork would copy Zarr's I/O thread state)
    workers = [
        context.Process(target=_write_chunks, args=(str(path), list(range(24 + k, 48, 3)))) for k in range(3)
    ]  # separate processes, as Dask workers
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(600)  # a guard against a hang only: spawning imports torch, slow on loaded cores
        assert worker.exitcode == 0, f"writer exited with {worker.exitcode} (None: still running after 600 s)"
    assert store.check_chunks() == []
    store.mark_complete()
    np.testing.assert_array_equal(ZarrChunkStore.open(path).arrays["z"][:, 0], np.arange(48))


def test_data_dir_that_is_a_file_is_one_line(tmp_path) -> None:
    data_file = tmp_path / "data"
    data_file.write_text("not a folder")
    for command in ("sample", "synthesize"):
        line = _one_error_line(_cli(command, "--data-dir", str(data_file), params_dir=tmp_path))
        assert line == (
            f"Error: {data_file}: the data dir is a file, expected a folder; remove it or choose another --data-dir"
        )
    assert data_file.read_text() == "not a folder"


def test_unwritable_data_dir_is_one_line(tmp_path, monkeypatch) -> None:
    """Root ignores chmod, so a read-only folder is simulated: creating anything raises PermissionError."""

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    line = _one_error_line(_cli("sample", "--data-dir", str(tmp_path / "data"), params_dir=tmp_path))
    assert (
        f"{tmp_path / 'data' / 'latents.zarr'}: cannot create its lock file: permission denied: make the data "
        f"dir writable or choose another --data-dir [Permission denied]" in line
    )


@pytest.mark.parametrize("failure", [errno.EACCES, errno.ENOSPC])
def test_failed_chunk_write_is_one_line_and_leaves_the_store_intact(
    tmp_path, tiny_run, monkeypatch, failure: int
) -> None:
    """A repair that cannot write (read-only data dir, full disk) stops in one line naming the store and the chunk;
    every other file is as it was, nothing half-written is left, and the repair succeeds once the cause is gone."""
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    reference = tree_digest(data_dir)
    chunk = data_dir / "latents.zarr" / "z" / "c" / "1" / "0"
    chunk.unlink()
    before = tree_digest(data_dir)
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:  # fails for chunk files only (metadata still writes)
        if "/z/c/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(failure, os.strerror(failure))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    result = _cli("sample", "--data-dir", str(data_dir), params_dir=tmp_path)
    line = _one_error_line(result)
    advice = "the disk is full: free some space and rerun" if failure == errno.ENOSPC else "permission denied"
    assert line.startswith(f"Error: {data_dir / 'latents.zarr'}: cannot write chunk 1: {advice}"), line
    after = tree_digest(data_dir)
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    # Only "incomplete" recorded, and chunk 1's record (of bytes that are gone) dropped before the rewrite.
    assert changed == {"latents.zarr/zarr.json", "latents.zarr/z/_records/00001.json"}
    assert not [p for p in data_dir.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not chunk.exists()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert _cli("sample", "--data-dir", str(data_dir), params_dir=tmp_path).exit_code == 0
    assert tree_digest(data_dir) == reference


def test_store_missing_its_zarr_json_is_one_line(tmp_path, tiny_run) -> None:
    """Its readers are refused in one line naming the stage that rebuilds it (which then does: a store of ours
    that lost its metadata is rebuilt, see tests/test_store_hardening.py)."""
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    (data_dir / "latents.zarr" / "zarr.json").unlink()
    line = _one_error_line(_cli("synthesize", "--data-dir", str(data_dir), params_dir=tmp_path))
    assert line == (
        f"Error: {data_dir / 'latents.zarr'} lost its metadata (its zarr.json is missing; its chunk "
        f"records show it is ours); rerun `latentatlas sample` to rebuild it"
    )
    (data_dir / "images.zarr" / "images" / "zarr.json").unlink()
    with pytest.raises(
        StoreError,
        match=r"images.zarr lost its metadata \(the zarr.json of its array 'images' is "
        r"missing\); rerun `latentatlas synthesize` to rebuild it",
    ):
        ZarrChunkStore.open(data_dir / "images.zarr")
    status = _cli("status", "--data-dir", str(data_dir))
    assert "its zarr.json is missing" in status.output and "array 'images'" in status.output
    assert status.exit_code == 1
