"""Bring your own labels: ``torch-classifier`` (TorchScript, torchvision state dict, presets, preprocessing) and
``table`` (labels by sample id) — values checked against running the model / reading the file ourselves, through the
real label stage, composed with other labelers, and every bad input one line with the stores intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from latentatlas import dataset
from latentatlas.errors import LatentAtlasError
from latentatlas.params import LabelParams, ParamsError, parse_params
from stages.label import LabelStage
from stages.plugins.labelers import LabelerError, LabelerSuite, build_labeler, labeler_for
from stages.plugins.labelers.torch_classifier import CELEBA40
from stages.runtime.chunked import run_stage
from tests.conftest import COLOR_LABELER, make_params, run_spine, tree_digest
from tests.plugins import ColorStatsLabeler

# TorchScript is deprecated in torch 2.14 but is the format users have; writing test files must not warn.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")


class ChannelHead(nn.Module):
    """(N, 3, H, W) → per-channel spatial means (N, 3) → Linear(3, K): a network whose outputs are easy to predict."""

    def __init__(self, outputs: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(3, outputs)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(outputs, 3, generator=generator))
            self.linear.bias.copy_(torch.randn(outputs, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))


class SmallConvNet(nn.Module):
    """A convolution that sees the pixels' layout (so resize and crop matter): (N, 3, H, W) → (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 5, stride=2)
        self.linear = nn.Linear(4 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.linear(features.flatten(1))


def script(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def images(n: int = 5, height: int = 40, width: int = 40, seed: int = 0) -> torch.Tensor:
    """(n, 3, height, width) in [-1, 1]."""
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -------------------------------------------------------------------------------------------- torch-classifier


def test_torchscript_with_resize_crop_bgr_255_and_softmax(tmp_path: Path) -> None:
    network = SmallConvNet().eval()
    path = script(network, tmp_path / "net.pt")
    kwargs = {
        "torchscript": str(path),
        "allow_code_execution": True,
        "outputs": ["a", "b", "c", "d"],
        "resize": 36,
        "crop": 32,
        "input_range": [0, 255],
        "channel_order": "BGR",
        "mean": [100.0, 110.0, 120.0],
        "std": [50.0, 60.0, 70.0],
        "activation": "softmax",
    }
    labeler = build_labeler("torch-classifier", **kwargs)
    assert labeler.attributes == ("a", "b", "c", "d")
    batch = images(3, 48, 60)  # not square: resize 36 puts the shorter side at 36 → 36 × 45
    scores = labeler.score(batch)
    # Ourselves: resize shorter side to 36, centre crop 32, [-1, 1] → [0, 255], RGB → BGR, normalise, softmax.
    resized = F.interpolate(batch, size=(36, 45), mode="bilinear", align_corners=False, antialias=True)
    top, left = (36 - 32) // 2, (45 - 32) // 2
    cropped = resized[:, :, top : top + 32, left : left + 32]
    bgr = ((cropped + 1) * 127.5)[:, [2, 1, 0]]
    normalised = (bgr - torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1)) / torch.tensor([50.0, 60.0, 70.0]).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected = torch.softmax(network(normalised), dim=1)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(scores.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("input_range, low, high", [([0, 1], 0.0, 1.0), ([0, 255], 0.0, 255.0), ([-1, 1], -1.0, 1.0)])
@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
@pytest.mark.parametrize("activation", ["sigmoid", "softmax", "none"])
def test_preprocessing_variants_match_a_hand_computation(
    tmp_path: Path, input_range: list[float], low: float, high: float, channel_order: str, activation: str
) -> None:
    head = ChannelHead(2)
    path = script(head, tmp_path / "head.pt")
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    labeler = build_labeler(
        "torch-classifier",
        torchscript=str(path),
        allow_code_execution=True,
        outputs=["x", "y"],
        input_range=input_range,
        channel_order=channel_order,
        mean=mean,
        std=std,
        activation=activation,
    )
    batch = images(4, 20, 20, seed=2)
    channel_means = batch.mean(dim=(2, 3))  # (N, 3) in [-1, 1], RGB
    mapped = low + (channel_means + 1) / 2 * (high - low)
    if channel_order == "BGR":
        mapped = mapped[:, [2, 1, 0]]
    network_input_means = (mapped - torch.tensor(mean)) / torch.tensor(std)  # means commute with the affine map
    logits = network_input_means @ head.linear.weight.detach().T + head.linear.bias.detach()
    expected = {"sigmoid": torch.sigmoid, "softmax": lambda v: torch.softmax(v, dim=1), "none": lambda v: v}
    torch.testing.assert_close(labeler.score(batch), expected[activation](logits), atol=2e-5, rtol=1e-5)


def test_state_dict_with_celeba40_preset(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = torchvision.models.resnet18(weights=None, num_classes=40).eval()
    torch.save(network.state_dict(), tmp_path / "resnet18-celeba.pth")
    labeler = build_labeler(
        "torch-classifier",
        architecture="resnet18",
        weights=str(tmp_path / "resnet18-celeba.pth"),
        outputs="celeba40",
        resize=[64, 64],
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    assert labeler.attributes == CELEBA40 and len(CELEBA40) == 40
    assert CELEBA40[0] == "5_o_Clock_Shadow" and CELEBA40[20] == "Male" and CELEBA40[31] == "Smiling"
    assert CELEBA40[-1] == "Young"
    batch = images(3, 48, 48, seed=4)
    resized = F.interpolate(batch, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    normalised = ((resized + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.sigmoid(network(normalised))
    torch.testing.assert_close(labeler.score(batch), expected, atol=1e-5, rtol=1e-5)
    # A DataParallel-style checkpoint ({"state_dict": {"module.…": …}}) is the same network.
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, tmp_path / "dp.pth")
    wrapped = build_labeler(
        "torch-classifier",
        architecture="resnet18",
        weights=str(tmp_path / "dp.pth"),
        outputs="celeba40",
        resize=[64, 64],
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    torch.testing.assert_close(wrapped.score(batch), expected, atol=1e-5, rtol=1e-5)


def test_fingerprint_follows_the_file_and_every_setting(tmp_path: Path) -> None:
    path = script(ChannelHead(2), tmp_path / "head.pt")
    base = {"torchscript": str(path), "allow_code_execution": True, "outputs": ["x", "y"]}
    reference = build_labeler("torch-classifier", **base).fingerprint
    assert build_labeler("torch-classifier", **base).fingerprint == reference
    changes = [
        {"resize": 32},
        {"crop": 16},
        {"input_range": [0, 255]},
        {"channel_order": "BGR"},
        {"mean": [0.5, 0.5, 0.5]},
        {"std": [2, 2, 2]},
        {"interpolation": "bicubic"},
        {"activation": "none"},
        {"outputs": ["y", "x"]},
    ]
    prints = {build_labeler("torch-classifier", **{**base, **change}).fingerprint for change in changes}
    assert len(prints) == len(changes) and reference not in prints
    script(ChannelHead(2, seed=9), path)  # same path, other weights
    assert build_labeler("torch-classifier", **base).fingerprint != reference


def test_composes_with_another_labeler_through_label_labelers(tmp_path: Path) -> None:
    path = script(ChannelHead(2), tmp_path / "head.pt")
    section = parse_params(
        {
            "label": {
                "labelers": [
                    COLOR_LABELER,
                    {
                        "name": "torch-classifier",
                        "kwargs": {"torchscript": str(path), "allow_code_execution": True, "outputs": ["p", "q"]},
                    },
                ]
            }
        }
    ).label
    suite = labeler_for(section)
    assert isinstance(suite, LabelerSuite)
    assert suite.attributes == ("red", "green", "blue", "brightness", "p", "q")
    batch = images(3, 24, 24)
    alone = build_labeler("torch-classifier", torchscript=str(path), allow_code_execution=True, outputs=["p", "q"])
    torch.testing.assert_close(
        suite.score(batch), torch.cat([ColorStatsLabeler().score(batch), alone.score(batch)], dim=1)
    )


class FileWritingHead(nn.Module):
    """A TorchScript-able classifier whose ``__setstate__`` — run by ``torch.jit.load`` — writes ``AAAA`` to the file
    ``target`` (through ``torch.from_file(..., shared=True)``, which creates it): what a hostile TorchScript file can
    do the moment it is opened."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.weight = torch.ones(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) @ self.weight.t()

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return self.target, self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.target = state[0]
        written = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
        written.fill_(65)
        self.weight = state[1] + written.sum().float() * 0  # uses the write, so the compiler keeps it
        self.training = state[2]


def test_torchscript_runs_code_so_it_is_refused_without_allow_code_execution(tmp_path: Path) -> None:
    """A TorchScript file is a program: without ``allow_code_execution: true`` it is refused before it is opened —
    when the labeler is built, when params.yaml is loaded and through the CLI — and its code does not run."""
    import yaml
    from click.testing import CliRunner

    from pipeline.cli import main
    from stages.plugins.params import plugin_params_model

    marker = tmp_path / "written-by-the-torchscript-file"
    path = script(FileWritingHead(str(marker)), tmp_path / "hostile.pt")
    assert not marker.exists()
    kwargs = {"torchscript": str(path), "outputs": ["a", "b"], "resize": [16, 16]}
    with pytest.raises(
        ParamsError,
        match="torchscript: refused without allow_code_execution: true; a TorchScript file is a program, not weights",
    ) as caught:
        build_labeler("torch-classifier", **kwargs)
    _one_line(caught)
    for label in (
        {"labeler": "torch-classifier", "kwargs": kwargs},
        {"labelers": [COLOR_LABELER, {"name": "torch-classifier", "kwargs": kwargs}]},
    ):
        with pytest.raises(
            ParamsError,
            match=r"^params\.yaml: label\.(labelers\.1\.)?kwargs: torchscript: refused "
            r"without allow_code_execution: true",
        ):
            parse_params({"label": label}, source="params.yaml", plugin_models=plugin_params_model)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump({"label": {"labeler": "torch-classifier", "kwargs": kwargs}}))
    result = CliRunner().invoke(
        main, ["label", "--params", str(params_path), "--data-dir", str(tmp_path / "data"), "--engine", "local"]
    )
    assert result.exit_code == 1 and "refused without allow_code_execution: true" in result.output, result.output
    assert not marker.exists()  # the file's code never ran
    # Opted in, the file is loaded — and its code runs: the refusal above is what kept the file unwritten.
    labeler = build_labeler("torch-classifier", **kwargs, allow_code_execution=True)
    assert marker.read_bytes() == b"AAAA"
    assert labeler.score(images(2, 16, 16)).shape == (2, 2)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, LatentAtlasError)
    return message


def test_torch_classifier_bad_input_is_one_line(tmp_path: Path) -> None:
    head = script(ChannelHead(3), tmp_path / "head.pt")
    network = torchvision.models.resnet18(weights=None, num_classes=5)
    torch.save(network.state_dict(), tmp_path / "five.pth")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage" * 10)
    # 40 bytes on disk claiming a 1 GiB weight: a stride-0 view is refused before anything is materialised
    torch.save({"fc.weight": torch.zeros(1).expand(2**28)}, tmp_path / "stride0.pth")
    code = {"allow_code_execution": True}
    # What only the files can tell: LabelerError, one line, when the labeler is built.
    file_cases = [
        (
            {"architecture": "resnet18", "weights": str(tmp_path / "five.pth"), "outputs": ["a", "b", "c"]},
            "output layer has 5 outputs, but outputs names 3",
        ),
        ({"torchscript": str(head), **code, "outputs": ["a", "b"], "crop": 8}, r"returns \(1, 3\) .* outputs names 2"),
        ({"torchscript": str(tmp_path / "absent.pt"), **code, "outputs": ["a"]}, "file .*absent.pt not found"),
        ({"torchscript": str(tmp_path / "corrupt.pt"), **code, "outputs": ["a"]}, "not a TorchScript file"),
        (
            {"architecture": "resnet18", "weights": str(tmp_path / "corrupt.pt"), "outputs": ["a"]},
            r"weights .*corrupt.pt .*not a readable torch.save file",
        ),
        (
            {"architecture": "resnet18", "weights": str(tmp_path / "stride0.pth"), "outputs": ["a"]},
            r"stride0.pth: refused: tensor fc.weight claims shape \(268435456,\) .* storage holds 4 bytes \(a stride-0",
        ),
        ({"checkpoint": str(tmp_path / "five.pth")}, "expected a 'latentatlas-classifier/1' file"),
        (
            {"architecture": "resnet19", "weights": str(tmp_path / "five.pth"), "outputs": ["a"] * 1},
            r"architecture 'resnet19' is not a torchvision classification model; expected e.g. \['resnet101'",
        ),
        (
            {"architecture": "resnet34", "weights": str(tmp_path / "five.pth"), "outputs": list("abcde")},
            "do not fit architecture 'resnet34': missing keys",
        ),
    ]
    for kwargs, match in file_cases:
        with pytest.raises(LabelerError, match=match) as caught:
            build_labeler("torch-classifier", **kwargs)
        _one_line(caught)
    # What the kwargs alone tell: refused by the labeler's params model (before any file is opened), reported by the
    # params formatter; the same lines come when params.yaml is loaded (test_plugin_params.py).
    params_cases = [
        (
            {"architecture": "resnet18", "outputs": ["a"]},
            "^labeler 'torch-classifier': kwargs: architecture 'resnet18' needs weights",
        ),
        ({"outputs": ["a"]}, "kwargs: give exactly one of torchscript"),
        (
            {"torchscript": str(head), **code, "checkpoint": str(head), "outputs": ["a"]},
            "got \\['torchscript', 'checkpoint'\\]",
        ),
        (
            {"torchscript": str(head), "outputs": ["a"]},
            "kwargs: torchscript: refused without allow_code_execution: true; a TorchScript file is a program",
        ),
        ({"weights": str(tmp_path / "five.pth"), "checkpoint": str(head)}, "weights: a state dict needs architecture"),
        ({"torchscript": str(head), **code, "outputs": "celeba41"}, "kwargs.outputs: 'celeba41' is no preset"),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "a", "b"]},
            r"kwargs.outputs: names \['a'\] are given more than once",
        ),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "b", "c"], "input_range": [1, 0]},
            r"kwargs.input_range: expected \[low, high\] with low < high",
        ),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "b", "c"], "mean": [0.5, 0.5]},
            "kwargs.mean: expected three",
        ),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "b", "c"], "std": [1, 0, 1]},
            "kwargs.std: expected positive",
        ),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "b", "c"], "channel_order": "GBR"},
            r"kwargs.channel_order: expected one of \['RGB', 'BGR'\] \(got 'GBR'\)",
        ),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "b", "c"], "activation": "relu"},
            "kwargs.activation: Input should be 'sigmoid', 'softmax' or 'none'",
        ),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "b", "c"], "resize": 0},
            r"kwargs.resize: expected a positive size \(got 0\)",
        ),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "b", "c"], "allow_code_execution": "yes"},
            "kwargs.allow_code_execution: Input should be a valid boolean",
        ),
        (
            {"torchscript": str(head), **code, "outputs": ["a", "b", "c"], "weight": "x.pt"},
            "kwargs.weight: unknown key; labeler 'torch-classifier' takes .*weights",
        ),
    ]
    for kwargs, match in params_cases:
        with pytest.raises(ParamsError, match=match) as caught:
            build_labeler("torch-classifier", **kwargs)
        _one_line(caught)
    # Without a fixed input size the count is checked on the first batch, as one line too.
    unchecked = build_labeler("torch-classifier", torchscript=str(head), **code, outputs=["a", "b"])
    with pytest.raises(LabelerError, match=r"returns \(2, 3\) for 2 images") as caught:
        unchecked.score(images(2, 20, 20))
    _one_line(caught)
    with pytest.raises(LabelerError, match="crop 48×48 is larger than") as caught:
        build_labeler("torch-classifier", torchscript=str(head), **code, outputs=["a", "b", "c"], crop=48).score(
            images(1)
        )
    _one_line(caught)


# ------------------------------------------------------------------------------------------ table via the stage


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished run (N = 300, chunks of 100; colour labeler) to relabel."""
    folder = tmp_path_factory.mktemp("user-labels-run")
    run_spine(make_params(), folder)
    return folder


@pytest.fixture
def run_copy(base_run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(base_run, folder, ignore=shutil.ignore_patterns("*.lock"))
    return folder


def annotator_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Labels as annotators might give them: shuffled rows, an int, a float and a bool column, and a text note."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "sample_id": np.arange(n),
            "smiling": rng.integers(0, 2, n),
            "age": rng.uniform(18, 80, n).round(1),
            "glasses": rng.random(n) < 0.3,
            "note": [f"rater {k % 3}" for k in range(n)],
        }
    )
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


def relabel(folder: Path, label: dict) -> None:
    """Run the real label stage on ``folder`` with ``label`` as the labeler section (tiny batch settings)."""
    section = {"batch_size": 64, "device": "cpu", "contact_sheet_samples": 8, **label}
    params = make_params().model_copy(update={"label": LabelParams.model_validate(section)})
    run_stage(LabelStage(params, folder))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_labels_land_in_the_store_by_sample_id(run_copy: Path, tmp_path: Path, suffix: str) -> None:
    frame = annotator_table()
    path = tmp_path / f"labels{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    relabel(run_copy, {"labeler": "table", "kwargs": {"path": str(path), "columns": ["smiling", "age", "glasses"]}})
    with dataset.open(run_copy) as data:
        stored = data.labels_frame()
    assert list(stored.columns) == ["smiling", "age", "glasses"]
    expected = frame.set_index("sample_id").sort_index()
    np.testing.assert_array_equal(stored.index.to_numpy(), np.arange(300))
    for column in ("smiling", "age", "glasses"):
        np.testing.assert_array_equal(stored[column].to_numpy(), expected[column].to_numpy().astype(np.float32))


def test_table_composes_with_image_labelers_in_the_label_stage(run_copy: Path, tmp_path: Path) -> None:
    frame = annotator_table()
    frame.to_csv(tmp_path / "labels.csv", index=False)
    head = ChannelHead(2)
    path = script(head, tmp_path / "head.pt")
    relabel(
        run_copy,
        {
            "labelers": [
                {"name": "table", "kwargs": {"path": str(tmp_path / "labels.csv"), "columns": ["age"]}},
                COLOR_LABELER,
                {
                    "name": "torch-classifier",
                    "kwargs": {"torchscript": str(path), "allow_code_execution": True, "outputs": ["p", "q"]},
                },
            ]
        },
    )
    with dataset.open(run_copy) as data:
        stored = data.labels_frame()
        stored_images = data.images_store.arrays["images"][:]
    assert list(stored.columns) == ["age", "red", "green", "blue", "brightness", "p", "q"]
    np.testing.assert_array_equal(
        stored["age"].to_numpy(), frame.set_index("sample_id").sort_index()["age"].to_numpy().astype(np.float32)
    )
    batch = torch.from_numpy(stored_images).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_allclose(
        stored[["red", "green", "blue", "brightness"]].to_numpy(), ColorStatsLabeler().score(batch).numpy(), atol=1e-6
    )
    with torch.no_grad():
        expected = torch.sigmoid(head((batch + 1) / 2)).numpy()  # defaults: input_range [0, 1], sigmoid
    np.testing.assert_allclose(stored[["p", "q"]].to_numpy(), expected, atol=1e-5)


def test_table_bad_input_is_one_line_and_the_store_is_intact(run_copy: Path, tmp_path: Path) -> None:
    before = tree_digest(run_copy)
    frame = annotator_table()
    files = {
        "missing.csv": frame[frame.sample_id != 17],
        "duplicate.csv": pd.concat([frame, frame[frame.sample_id == 5]]),
        "beyond.csv": pd.concat(
            [
                frame,
                pd.DataFrame(
                    {
                        "sample_id": [300, 301],
                        "smiling": [1, 0],
                        "age": [1.0, 2.0],
                        "glasses": [True, False],
                        "note": ["x", "y"],
                    }
                ),
            ]
        ),
        "nan.csv": frame.assign(age=frame.age.where(frame.sample_id != 9)),
        "noid.csv": frame.rename(columns={"sample_id": "id"}),
    }
    for name, table in files.items():
        table.to_csv(tmp_path / name, index=False)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    cases = [
        (
            {"path": str(tmp_path / "missing.csv"), "columns": ["age"]},
            r"no labels for 1 of the run's 300 samples; "
            r"missing sample_id 17",
        ),
        ({"path": str(tmp_path / "duplicate.csv"), "columns": ["age"]}, "1 sample ids appear more than once: 5"),
        (
            {"path": str(tmp_path / "beyond.csv"), "columns": ["age"]},
            r"2 sample_id values are outside the run's latents \(N = 300, ids 0 … 299\): 300, 301",
        ),
        (
            {"path": str(tmp_path / "nan.csv"), "columns": ["age"]},
            "1 values are missing .* column 'age' at sample_id 9",
        ),
        ({"path": str(tmp_path / "noid.csv")}, "no 'sample_id' column"),
        ({"path": str(tmp_path / "missing.csv")}, r"columns \['note'\] are not numeric"),
        ({"path": str(tmp_path / "missing.csv"), "columns": ["age", "happy"]}, r"columns: \['happy'\] are not in"),
        ({"path": str(tmp_path / "absent.csv")}, "absent.csv: file not found"),
        ({"path": str(tmp_path / "broken.parquet")}, "cannot be read as Parquet"),
    ]
    for kwargs, match in cases:
        with pytest.raises(LatentAtlasError, match=match) as caught:
            relabel(run_copy, {"labeler": "table", "kwargs": kwargs})
        _one_line(caught)
    script(ChannelHead(3), tmp_path / "three.pt")
    with pytest.raises(LabelerError, match=r"returns \(1, 3\) .* outputs names 2") as caught:  # through the stage too
        relabel(
            run_copy,
            {
                "labeler": "torch-classifier",
                "kwargs": {
                    "torchscript": str(tmp_path / "three.pt"),
                    "allow_code_execution": True,
                    "outputs": ["a", "b"],
                    "resize": [32, 32],
                },
            },
        )
    _one_line(caught)
    assert tree_digest(run_copy) == before  # nothing was wiped or rewritten
    good = build_labeler("table", path=str(tmp_path / "missing.csv"), columns=["age"])
    with pytest.raises(LabelerError, match="cannot score new images") as caught:
        good.score(images(1))
    _one_line(caught)
