"""The explorer's engine without a server: states, sliders, edits, scores, photos and exports, on the planted toy
world (tests/toy.py), where every attribute is a known function of the latent, so values can be checked."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pytest
import torch
from PIL import Image

from latentatlas.stores import ZarrChunkStore
from stages.explore.catalog import UNNAMED
from stages.explore.engine import ExploreEngine, ExploreError
from stages.explore.exports import latent_npy, strip_png, traversal, traversal_formats
from stages.explore.photos import UploadError, UploadLimits, check_upload
from stages.explore.state import ExploreInputError, ExploreState, Start, parse_query, to_query
from stages.latent.directions import DirectionSet
from stages.photo.invert import InversionSettings
from tests.conftest import make_params, run_toy_spine
from tests.toy import make_world

NAMES = ["smile", "age", "gender", "glasses"]


def toy_params():
    return make_params(generator={"name": "toy"}, sample={"n_samples": 120, "chunk_size": 60})


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished toy run with a mapping network: stores, the planted directions in z (``truth``) and in w
    (``truth-w``), and an unsupervised-style set whose components are named (one with a negative correlation)."""
    root = tmp_path_factory.mktemp("explore-toy")
    world = make_world(z_dim=24, with_mapping=True)
    params = toy_params()
    run_toy_spine(params, root / "data", world)
    planted = np.stack([world.directions[name] for name in NAMES])
    DirectionSet("truth", "z", NAMES, planted).save(root / "directions" / "truth")
    mapping = world.generator.mapping  # w = z @ M: a z direction n is the w direction Mᵀ n
    DirectionSet("truth-w", "w", NAMES, planted @ mapping).save(root / "directions" / "truth-w")
    components = np.stack([-world.directions["age"], world.directions["pose"], np.eye(24)[5]])
    components /= np.linalg.norm(components, axis=1, keepdims=True)
    DirectionSet(
        "components",
        "z",
        ["c000", "c001", "c002"],
        components,
        stats={
            "c000": {"attribute": "age", "correlation": -0.9},
            "c001": {"attribute": "pose", "correlation": 0.8},
            "c002": {"attribute": None, "correlation": 0.0},
        },
    ).save(root / "directions" / "components")
    DirectionSet("other-gan", "z", ["smile"], np.eye(7)[:1]).save(root / "directions" / "other-gan")
    return root, params, world


@pytest.fixture(scope="module")
def engine(toy_run):
    root, params, world = toy_run
    settings = InversionSettings(lpips_weight=0.0, learning_rate=0.2, device="cpu")
    return ExploreEngine(
        params,
        root / "data",
        root,
        generator=world.generator,
        labeler=world.labeler,
        device="cpu",
        invert_steps=60,
        inversion=settings,
    )


def state(query: str) -> ExploreState:
    return parse_query(parse_qsl(query))


def test_a_state_survives_its_url() -> None:
    original = ExploreState(
        Start("sample", 17),
        (("truth/age", 1.5), ("components/c000", -0.25)),
        ("gender",),
        (0, 1),
        0.7,
        "compare",
        "smile",
        2.0,
    )
    query = to_query(original)
    assert parse_query(parse_qsl(query)) == original
    assert "e=truth%2Fage%3A1.5" in query and "keep=gender" in query and "layers=0%2C1" in query
    assert parse_query([]) == ExploreState()  # an empty query is the default view


@pytest.mark.parametrize(
    "query, message",
    [
        ("bogus=1", "unknown query key 'bogus'"),
        ("start=seed:-4", r"start seed:-4: expected an integer"),
        ("start=photo:../../etc/passwd", "a photo id is 32 lowercase hex digits"),
        ("start=moon:1", "start 'moon'"),
        ("e=truth/age:nan", "is not a finite number"),
        ("e=truth/age:11", r"α 11.0 is not a number in \[-10, 10\]"),
        ("e=age:1", "expected <direction set>/<direction>:<α>"),
        ("e=truth/age:1&e=truth/age:2", "given more than once"),
        ("layers=3,1", "need 0 <= start < stop"),
        ("layers=a,b", "expected two integers"),
        ("psi=7", r"psi 7.0: expected a number in \[-1, 2\]"),
        ("psi=1&psi=2", "psi: given 2 times"),
        ("mode=dance", "mode 'dance'"),
    ],
)
def test_bad_queries_are_named(query: str, message: str) -> None:
    with pytest.raises(ExploreInputError, match=message):
        state(query)


