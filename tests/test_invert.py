"""Real photos: reading, face alignment, inversion (toy, DCGAN, StyleGAN2 fixture), the encoder, the chunked
inversion stage and the `edit` command — every test checks values, at sizes that run in seconds on 2 CPU cores."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from latentatlas import dataset
from latentatlas.layout import LABELS_STORE, LATENTS_STORE
from latentatlas.stores import ParquetChunkStore, ZarrChunkStore
from pipeline.cli import main
from pipeline.options import AlphaList, LayerRange, NameList
from pipeline.placement import StageSpec
from stages.label import LabelStage
from stages.latent.directions import DirectionSet
from stages.photo.align import (
    DCGAN_DIGIFACE_FACE,
    AlignmentSettings,
    FaceDetectionError,
    FaceDetector,
    PhotoError,
    apply_affine,
    load_photo,
    measure_canonical_face,
    prepare_photo,
    similarity_transform,
)
from stages.photo.edit import DirectionsMismatchError, EditInputError, check_directions, edit_space_for, edited_latents
from stages.photo.encoder import EncoderError, encoder_settings, load_encoder
from stages.photo.invert import (
    InversionError,
    Inverter,
    InvertStage,
    ReconstructStage,
    inversion_settings,
    psnr,
    resolve_space,
)
from stages.plugins.generators import build_generator
from stages.runtime.chunked import run_stage
from stages.train_encoder import train_encoder
from tests.conftest import COLOR_LABELER, REPO_ROOT, make_params, tree_digest
from tests.toy import ToyGenerator, ToyLabeler, attribute_values

STYLEGAN2_FIXTURE = (
    REPO_ROOT.parent / "shared" / "fixtures" / "generators" / "stylegan2-ada" / "network-snapshot-000000.pkl"
)


@pytest.fixture(scope="module")
def dcgan():
    return build_generator("dcgan-digiface")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu")


def _relative_error(found: torch.Tensor, true: torch.Tensor) -> float:
    return float(((found - true).flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1)).max())


def _faces(generator, n: int, seed: int, side: int) -> np.ndarray:
    """(n, side, side, 3) uint8 DCGAN faces, bicubically upscaled (a stand-in for a photo)."""
    with torch.no_grad():
        images = generator.synthesize(torch.randn(n, 100, generator=torch.Generator().manual_seed(seed)))
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.stack([np.asarray(Image.fromarray(p).resize((side, side), Image.BICUBIC)) for p in pixels])


# ------------------------------------------------------------------------------------------- the toy generator


@pytest.mark.parametrize("space", ["z", "w", "w+"])
def test_toy_latent_is_recovered_in_every_space(space: str) -> None:
    """Pixel loss alone on the planted toy (8×8, z ∈ R^24): the true latent comes back from a random start."""
    generator = ToyGenerator(with_mapping=space != "z")
    latents_z = torch.randn(3, 24, generator=torch.Generator().manual_seed(5))
    true = latents_z if space == "z" else generator.map(latents_z)["w"]
    if space == "w+":
        true = true[:, None, :].expand(-1, 2, -1).contiguous()
    targets = generator.synthesize(true, space)
    settings = inversion_settings(
        space=space,
        steps=300,
        lpips_weight=0.0,
        prior_weight=0.0,
        layer_weight=0.1,
        init="random",
        device="cpu",
        learning_rate=0.1,
    )
    inverter = Inverter(generator, settings)
    result = inverter.invert(targets, inverter.initial(targets, None, [11, 12, 13]))
    assert _relative_error(result.latents, true) < 0.02
    assert float(result.psnr.min()) > 45.0


def test_space_defaults_and_refusals() -> None:
    assert resolve_space(None, ToyGenerator()) == "z"
    assert resolve_space(None, ToyGenerator(with_mapping=True)) == "w+"
    with pytest.raises(InversionError, match=r"has latent spaces \['z'\], not 'w'"):
        resolve_space("w", ToyGenerator())
    with pytest.raises(InversionError, match="init 'mean' is for W and W\\+"):
        inverter = Inverter(ToyGenerator(), inversion_settings(init="mean", lpips_weight=0.0, device="cpu"))
        inverter.initial(torch.zeros(1, 3, 8, 8), None, [0])
    with pytest.raises(InversionError, match="inversion steps: Input should be greater than or equal to 0"):
        inversion_settings(steps=-1)


# --------------------------------------------------------------------------------- the embedded DCGAN + encoder


@pytest.fixture(scope="module")
def tiny_encoder(tiny_run: Path, tmp_path_factory) -> Path:
    """An encoder trained on the tiny run's 300 (image, z) pairs: 240 train, 60 held out, 10 epochs."""
    out = tmp_path_factory.mktemp("encoder")
    settings = encoder_settings(epochs=10, batch_size=32, val_samples=60, device="cpu")
    train_encoder(make_params(), tiny_run, out, settings, work_root=out / "work", lock_dir=out / "locks")
    return out / "encoder.pt"


