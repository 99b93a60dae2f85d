"""The spine's stages as plain functions over stores: values, determinism, resume, keep_images, labels."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from latentatlas.stores import ZarrChunkStore
from stages.label import LabelStage
from stages.latent.streams import sample_latents_z
from stages.plugins.generators import build_generator
from stages.plugins.generators.synthesis import images_to_uint8, uint8_to_images
from stages.runtime.chunked import run_stage
from stages.sample import SampleStage
from stages.synthesize import SynthesizeStage
from tests.conftest import make_params, run_spine, tree_digest
from tests.plugins import ColorStatsLabeler


def test_chunk_latents_depend_only_on_seed_and_index() -> None:
    first = sample_latents_z(seed=3, chunk_index=5, n=50, z_dim=8)
    assert first.dtype == np.float32 and first.shape == (50, 8)
    np.testing.assert_array_equal(first, sample_latents_z(3, 5, 50, 8))
    assert not np.array_equal(first, sample_latents_z(3, 6, 50, 8))
    assert not np.array_equal(first, sample_latents_z(4, 5, 50, 8))
    assert abs(float(sample_latents_z(0, 0, 20_000, 4).std()) - 1.0) < 0.02


def test_sample_store_is_independent_of_chunk_order(tmp_path, tiny_params) -> None:
    forward, backward = tmp_path / "forward", tmp_path / "backward"
    run_stage(SampleStage(tiny_params, forward))
    with SampleStage(tiny_params, backward) as stage:
        for index in reversed(stage.pending):
            stage.run_chunk(index)
        stage.finish()
    assert tree_digest(forward) == tree_digest(backward)
    latents = ZarrChunkStore.open(forward / "latents.zarr", require_complete=True)
    np.testing.assert_array_equal(latents.arrays["z"][100:200], sample_latents_z(7, 1, 100, 100))


def test_uint8_round_trip() -> None:
    images = torch.linspace(-1, 1, 3 * 4 * 4).reshape(1, 3, 4, 4)
    pixels = images_to_uint8(images)
    assert pixels.shape == (1, 4, 4, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0, 0, 0] == 0 and pixels[0, -1, -1, -1] == 255
    assert torch.allclose(uint8_to_images(pixels), images, atol=1 / 127.5)
    with pytest.raises(ValueError, match="uint8"):
        uint8_to_images(pixels.astype(np.float32))


def test_synthesized_images_are_the_generators_output(tiny_run) -> None:
    latents = ZarrChunkStore.open(tiny_run / "latents.zarr", require_complete=True)
    images = ZarrChunkStore.open(tiny_run / "images.zarr", "images", require_complete=True)
    assert images.arrays["images"].shape == (300, 64, 64, 3)
    generator = build_generator("dcgan-digiface")
    with torch.inference_mode():
        expected = images_to_uint8(generator.synthesize(torch.from_numpy(latents.arrays["z"][250:260])))
    stored = images.arrays["images"][250:260]
    assert np.abs(stored.astype(int) - expected.astype(int)).max() <= 1  # batch composition may move a rounding
    assert stored.std() > 20  # faces, not a constant image


def test_uint8_synthesis_batch_by_batch_equals_the_whole_chunk(tiny_params) -> None:
    """The stage converts each batch to uint8 as it comes (memory: one uint8 chunk + one float batch); the pixels
    are those of converting the whole float chunk at once, with a last batch shorter than the others."""
    from stages.plugins.generators.synthesis import ImageSynthesizer

    synthesizer = ImageSynthesizer(
        build_generator("dcgan-digiface"), tiny_params.synthesize.model_copy(update={"batch_size": 24})
    )
    latents_z = sample_latents_z(seed=1, chunk_index=0, n=50, z_dim=100)
    pixels = synthesizer.uint8(latents_z)
    assert pixels.shape == (50, 64, 64, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, images_to_uint8(synthesizer(latents_z)))


def test_labels_are_one_parquet_per_chunk_with_metadata(tiny_run) -> None:
    parts = sorted((tiny_run / "labels").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    table = pq.read_table(parts[1])
    assert table.column_names == ["sample_id", "red", "green", "blue", "brightness"]
    np.testing.assert_array_equal(table.column("sample_id").to_numpy(), np.arange(100, 200))
    assert table.schema.field("red").type == "float"
    metadata = table.schema.metadata
    assert metadata[b"latentatlas.labeler"] == b"tests.plugins:build_color_labeler"
    assert metadata[b"latentatlas.labeler_fingerprint"] == b"color-stats/1"

    # The colour labeler's values are exact functions of the stored pixels.
    pixels = ZarrChunkStore.open(tiny_run / "images.zarr").arrays["images"][100:200]
    expected = ColorStatsLabeler().score(uint8_to_images(pixels)).numpy()
    np.testing.assert_allclose(table.column("red").to_numpy(), expected[:, 0], atol=1e-6)
    np.testing.assert_allclose(table.column("brightness").to_numpy(), expected[:, 3], atol=1e-6)


def test_contact_sheet_shows_the_first_samples(tiny_run) -> None:
    sheet = Image.open(tiny_run / "contact_sheet.png")
    assert sheet.mode == "RGB" and sheet.width == 8 * 128
    top_left = np.asarray(sheet)[:128, :128]
    first = ZarrChunkStore.open(tiny_run / "images.zarr").arrays["images"][0]
    np.testing.assert_array_equal(top_left[::2, ::2], first)  # nearest-neighbour ×2 upscale of sample 0


def test_resume_after_partial_run_is_bit_identical(tmp_path, tiny_params) -> None:
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_spine(tiny_params, reference)
    run_stage(SampleStage(tiny_params, resumed))
    with SynthesizeStage(tiny_params, resumed) as stage:
        stage.run_chunk(2)  # "killed" after one chunk, out of order
    chunk_file = resumed / "images.zarr" / "images" / "c" / "2" / "0" / "0" / "0"
    written_at = chunk_file.stat().st_mtime_ns
    with SynthesizeStage(tiny_params, resumed) as stage:
        assert stage.pending == [0, 1]
    run_spine(tiny_params, resumed)
    assert chunk_file.stat().st_mtime_ns == written_at  # the finished chunk was not recomputed
    assert tree_digest(resumed) == tree_digest(reference)


def test_changing_label_params_rebuilds_only_labels(tmp_path, tiny_params) -> None:
    run_spine(tiny_params, tmp_path)
    before = tree_digest(tmp_path)
    changed = make_params(label={"batch_size": 32})
    with pytest.warns(UserWarning, match="produced by other inputs"):
        run_stage(LabelStage(changed, tmp_path))
    after = tree_digest(tmp_path)
    for name in before:
        if name.startswith(("latents.zarr", "images.zarr")):
            assert after[name] == before[name], name
    labels_meta = json.loads((tmp_path / "labels" / "_latentatlas.json").read_text())
    assert labels_meta["inputs"]["batch_size"] == 32


def test_labels_without_kept_images_come_from_the_generator(tmp_path, tiny_run) -> None:
    params = make_params(synthesize={"keep_images": False})
    run_spine(params, tmp_path)
    images = ZarrChunkStore.open(tmp_path / "images.zarr", require_complete=True)
    assert images.arrays == {} and images.info.details["images_kept"] is False
    assert not (tmp_path / "images.zarr" / "images").exists()
    direct = pq.read_table(tmp_path / "labels" / "part-00001.parquet")
    from_pixels = pq.read_table(tiny_run / "labels" / "part-00001.parquet")
    # Same samples; only the uint8 quantisation of stored images separates the two.
    np.testing.assert_allclose(direct.column("red").to_numpy(), from_pixels.column("red").to_numpy(), atol=5e-3)
    assert (tmp_path / "contact_sheet.png").is_file()


def test_labeler_returning_bad_scores_is_reported(tmp_path, tiny_params) -> None:
    class NanLabeler(ColorStatsLabeler):
        def score(self, images: torch.Tensor) -> torch.Tensor:
            scores = super().score(images)
            scores[0, 2] = float("nan")
            return scores

    run_stage(SampleStage(tiny_params, tmp_path))
    run_stage(SynthesizeStage(tiny_params, tmp_path))
    from stages.plugins.labelers.scoring import LabelerOutputError

    with pytest.raises(LabelerOutputError, match=r"non-finite scores for \['blue'\]"):
        run_stage(LabelStage(tiny_params, tmp_path, labeler=NanLabeler()))
    assert not list((tmp_path / "labels").glob("*.parquet"))  # nothing half-written looks complete