def test_the_catalog_groups_sliders_by_attribute_and_skips_foreign_sets(engine) -> None:
    groups = engine.catalog.groups()
    assert [slider.id for slider in groups["age"]] == ["components/c000", "truth/age", "truth-w/age"]
    assert list(groups)[-1] == UNNAMED and [s.id for s in groups[UNNAMED]] == ["components/c002"]
    component = engine.catalog.by_id["components/c000"]
    assert component.component and component.correlation == 0.9 and component.label == "components c000 r+0.90"
    assert "other-gan" in engine.catalog.skipped and "24-d" in engine.catalog.skipped["other-gan"]
    assert [s.id for s in engine.compare_sliders("age")] == ["components/c000", "truth/age", "truth-w/age"]


def test_a_stored_sample_renders_as_the_run_stored_it(toy_run, engine) -> None:
    root, *_ = toy_run
    stored = ZarrChunkStore.open(root / "data" / "images.zarr", "images").read_chunk("images", 1)
    np.testing.assert_array_equal(engine.render(state("start=sample:61")).pixels, np.asarray(stored)[1])


def test_moving_a_slider_moves_its_attribute_by_the_planted_amount(engine) -> None:
    before = engine.scores(state("start=seed:5"))
    after = engine.scores(state("start=seed:5&e=truth/age:1.5"))
    assert after["age"] - before["age"] == pytest.approx(12.0 * 1.5, abs=0.3)  # age = 40 + 12 n·z
    assert after["pose"] == pytest.approx(before["pose"], abs=0.3)  # pose is orthogonal to age
    assert not np.array_equal(
        engine.render(state("start=seed:5")).pixels, engine.render(state("start=seed:5&e=truth/age:1.5")).pixels
    )


def test_sliders_compose_and_a_component_moves_its_named_attribute_up(engine, toy_run) -> None:
    _, _, world = toy_run
    start = engine.start_latent(Start("seed", 9))[1].double()
    space, latent = engine.latent(state("start=seed:9&e=truth/age:1.5&e=truth/smile:-2"))
    assert space == "w"  # the toy generator has W: z edits, then mapped
    planted = {name: torch.from_numpy(vector) for name, vector in world.directions.items()}
    expected_z = start + 1.5 * planted["age"] - 2 * planted["smile"]
    expected_w = expected_z @ torch.from_numpy(world.generator.mapping)
    np.testing.assert_allclose(latent[0].double().numpy(), expected_w.numpy(), atol=1e-5)
    # c000 is stored as −n_age with correlation −0.9: its slider is flipped so that +α raises age
    before, after = engine.scores(state("start=seed:9")), engine.scores(state("start=seed:9&e=components/c000:1"))
    assert after["age"] - before["age"] == pytest.approx(12.0, abs=0.3)


def test_holding_an_attribute_keeps_it_while_another_moves(engine) -> None:
    start = engine.scores(state("start=seed:2"))
    plain = engine.scores(state("start=seed:2&e=truth/glasses:2"))
    held = engine.scores(state("start=seed:2&e=truth/glasses:2&keep=gender"))
    assert abs(plain["gender"] - start["gender"]) > 0.1  # cos(glasses, gender) = 0.6
    assert held["gender"] == pytest.approx(start["gender"], abs=0.01)
    assert held["glasses"] - start["glasses"] > 0.1


def test_w_layers_and_truncation(engine) -> None:
    everywhere = engine.scores(state("start=seed:4&e=truth-w/age:1"))
    one_layer = engine.scores(state("start=seed:4&e=truth-w/age:1&layers=0,1"))
    start = engine.scores(state("start=seed:4"))
    # the toy's W+ image is that of the mean of its 2 layers' codes: one layer moves half as far
    assert everywhere["age"] - start["age"] == pytest.approx(12.0, abs=0.3)
    assert one_layer["age"] - start["age"] == pytest.approx(6.0, abs=0.3)
    assert engine.latent(state("start=seed:4&layers=0,1"))[0] == "w+"
    # ψ = 0 pulls every start to the mean w: two seeds give one image
    np.testing.assert_array_equal(
        engine.render(state("start=seed:1&psi=0")).pixels, engine.render(state("start=seed:2&psi=0")).pixels
    )


@pytest.mark.parametrize(
    "query, message",
    [
        ("e=nope/age:1", "no slider 'nope/age'"),
        ("keep=beard", r"keep \['beard'\]: no set has a direction"),
        ("layers=0,3", "the generator has 2 W\\+ layers"),
        ("start=sample:120", r"the run has samples 0..119"),
        ("start=photo:0123456789abcdef0123456789abcdef", "no inversion of it in this run"),
        ("cmp=beard&mode=compare", "no set has a direction for it"),
    ],
)
def test_requests_the_run_cannot_serve_are_named(engine, query: str, message: str) -> None:
    with pytest.raises(ExploreInputError, match=message):
        parsed = state(query)
        engine.compare(parsed) if parsed.mode == "compare" else engine.render(parsed)