def test_encoder_start_beats_random_start_at_equal_steps(dcgan, tiny_encoder: Path) -> None:
    """On held-out DCGAN faces (true z known), the encoder-initialised inversion is closer than the random-init one
    after the same 40 steps, and reaches LPIPS < 0.1 (AlexNet trunk, to keep the test fast)."""
    encoder = load_encoder(tiny_encoder, dcgan.fingerprint)
    true = torch.randn(3, 100, generator=torch.Generator().manual_seed(2024))
    with torch.no_grad():
        targets = dcgan.synthesize(true).clamp(-1, 1)
    lpips_by_init = {}
    for init in ("encoder", "random"):
        settings = inversion_settings(init=init, steps=40, lpips_net="alex", device="cpu")
        inverter = Inverter(dcgan, settings)
        result = inverter.invert(targets, inverter.initial(targets, encoder, [1, 2, 3]))
        lpips_by_init[init] = float(result.lpips.mean())
    assert lpips_by_init["encoder"] < 0.1
    assert lpips_by_init["encoder"] < 0.7 * lpips_by_init["random"], lpips_by_init


def test_encoder_training_resumes_to_the_same_weights(tiny_run: Path, tmp_path: Path) -> None:
    """Killed after epoch 1 and rerun: the checkpoint is resumed (epoch 1 is not redone) and the final weights equal
    an uninterrupted run's, bit for bit; metrics.json holds every epoch."""
    settings = encoder_settings(epochs=2, batch_size=32, val_samples=60, device="cpu", max_train_samples=120)
    params = make_params()
    whole = train_encoder(
        params, tiny_run, tmp_path / "whole", settings, work_root=tmp_path / "work-a", lock_dir=tmp_path / "locks"
    )

    class Killed(Exception):
        pass

    def kill_after_first(result) -> None:
        raise Killed

    with pytest.raises(Killed):
        train_encoder(
            params,
            tiny_run,
            tmp_path / "resumed",
            settings,
            work_root=tmp_path / "work-b",
            lock_dir=tmp_path / "locks",
            on_epoch=kill_after_first,
        )
    epochs_run = []
    resumed = train_encoder(
        params,
        tiny_run,
        tmp_path / "resumed",
        settings,
        work_root=tmp_path / "work-b",
        lock_dir=tmp_path / "locks",
        on_epoch=lambda result: epochs_run.append(result.epoch),
    )
    assert epochs_run == [1]
    assert [epoch["train_loss"] for epoch in resumed["epochs"]] == [epoch["train_loss"] for epoch in whole["epochs"]]
    first = torch.load(tmp_path / "whole" / "encoder.pt", weights_only=True)["state_dict"]
    second = torch.load(tmp_path / "resumed" / "encoder.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["validation"]["z"]["cosine"] > 0.0
    with pytest.raises(EncoderError, match="trained for generator dcgan-digiface:.*params.yaml's generator is other"):
        load_encoder(tmp_path / "whole" / "encoder.pt", "other")


@pytest.mark.skipif(not STYLEGAN2_FIXTURE.is_file(), reason="StyleGAN2-ADA fixture not found")
def test_stylegan2_w_plus_inversion_of_a_generated_image() -> None:
    """A real style-based architecture (the NVlabs fixture, 32 px): W+ inversion from the mean w gets close to an
    image generated from a known w."""
    generator = build_generator("stylegan2", path=str(STYLEGAN2_FIXTURE), truncation_psi=0.7)
    with torch.no_grad():
        latents_w = generator.map(torch.randn(2, generator.z_dim, generator=torch.Generator().manual_seed(3)))["w"]
        targets = generator.synthesize(latents_w, "w").clamp(-1, 1)
    settings = inversion_settings(steps=60, lpips_weight=0.0, init="mean", device="cpu")
    inverter = Inverter(generator, settings)
    start = inverter.initial(targets, None, [0, 1])
    assert inverter.space == "w+" and tuple(start.shape) == (2, generator.num_ws, generator.w_dim)
    with torch.no_grad():
        start_psnr = float(
            (10 * torch.log10(4.0 / (generator.synthesize(start, "w+") - targets).pow(2).flatten(1).mean(1))).mean()
        )
    result = inverter.invert(targets, start)
    assert float(result.psnr.mean()) > start_psnr + 5.0


FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "generators"
FIXTURE_GENERATORS = {
    "stylegan2": {"path": str(FIXTURES / "stylegan2-ada" / "network-snapshot-000000.pkl")},
    "stylegan3": {"path": str(FIXTURES / "stylegan3" / "network-snapshot-000000.pkl")},
    "pggan": {"path": str(FIXTURES / "interfacegan-pggan" / "pggan_fixture.pth")},
    "stylegan": {"path": str(FIXTURES / "interfacegan-stylegan" / "stylegan_fixture.pth")},
    "biggan": {"path": str(FIXTURES / "biggan"), "class_index": 3},
}


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="generator fixtures not found")
@pytest.mark.parametrize(
    ("name", "spaces", "steps"),
    [
        ("stylegan2", ("z", "w", "w+"), 15),
        ("stylegan", ("z", "w", "w+"), 15),
        ("pggan", ("z",), 15),
        ("biggan", ("z",), 30),
        ("stylegan3", ("w+",), 4),
    ],
)
def test_every_generator_and_space_inverts(name: str, spaces: tuple[str, ...], steps: int) -> None:
    """Each generator the project loads, in each of its spaces: a few pixel-loss steps from a random start bring
    the reconstruction of one of its own images closer (PSNR up by more than 1 dB)."""
    generator = build_generator(name, **FIXTURE_GENERATORS[name])
    assert set(spaces) <= set(generator.latent_spaces)
    with torch.no_grad():
        targets = generator.synthesize(
            torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(1)), "z"
        ).clamp(-1, 1)
    for space in spaces:
        inverter = Inverter(
            generator, inversion_settings(space=space, steps=steps, lpips_weight=0.0, init="random", device="cpu")
        )
        start = inverter.initial(targets, None, [5])
        with torch.no_grad():
            start_psnr = float(psnr(generator.synthesize(start, space), targets)[0])
        assert float(inverter.invert(targets, start).psnr[0]) > start_psnr + 1.0, (name, space)


