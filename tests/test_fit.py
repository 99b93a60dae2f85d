"""The fit stage over a labeled store: one job per method, per-attribute units for separable methods, each unit
kept as it finishes so a killed fit resumes at unit granularity."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from latentatlas.layout import OutputLayout
from latentatlas.params import ParamsError
from pipeline.cli import main
from stages.fit import FitStage, run_fit
from stages.latent.directions import DirectionSet
from stages.latent.fields import load_model
from stages.plugins.methods.base import MethodInputError
from stages.runtime.stage import run_stage
from tests.conftest import make_params, run_toy_spine, tree_digest
from tests.toy import cosine, make_world

ATTRIBUTES = ["smile", "gender", "pose"]
FIT = {
    "methods": ["interfacegan", "tunagan", "tunagan-linear", "ortho-linear", "sefa"],
    "attributes": ATTRIBUTES,
    "device": "cpu",
    "params": {
        "interfacegan": {"ratio": 0.1},
        "tunagan": {"epochs": 15},
        "tunagan-linear": {},
        "ortho-linear": {"epochs": 30},
        "sefa": {"n_components": 4},
    },
}


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-fit")
    world = make_world(z_dim=24)
    params = make_params(sample={"n_samples": 3000, "chunk_size": 1000}, fit=FIT)
    run_toy_spine(params, root / "data", world)
    return root, params, world


@pytest.mark.parametrize("method", ["interfacegan", "tunagan", "tunagan-linear", "ortho-linear"])
def test_supervised_methods_recover_the_planted_directions(toy_store, method) -> None:
    root, params, world = toy_store
    directions = run_fit(params, root / "data", method, layout=OutputLayout(root))
    assert directions.names == ATTRIBUTES and directions.method == method
    for name in ATTRIBUTES:
        assert cosine(directions[name], world.directions[name]) > 0.9, (method, name)
    saved = json.loads((root / "directions" / method / "directions.json").read_text())
    # DVC hashes directions/ as the report's input: no lock file may be left in it.
    assert not [path.name for path in (root / "directions").iterdir() if path.name.endswith(".lock")]
    assert saved["meta"]["attributes"] == ATTRIBUTES
    assert saved["meta"]["input_fingerprint"] == FitStage(params, root / "data", method).input_fingerprint


def test_separable_methods_fit_one_unit_per_attribute_and_match_a_joint_fit(toy_store) -> None:
    root, params, world = toy_store
    stage = FitStage(params, root / "data", "interfacegan", layout=OutputLayout(root / "units"))
    assert stage.attribute_groups() == [[name] for name in ATTRIBUTES] and stage.n_units == 3
    assert [stage.unit_name(unit) for unit in range(3)] == [f"interfacegan {name}" for name in ATTRIBUTES]
    per_attribute = run_stage(stage)
    joint = stage.spec.fit(stage.context(ATTRIBUTES), stage.method_params)
    np.testing.assert_allclose(per_attribute.vectors, joint.vectors, atol=1e-6)
    ortho = FitStage(params, root / "data", "ortho-linear")
    assert ortho.attribute_groups() == [ATTRIBUTES] and ortho.unit_name(0) == "ortho-linear smile+gender+pose"


def _counting_fits(monkeypatch, stage: FitStage, kill_after: int | None = None) -> list[list[str]]:
    """Record the attributes of every unit ``stage`` fits; with ``kill_after``, the fit after that many "is
    killed" (raises KeyboardInterrupt)."""
    fitted: list[list[str]] = []
    fit = stage.spec.fit

    def counting(context, method_params):
        if kill_after is not None and len(fitted) == kill_after:
            raise KeyboardInterrupt
        fitted.append(list(context.attributes))
        return fit(context, method_params)

    monkeypatch.setattr(stage, "spec", dataclasses.replace(stage.spec, fit=counting))
    return fitted