def test_compare_renders_the_start_and_every_sets_edit(engine) -> None:
    sliders, rendered = engine.compare(state("start=seed:3&mode=compare&cmp=age&calpha=1&e=truth/smile:3"))
    assert [s.id for s in sliders] == ["components/c000", "truth/age", "truth-w/age"]
    scores = engine.score_pixels(np.stack([item.pixels for item in rendered]))
    age = scores[:, engine.attributes.index("age")]
    np.testing.assert_allclose(age[1:] - age[0], 12.0, atol=0.3)  # every method moved age by 12; smile not applied
    np.testing.assert_array_equal(rendered[0].pixels, engine.render(state("start=seed:3")).pixels)


def test_exports(engine) -> None:
    view = state("start=seed:6&e=truth/age:1")
    frames = Image.open(io.BytesIO(traversal(engine, view, "truth/age", frames=10, span=2.0)))
    assert frames.format == "GIF" and frames.n_frames == 10 and frames.size == (64, 64)  # 8 px × 8 (the largest scale)
    saved = np.load(io.BytesIO(latent_npy(engine.render(view))))
    assert saved.shape == (1, 24) and saved.dtype == np.float32
    strip = Image.open(io.BytesIO(strip_png(engine, view, "truth/age", steps=5, span=2.0)))
    assert strip.width == 5 * 128
    if "webp" in traversal_formats():
        assert Image.open(io.BytesIO(traversal(engine, view, "truth/age", 6, 2.0, "webp"))).format == "WEBP"
    with pytest.raises(ExploreInputError, match=r"frames 500: expected a value in \[4, 120\]"):
        traversal(engine, view, "truth/age", frames=500)
    with pytest.raises(ExploreInputError, match="format 'bmp'"):
        traversal(engine, view, "truth/age", image_format="bmp")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height (no pixel data): what a decompression bomb looks like to a check
    that reads only the header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "payload, status, message",
    [
        (b"", 400, "the upload is empty"),
        (b"x" * 2049, 413, "at most 0 MiB"),
        (b"#!/bin/sh\nrm -rf /\n", 415, "not an image Pillow can read"),
        (_png_header(8000, 8000), 413, "64.0 megapixels; at most 40 .*decompression bombs"),
        (_png_header(30000, 30000), 413, "refused undecoded: a decompression bomb"),
        (_png_header(16, 16), 400, "too small to invert"),
    ],
)
def test_uploads_are_checked_before_decoding(payload: bytes, status: int, message: str) -> None:
    limits = UploadLimits(max_bytes=2048 if len(payload) > 2048 else 20 * 2**20)
    with pytest.raises(UploadError, match=message) as caught:
        check_upload(payload, limits)
    assert caught.value.status == status


def test_a_gif_is_refused_by_its_content_not_its_name() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="GIF")
    with pytest.raises(UploadError, match="GIF images are not accepted") as caught:
        check_upload(buffer.getvalue(), UploadLimits())
    assert caught.value.status == 415


def _wait(job, seconds: float = 60.0):
    deadline = time.time() + seconds
    while not job.finished and time.time() < deadline:
        time.sleep(0.05)
    return job


def test_a_photo_is_inverted_then_edited_and_a_job_can_be_cancelled(engine) -> None:
    target = engine.render(state("start=seed:11&e=truth/smile:1")).pixels
    photo = _png(np.asarray(Image.fromarray(target).resize((64, 64), Image.NEAREST)))
    assert engine.photos.note is not None and "no encoder" in engine.photos.note  # the page says so
    job = _wait(engine.photos.submit(photo))
    assert job.state == "done", job.message
    assert job.step == 60 and "PSNR" in job.message
    inverted = engine.photos.load(job.photo_id)
    assert inverted.space == "w+" and inverted.latent.shape == (2, 24)
    reconstruction = engine.render(state(f"start=photo:{job.photo_id}")).pixels.astype(float)
    mean_face = engine.render(state("start=seed:11&psi=0")).pixels.astype(float)
    error, error_of_mean = (np.abs(image - target).mean() for image in (reconstruction, mean_face))
    assert error < error_of_mean / 4, (error, error_of_mean)  # the optimisation moved it most of the way
    start = engine.scores(state(f"start=photo:{job.photo_id}"))
    moved = engine.scores(state(f"start=photo:{job.photo_id}&e=truth-w/age:1"))
    assert moved["age"] - start["age"] == pytest.approx(12.0, abs=0.5)
    with pytest.raises(ExploreInputError, match="z directions cannot move a photo inverted into W\\+"):
        engine.render(state(f"start=photo:{job.photo_id}&e=truth/age:1"))
    again = engine.photos.submit(photo)  # the same photo and settings: reused, not inverted again
    assert again.state == "done" and again.photo_id == job.photo_id and "reused" in again.message

    slow = ExploreEngine(
        toy_params(),
        engine.data_dir,
        engine.layout.root,
        generator=engine.generator,
        labeler=engine.scorers[0],
        device="cpu",
        invert_steps=100_000,
        inversion=InversionSettings(lpips_weight=0.0, device="cpu"),
    )
    running = slow.photos.submit(_png(np.full((48, 48, 3), 90, np.uint8)))
    deadline = time.time() + 30
    while running.step < 3 and time.time() < deadline:
        time.sleep(0.02)
    slow.photos.cancel(running.id)
    assert _wait(running, 10).state == "cancelled" and running.step < 100_000
    assert not slow.photos.path(running.photo_id).exists()