# ---------------------------------------------------------------------------------------- photos and alignment


def test_photos_of_any_mode_become_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    loaded = load_photo(tmp_path / "gray.png")
    assert (
        loaded.shape == (40, 50, 3) and np.array_equal(loaded[:, :, 0], gray) and np.array_equal(loaded[:, :, 2], gray)
    )
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:20, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = load_photo(tmp_path / "rgba.png")
    assert loaded[0, 0].tolist() == [200, 0, 0] and loaded[-1, -1].tolist() == [255, 255, 255]
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    assert np.array_equal(load_photo(tmp_path / "gray16.png")[:, :, 1], gray)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).convert("P").save(tmp_path / "palette.gif")
    assert load_photo(tmp_path / "palette.gif").shape == (40, 40, 3)


def test_unreadable_and_tiny_photos_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(PhotoError, match=r"notes\.jpg: not a readable image"):
        load_photo(tmp_path / "notes.jpg")
    Image.new("RGB", (20, 64)).save(tmp_path / "tiny.png")
    with pytest.raises(PhotoError, match=r"tiny\.png: 20×64 pixels is too small to invert \(at least 32 px"):
        load_photo(tmp_path / "tiny.png")
    with pytest.raises(PhotoError, match="no such file"):
        load_photo(tmp_path / "absent.png")


