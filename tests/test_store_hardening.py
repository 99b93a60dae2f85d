"""What a new user's probe broke: `status`/`verify` over stores of another chunking, sizes too big for memory (refused
before anything is wiped), a full disk at the contact sheet and at the lock, a kill during the contact sheet, stores
that lost their metadata, a data dir that is a file, swapped chunks, and a writer upstream of a running stage."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from latentatlas import stores
from latentatlas.stores import StoreLockedError
from pipeline.cli import main
from stages.label import LabelStage
from stages.runtime import chunked
from stages.runtime.chunked import run_stage
from stages.sample import SampleStage
from stages.synthesize import SynthesizeStage
from tests.conftest import COLOR_LABELER, REPO_ROOT, make_params, tree_digest

TINY_RAW = {
    "sample": {"n_samples": 300, "chunk_size": 100, "seed": 7},
    "synthesize": {"batch_size": 64, "device": "cpu"},
    "label": {"labeler": COLOR_LABELER, "batch_size": 64, "device": "cpu", "contact_sheet_samples": 8},
}
MiB = 2**20


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _stage_cli(stage: str, data_dir: Path, params_dir: Path, **sections: dict):
    """``latentatlas <stage>`` on the tiny params with ``sections`` merged over them."""
    raw = {name: {**values, **sections.get(name, {})} for name, values in TINY_RAW.items()}
    params_path = params_dir / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))
    return _cli(stage, "--data-dir", str(data_dir), "--params", str(params_path), "--engine", "local")


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.output  # no traceback
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _copy(tiny_run: Path, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    return data_dir


def _leftovers(data_dir: Path) -> list[Path]:
    return [path for path in data_dir.rglob("*") if path.name.endswith((".tmp", ".partial"))]


# ------------------------------------------------------------------ 7. status/verify after a chunking change


@pytest.mark.parametrize("change", [{"chunk_size": 150}, {"chunk_size": 50}, {"n_samples": 200}])
def test_status_and_verify_call_stores_below_a_rechunked_store_stale(tmp_path, tiny_run, change: dict) -> None:
    """A valid change of sample.chunk_size or n_samples rebuilds latents.zarr with another chunk count; images.zarr
    and labels (computed from the old latents) are reported stale, naming the stages to rerun, never a crash."""
    data_dir = _copy(tiny_run, tmp_path)
    with pytest.warns(UserWarning, match="produced by other inputs"):
        run_stage(SampleStage(make_params(sample=change), data_dir))
    for command in (["status"], ["status", "--quick"], ["verify"]):
        result = _cli(*command, "--data-dir", str(data_dir))
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        lines = result.output.splitlines()
        assert lines[0].startswith("latents.zarr   complete")
        assert lines[1].startswith("images.zarr    stale      3/3 chunks  N=300")
        assert "computed from latents.zarr " in lines[2] and "which has been rebuilt since" in lines[2]
        assert "rerun `latentatlas synthesize`" in result.output
        labels_line = next(line for line in lines if line.startswith("labels"))
        assert labels_line.startswith("labels         stale      3/3 chunks")
        assert "rerun `latentatlas synthesize`, then `latentatlas label`" in result.output
        assert lines[-1].startswith("Error: ")
    if change == {"chunk_size": 150}:  # the advice works: the named reruns make every store sound again
        with pytest.warns(UserWarning, match="produced by other inputs"):
            run_stage(SynthesizeStage(make_params(sample=change), data_dir))
            run_stage(LabelStage(make_params(sample=change), data_dir))
        result = _cli("verify", "--data-dir", str(data_dir))
        assert result.exit_code == 0, result.output
        assert result.output.count("complete   2/2 chunks") == 3


# ------------------------------------------------------------------ 8. sizes checked against memory, before any wipe


def test_a_chunk_too_big_for_memory_is_refused_before_the_old_store_is_wiped(tmp_path, tiny_run) -> None:
    """sample.chunk_size: 1000000000 is a valid integer, but Zarr holds a whole chunk in memory (1e9 × 100 float32 =
    372.5 GiB for the face DCGAN): refused in one line stating the rule, and the existing latents are kept."""
    data_dir = _copy(tiny_run, tmp_path)
    reference = tree_digest(data_dir)
    line = _one_error_line(_stage_cli("sample", data_dir, tmp_path, sample={"chunk_size": 1_000_000_000}))
    assert line.startswith(
        "Error: sample: one chunk needs 372.5 GiB of host memory (latents.zarr chunk: 1000000000 × 100 float32"
    ), line
    assert "a chunk may use (half of the" in line and "available now); lower sample.chunk_size" in line
    assert tree_digest(data_dir) == reference


def test_synthesize_and_label_sizes_are_checked_against_memory_before_any_wipe(tmp_path, tiny_run, monkeypatch) -> None:
    """The same rule for the buffers of synthesize (chunk × resolution, batch × resolution) and label (the chunk's
    float images, the labeler's batch), with the memory available set here so the numbers are exact."""
    data_dir = _copy(tiny_run, tmp_path)
    reference = tree_digest(data_dir)
    monkeypatch.setattr(chunked, "host_memory_available", lambda: 64 * MiB)
    line = _one_error_line(_stage_cli("synthesize", data_dir, tmp_path, synthesize={"store_resolution": 512}))
    # 100 × 512² × 3 uint8 twice (the chunk's pixels, Zarr's chunk buffer), 64 × 3 × 512² float32 (the batch)
    assert line.startswith("Error: synthesize: one chunk needs 345.0 MiB of host memory ("), line
    assert "images.zarr chunk: 100 × 512×512×3 uint8 = 75.0 MiB" in line
    assert "resized batch: 64 × 3×512×512 float32 = 192.0 MiB" in line
    assert line.endswith(
        "more than the 32.0 MiB a chunk may use (half of the 64.0 MiB available now); lower "
        "sample.chunk_size, synthesize.batch_size or synthesize.store_resolution"
    ), line
    monkeypatch.setattr(chunked, "host_memory_available", lambda: 8 * MiB)
    line = _one_error_line(_stage_cli("label", data_dir, tmp_path, label={"batch_size": 32}))
    assert (
        line.startswith("Error: label: one chunk needs ") and "chunk's float images: 100 × 3×64×64 float32" in line
    ), line
    assert line.endswith("lower sample.chunk_size or label.batch_size"), line
    assert tree_digest(data_dir) == reference  # neither images.zarr nor labels was wiped


# ------------------------------------------------------------------ 9. a full disk, a kill: one line, nothing left


def test_full_disk_at_the_contact_sheet_is_one_line_and_the_rerun_repairs(tmp_path, tiny_run, monkeypatch) -> None:
    data_dir = _copy(tiny_run, tmp_path)
    reference = tree_digest(data_dir)
    shutil.rmtree(data_dir / "labels")
    (data_dir / "contact_sheet.png").unlink()
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:  # the contact sheet's temp file cannot be flushed: no space
        if "contact_sheet.png" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    line = _one_error_line(_stage_cli("label", data_dir, tmp_path))
    assert line == (
        f"Error: {data_dir / 'contact_sheet.png'}: cannot write the contact sheet: the disk is full: "
        f"free some space and rerun (finished chunks are kept) [No space left on device]"
    )
    assert not _leftovers(data_dir) and not (data_dir / "contact_sheet.png").exists()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert _cli("verify", "--data-dir", str(data_dir)).exit_code == 1  # labels wait for their contact sheet
    assert _stage_cli("label", data_dir, tmp_path).exit_code == 0
    assert tree_digest(data_dir) == reference


def test_a_kill_during_the_contact_sheet_leaves_no_temp_file_after_the_rerun(tmp_path, tiny_run) -> None:
    data_dir = _copy(tiny_run, tmp_path)
    reference = tree_digest(data_dir)
    killed = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from latentatlas.atomic import atomic_write_bytes\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write_bytes(Path(sys.argv[1]), b'half a contact sheet')\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", killed, str(data_dir / "contact_sheet.png")],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert [path.name.startswith(".contact_sheet.png.") for path in _leftovers(data_dir)] == [True]
    assert _stage_cli("label", data_dir, tmp_path).exit_code == 0
    assert not _leftovers(data_dir)
    assert tree_digest(data_dir) == reference


class _FullDiskFile:
    """A file object whose buffered writes fail when flushed, as on a full disk."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


def test_full_disk_at_the_lock_is_one_line(tmp_path, tiny_run, monkeypatch) -> None:
    data_dir = _copy(tiny_run, tmp_path)
    reference = tree_digest(data_dir)
    monkeypatch.setattr(stores, "open", lambda *args, **kwargs: _FullDiskFile(open(*args, **kwargs)), raising=False)
    line = _one_error_line(_stage_cli("sample", data_dir, tmp_path, sample={"seed": 8}))
    assert line == (
        f"Error: {data_dir / 'latents.zarr'}: cannot write its lock file: the disk is full: free some "
        f"space and rerun (finished chunks are kept) [No space left on device]"
    )
    assert tree_digest(data_dir) == reference


# ------------------------------------------------------------------ 10. damaged metadata, odd data dirs, swaps, locks


@pytest.mark.parametrize(
    "lost, stage",
    [
        ("latents.zarr/zarr.json", "sample"),
        ("images.zarr/images/zarr.json", "synthesize"),
        ("labels/_latentatlas.json", "label"),
    ],
)
def test_a_store_that_lost_its_metadata_is_ours_and_the_advised_rerun_rebuilds_it(
    tmp_path, tiny_run, lost: str, stage: str
) -> None:
    data_dir = _copy(tiny_run, tmp_path)
    reference = tree_digest(data_dir)
    (data_dir / lost).unlink()
    store_name = lost.split("/")[0]
    for command in ("status", "verify"):
        result = _cli(command, "--data-dir", str(data_dir))
        assert result.exit_code == 1, result.output
        line = next(line for line in result.output.splitlines() if line.startswith(store_name))
        assert "lost its metadata" in line and "not ours" not in line, line
        assert f"rerun `latentatlas {stage}` to rebuild it" in result.output
    rerun = _stage_cli(stage, data_dir, tmp_path)
    assert rerun.exit_code == 0, rerun.output
    assert (
        f"warning: {data_dir / store_name} lost its metadata (" in rerun.output and "): rebuilding it" in rerun.output
    )
    assert _cli("verify", "--data-dir", str(data_dir)).exit_code == 0
    assert tree_digest(data_dir) == reference


def test_status_of_a_data_dir_that_is_a_file_is_one_line(tmp_path) -> None:
    data_file = tmp_path / "data"
    data_file.write_text("not a folder")
    for command in ("status", "verify"):
        line = _one_error_line(_cli(command, "--data-dir", str(data_file)))
        assert line == (
            f"Error: {data_file}: the data dir is a file, expected a folder; remove it or choose another --data-dir"
        )


def test_status_exits_1_when_a_store_is_damaged(tmp_path, tiny_run) -> None:
    data_dir = _copy(tiny_run, tmp_path)
    assert _cli("status", "--data-dir", str(data_dir)).exit_code == 0
    (data_dir / "images.zarr" / "images" / "c" / "1" / "0" / "0" / "0").unlink()
    result = _cli("status", "--data-dir", str(data_dir))
    assert result.exit_code == 1 and "images.zarr    damaged" in result.output
    assert result.output.splitlines()[-1] == (
        f"Error: {data_dir}: 1 store needs repair (damaged: see above); rerun the stages named (or `dvc repro`)"
    )
    shutil.rmtree(data_dir / "latents.zarr")  # gone, while the images computed from it are there
    result = _cli("status", "--quick", "--data-dir", str(data_dir))
    assert result.exit_code == 1, result.output
    assert "images.zarr was computed from it\n    → rerun `latentatlas sample` to rebuild it" in result.output
    assert "2 stores need repair (damaged, missing: see above)" in result.output


def test_swapped_chunks_are_named_as_swapped(tmp_path, tiny_run) -> None:
    """Parts 1 and 2 swapped with their records: each record is this store's, for the other chunk."""
    data_dir = _copy(tiny_run, tmp_path)
    labels = data_dir / "labels"
    for folder, suffix in ((labels, ".parquet"), (labels / "_records", ".json")):
        one, two = folder / f"part-00001{suffix}", folder / f"part-00002{suffix}"
        one.rename(folder / "swap")
        two.rename(one)
        (folder / "swap").rename(two)
    result = _cli("verify", "--data-dir", str(data_dir))
    assert result.exit_code == 1
    assert (
        "chunk 1 (part-00001.parquet) record of another chunk: the file and its record are chunk 2's "
        "(part-00002.parquet) of this store: chunk files were moved or swapped"
    ) in result.output
    assert "record of another store" not in result.output


def test_sample_is_refused_while_label_runs(tmp_path, tiny_run) -> None:
    """label reads the images, which were made from the latents: it holds both, so no sample rerun changes the
    latents under a labeling run (the labels would then describe latents that are gone)."""
    data_dir = _copy(tiny_run, tmp_path)
    reference = tree_digest(data_dir)
    with LabelStage(make_params(), data_dir):
        with pytest.raises(StoreLockedError, match=rf"latents.zarr is being read by another run \(pid {os.getpid()}"):
            SampleStage(make_params(sample={"seed": 8}), data_dir)
    assert tree_digest(data_dir) == reference


def test_buffers_on_a_gpu_are_checked_against_its_free_memory(monkeypatch) -> None:
    """Each device has its own allowance: a batch on cuda:0 is held against that GPU's free memory (as
    torch.cuda.mem_get_info reports it), the host's buffers against the host's."""
    import torch

    monkeypatch.setattr(chunked, "host_memory_available", lambda: 1024 * MiB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100 * MiB, 141 * 1024 * MiB))
    host = chunked.MemoryNeed("images.zarr chunk", 100, (64, 64, 3), "uint8")
    batch = chunked.MemoryNeed("resized batch", 64, (3, 256, 256), "float32", "cuda:0")
    chunked.check_memory("synthesize", [host, batch], "synthesize.batch_size")  # 48 MiB of the GPU's 50 MiB
    bigger = chunked.MemoryNeed("resized batch", 128, (3, 256, 256), "float32", "cuda:0")
    with pytest.raises(chunked.MemoryBudgetError) as refused:
        chunked.check_memory("synthesize", [host, bigger], "synthesize.batch_size")
    assert str(refused.value) == (
        "synthesize: one chunk needs 96.0 MiB of cuda:0 memory (resized batch: 128 × "
        "3×256×256 float32 = 96.0 MiB), more than the 50.0 MiB a chunk may use (half of "
        "the 100.0 MiB available now); lower synthesize.batch_size"
    )