def test_a_run_without_directions_is_refused(tmp_path, toy_run) -> None:
    _, params, world = toy_run
    with pytest.raises(ExploreError, match="no directions set that can edit generator 'toy'; finish a run first"):
        ExploreEngine(
            params, tmp_path / "data", tmp_path, generator=world.generator, labeler=world.labeler, device="cpu"
        )


def test_a_generator_without_w_refuses_layers_and_truncation(toy_run, tmp_path) -> None:
    root, params, _ = toy_run
    flat = make_world(z_dim=24)
    truth = DirectionSet.load(root / "directions" / "truth")
    truth.save(tmp_path / "directions" / "truth")
    engine = ExploreEngine(
        params, tmp_path / "data", tmp_path, generator=flat.generator, labeler=flat.labeler, device="cpu"
    )
    assert engine.describe()["generator"]["has_w"] is False and engine.photos.space == "z"
    assert engine.describe()["samples"] == 0 and "no stored samples" in engine.describe()["samples_note"]
    with pytest.raises(ExploreInputError, match="layers and psi apply to generators with W"):
        engine.render(state("psi=0.5"))
    assert engine.latent(state("e=truth/age:1"))[0] == "z"


def test_what_a_request_names_never_becomes_a_path(engine, tmp_path) -> None:
    for photo_id in ["../../../etc/passwd", "0123456789ABCDEF0123456789ABCDEF", "a" * 31]:
        with pytest.raises(ExploreInputError, match="32 lowercase hex digits"):
            engine.photos.path(photo_id)
    assert Path(engine.photos.cache_dir).resolve().is_relative_to(Path(engine.layout.root).resolve())


SG2_FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "fixtures"
    / "generators"
    / "stylegan2-ada"
    / "network-snapshot-000000.pkl"
)


@pytest.mark.skipif(not SG2_FIXTURE.is_file(), reason=f"StyleGAN2-ADA fixture not found at {SG2_FIXTURE}")
def test_a_real_style_generator_edits_in_w_plus_layers_with_truncation(tmp_path) -> None:
    """The NVlabs StyleGAN2 fixture (w_dim 64, 8 W+ layers): ψ, W+ layer ranges and a photo inverted into W+."""
    from stages.plugins.generators import build_generator
    from tests.plugins import build_color_labeler

    generator = build_generator("stylegan2", path=str(SG2_FIXTURE))
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((2, 64))
    DirectionSet("random-w", "w", ["red", "blue"], vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).save(
        tmp_path / "directions" / "random-w"
    )
    params = make_params(generator={"name": "stylegan2", "kwargs": {"path": str(SG2_FIXTURE)}})
    engine = ExploreEngine(
        params,
        tmp_path / "data",
        tmp_path,
        generator=generator,
        labeler=build_color_labeler(),
        device="cpu",
        invert_steps=3,
        inversion=InversionSettings(lpips_weight=0.0, device="cpu"),
    )
    assert engine.describe()["generator"]["num_ws"] == 8 and engine.photos.space == "w+"
    np.testing.assert_array_equal(
        engine.render(state("start=seed:1&psi=0")).pixels, engine.render(state("start=seed:2&psi=0")).pixels
    )
    start = engine.render(state("start=seed:1")).pixels.astype(int)
    everywhere = engine.render(state("start=seed:1&e=random-w/red:3")).pixels.astype(int)
    coarse = engine.render(state("start=seed:1&e=random-w/red:3&layers=0,2"))
    assert coarse.space == "w+" and coarse.latent.shape == (1, 8, 64)
    moved_layers = np.abs(coarse.latent[0] - engine.latent(state("start=seed:1&layers=0,2"))[1][0].numpy()).max(1)
    assert (moved_layers[:2] > 1).all() and (moved_layers[2:] == 0).all()  # only layers 0 and 1 moved
    assert np.abs(everywhere - start).mean() > np.abs(coarse.pixels.astype(int) - start).mean() > 0
    job = _wait(
        engine.photos.submit(
            _png(
                np.asarray(Image.fromarray(engine.render(state("start=seed:5")).pixels).resize((64, 64), Image.NEAREST))
            )
        )
    )
    assert job.state == "done", job.message
    assert engine.latent(state(f"start=photo:{job.photo_id}&e=random-w/blue:1"))[1].shape == (1, 8, 64)