def test_similarity_transform_is_exact_on_a_similar_point_set() -> None:
    source = np.array([[10.0, 20.0], [30.0, 21.0], [14.0, 40.0], [28.0, 41.0]])
    angle, scale, shift = np.deg2rad(25), 1.7, np.array([5.0, -3.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = source @ (scale * rotation).T + shift
    matrix = similarity_transform(source, target)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(apply_affine(matrix, source), target)


def test_alignment_undoes_rotation_scale_and_shift(dcgan, detector: FaceDetector) -> None:
    """A face pasted upright and the same face rotated 20°, shrunk and moved in a bigger photo align to nearly the
    same crop, whose eyes and mouth sit on the canonical DCGAN positions."""
    face = Image.fromarray(_faces(dcgan, 1, seed=7, side=200)[0])
    upright = Image.new("RGB", (320, 300), (90, 90, 90))
    upright.paste(face, (60, 50))
    turned = Image.new("RGB", (420, 380), (90, 90, 90))
    turned.paste(
        face.rotate(20, resample=Image.BICUBIC, expand=True, fillcolor=(90, 90, 90)).resize((200, 200), Image.BICUBIC),
        (150, 120),
    )
    settings = AlignmentSettings(True, DCGAN_DIGIFACE_FACE)
    crops = [
        prepare_photo(np.asarray(photo), 64, settings, detector, name)
        for photo, name in ((upright, "upright"), (turned, "turned"))
    ]
    difference = np.abs(crops[0].pixels.astype(float) - crops[1].pixels.astype(float))
    assert difference.mean() < 12.0, difference.mean()
    canonical = DCGAN_DIGIFACE_FACE.array(64)
    for crop in crops:
        found = apply_affine(np.linalg.inv(np.vstack([crop.crop_to_photo, [0, 0, 1]]))[:2], crop.face.points)
        assert np.abs(found[[0, 1, 3, 4]] - canonical[[0, 1, 3, 4]]).max() < 4.0


def test_canonical_dcgan_face_is_reproduced(dcgan, detector: FaceDetector) -> None:
    """The stored canonical face is what measure_canonical_face gives (here on 24 of its 512 faces)."""
    measured, used = measure_canonical_face(dcgan, detector, n_images=24, seed=0)
    assert used >= 20
    assert np.abs(np.array(measured.points) - np.array(DCGAN_DIGIFACE_FACE.points)).max() < 0.025


def test_no_face_and_several_faces(dcgan, detector: FaceDetector) -> None:
    settings = AlignmentSettings(True, DCGAN_DIGIFACE_FACE)
    flat = np.full((120, 160, 3), 140, dtype=np.uint8)
    with pytest.raises(FaceDetectionError, match="flat.png: no face found .*--no-align"):
        prepare_photo(flat, 64, settings, detector, "flat.png")
    faces = _faces(dcgan, 2, seed=7, side=160)
    pair = np.concatenate([faces[0], np.full((160, 40, 3), 90, np.uint8), faces[1]], axis=1)
    with pytest.raises(FaceDetectionError, match=r"pair.png: 2 faces found .*--face-index"):
        prepare_photo(pair, 64, settings, detector, "pair.png")
    chosen = [
        prepare_photo(pair, 64, AlignmentSettings(True, DCGAN_DIGIFACE_FACE, face_index=index), detector, "pair").face
        for index in (0, 1)
    ]
    assert chosen[0].area >= chosen[1].area  # largest first
    assert {face.box[0] < 160 for face in chosen} == {True, False}  # one on each side
    with pytest.raises(FaceDetectionError, match="--face-index 5, but 2 face"):
        prepare_photo(pair, 64, AlignmentSettings(True, DCGAN_DIGIFACE_FACE, face_index=5), detector, "pair")


# ------------------------------------------------------------------------------- the chunked stage, end to end


def test_invert_stage_resumes_and_its_folder_is_a_labeled_dataset(tmp_path: Path) -> None:
    """Toy photos (8×8 images, saved 4× upscaled) → invert (chunks of 2, resumable) → reconstruct → label: the
    dataset reader opens the folder, and the labels match the planted attributes of the true latents."""
    generator = ToyGenerator()
    true = torch.randn(5, 24, generator=torch.Generator().manual_seed(8))
    pixels = ((generator.synthesize(true).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, image in enumerate(pixels.numpy()):
        Image.fromarray(image).resize((32, 32), Image.NEAREST).save(folder / f"photo-{4 - index}.png")
    params = make_params()
    settings = inversion_settings(steps=300, lpips_weight=0.0, prior_weight=0.0, init="random", device="cpu")
    alignment = AlignmentSettings(False, DCGAN_DIGIFACE_FACE)
    out = tmp_path / "inverted"

    with InvertStage(params, out, [folder], settings, alignment, chunk_size=2, generator=generator) as stage:
        assert stage.pending == [0, 1, 2]
        stage.run_chunk(1)  # then "killed"
    stage = InvertStage(params, out, [folder], settings, alignment, chunk_size=2, generator=generator)
    with stage:
        assert stage.pending == [0, 2]
    run_stage(stage)
    assert InvertStage(params, out, [folder], settings, alignment, chunk_size=2, generator=generator).pending == []

    store = ZarrChunkStore.open(out / LATENTS_STORE, "latents", require_complete=True)
    names = store.info.details["photos"]
    assert names == [f"photo-{k}.png" for k in range(5)]
    found = torch.from_numpy(np.asarray(store.arrays["z"][:]))
    order = [4 - int(name.split("-")[1].split(".")[0]) for name in names]  # photo-k holds image 4 - k
    assert _relative_error(found, true[order]) < 0.05  # 8-bit photos: quantised targets
    run_stage(ReconstructStage(params, out, generator=generator))
    run_stage(LabelStage(params, out, labeler=ToyLabeler(generator)))
    data = dataset.open(out)
    assert data.spaces == ["z"] and data.n_samples == 5
    planted = attribute_values(true[order].numpy(), generator.directions)
    labels = data.labels_frame(["pose", "age"])
    assert np.allclose(labels["pose"].to_numpy(), planted["pose"].to_numpy(), atol=1.5)
    assert np.allclose(labels["age"].to_numpy(), planted["age"].to_numpy(), atol=1.0)


# ------------------------------------------------------------------------------------ editing: checks and CLI


def _face_photos(dcgan, folder: Path, n: int) -> Path:
    folder.mkdir()
    for index, face in enumerate(_faces(dcgan, n, seed=21, side=80)):
        Image.fromarray(face).save(folder / f"face-{index}.png")
    return folder


def test_the_invert_stage_travels_to_workers_and_writes_the_same_bytes(dcgan, tmp_path: Path) -> None:
    """Built like every stage (params, out dir, options), the invert stage is rebuilt from its spec in attach mode
    (as a Dask or Ray worker builds it), and the chunks a worker writes are the bytes the local loop writes."""
    photos = _face_photos(dcgan, tmp_path / "photos", 3)
    params = make_params()
    settings = inversion_settings(steps=3, lpips_weight=0.0, init="random", device="cpu")
    alignment = AlignmentSettings(False, DCGAN_DIGIFACE_FACE)
    run_stage(InvertStage(params, tmp_path / "local", [photos], settings, alignment, chunk_size=2))
    with InvertStage(params, tmp_path / "workers", [photos], settings, alignment, chunk_size=2) as driver:
        spec = StageSpec.of(driver)
        assert dict(spec.options)["photos"] == tuple(sorted(photos.resolve().iterdir()))
        worker = spec.build()  # what a Dask or Ray worker process does with the spec
        assert worker.attached and worker.store.info.fingerprint == driver.store.info.fingerprint
        for index in driver.pending:
            worker.run_unit(index)
        driver.finish()
    assert tree_digest(tmp_path / "workers" / LATENTS_STORE) == tree_digest(tmp_path / "local" / LATENTS_STORE)


def test_invert_command_inverts_resumes_and_notes_the_missing_encoder(dcgan, tmp_path: Path, monkeypatch) -> None:
    """`latentatlas invert` through the engine: latents and reconstructions written, one line per photo; without
    the default encoder file a note says so and the init falls back (random z for the DCGAN); a rerun resumes."""
    _face_photos(dcgan, tmp_path / "photos", 3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"synthesize": {"device": "cpu"}}))
    monkeypatch.chdir(tmp_path)  # no models/encoder/encoder.pt here
    args = [
        "invert",
        "photos",
        "--out",
        "out",
        "--chunk-size",
        "2",
        "--steps",
        "2",
        "--lpips-net",
        "alex",
        "--no-align",
        "--device",
        "cpu",
    ]
    result = _cli(args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("note: no encoder at models/encoder/encoder.pt") and "a random z" in lines[0]
    assert [line.split()[0] for line in lines[1:4]] == ["face-0.png", "face-1.png", "face-2.png"]
    assert lines[4] == "wrote out/latents.zarr (z) and out/images.zarr"
    latents = ZarrChunkStore.open(tmp_path / "out" / LATENTS_STORE, "latents", require_complete=True)
    assert latents.info.inputs["settings"]["init"] == "random"
    images = ZarrChunkStore.open(tmp_path / "out" / "images.zarr", "images", require_complete=True)
    assert images.info.n_samples == 3
    before = tree_digest(tmp_path / "out")
    assert _cli(args).exit_code == 0 and tree_digest(tmp_path / "out") == before  # nothing recomputed


def test_option_types() -> None:
    """--alphas, --layers and --keep are parsed by their click types: typed values, or a usage error naming the
    option and what was expected."""
    assert AlphaList().convert("-3,-1.5, 0,1.5,3", None, None) == [-3.0, -1.5, 0.0, 1.5, 3.0]
    for bad, message in (
        ("1,,2", "item 2 \\(''\\) is not a number"),
        ("a", "item 1 \\('a'\\) is not a number"),
        ("", "expected comma-separated numbers"),
        ("1,inf", "not a finite number"),
    ):
        with pytest.raises(click.BadParameter, match=message):
            AlphaList().convert(bad, None, None)
    assert NameList().convert("male, age", None, None) == ["male", "age"] and NameList().convert("", None, None) == []
    with pytest.raises(click.BadParameter, match="an empty name"):
        NameList().convert("male,,age", None, None)
    with pytest.raises(click.BadParameter, match="given more than once"):
        NameList().convert("male,age,male", None, None)
    assert LayerRange().convert("0,8", None, None) == (0, 8)
    with pytest.raises(click.BadParameter, match="expected two integers start,stop"):
        LayerRange().convert("0-8", None, None)
    with pytest.raises(click.BadParameter, match="0 <= start < stop"):
        LayerRange().convert("4,2", None, None)


def _directions(tiny_run: Path, dim: int = 100, space: str = "z", fingerprint: str | None = None) -> DirectionSet:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((4, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = ParquetChunkStore.open(tiny_run / LABELS_STORE, "labels")
    return DirectionSet(
        "test",
        space,
        ["red", "green", "blue", "brightness"],
        vectors,
        meta={"input_fingerprint": fingerprint or labels.info.fingerprint},
    )


def test_directions_from_another_generator_or_space_are_refused(tiny_run: Path, dcgan) -> None:
    assert check_directions(_directions(tiny_run), "d", dcgan, tiny_run) == dcgan.fingerprint
    with pytest.raises(
        DirectionsMismatchError, match="24-d directions in z, but generator 'dcgan-digiface' has a 100-d z"
    ):
        check_directions(_directions(tiny_run, dim=24), "d", dcgan, tiny_run)
    with pytest.raises(DirectionsMismatchError, match="directions in space 'w', but generator 'dcgan-digiface' has"):
        check_directions(_directions(tiny_run, space="w"), "d", dcgan, tiny_run)

    class Retrained:  # the same architecture, other weights: only the fingerprint tells
        name, z_dim, latent_spaces, fingerprint = "dcgan-digiface", 100, ("z",), "dcgan-digiface:other-weights"

    with pytest.raises(
        DirectionsMismatchError,
        match="fitted on samples of generator dcgan-digiface:.*params.yaml's generator is dcgan-digiface:other-weights",
    ):
        check_directions(_directions(tiny_run), "d", Retrained(), tiny_run)
    with pytest.warns(UserWarning, match="cannot check which generator"):
        assert check_directions(_directions(tiny_run, fingerprint="gone"), "d", dcgan, tiny_run) is None
    mapped = ToyGenerator(with_mapping=True)
    assert edit_space_for("w", mapped, None) == "w+" and edit_space_for("w", mapped, "w") == "w"
    with pytest.raises(DirectionsMismatchError, match="W directions edit W or W\\+ latents"):
        edit_space_for("w", mapped, "z")
    with pytest.raises(DirectionsMismatchError, match="z directions edit z latents"):
        edit_space_for("z", mapped, "w+")


def test_w_direction_edits_every_w_plus_layer_or_the_chosen_ones() -> None:
    vectors = np.eye(4)[:2]
    directions = DirectionSet("test", "w", ["smile", "age"], vectors)
    codes = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(0))
    every = edited_latents(codes, "w+", directions, "smile", [-1.0, 2.0], [], None)
    assert every.shape == (2, 3, 4)
    assert torch.allclose(every[1] - codes[0], torch.tensor([2.0, 0, 0, 0]).expand(3, 4))
    some = edited_latents(codes, "w+", directions, "smile", [2.0], [], (1, 3))
    assert torch.allclose(some[0, 0], codes[0, 0]) and torch.allclose(
        some[0, 2] - codes[0, 2], torch.tensor([2.0, 0, 0, 0])
    )
    with pytest.raises(EditInputError, match="--layers applies to W\\+ inversions"):
        edited_latents(codes[:, 0], "w", directions, "smile", [1.0], [], (0, 1))


def _cli(args: list[str]):
    return CliRunner().invoke(main, args)


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_edit_command_end_to_end(tiny_run: Path, tiny_encoder: Path, tmp_path: Path, dcgan) -> None:
    """`latentatlas edit` on a face photo: strip of photo | reconstruction | 3 edits, scores whose α = 0 row is the
    reconstruction's, scores that move with α along the direction of 'red', and one-line errors for bad input."""
    photo = tmp_path / "face.png"
    Image.fromarray(_faces(dcgan, 1, seed=11, side=180)[0]).save(photo)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump({"label": {"labeler": COLOR_LABELER, "batch_size": 16, "device": "cpu"}}))
    directions_dir = tmp_path / "directions" / "test"
    _directions(tiny_run).save(directions_dir)
    common = [
        "--directions",
        str(directions_dir),
        "--params",
        str(params_path),
        "--data-dir",
        str(tiny_run),
        "--encoder",
        str(tiny_encoder),
        "--steps",
        "10",
        "--lpips-net",
        "alex",
        "--device",
        "cpu",
    ]
    out = tmp_path / "edited"
    result = _cli(
        ["edit", str(photo), "--attribute", "red", "--alphas", "-2,0,2", "--keep", "green", "--out", str(out), *common]
    )
    assert result.exit_code == 0, result.output
    assert "alpha +2" in result.output and "reconstruction (z): LPIPS (alex)" in result.output
    strip = Image.open(out / "test-red.png")
    assert strip.size[0] == 5 * 128
    scores = json.loads((out / "test-red.json").read_text())["scores"]
    assert [row["image"] for row in scores] == ["photo", "reconstruction", "alpha -2", "alpha +0", "alpha +2"]
    assert scores[3]["red"] == pytest.approx(scores[1]["red"], abs=1e-6)
    assert scores[2]["red"] != pytest.approx(scores[4]["red"], abs=1e-3)
    assert ZarrChunkStore.open(out / LATENTS_STORE, "latents", require_complete=True).info.details["photos"] == [
        "face.png"
    ]

    usage_error = _cli(["edit", str(photo), "--attribute", "red", "--alphas", "1,,2", *common])
    assert usage_error.exit_code == 2
    assert (
        "Error: Invalid value for '--alphas': expected comma-separated numbers (e.g. -3,-1.5,0,1.5,3), got "
        "'1,,2': item 2 ('') is not a number"
    ) in usage_error.output
    usage_error = _cli(["edit", str(photo), "--attribute", "red", *common, "--steps", "200000"])
    assert (
        usage_error.exit_code == 2
        and "Error: inversion steps: Input should be less than or equal to 100000" in usage_error.output
    )
    assert "has no direction ['smile']" in _one_error_line(
        _cli(["edit", str(photo), "--attribute", "smile", "--out", str(out), *common])
    )
    other = tmp_path / "directions" / "other"
    _directions(tiny_run, dim=24).save(other)
    line = _one_error_line(
        _cli(["edit", str(photo), "--attribute", "red", "--out", str(out), *common, "--directions", str(other)])
    )
    assert "24-d directions in z, but generator 'dcgan-digiface' has a 100-d z" in line
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert "broken.jpg: not a readable image" in _one_error_line(
        _cli(["edit", str(tmp_path / "broken.jpg"), "--attribute", "red", "--out", str(tmp_path / "b"), *common])
    )
