"""The pipeline's own costs at real sizes: the zero-cost generator plugin, the write-behind queue of the synthesize
stage (same bytes as writing in line; errors surface, nothing half-recorded), and stage starts that read records,
not chunks (while ``verify`` and readers still catch a damaged chunk)."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from bench.zero_cost import ZeroCostGenerator
from latentatlas.stores import ChunkedStore, StoreError, ZarrChunkStore, open_store
from pipeline.cli import main
from stages.label import LabelStage
from stages.plugins.generators.synthesis import images_to_uint8
from stages.runtime.chunked import run_stage
from stages.sample import SampleStage
from stages.synthesize import ChunkWriter, SynthesizeStage
from tests.conftest import make_params, tree_digest

ZERO_COST = {
    "name": "bench.zero_cost:build_zero_cost_generator",
    "kwargs": {"resolution": 32, "z_dim": 8, "bank_size": 16},
}


def _zero_cost_params(**synthesize):
    return make_params(
        generator=ZERO_COST,
        sample={"n_samples": 40, "chunk_size": 10},
        synthesize={"batch_size": 16, "store_resolution": 16, **synthesize},
    )


def test_zero_cost_generator_is_a_view_of_distinct_images() -> None:
    generator = ZeroCostGenerator(resolution=32, z_dim=8, bank_size=4)
    images = generator.synthesize(torch.zeros(3, 8))
    assert images.shape == (3, 3, 32, 32) and images.data_ptr() == generator.bank.data_ptr()  # no copy
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.2
    assert not torch.equal(images[0], images[1])
    assert torch.equal(ZeroCostGenerator(32, 8, 4).bank, generator.bank)  # seeded
    with pytest.raises(ValueError, match="holds 4 images; use synthesize.batch_size ≤ 4"):
        generator.synthesize(torch.zeros(5, 8))


def test_zero_cost_plugin_runs_the_stages_resized_on_the_device(tmp_path) -> None:
    params = _zero_cost_params()
    run_stage(SampleStage(params, tmp_path))
    run_stage(SynthesizeStage(params, tmp_path))
    stored = ZarrChunkStore.open(tmp_path / "images.zarr", "images", require_complete=True).arrays["images"][:]
    bank = ZeroCostGenerator(32, 8, 16).bank
    expected = images_to_uint8(F.interpolate(bank, size=(16, 16), mode="bilinear", antialias=True, align_corners=False))
    assert stored.shape == (40, 16, 16, 3)
    np.testing.assert_array_equal(stored[:10], expected[:10])  # chunk of 10: the bank's first 10 images
    np.testing.assert_array_equal(stored[10:20], expected[:10])


def test_write_behind_gives_the_bytes_of_writing_in_line(tmp_path) -> None:
    params = _zero_cost_params()
    behind, in_line = tmp_path / "behind", tmp_path / "in-line"
    for folder, write_behind in ((behind, True), (in_line, False)):
        run_stage(SampleStage(params, folder))
        stage = SynthesizeStage(params, folder, write_behind=write_behind)
        assert (stage.writer is not None) == write_behind
        run_stage(stage)
    assert tree_digest(behind) == tree_digest(in_line)


def test_write_behind_overlaps_the_next_chunk_and_stays_bounded() -> None:
    writer = ChunkWriter(depth=1)
    release, started, order = threading.Event(), threading.Event(), []

    def slow_write() -> None:
        started.set()
        release.wait(10)
        order.append("first")

    writer.submit(slow_write)
    assert started.wait(10)  # the first write is running; the caller is free to compute
    writer.submit(lambda: order.append("second"))  # one may wait
    blocked = threading.Thread(target=writer.submit, args=(lambda: order.append("third"),))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # a third is held back: memory stays bounded
    release.set()
    blocked.join(10)
    writer.close()
    assert order == ["first", "second", "third"]


def test_a_failed_write_behind_surfaces_and_leaves_its_chunk_unrecorded(tmp_path, monkeypatch) -> None:
    params = _zero_cost_params()
    run_stage(SampleStage(params, tmp_path))
    original = ZarrChunkStore.write_chunk

    def failing(self, index, values, upstream=None):
        if index == 2:
            raise StoreError(f"{self.path}: cannot write chunk {index} (No space left on device)")
        return original(self, index, values, upstream)

    monkeypatch.setattr(ZarrChunkStore, "write_chunk", failing)
    with pytest.raises(StoreError, match="cannot write chunk 2"):
        run_stage(SynthesizeStage(params, tmp_path))
    monkeypatch.setattr(ZarrChunkStore, "write_chunk", original)
    with SynthesizeStage(params, tmp_path) as stage:
        assert stage.pending[0] == 2 and set(stage.pending) <= {2, 3}  # chunks 0 and 1 were written
    run_stage(SynthesizeStage(params, tmp_path))
    assert ZarrChunkStore.open(tmp_path / "images.zarr", "images", require_complete=True).info.complete


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Keys of the chunk files (not records) any store reads whole from now on."""
    seen: list[str] = []
    original = ChunkedStore._file_bytes

    def counting(self, key):
        if "_records" not in key:
            seen.append(f"{self.path.name}/{key}")
        return original(self, key)

    monkeypatch.setattr(ChunkedStore, "_file_bytes", counting)
    return seen


