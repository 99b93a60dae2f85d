"""``latentatlas train-labeler``: a ResNet learns a planted attribute, its checkpoint is a labeler, training resumes
bit-identically, label files in CelebA and CSV form are read right, bad input is one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from latentatlas.errors import LatentAtlasError
from stages.plugins.labelers import build_labeler
from stages.plugins.labelers.torch_classifier import CELEBA40, CHECKPOINT_FORMAT
from stages.plugins.labelers.training import (
    AttributeTrainer,
    TrainLabelerError,
    attribute_metrics,
    decode_image,
    load_attribute_table,
    parse_train_params,
    read_celeba_attributes,
    train_labeler,
)

RED, BLUE = (230, 20, 20), (20, 20, 230)


def write_planted_squares(folder: Path, n_images: int, side: int, seed: int = 0) -> Path:
    """``folder/images/00000.png``… (side × side noise, grey 64–191) with a red and/or a blue square (side/4, at a
    random place, each present with probability 1/2), and ``folder/attrs.csv``: file,red_square,blue_square (0/1).
    Returns the CSV path."""
    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = ["file,red_square,blue_square"]
    square = side // 4
    for index in range(n_images):
        pixels = (rng.integers(0, 256, size=(side, side, 3)) // 2 + 64).astype(np.uint8)
        present = rng.random(2) < 0.5
        for has, colour in zip(present, (RED, BLUE)):
            if has:
                top, left = rng.integers(0, side - square, size=2)
                pixels[top : top + square, left : left + square] = colour
        name = f"{index:05d}.png"
        Image.fromarray(pixels).save(images / name)
        lines.append(f"{name},{int(present[0])},{int(present[1])}")
    (folder / "attrs.csv").write_text("\n".join(lines) + "\n")
    return folder / "attrs.csv"


def settings(folder: Path, **overrides) -> dict:
    return {
        "images": str(folder / "images"),
        "labels": str(folder / "attrs.csv"),
        "val_fraction": 0.2,
        "device": "cpu",
        "out": str(folder / "model"),
        "work_dir": str(folder / "work"),
        "seed": 3,
        **overrides,
    }


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted")
    write_planted_squares(folder, 400, 48)
    return folder


@pytest.fixture(scope="module")
def trained(planted: Path) -> dict:
    """ResNet-18 from random init, 4 epochs at sides 32, 32, 48, 48 (≈30 s on one core)."""
    params = parse_train_params(settings(planted, epochs=4, image_sizes=[32, 32, 48], batch_size=32, max_lr=0.003))
    epochs = []
    metrics = train_labeler(params, on_epoch=epochs.append)
    return {"params": params, "metrics": metrics, "epochs": epochs}


def test_learns_the_planted_attributes_far_above_chance(trained: dict) -> None:
    metrics = trained["metrics"]
    assert metrics["attributes"] == ["red_square", "blue_square"]
    assert metrics["n_train"] == 320 and metrics["n_val"] == 80
    for name in ("red_square", "blue_square"):
        assert metrics["val"]["accuracy"][name] > 0.9, metrics["val"]
        assert metrics["val"]["fbeta"][name] > 0.9, metrics["val"]
    assert [epoch.image_size for epoch in trained["epochs"]] == [32, 32, 48, 48]  # progressive resizing
    assert trained["epochs"][-1].train_loss < trained["epochs"][0].train_loss
    assert len(metrics["epochs"]) == 4 and metrics["test"] is None


def test_checkpoint_is_a_torch_classifier_labeler_that_agrees_with_training(trained: dict, planted: Path) -> None:
    params = trained["params"]
    checkpoint = Path(params.out) / "model.pt"
    payload = torch.load(checkpoint, weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["architecture"] == "resnet18"
    assert payload["preprocessing"]["resize"] == [48, 48] and payload["activation"] == "sigmoid"
    labeler = build_labeler("torch-classifier", checkpoint=str(checkpoint))
    assert labeler.attributes == ("red_square", "blue_square")
    # The validation images, as the pipeline hands them over: (N, 3, 48, 48) in [-1, 1].
    trainer = AttributeTrainer(params)
    rows = trainer.val_rows
    images = torch.stack([decode_image(planted / "images" / trainer.table.files[row], None) for row in rows])
    scores = labeler.score(images).numpy()
    model = trainer.build_model()
    model.load_state_dict(payload["state_dict"])
    probabilities, _ = trainer.predict(model, rows, 48)
    np.testing.assert_allclose(scores, probabilities, atol=1e-5)
    accuracy = ((scores > 0.5) == (trainer.table.targets[rows] > 0.5)).mean(axis=0)
    np.testing.assert_allclose(
        accuracy, [trained["metrics"]["val"]["accuracy"][n] for n in labeler.attributes], atol=1e-6
    )
    renamed = build_labeler("torch-classifier", checkpoint=str(checkpoint), outputs=["red", "blue"], activation="none")
    np.testing.assert_allclose(torch.sigmoid(renamed.score(images[:4])).numpy(), scores[:4], atol=1e-6)
    assert renamed.attributes == ("red", "blue") and renamed.fingerprint != labeler.fingerprint


def test_resume_after_a_kill_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    write_planted_squares(tmp_path, 48, 32, seed=5)
    base = dict(epochs=2, image_sizes=[32], batch_size=8, max_lr=0.003)
    whole = parse_train_params(settings(tmp_path, **base, out=str(tmp_path / "whole"), work_dir=str(tmp_path / "w1")))
    train_labeler(whole)
    split = parse_train_params(settings(tmp_path, **base, out=str(tmp_path / "split"), work_dir=str(tmp_path / "w2")))

    def killed(result) -> None:
        raise KeyboardInterrupt  # a kill right after epoch 1 was saved

    with pytest.raises(KeyboardInterrupt):
        train_labeler(split, on_epoch=killed)
    assert not (tmp_path / "split" / "model.pt").exists()
    seen = []
    train_labeler(split, on_epoch=seen.append)
    assert [result.epoch for result in seen] == [1]  # only the missing epoch ran
    first = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    second = torch.load(tmp_path / "split" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_init_weights_start_from_an_imagenet_state_dict_without_its_head(small: Path) -> None:
    import torchvision

    torch.manual_seed(11)
    imagenet = torchvision.models.resnet18(weights=None)  # stands in for a file the user downloaded (1000 classes)
    torch.save(imagenet.state_dict(), small / "resnet18-imagenet.pth")
    trainer = AttributeTrainer(
        parse_train_params(settings(small, init_weights=str(small / "resnet18-imagenet.pth"), epochs=4, batch_size=2))
    )
    model = trainer.build_model()
    state, source = model.state_dict(), imagenet.state_dict()
    assert state["fc.weight"].shape == (2, 512)  # the head sized to the two attributes, freshly initialised
    assert all(torch.equal(state[key], source[key]) for key in source if not key.startswith("fc."))


def test_attribute_metrics_by_hand() -> None:
    probabilities = np.array([[0.9, 0.2], [0.8, 0.7], [0.3, 0.6], [0.1, 0.4]])
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 1]], dtype=np.float32)
    metrics = attribute_metrics(probabilities, targets, threshold=0.5, beta=2.0)
    # column 0: TP 1, FP 1, FN 1, TN 1 → P = R = 0.5, F2 = 0.5, accuracy 0.5
    # column 1: TP 2, FP 0, FN 1, TN 1 → P = 1, R = 2/3, F2 = 5·(2/3) / (4 + 2/3) = 10/14, accuracy 0.75
    np.testing.assert_allclose(metrics["accuracy"], [0.5, 0.75])
    np.testing.assert_allclose(metrics["precision"], [0.5, 1.0])
    np.testing.assert_allclose(metrics["recall"], [0.5, 2 / 3])
    np.testing.assert_allclose(metrics["fbeta"], [0.5, 10 / 14])
    none_predicted = attribute_metrics(np.zeros((2, 1)), np.ones((2, 1)), 0.5, 1.0)
    assert none_predicted["fbeta"][0] == 0 and none_predicted["accuracy"][0] == 0


def _write_celeba(folder: Path, files: list[str], values: np.ndarray, splits: list[int]) -> None:
    lines = [str(len(files)), " ".join(CELEBA40)]
    lines += [f"{name} " + " ".join(f"{int(v):2d}" for v in row) for name, row in zip(files, values)]
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(files, splits)))
    (folder / "images").mkdir()
    for name in files:
        Image.fromarray(np.full((218, 178, 3), 100, np.uint8)).save(folder / "images" / name)


def test_celeba_files_are_read_with_their_split(tmp_path: Path) -> None:
    files = [f"{k:06d}.jpg" for k in range(1, 7)]
    values = np.where(np.random.default_rng(0).random((6, 40)) < 0.3, 1, -1)
    _write_celeba(tmp_path, files, values, [0, 0, 0, 1, 1, 2])
    table = read_celeba_attributes(tmp_path / "list_attr_celeba.txt")
    assert table.names == CELEBA40 and table.files == tuple(files)
    np.testing.assert_array_equal(table.targets, (values > 0).astype(np.float32))
    params = parse_train_params(
        {
            "images": str(tmp_path / "images"),
            "labels": str(tmp_path / "list_attr_celeba.txt"),
            "partition": str(tmp_path / "list_eval_partition.txt"),
            "attributes": ["Smiling", "Male"],
        }
    )
    chosen = load_attribute_table(params)
    assert chosen.names == ("Smiling", "Male")
    np.testing.assert_array_equal(chosen.targets, (values[:, [31, 20]] > 0).astype(np.float32))
    np.testing.assert_array_equal(chosen.splits, [0, 0, 0, 1, 1, 2])
    square = decode_image(tmp_path / "images" / files[0], None)  # CelebA 178×218 → its centred 178×178 square
    assert square.shape == (3, 178, 178) and torch.allclose(square, torch.full_like(square, 100 / 127.5 - 1))


def test_csv_split_column_and_minus_one_values(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / name)
    (tmp_path / "attrs.csv").write_text("file,smile,split,glasses\na.png,1,train,-1\nb.png,-1,val,1\nc.png,1,test,1\n")
    table = load_attribute_table(
        parse_train_params(
            {"images": str(tmp_path / "images"), "labels": str(tmp_path / "attrs.csv"), "split_column": "split"}
        )
    )
    assert table.names == ("smile", "glasses")
    np.testing.assert_array_equal(table.targets, [[1, 0], [0, 1], [1, 1]])
    np.testing.assert_array_equal(table.splits, [0, 1, 2])


def test_cli_trains_and_reports(tmp_path: Path) -> None:
    from pipeline.cli import main

    write_planted_squares(tmp_path, 24, 32, seed=1)
    config = tmp_path / "train_labeler.yaml"
    config.write_text(
        "\n".join(
            f"{key}: {value!r}" if isinstance(value, str) else f"{key}: {value}"
            for key, value in settings(tmp_path, epochs=1, image_sizes=[32], batch_size=2).items()
        )
        + "\n"
    )
    result = CliRunner().invoke(main, ["train-labeler", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1  size 32" in result.output and "wrote" in result.output
    assert (tmp_path / "model" / "model.pt").is_file() and (tmp_path / "model" / "metrics.json").is_file()


# ------------------------------------------------------------------------------------------------------- bad input


def _one_line_error(raw: dict, match: str) -> None:
    with pytest.raises(LatentAtlasError, match=match) as caught:
        AttributeTrainer(parse_train_params(raw))
    assert "\n" not in str(caught.value)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    write_planted_squares(tmp_path, 6, 16)
    return tmp_path


def test_bad_inputs_are_one_line_and_write_nothing(small: Path) -> None:
    _one_line_error(settings(small, attributes=["green_square"]), r"\['green_square'\] are not in")
    _one_line_error(settings(small, images=str(small / "nowhere")), "folder .* not found")
    _one_line_error(settings(small, labels=str(small / "missing.csv")), "file not found")
    _one_line_error(settings(small, partition=str(small / "attrs.csv")), "a CSV gives its split with split_column")
    _one_line_error(settings(small, batch_size=4, epochs=1), r"1 optimizer steps in all \(5 training images.* too few")
    (small / "images" / "00003.png").unlink()
    _one_line_error(settings(small), r"1 files of .* are not in .*00003.png")
    write = small / "attrs.csv"
    write.write_text("file,red\n00000.png,2\n00001.png,0\n")
    _one_line_error(settings(small), r"0/1 or -1/1, found \[0, 2\]")
    write.write_text("file,red\n00000.png,1\n00000.png,0\n")
    _one_line_error(settings(small), "listed more than once")
    (small / "attrs.txt").write_text("3\nSmiling Male\n00000.png 1 -1\n00001.png -1 1\n")
    _one_line_error(settings(small, labels=str(small / "attrs.txt")), "line 1 says 3 images, the file lists 2")
    with pytest.raises(TrainLabelerError, match="architecture: expected one of") as caught:
        parse_train_params(settings(small, architecture="vgg16"))
    assert "\n" not in str(caught.value)
    with pytest.raises(TrainLabelerError, match="epochs: unknown key|epoch: unknown key"):
        parse_train_params(settings(small, epoch=3))
    assert not (small / "model").exists() and not (small / "work").exists()


def test_corrupt_init_weights_and_image_are_one_line(small: Path) -> None:
    (small / "init.pt").write_bytes(b"not a checkpoint")
    trainer_params = parse_train_params(
        settings(small, init_weights=str(small / "init.pt"), epochs=4, image_sizes=[16], batch_size=2)
    )
    with pytest.raises(TrainLabelerError, match="init_weights .*init.pt.* not a readable torch.save file") as caught:
        train_labeler(trainer_params)
    assert "\n" not in str(caught.value)
    (small / "images" / "00002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(TrainLabelerError, match="00002.png: not an image"):
        decode_image(small / "images" / "00002.png", None)
    cli_result = CliRunner().invoke(
        __import__("pipeline.cli", fromlist=["main"]).main, ["train-labeler", "--config", str(small / "absent.yaml")]
    )
    assert cli_result.exit_code == 1 and cli_result.output.strip().count("\n") == 0
    assert "train-labeler config not found" in cli_result.output
