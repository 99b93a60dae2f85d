"""Evaluation and report on the planted toy world: real edits, re-synthesized and re-labeled, judge directions.

The toy generator makes 8×8 images from z and the toy labeler reads the planted attributes back from the images
(tests/toy.py), so "the true direction scores best" is a property of the measurement, not of a fitted model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from latentatlas.layout import OutputLayout
from stages import evaluate as evaluate_module
from stages.evaluate import EvaluateStage, EvaluationError
from stages.latent.directions import DirectionsError, DirectionSet, select_directions
from stages.latent.perceptual import build_lpips
from stages.report import build_report
from stages.reporting.samples import EvaluationDraws, EvaluationRecord
from stages.runtime.chunked import run_stage
from tests.conftest import make_params, run_toy_spine, tree_digest
from tests.toy import make_world

EVAL = {
    "n_samples": 24,
    "chunk_size": 12,
    "alphas": [-2.0, -1.0, 0.0, 1.0, 2.0],
    "attributes": ["smile", "glasses"],
    "condition_on": ["gender"],
    "ppl_samples": 4,
    "grid_samples": 2,
    "batch_size": 64,
    "device": "cpu",
    "bootstrap_resamples": 1000,
}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A labeled toy store plus two direction sets: the planted truth and random directions."""
    root = tmp_path_factory.mktemp("toy-eval")
    world = make_world(z_dim=24)
    params = make_params(
        sample={"n_samples": 400, "chunk_size": 200},
        fit={"methods": ["interfacegan"], "attributes": ["smile", "glasses", "gender"], "params": {"interfacegan": {}}},
        eval={**EVAL, "attributes": ["smile", "glasses", "gender"]},
    )
    run_toy_spine(params, root / "data", world)
    names = ["smile", "glasses", "gender"]
    DirectionSet("truth", "z", names, np.stack([world.directions[n] for n in names])).save(root / "directions/truth")
    rng = np.random.default_rng(5)
    noise = rng.standard_normal((3, world.z_dim))
    DirectionSet("random", "z", names, noise / np.linalg.norm(noise, axis=1, keepdims=True)).save(
        root / "directions/random"
    )
    lpips = build_lpips("alex")
    for method in ("truth", "random"):
        run_stage(_stage(root, params, world, method, lpips))
    return root, params, world, lpips


def _stage(root: Path, params, world, method: str, lpips, out_root: Path | None = None) -> EvaluateStage:
    """``out_root``: another output root for the evaluation, with a copy of ``root``'s directions."""
    if out_root is not None and not (out_root / "directions").exists():
        shutil.copytree(root / "directions", out_root / "directions")
    return EvaluateStage(
        params,
        root / "data",
        method,
        layout=OutputLayout(out_root or root),
        generator=world.generator,
        labeler=world.labeler,
        lpips=lpips,
    )


def _metrics(root: Path, method: str) -> dict:
    """Every evaluation number of ``method`` (the details the report reads; the DVC metric is their headline)."""
    return json.loads((root / "metrics" / f"{method}.details.json").read_text())


def test_true_directions_beat_random_ones(toy_run) -> None:
    root, *_ = toy_run
    truth, random = _metrics(root, "truth")["directions"], _metrics(root, "random")["directions"]
    for attribute in ("smile", "glasses", "gender"):
        assert truth[attribute]["slope_std"] > 1.3 * abs(random[attribute]["slope_std"]), attribute
        assert truth[attribute]["moved_fraction"] == 1.0
    # smile is planted orthogonal to every other attribute: editing it leaves them alone, a random edit does not
    assert truth["smile"]["entanglement"] < 0.01 and random["smile"]["entanglement"] > 0.1


def test_conditional_editing_holds_the_conditioned_attribute(toy_run) -> None:
    root, *_ = toy_run
    glasses = _metrics(root, "truth")["directions"]["glasses"]  # planted with cos(glasses, gender) = 0.6
    plain_gender = glasses["table_ii"]["gender"]["mean_abs_change"]
    conditional_gender = glasses["conditional_table_ii"]["gender"]["mean_abs_change"]
    assert plain_gender > 0.1
    assert conditional_gender < plain_gender / 10
    assert glasses["conditional_slope"] > 0  # still edits glasses


def test_metrics_curves_and_grids_are_written(toy_run) -> None:
    root, params, *_ = toy_run
    metrics = _metrics(root, "truth")
    assert metrics["n_heldout"] == 24 and set(metrics["summary"]) >= {"slope_std", "entanglement", "lpips", "ppl"}
    smile = metrics["directions"]["smile"]
    assert smile["lpips"] > 0 and smile["ppl"] > 0
    curves = json.loads((root / "metrics" / "truth.curves.json").read_text())
    smile_curve = [p for p in curves if p["direction"] == "smile" and p["mode"] == "plain"]
    assert len(smile_curve) == 5 and np.all(np.diff([p["target_mean"] for p in smile_curve]) > 0)  # smile rises
    assert all(p["target_low"] <= p["target_mean"] <= p["target_high"] for p in smile_curve)
    assert (root / "reports/grids/truth/smile.png").stat().st_size > 0