@pytest.mark.parametrize("method", ["interfacegan", "tunagan"])
def test_a_killed_fit_resumes_at_its_unfinished_units_and_writes_the_same_bytes(
    toy_store, tmp_path, monkeypatch, method
) -> None:
    """Each finished unit is kept under the fit's work dir: a rerun fits only the others, and the directions are
    byte-identical to an uninterrupted fit's (TunaGAN: with its per-attribute model files). A finished fit leaves
    no unit results behind (a rerun fits everything again)."""
    root, params, world = toy_store
    reference = run_fit(params, root / "data", method, layout=OutputLayout(tmp_path / "reference"))
    assert reference.names == ATTRIBUTES

    layout = OutputLayout(tmp_path / "killed")
    killed = FitStage(params, root / "data", method, layout=layout)
    fitted = _counting_fits(monkeypatch, killed, kill_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_stage(killed)
    assert fitted == [["smile"], ["gender"]] and killed.pending == [2]
    assert not (tmp_path / "killed" / "directions" / method).exists()

    resumed = FitStage(params, root / "data", method, layout=layout)
    fitted = _counting_fits(monkeypatch, resumed)
    run_stage(resumed)
    assert fitted == [["pose"]]  # only the unit the killed run did not finish
    assert tree_digest(layout.directions(method)) == tree_digest(tmp_path / "reference" / "directions" / method)
    assert not resumed.work_dir.exists()

    again = FitStage(params, root / "data", method, layout=layout)
    assert again.pending == [0, 1, 2]


def test_fit_units_write_only_under_the_lock(toy_store, tmp_path) -> None:
    root, params, world = toy_store
    stage = FitStage(params, root / "data", "interfacegan", layout=OutputLayout(tmp_path))
    with pytest.raises(RuntimeError, match="inside `with stage:`"):
        stage.run_unit(0)
    with stage:
        stage.run_unit(0)
        with pytest.raises(RuntimeError, match=r"units \[1, 2\] are not done"):
            stage.finish()
    assert stage.pending == [1, 2]


def test_tunagan_units_recombine_with_their_models(toy_store) -> None:
    root, params, world = toy_store
    run_fit(params, root / "data", "tunagan", layout=OutputLayout(root))
    loaded = DirectionSet.load(root / "directions" / "tunagan")
    assert sorted(loaded.meta["models"]) == sorted(ATTRIBUTES)
    separability = [loaded.stats[name]["separability"] for name in ATTRIBUTES]
    assert loaded.meta["separability_overall"] == pytest.approx(float(np.prod(separability)))
    model = load_model(loaded, "smile")  # the nonlinear editor survives the per-attribute split
    assert model is not None


def test_closed_form_method_uses_the_generator(toy_store) -> None:
    root, params, world = toy_store
    stage = FitStage(
        params, root / "data", "sefa", layout=OutputLayout(root), generator=world.generator, labeler=world.labeler
    )
    directions = run_stage(stage)
    assert abs(cosine(directions.vectors[0], world.generator.dominant_direction)) > 0.999
    assert directions.stats[directions.names[0]]["attribute"] == "pose"


def test_bad_fit_requests(toy_store, tmp_path) -> None:
    root, params, world = toy_store
    bad = make_params(fit={**FIT, "attributes": ["smile", "beard"]})
    with pytest.raises(MethodInputError, match=r"fit.attributes: \['beard'\] are not labeled attributes"):
        FitStage(bad, root / "data", "interfacegan")
    with pytest.raises(ParamsError, match="unknown method 'svm-magic'"):
        make_params(fit={**FIT, "methods": ["svm-magic"]})
    with pytest.raises(ParamsError, match=r"params.sefa: missing"):
        make_params(fit={**FIT, "params": {k: v for k, v in FIT["params"].items() if k != "sefa"}})
    with pytest.raises(ParamsError, match=r"params.interfacegan.ratio"):
        make_params(fit={**FIT, "params": {**FIT["params"], "interfacegan": {"ratio": 3}}})
    (tmp_path / "params.yaml").write_text(json.dumps({"fit": FIT}))
    result = CliRunner().invoke(
        main,
        [
            "fit",
            "--method",
            "ganspace",
            "--params",
            str(tmp_path / "params.yaml"),
            "--data-dir",
            str(root / "data"),
            "--engine",
            "local",
        ],
    )
    assert result.exit_code == 1 and "does not list 'ganspace'" in result.output