def test_a_stage_start_reads_no_chunk_data(tmp_path, tiny_run, reads) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)  # modification times kept
    params = make_params()
    for stage_cls in (SampleStage, SynthesizeStage, LabelStage):
        with stage_cls(params, data_dir) as stage:
            assert stage.pending == []
    assert reads == []


def test_a_chunk_changed_after_its_record_is_checksummed_at_start(tmp_path, tiny_run, reads) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    chunk = data_dir / "images.zarr" / "images" / "c" / "2" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))  # same size, newer than its record
    with pytest.warns(UserWarning, match=r"recomputing 1 bad chunks: chunk 2 \(images/c/2/0/0/0\) damaged"):
        with SynthesizeStage(make_params(), data_dir) as stage:
            assert stage.pending == [2]
    assert reads == ["images.zarr/images/c/2/0/0/0"]  # that chunk only


def test_silent_damage_is_left_to_verify_and_readers(tmp_path, tiny_run) -> None:
    """Bit rot that keeps a file's size and time: the start does not read it, ``verify`` and every reader do."""
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_run, data_dir)
    chunk = data_dir / "images.zarr" / "images" / "c" / "1" / "0" / "0" / "0"
    times = chunk.stat()
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3] ^= 0x01
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(times.st_atime_ns, times.st_mtime_ns))
    with SynthesizeStage(make_params(), data_dir) as stage:
        assert stage.pending == []
    verify = CliRunner().invoke(main, ["verify", "--data-dir", str(data_dir)])
    assert verify.exit_code == 1 and "chunk 1 (images/c/1/0/0/0) damaged" in verify.output
    with pytest.raises(StoreError, match=r"images.zarr: chunk 1 \(images/c/1/0/0/0\) damaged"):
        open_store(data_dir / "images.zarr").read_chunk("images", 1)
    os.utime(chunk)  # "touch" it: the next start checksums it and recomputes it
    with pytest.warns(UserWarning, match="recomputing 1 bad chunks"):
        run_stage(SynthesizeStage(make_params(), data_dir))
    assert CliRunner().invoke(main, ["verify", "--data-dir", str(data_dir)]).exit_code == 0


def test_zero_cost_labeler_reads_every_pixel(tmp_path) -> None:
    from bench.zero_cost import ZeroCostLabeler

    images = torch.rand(2, 3, 8, 8)
    np.testing.assert_allclose(
        ZeroCostLabeler().score(images).numpy()[:, 0], images.mean(dim=(1, 2, 3)).numpy(), rtol=1e-6
    )
