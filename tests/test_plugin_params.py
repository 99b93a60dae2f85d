"""Plugins: a factory is a plugin only if it was itself declared one (never by inheritance), odd factories and odd
kwargs are one-line errors, and every generator's and labeler's kwargs are validated by the pydantic params model
it declares — when params.yaml is loaded, reported by the params formatter — while a plugin without a model is
checked against its factory's signature, as before."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from pydantic import Field

from latentatlas.errors import LatentAtlasError
from latentatlas.params import ParamsError, PluginParams, parse_params
from latentatlas.registry import RegistryError, declared_kinds, plugin
from pipeline.cli import main
from stages.plugins.generators import build_generator
from stages.plugins.generators.base import GENERATORS
from stages.plugins.labelers import build_labeler
from stages.plugins.labelers.base import LABELERS
from stages.plugins.params import plugin_params_model
from tests.conftest import COLOR_LABELER
from tests.plugins import ColorStatsLabeler

HERE = "tests.test_plugin_params"


@plugin("labeler")
class MarkedLabeler(ColorStatsLabeler):
    """A labeler class declared a plugin: the class is its own factory."""

    def __call__(self, **kwargs: object) -> None:
        raise AssertionError("an instance of a declared class was called as a factory")


class UnmarkedLabeler(MarkedLabeler):
    """Inherits the class attribute holding the mark, but was never declared a plugin."""

    def __init__(self) -> None:
        raise AssertionError("an undeclared subclass was instantiated")


MARKED_INSTANCE = MarkedLabeler()


@plugin("generator")
def build_unbuilt_generator(resolution: int = 8) -> object:
    """A declared generator without a params model; the tests never get as far as calling it."""
    raise AssertionError(f"called with resolution {resolution}")


class ScaledColorParams(PluginParams):
    scale: float = Field(1.0, gt=0, description="factor on every colour statistic")


class ScaledColorLabeler(ColorStatsLabeler):
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return super().score(images) * self.scale


@plugin("labeler", params=ScaledColorParams)
def build_scaled_color_labeler(params: ScaledColorParams) -> ScaledColorLabeler:
    assert isinstance(params, ScaledColorParams)  # the factory gets the validated model
    return ScaledColorLabeler(params.scale)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, LatentAtlasError), message
    return message


def _cli_error_line(tmp_path: Path, params: dict, stage: str) -> str:
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(
        main, [stage, "--params", str(params_path), "--data-dir", str(tmp_path / "data"), "--engine", "local"]
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# ------------------------------------------------------------------------------------------- what is a plugin


def test_a_plugin_mark_is_read_from_the_object_itself() -> None:
    assert declared_kinds(MarkedLabeler) == {"labeler"}
    assert build_labeler(f"{HERE}:MarkedLabeler").attributes == ColorStatsLabeler.attributes
    assert declared_kinds(UnmarkedLabeler) == frozenset() and declared_kinds(MARKED_INSTANCE) == frozenset()
    for name in ("UnmarkedLabeler", "MARKED_INSTANCE"):  # getattr would find the class's mark on both
        with pytest.raises(
            RegistryError,
            match=rf"refused, {HERE}\.{name} is not declared a latentatlas labeler "
            rf"plugin",
        ) as caught:
            build_labeler(f"{HERE}:{name}")
        _one_line(caught)


def test_odd_factories_and_a_kwarg_called_name_are_one_line_errors(tmp_path: Path) -> None:
    # An object whose __getattr__ answers every name (fsspec's no-op callback) is no plugin.
    with pytest.raises(RegistryError, match="refused, fsspec.callbacks.DEFAULT_CALLBACK is not declared"):
        build_generator("fsspec.callbacks:DEFAULT_CALLBACK")
    line = _cli_error_line(tmp_path, {"generator": {"name": "fsspec.callbacks:DEFAULT_CALLBACK"}}, "sample")
    assert "not declared a latentatlas generator plugin" in line
    # A kwarg called "name" is a kwarg like any other: checked against the model, or against the signature.
    with pytest.raises(
        ParamsError,
        match=r"^labeler 'table': kwargs\.name: unknown key; labeler 'table' takes "
        r"columns, format, id_column, path$",
    ):
        build_labeler("table", path="labels.csv", name="x")
    with pytest.raises(RegistryError, match=r"kwargs \['name'\] do not fit its factory build_color_labeler\(\)"):
        build_labeler(COLOR_LABELER, name="x")
    line = _cli_error_line(
        tmp_path, {"generator": {"name": f"{HERE}:build_unbuilt_generator", "kwargs": {"name": "x"}}}, "sample"
    )
    assert f"generator '{HERE}:build_unbuilt_generator': kwargs ['name'] do not fit its factory" in line
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------- params models


def test_every_builtin_generator_and_labeler_declares_a_params_model() -> None:
    for kind, registry in (("generator", GENERATORS), ("labeler", LABELERS)):
        for name in registry.builtins:
            model = plugin_params_model(kind, name)
            assert model is not None and issubclass(model, PluginParams), f"{kind} {name!r}"
    assert plugin_params_model("labeler", COLOR_LABELER) is None  # a plugin without one: its signature decides


HTTP = {"url": "http://127.0.0.1:1/score", "attributes": ["smile"]}


@pytest.mark.parametrize(
    "raw, expected",
    [
        (
            {"label": {"labeler": "http", "kwargs": {**HTTP, "timeout": 0}}},
            r"^params\.yaml: label\.kwargs\.timeout: Input should be greater than 0 \(got 0\)$",
        ),
        (
            {"label": {"labeler": "http", "kwargs": {"attributes": ["smile"]}}},
            r"^params\.yaml: label\.kwargs\.url: Field "
            r"required$",
        ),
        (
            {"label": {"labeler": "http", "kwargs": {**HTTP, "retries": True}}},
            r"label\.kwargs\.retries: Input should be a valid integer \(got True\)",
        ),
        (
            {"label": {"labelers": ["faces", {"name": "table", "kwargs": {"path": "x.csv", "format": "xlsx"}}]}},
            r"^params\.yaml: label\.labelers\.1\.kwargs\.format: "
            r"Input should be 'auto', 'parquet' or 'csv' \(got 'xlsx'\)$",
        ),
        ({"label": {"labelers": ["http"]}}, r"^params\.yaml: label\.labelers\.0\.kwargs\.url: Field required"),
        (
            {"label": {"labeler": "faces", "kwargs": {"size": 3}}},
            r"^params\.yaml: label\.kwargs\.size: unknown key; labeler 'faces' takes no kwargs$",
        ),
        (
            {"label": {"labeler": "torch-classifier", "kwargs": {"checkpoint": "m.pt", "resize": [0, 4]}}},
            r"label\.kwargs\.resize: expected a positive int or \[height, width\] of positive ints \(got \[0, 4\]\)",
        ),
        (
            {"label": {"labeler": f"{HERE}:build_scaled_color_labeler", "kwargs": {"scale": -1}}},
            r"label\.kwargs\.scale: Input should be greater than 0 \(got -1\)",
        ),
        (
            {"generator": {"name": "stylegan2", "kwargs": {"path": "g.pkl", "noise_mode": "random"}}},
            r"^params\.yaml: generator\.kwargs\.noise_mode: expected one of \['const', 'none'\] \('random' is refused",
        ),
        (
            {"generator": {"name": "stylegan3", "kwargs": {"path": "g.pkl", "truncation_psi": "0.7"}}},
            r"generator\.kwargs\.truncation_psi: Input should be a valid number \(got '0\.7'\)",
        ),
        (
            {"generator": {"name": "stylegan2", "kwargs": {"path": "g.pkl", "class_index": -1}}},
            r"generator\.kwargs\.class_index: Input should be greater than or equal to 0",
        ),
        (
            {"generator": {"name": "stylegan", "kwargs": {"path": "g.pth", "truncation_layers": -1}}},
            r"generator\.kwargs\.truncation_layers: Input should be greater than or equal to 0",
        ),
        (
            {"generator": {"name": "biggan", "kwargs": {"path": "b", "truncation": 0}}},
            r"generator\.kwargs\.truncation: Input should be greater than 0",
        ),
        (
            {"generator": {"name": "biggan", "kwargs": {"path": "b", "class_onehot": [1, ".5"]}}},
            r"generator\.kwargs\.class_onehot\.1: Input should be a valid number",
        ),
        ({"generator": {"name": "pggan"}}, r"^params\.yaml: generator\.kwargs\.path: Field required$"),
        (
            {"generator": {"name": "dcgan-digiface", "kwargs": {"path": "x.pkl"}}},
            r"generator\.kwargs\.path: unknown key; generator 'dcgan-digiface' takes no kwargs",
        ),
    ],
)
def test_plugin_kwargs_are_validated_when_params_load(raw: dict, expected: str) -> None:
    with pytest.raises(ParamsError, match=expected):
        parse_params(raw, source="params.yaml", plugin_models=plugin_params_model)
    parse_params(raw, source="params.yaml")  # without the models the sections alone validate: the build checks


def test_build_validates_the_kwargs_too_before_any_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"^generator 'stylegan2': kwargs\.noise_mode: expected one of") as caught:
        build_generator("stylegan2", path=str(tmp_path / "absent.pkl"), noise_mode="random")
    _one_line(caught)
    with pytest.raises(ParamsError, match=r"^labeler 'http': kwargs\.timeout: Input should be greater than 0"):
        build_labeler("http", **HTTP, timeout=0)
    several = str(pytest.raises(ParamsError, build_labeler, "http", url="ftp://x", attributes=[], timeout=-1).value)
    assert several.splitlines() == [  # one line per problem
        "labeler 'http': kwargs.url: expected an http:// or https:// URL (got 'ftp://x')",
        "labeler 'http': kwargs.attributes: expected a non-empty list of attribute names (got [])",
        "labeler 'http': kwargs.timeout: Input should be greater than 0 (got -1)",
    ]


def test_a_plugin_with_its_own_model_gets_the_validated_model() -> None:
    name = f"{HERE}:build_scaled_color_labeler"
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    labeler = build_labeler(name, scale=2)
    torch.testing.assert_close(labeler.score(images), ColorStatsLabeler().score(images) * 2)
    assert build_labeler(name).scale == 1.0  # the model's default
    params = parse_params({"label": {"labeler": name, "kwargs": {"scale": 0.5}}}, plugin_models=plugin_params_model)
    assert params.label.kwargs == {"scale": 0.5}


def test_names_that_are_no_plugin_are_left_to_the_stage_that_builds_them() -> None:
    for label in (
        {"labeler": "no-such-labeler"},
        {"labeler": "nowhere.module:build"},
        {"labeler": "subprocess:getoutput", "kwargs": {"cmd": "false"}},
    ):
        parse_params({"label": label}, plugin_models=plugin_params_model)


def test_a_bad_kwarg_stops_every_stage_at_load_and_writes_nothing(tmp_path: Path) -> None:
    line = _cli_error_line(tmp_path, {"label": {"labeler": "http", "kwargs": {**HTTP, "timeout": 0}}}, "sample")
    assert line.endswith("params.yaml: label.kwargs.timeout: Input should be greater than 0 (got 0)")
    assert not (tmp_path / "data").exists()


def test_looking_up_the_faces_model_imports_no_network_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """params.yaml is loaded by every stage: finding the default labeler's params model must not import its networks'
    modules and their ONNX and HDF5 readers (about 3 s). Here importing any of them fails, and ``faces`` is looked up
    afresh (its module unloaded, the registry without it)."""
    for heavy in (
        "stages.plugins.labelers.expression",
        "stages.plugins.labelers.age_gender",
        "stages.plugins.labelers.geometry",
        "onnx",
        "onnx2torch",
        "h5py",
    ):
        monkeypatch.setitem(sys.modules, heavy, None)  # ``import heavy`` now raises ImportError
    monkeypatch.delitem(sys.modules, "stages.plugins.labelers.faces", raising=False)
    monkeypatch.setattr(
        LABELERS, "_factories", {name: factory for name, factory in LABELERS._factories.items() if name != "faces"}
    )
    model = plugin_params_model("labeler", "faces")
    assert model is not None and model.__module__ == "stages.plugins.labelers.faces" and not model.model_fields