def test_every_metric_carries_its_interval(toy_run) -> None:
    """Every number of the details has a 95 % interval around it; moved_fraction's is exact (Clopper–Pearson: 24 of
    24 samples moved gives [0.858, 1]), and a random direction's effect interval is wider than its value is far from
    the truth's."""
    root, *_ = toy_run
    for method in ("truth", "random"):
        details = _metrics(root, method)
        assert details["intervals"]["resamples"] == 1000 and details["intervals"]["level"] == 0.95
        for entry in [*details["directions"].values(), details["summary"]]:
            for key, (low, high) in entry["ci95"].items():
                assert low <= entry[key] + 1e-12 and entry[key] <= high + 1e-12, (method, key)
        for cell in details["directions"]["glasses"]["table_ii"].values():
            assert set(cell["ci95"]) == {"original", "edited_plus", "edited_minus", "mean_abs_change"}
    truth = _metrics(root, "truth")["directions"]["smile"]
    assert truth["moved_fraction"] == 1.0
    assert truth["ci95"]["moved_fraction"] == pytest.approx([0.8575, 1.0], abs=1e-4)
    assert truth["ci95"]["entanglement"][1] < 0.01  # smile is planted orthogonal: surely tiny
    headline = json.loads((root / "metrics" / "truth.json").read_text())
    assert headline["directions"]["smile"]["ci95"]["slope_std"] == truth["ci95"]["slope_std"]


def test_any_statistic_recomputes_from_the_per_sample_record(toy_run) -> None:
    """metrics/<method>.samples.parquet holds every measured score, LPIPS and PPL term per held-out sample: the
    details recompute from it without re-synthesizing, and it is the evaluation store's content."""
    root, params, *_ = toy_run
    layout = OutputLayout(root)
    record = EvaluationRecord.load(layout.metric_samples("truth"), layout.metric_ppl_terms("truth"))
    assert record.n_samples == 24 and set(record.ppl_terms) == {"smile", "glasses", "gender"}
    assert len(record.ppl_terms["smile"]) >= 3  # ppl_samples 4, the 1st-99th percentile kept
    draws = EvaluationDraws(record, 1000, params.eval.seed)
    details = _metrics(root, "truth")
    for attribute in ("smile", "glasses"):
        for key in ("slope", "slope_std", "entanglement", "lpips"):
            assert draws.value(attribute, key)[0] == pytest.approx(details["directions"][attribute][key], rel=1e-6)
        assert draws.ppl(attribute)[0] == pytest.approx(details["directions"][attribute]["ppl"], rel=1e-9)
    stored = pads.dataset(str(root / "evaluations" / "truth"), format="parquet").to_table().to_pandas()
    keys = ["direction", "mode", "alpha", "sample_id"]
    saved = record.edits_frame().sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        saved, stored.sort_values(keys).reset_index(drop=True)[saved.columns], check_dtype=False
    )


def test_changing_the_bootstrap_keeps_the_evaluation_store(toy_run, tmp_path) -> None:
    """eval.bootstrap_resamples only changes the statistics: the evaluation store's fingerprint ignores it."""
    root, params, world, lpips = toy_run
    more = params.model_copy(update={"eval": params.eval.model_copy(update={"bootstrap_resamples": 2000})})
    shutil.copytree(root / "evaluations", tmp_path / "evaluations")
    with _stage(root, more, world, "truth", lpips, out_root=tmp_path) as stage:
        assert stage.pending == []


def test_heldout_latents_are_disjoint_from_fitting(toy_run, monkeypatch) -> None:
    root, params, world, lpips = toy_run
    from latentatlas.stores import ZarrChunkStore

    fitted = ZarrChunkStore.open(root / "data" / "latents.zarr").read_chunk("z", 0)
    monkeypatch.setattr(evaluate_module, "heldout_latents_z", lambda seed, index, n, z_dim: fitted[:n])
    with pytest.raises(EvaluationError, match="shares latents with the fitted data"):
        _stage(root, params, world, "truth", lpips, out_root=root / "overlap")


def test_killed_evaluation_resumes_to_identical_results(toy_run, tmp_path) -> None:
    root, params, world, lpips = toy_run
    with _stage(root, params, world, "truth", lpips, out_root=tmp_path / "partial") as stage:
        stage.run_chunk(1)  # then "killed"
    with _stage(root, params, world, "truth", lpips, out_root=tmp_path / "partial") as stage:
        assert stage.pending == [0]
    run_stage(_stage(root, params, world, "truth", lpips, out_root=tmp_path / "partial"))
    assert tree_digest(tmp_path / "partial" / "evaluations" / "truth") == tree_digest(root / "evaluations" / "truth")


def test_unsupervised_components_are_matched_by_their_attribute() -> None:
    vectors = np.eye(3, dtype=np.float32)
    components = DirectionSet(
        "sefa",
        "z",
        ["c000", "c001", "c002"],
        vectors,
        stats={
            "c000": {"attribute": "smile", "correlation": 0.3},
            "c001": {"attribute": "smile", "correlation": -0.8},
            "c002": {"attribute": "age", "correlation": 0.5},
        },
    )
    selected = select_directions(components, ["smile", "age"])
    assert selected["smile"][1] == "c001"
    np.testing.assert_array_equal(selected["smile"][0], -vectors[1])  # flipped: +α must raise smile
    with pytest.raises(DirectionsError, match="no direction for attribute 'pose'"):
        select_directions(components, ["pose"])


def test_report_is_self_contained_and_ranks_the_truth_first(toy_run) -> None:
    root, params, *_ = toy_run
    build_report(params, root / "data", ["truth", "random"], layout=OutputLayout(root))
    page = (root / "reports/report.html").read_text()
    assert "truth" in page and "random" in page
    assert page.count("data:image/png;base64,") >= 11  # rank intervals, curves, heatmaps, correlation, grids
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline
    headline = json.loads((root / "reports/ranking.json").read_text())
    details = json.loads((root / "reports/ranking.details.json").read_text())["attributes"]
    for attribute in ("smile", "glasses", "gender"):
        # the planted direction is significantly better than a random one on 24 held-out samples
        assert headline[attribute] == {"truth": 1, "random": 2}, attribute
        assert headline["best_group"][attribute] == "truth"
        assert details[attribute]["p_best"]["truth"] > 0.99
        low, high = details[attribute]["mean_rank"]["truth"]["ci95"]
        assert low <= details[attribute]["mean_rank"]["truth"]["value"] <= high
    summary = (root / "reports/summary.md").read_text()
    assert "## smile" in summary and "| truth" in summary and "Best group: truth." in summary
    assert "Smallest difference this run could detect" in summary
    assert "[" in summary.split("## smile", 1)[1].split("| truth", 1)[1].split("\n", 1)[0]  # intervals in the row


def test_w_directions_are_edited_in_w_and_w_plus_layers(tmp_path) -> None:
    """A direction fitted in W is evaluated by editing the held-out z's w; with eval.layers only those W+ layers
    move (the toy generator's image is that of the mean of its two W+ layers: half the effect)."""
    world = make_world(z_dim=24, with_mapping=True)
    params = make_params(
        sample={"n_samples": 400, "chunk_size": 200},
        fit={"methods": ["interfacegan"], "attributes": ["age"], "params": {"interfacegan": {}}},
        eval={**EVAL, "attributes": ["age"], "condition_on": []},
    )
    run_toy_spine(params, tmp_path / "data", world)
    DirectionSet("truth-w", "w", ["age"], world.direction_in("age", "w")[None]).save(tmp_path / "directions/truth-w")
    lpips = build_lpips("alex")
    slopes = {}
    for layers in (None, [0, 1]):
        run_params = params.model_copy(update={"eval": params.eval.model_copy(update={"layers": layers})})
        root = tmp_path / f"layers-{layers}"
        stage = _stage(tmp_path, run_params, world, "truth-w", lpips, out_root=root)
        run_stage(stage)
        metrics = _metrics(root, "truth-w")
        assert metrics["space"] == "w" and metrics["layers"] == layers
        slopes[str(layers)] = metrics["directions"]["age"]["slope"]
    assert slopes["None"] > 0
    assert slopes["[0, 1]"] == pytest.approx(slopes["None"] / 2, rel=0.02)
    with pytest.raises(EvaluationError, match=r"eval.layers \[0, 3\]: the generator has 2 W\+ layers"):
        bad = params.model_copy(update={"eval": params.eval.model_copy(update={"layers": [0, 3]})})
        _stage(tmp_path, bad, world, "truth-w", lpips, out_root=tmp_path / "bad")
    DirectionSet("truth-z", "z", ["age"], world.direction_in("age", "z")[None]).save(tmp_path / "directions/truth-z")
    layered = params.model_copy(update={"eval": params.eval.model_copy(update={"layers": [0, 1]})})
    assert _stage(tmp_path, layered, world, "truth-z", lpips, out_root=tmp_path / "z").layers is None  # z edits z
