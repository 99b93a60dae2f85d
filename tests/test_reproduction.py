"""Variants, the reproduction of the papers' findings, and gradient-path evaluation, on the planted toy world
(tests/toy.py), where the truth is known: gender is planted at cos 0.6 with glasses and 0.5 with age, so the λ = 0
map finds those cosines and the orthogonality penalty must shrink them; smile and pose are orthogonal to everything.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
import torch
import yaml

from latentatlas.layout import OutputLayout
from latentatlas.params import ParamsError
from stages.evaluate import EvaluateStage
from stages.fit import run_fit
from stages.latent.directions import DirectionSet
from stages.latent.fields import AttributeMLP
from stages.latent.metrics import field_perceptual_path_length
from stages.latent.perceptual import build_lpips
from stages.plugins.methods.ortho_linear import OrthoLinearParams, fit_mapping
from stages.report import build_report
from stages.reporting.ranking import rank_attribute
from stages.reporting.reproduction import (
    INTERFACEGAN_PAPER,
    LU_PAPER,
    PAPERS,
    PHAM_VAN_PAPER,
    Entry,
    RunInputs,
    reproduce,
)
from stages.reporting.samples import EditSamples, EvaluationDraws, EvaluationRecord
from stages.runtime.chunked import run_stage
from tests.conftest import make_params, run_toy_spine
from tests.toy import cosine, make_world

ROOT = Path(__file__).resolve().parents[1]
ATTRIBUTES = ["gender", "glasses", "age", "smile"]
FIT = {
    "methods": ["interfacegan", "ortho-linear", "tunagan", "tunagan-linear"],
    "attributes": ATTRIBUTES,
    "device": "cpu",
    "params": {
        "interfacegan": {"ratio": 0.1},
        "ortho-linear": {"lam": 2.0, "epochs": 30},
        "tunagan": {"epochs": 15, "hidden_dim": 64},
        "tunagan-linear": {},
    },
    "variants": {"ortho-linear-noreg": {"method": "ortho-linear", "lam": 0.0, "epochs": 30}},
}
EVAL = {
    "n_samples": 24,
    "chunk_size": 24,
    "alphas": [-2.0, -1.0, 0.0, 1.0, 2.0],
    "attributes": ATTRIBUTES,
    "condition_on": ["gender"],
    "ppl_samples": 4,
    "grid_samples": 2,
    "batch_size": 64,
    "device": "cpu",
    "bootstrap_resamples": 1000,
}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """Every entry (four methods and one variant) fitted, evaluated and reported on the toy world."""
    root = tmp_path_factory.mktemp("toy-reproduction")
    world = make_world(z_dim=24)
    params = make_params(
        sample={"n_samples": 3000, "chunk_size": 1000},
        fit=FIT,
        eval=EVAL,
        report={"min_fit_r2": 0.1, "reference_attribute": "gender"},
    )
    run_toy_spine(params, root / "data", world)
    layout, lpips = OutputLayout(root), build_lpips("alex")
    for entry in params.fit.entries:
        run_fit(params, root / "data", entry, layout=layout)
        run_stage(
            EvaluateStage(
                params,
                root / "data",
                entry,
                layout=layout,
                generator=world.generator,
                labeler=world.labeler,
                lpips=lpips,
            )
        )
    build_report(params, root / "data", params.fit.entries, layout=layout)
    return root, params, world, lpips


def _details(root: Path, entry: str) -> dict:
    return json.loads((root / "metrics" / f"{entry}.details.json").read_text())


# -------------------------------------------------------------------------------------------------- variants


def test_variants_validate_by_their_method_and_names_are_checked() -> None:
    params = make_params(fit=FIT)
    assert params.fit.entries == [*FIT["methods"], "ortho-linear-noreg"]
    assert params.fit.base_method("ortho-linear-noreg") == "ortho-linear"
    variant = params.fit.method_params("ortho-linear-noreg")
    assert variant.lam == 0.0 and variant.epochs == 30 and params.fit.method_params("ortho-linear").lam == 2.0
    bad = [
        ({"x": {"lam": 0.0}}, r"variants.x.method: missing"),
        ({"x": {"method": "svm-magic"}}, r"variants.x.method: unknown method 'svm-magic'"),
        ({"x": {"method": "ortho-linear", "lamb": 0.0}}, r"variants.x.lamb: Extra inputs"),
        ({"sefa": {"method": "ortho-linear"}}, r"variants.sefa: 'sefa' is a registered method's name"),
        ({"ortho-linear": {"method": "ortho-linear"}}, r"variants.ortho-linear: also listed in fit.methods"),
        ({"a/b": {"method": "ortho-linear"}}, r"variants.a/b: a variant's name becomes directions/<name>/"),
        (
            {"x": {"method": "ortho-linear-noreg"}, "ortho-linear-noreg": {"method": "ortho-linear"}},
            r"variants.x.method: 'ortho-linear-noreg' is another variant",
        ),
    ]
    for variants, message in bad:
        with pytest.raises(ParamsError, match=message):
            make_params(fit={**FIT, "variants": variants})


def test_variants_are_fitted_evaluated_and_ranked_like_methods(toy_run) -> None:
    root, params, world, _ = toy_run
    noreg = DirectionSet.load(root / "directions" / "ortho-linear-noreg")
    assert noreg.method == "ortho-linear-noreg" and noreg.meta["base_method"] == "ortho-linear"
    assert noreg.meta["params"]["lam"] == 0.0
    for name in ATTRIBUTES:  # λ = 0 is least squares: it finds every planted direction, correlated ones included
        assert cosine(noreg[name], world.directions[name]) > 0.97, name
    ranking = json.loads((root / "reports" / "ranking.json").read_text())
    for attribute in ATTRIBUTES:
        assert set(ranking[attribute]) == set(params.fit.entries)
        assert all(1.0 <= rank <= len(params.fit.entries) for rank in ranking[attribute].values())
    assert "ortho-linear-noreg" in (root / "reports" / "summary.md").read_text()


def test_dvc_metric_holds_only_the_headline_numbers(toy_run) -> None:
    """DVC tracks one metric file, reports/ranking.json: each entry's rank group per attribute and the best group;
    with the default params.yaml (9 entries, 4 attributes) that is at most 40 columns in `dvc exp show --csv`. The
    per-method numbers (with intervals) and the details stay in files the report and `dvc plots` read."""
    root, params, *_ = toy_run
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    tracked = [
        next(iter(item)) if isinstance(item, dict) else item
        for stage in stages.values()
        for item in stage.get("do", stage).get("metrics", [])
    ]
    assert tracked == ["reports/ranking.json"]

    def leaves(tree) -> int:
        return sum(leaves(v) for v in tree.values()) if isinstance(tree, dict) else 1

    ranking = json.loads((root / "reports" / "ranking.json").read_text())
    assert leaves(ranking) == len(params.fit.entries) * len(ATTRIBUTES) + len(ATTRIBUTES)
    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    entries = len(default["fit"]["methods"]) + len(default["fit"]["variants"])
    assert entries * len(default["eval"]["attributes"]) + len(default["eval"]["attributes"]) <= 40
    metric = json.loads((root / "metrics" / "ortho-linear.json").read_text())
    details = _details(root, "ortho-linear")
    headline = ("slope_std", "entanglement", "lpips", "moved_fraction")  # spelled out: not the stage's own function
    assert set(metric) == {"space", "layers", "n_heldout", "directions", "summary"}
    assert (metric["space"], metric["layers"], metric["n_heldout"]) == ("z", None, EVAL["n_samples"])
    for attribute in ATTRIBUTES:
        entry, detail = metric["directions"][attribute], details["directions"][attribute]
        assert set(entry) == {*headline, "ci95"}, attribute
        assert all(entry[key] == detail[key] and entry["ci95"][key] == detail["ci95"][key] for key in headline)
        assert all(np.isfinite(entry[key]) for key in headline), attribute
    assert "table_ii" in details["directions"]["glasses"] and "fit" in details["directions"]["glasses"]


def test_reproduction_summary_names_each_paper_and_gives_ours_with_intervals(toy_run) -> None:
    """REPRODUCTION.md opens with one row per claim: the paper cited short (first author, et al.), the claim, ours
    with its 95 % interval, the rule and the verdict."""
    root, *_ = toy_run
    text = (root / "reports" / "REPRODUCTION.md").read_text()
    assert "| paper | claim | ours [95 % interval] | rule | verdict |" in text
    rows = [line for line in text.split("\n## ")[0].splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == sum(len(paper.claims) for paper in PAPERS)
    assert {row.split(" | ")[0][2:] for row in rows} == {"Pham Van et al.", "Shen et al.", "Mao et al.", "Lu et al."}
    measured = [row for row in rows if not row.endswith("| n/a |")]
    assert measured and all(re.search(r"\[-?[0-9.]+, -?[0-9.]+\]|parts:", row.split(" | ")[2]) for row in measured)


# --------------------------------------------------------------------------------- Pham Van et al. (ortho-linear)


def test_penalty_shrinks_the_cosines_and_the_collateral_change(toy_run) -> None:
    root, params, world, _ = toy_run
    text = (root / "reports" / "REPRODUCTION.md").read_text()
    assert "Table III: cosine between 'gender' and every other direction" in text
    plain = DirectionSet.load(root / "directions" / "ortho-linear-noreg")
    regularised = DirectionSet.load(root / "directions" / "ortho-linear")
    assert cosine(plain["gender"], plain["glasses"]) == pytest.approx(0.6, abs=0.06)  # the planted cosine
    assert abs(cosine(regularised["gender"], regularised["glasses"])) < 0.25  # shrunk by the penalty
    assert abs(cosine(regularised["gender"], regularised["age"])) < 0.5 * cosine(plain["gender"], plain["age"])
    # Table II: editing gender with λ = 2 changes glasses and age less than with λ = 0, and still edits gender
    base, reg = (
        _details(root, "ortho-linear-noreg")["directions"]["gender"],
        _details(root, "ortho-linear")["directions"]["gender"],
    )
    for other in ("glasses", "age"):
        assert reg["table_ii"][other]["mean_abs_change"] < 0.7 * base["table_ii"][other]["mean_abs_change"], other
    assert reg["entanglement"] < base["entanglement"] and reg["slope_std"] > 0
    claims = _claims(root)
    assert [claims[id_]["verdict"] for id_ in ("pham-van-cosines", "pham-van-collateral", "pham-van-own-effect")] == [
        "yes",
        "yes",
        "yes",
    ], claims
    collateral = claims["pham-van-collateral"]["ours"][0]
    assert collateral["value"] <= 0.75 and collateral["ci95"][1] < 1.0  # the rule the yes rests on


def test_normalised_penalty_keeps_the_fit_where_the_literal_one_breaks_it() -> None:
    """Weakly explained standardised targets: the literal ‖W Wᵀ − I‖ pins each row to unit norm, so the predictions
    overshoot and R² goes negative; the penalty on the normalised Gram matrix decorrelates the rows and keeps R²."""
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((4000, 30))
    planted = rng.standard_normal((3, 30))
    planted[1] = 0.8 * planted[0] + 0.2 * planted[1]  # two correlated attributes
    targets = latents @ (planted * np.array([[0.06], [0.06], [0.3]])).T + rng.standard_normal((4000, 3))
    fits = {
        (penalty, lam): fit_mapping(latents, targets, OrthoLinearParams(lam=lam, penalty=penalty, epochs=20))[2]
        for penalty in ("gram_identity", "normalized_gram")
        for lam in (0.0, 2.0)
    }
    least_squares = fits[("normalized_gram", 0.0)]
    assert np.all(least_squares["r2_train"] > 0.05)
    assert np.min(fits[("gram_identity", 2.0)]["r2_train"]) < 0  # the bug the literal penalty has
    normalised = fits[("normalized_gram", 2.0)]
    assert np.all(normalised["r2_train"] > 0) and normalised["r2_train"][2] > least_squares["r2_train"][2] - 0.02
    assert normalised["gram_offdiag_mean_abs"] < 0.3 * least_squares["gram_offdiag_mean_abs"]


#: Per-sample factors of the collateral change: half the samples change little, half a lot (mean 1), and the
#: mirror image; paired with each other the ratio of their means is anything from about 0.3 to 1.4 under resampling.
LOW_HIGH = np.tile([0.2, 1.8], 6)
HIGH_LOW = np.tile([1.8, 0.2], 6)


def _record(
    effect: float,
    collateral: float,
    n_samples: int = 24,
    seed: int = 0,
    factor: np.ndarray | None = None,
    condition_effect: float | None = None,
    conditional_collateral: float | None = None,
    conditional_factor: np.ndarray | None = None,
) -> EvaluationRecord:
    """A synthetic per-sample record of editing score "a" (scores "a" and "b", α ∈ {−1, 0, 1}): a moves by
    ``effect`` · α, b by |α| · ``collateral`` · factor (per sample; 1 when None); with ``conditional_collateral``
    also a conditional edit. Scores have σ = 1 on the "fit data"."""
    rng = np.random.default_rng(seed)
    base_a, base_b = rng.standard_normal(n_samples), rng.standard_normal(n_samples)
    alphas = np.array([-1.0, 0.0, 1.0])

    def edit(move: float, side: float, per_sample: np.ndarray | None) -> EditSamples:
        per_sample = np.ones(n_samples) if per_sample is None else per_sample
        scores = np.stack(
            [np.stack([base_a + move * alpha, base_b + abs(alpha) * side * per_sample], axis=1) for alpha in alphas]
        )
        return EditSamples(alphas, scores, np.abs(alphas)[:, None] * np.full(n_samples, 0.1))

    edits = {("a", "plain"): edit(effect, collateral, factor)}
    if conditional_collateral is not None:
        edits[("a", "conditional")] = edit(condition_effect, conditional_collateral, conditional_factor)
    return EvaluationRecord(np.arange(n_samples), ("a", "b"), edits, reference_spread={"a": 1.0, "b": 1.0})


def _entry(
    name: str,
    base_method: str,
    record: EvaluationRecord | None,
    params: dict | None = None,
    stats: dict | None = None,
    meta: dict | None = None,
    condition_on: tuple[str, ...] = (),
) -> Entry:
    vectors = np.eye(2, 4)
    directions = DirectionSet(
        name, "z", ["a", "b"], vectors, stats=stats or {}, meta={"params": params or {}, **(meta or {})}
    )
    details = {"directions": {"a": {"fit": (stats or {}).get("a", {})}}, "condition_on": list(condition_on)}
    draws = EvaluationDraws(record, 1000, 0) if record is not None else None
    return Entry(name, base_method, directions, details, draws)


def _run(*entries: Entry, correlation: pd.DataFrame | None = None, n_labeled: int = 20000) -> RunInputs:
    return RunInputs(
        {entry.name: entry for entry in entries},
        correlation if correlation is not None else pd.DataFrame(),
        n_labeled,
        ["z"],
        "a",
        1000,
        0,
    )


def _verdict(paper, inputs: RunInputs, claim_id: str) -> str:
    return next(claim for claim in reproduce(paper, inputs).claims if claim.id == claim_id).verdict


def test_a_direction_that_does_not_fit_cannot_rank_first() -> None:
    records = {"overfit": _record(2.0, 0.01), "fits": _record(0.5, 0.2), "svm": _record(0.4, 0.3)}
    r2 = {"overfit": -0.3, "fits": 0.6, "svm": None}  # overfit: best numbers, but explains nothing
    details = {m: {"directions": {"a": {"fit": {} if r2[m] is None else {"r2_val": r2[m]}}}} for m in records}
    draws = {m: EvaluationDraws(record, 1000, 0) for m, record in records.items()}
    gated = rank_attribute("a", draws, details, min_fit_r2=0.1)
    assert gated.methods == ["fits", "svm", "overfit"]
    # fits beats svm on every sample; the gate orders the rest
    assert gated.group == {"fits": 1, "svm": 2, "overfit": 3}
    assert not gated.fits["overfit"] and gated.table().loc["overfit", "fit"].startswith("✗")
    assert "overfit" not in gated.p_best
    assert rank_attribute("a", draws, details).methods[0] == "overfit"  # without the gate it would win


@pytest.mark.parametrize(
    "verdict, reg_collateral, factors",
    [
        ("yes", 0.3, (None, None)),  # a 70 % reduction, every sample alike
        ("no", 0.97, (None, None)),  # the case: 3 % less, surely short of the 25 % needed
        ("inconclusive", 0.6, (LOW_HIGH, HIGH_LOW)),  # 40 % less on average, but the samples disagree
    ],
)
def test_collateral_claim_needs_a_quarter_less_on_an_interval_that_excludes_none(
    verdict, reg_collateral, factors
) -> None:
    base = _entry("ortho-linear-noreg", "ortho-linear", _record(1.0, 1.0, 12, 1, factors[0]), {"lam": 0.0})
    reg = _entry("ortho-linear", "ortho-linear", _record(0.9, reg_collateral, 12, 1, factors[1]), {"lam": 2.0})
    assert _verdict(PHAM_VAN_PAPER, _run(base, reg), "pham-van-collateral") == verdict


@pytest.mark.parametrize(
    "verdict, conditional_collateral, conditional_effect, factors",
    [
        ("yes", 0.2, 0.9, (None, None)),  # the held attribute changes 80 % less, the primal keeps 90 %
        ("no", 0.95, 0.9, (None, None)),  # held barely better than plain editing
        ("no", 0.2, 0.1, (None, None)),  # held, but the primal attribute no longer moves
        ("inconclusive", 0.6, 0.9, (LOW_HIGH, HIGH_LOW)),  # 40 % less on average, the samples disagree
    ],
)
def test_conditional_claim_judges_both_sides(verdict, conditional_collateral, conditional_effect, factors) -> None:
    record = _record(1.0, 1.0, 12, 2, factors[0], conditional_effect, conditional_collateral, factors[1])
    entry = _entry("interfacegan", "interfacegan", record, condition_on=("b",))
    assert _verdict(INTERFACEGAN_PAPER, _run(entry), "interfacegan-conditional") == verdict


@pytest.mark.parametrize(
    "verdict, validation, n_validation", [("yes", 0.99, 1000), ("no", 0.80, 1000), ("inconclusive", 0.90, 20)]
)
def test_accuracy_claim_is_judged_on_exact_intervals(verdict, validation, n_validation) -> None:
    stats = {
        name: {"val_accuracy": validation, "n_val": n_validation, "remaining_accuracy": 0.9, "n_remaining": 5000}
        for name in ("a", "b")
    }
    entry = _entry("interfacegan", "interfacegan", None, stats=stats)
    assert _verdict(INTERFACEGAN_PAPER, _run(entry), "interfacegan-accuracy") == verdict


@pytest.mark.parametrize(
    "verdict, rho, n_labeled", [("yes", 0.02, 20000), ("no", 0.40, 20000), ("inconclusive", 0.08, 50)]
)
def test_cosine_claim_is_a_bar_on_the_whole_interval(verdict, rho, n_labeled) -> None:
    """The boundaries are orthogonal (cos 0): the gap |cos − ρ| is |ρ|, judged against the 0.10 bar."""
    correlation = pd.DataFrame([[1.0, rho], [rho, 1.0]], index=["a", "b"], columns=["a", "b"])
    entry = _entry("interfacegan", "interfacegan", None)
    inputs = _run(entry, correlation=correlation, n_labeled=n_labeled)
    assert _verdict(INTERFACEGAN_PAPER, inputs, "interfacegan-cosines") == verdict


@pytest.mark.parametrize(
    "verdict, centroid_rca, pairs", [("yes", 0.80, 10000), ("no", 0.70, 10000), ("inconclusive", 0.78, 100)]
)
def test_rca_claim_is_non_inferiority(verdict, centroid_rca, pairs) -> None:
    baseline = _entry("voynov", "voynov", None, meta={"rca": 0.80, "rca_pairs": pairs, "rca_chance": 1 / 16})
    centroid = _entry(
        "centroid", "centroid", None, meta={"rca": centroid_rca, "rca_pairs": pairs, "rca_chance": 1 / 16}
    )
    assert _verdict(LU_PAPER, _run(baseline, centroid), "lu-rca") == verdict


# ------------------------------------------------------------------------------------------------ InterFaceGAN


def test_interfacegan_reproduction_tables(toy_run) -> None:
    root, *_ = toy_run
    text = (root / "reports" / "REPRODUCTION.md").read_text()
    assert "Separability of the boundaries (interfacegan" in text and "Boundary cosines (interfacegan)" in text
    details = _details(root, "interfacegan")["directions"]["glasses"]
    spread = _details(root, "interfacegan")["spread"]["gender"]
    plain = details["table_ii"]["gender"]["mean_abs_change"] / spread
    conditional = details["conditional_table_ii"]["gender"]["mean_abs_change"] / spread
    assert conditional < plain / 5 and details["conditional_slope_std"] > 0
    assert "edit glasses, hold gender" in text
    claims = _claims(root)
    assert claims["interfacegan-accuracy"]["verdict"] == "yes"  # every planted attribute is linear in z
    assert claims["interfacegan-conditional"]["verdict"] == "yes"


# ----------------------------------------------------------------------------------------------------- TunaGAN


def test_tunagan_is_evaluated_along_its_gradient_paths(toy_run) -> None:
    root, *_ = toy_run
    nonlinear, linear = _details(root, "tunagan"), _details(root, "tunagan-linear")
    for attribute in ATTRIBUTES:
        assert nonlinear["directions"][attribute]["edit"] == "gradient_path"
        assert linear["directions"][attribute]["edit"] == "vector"
        assert nonlinear["directions"][attribute]["moved_fraction"] == 1.0, attribute
        assert nonlinear["directions"][attribute]["ppl"] > 0
    text = (root / "reports" / "REPRODUCTION.md").read_text()
    assert "Separability score per attribute" in text and "nonlinear z (tunagan)" in text
    assert "the generator has no W space" in text  # the toy store holds z only: Z vs W is not applicable


def _abs_pose_field(world) -> AttributeMLP:
    """An MLP f(x) = |n_pose · x| (two ReLUs): its gradient is +n_pose on one side of the pose boundary and −n_pose
    on the other, so its mean unit gradient is ≈ 0 and no single vector raises |pose| for every sample."""
    model = AttributeMLP(world.z_dim, hidden_dim=2, dropout=0.0, kind="continuous")
    pose = torch.as_tensor(world.directions["pose"], dtype=torch.float32)
    with torch.no_grad():
        model.hidden.weight.copy_(torch.stack([pose, -pose]))
        model.hidden.bias.zero_()
        model.output.weight.copy_(torch.tensor([[1.0, 1.0]]))
        model.output.bias.zero_()
    return model.eval()


def test_gradient_path_edit_moves_the_attribute_the_model_predicts(toy_run, tmp_path) -> None:
    root, params, world, lpips = toy_run
    model = _abs_pose_field(world)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    DirectionSet(
        "abs-pose",
        "z",
        ["pose"],
        world.directions["pose"][None],
        meta={"models": {"pose": {"file": "mlp_000_pose.pt", **model.config()}}},
        extras={"mlp_000_pose.pt": buffer.getvalue()},
    ).save(tmp_path / "directions" / "abs-pose")
    run_params = params.model_copy(
        update={"eval": params.eval.model_copy(update={"attributes": ["pose"], "condition_on": []})}
    )
    stage = EvaluateStage(
        run_params,
        root / "data",
        "abs-pose",
        layout=OutputLayout(tmp_path),
        generator=world.generator,
        labeler=world.labeler,
        lpips=lpips,
    )
    run_stage(stage)
    frame = pads.dataset(str(tmp_path / "evaluations" / "abs-pose"), format="parquet").to_table().to_pandas()
    by_alpha = frame.pivot_table(index="sample_id", columns="alpha", values="pose")
    magnitude = by_alpha.abs()
    # every held-out sample's |pose| (what the model predicts) rises with α as f says: f = |n·z| grows by exactly α
    # along a unit-speed gradient path, and the labeler reads pose = 30 n·z, so |pose| grows by 30 α degrees
    np.testing.assert_allclose(magnitude[1.0] - magnitude[0.0], 30.0, atol=0.5)
    np.testing.assert_allclose(magnitude[2.0] - magnitude[0.0], 60.0, atol=0.5)
    assert np.all(magnitude[-1.0] < magnitude[0.0] + 1e-3)  # −α walks down the gradient, towards |pose| = 0
    details = _details(tmp_path, "abs-pose")
    assert details["directions"]["pose"]["edit"] == "gradient_path"
    # the signed pose goes both ways, so the one stored vector would not capture this edit: check it does not
    signed_change = by_alpha[2.0] - by_alpha[0.0]
    assert (signed_change > 0).any() and (signed_change < 0).any()
    ppl = field_perceptual_path_length(world.generator, model, lpips, n_samples=4, t_max=2.0, seed=1)
    assert np.isfinite(ppl) and ppl > 0


def _claims(root: Path) -> dict[str, dict]:
    """reports/reproduction.json's claims by id."""
    record = json.loads((root / "reports" / "reproduction.json").read_text())
    return {claim["id"]: claim for claim in record["claims"]}


def test_reproduction_record_states_each_claim_with_its_rule_and_interval(toy_run) -> None:
    root, *_ = toy_run
    record = json.loads((root / "reports" / "reproduction.json").read_text())
    claims = record["claims"]
    assert len(claims) == 11 and sum(record["verdicts"].values()) == 11
    for claim in claims:
        assert {"id", "paper", "paper_value", "ours", "rule", "verdict"} <= set(claim)
        assert claim["verdict"] in ("yes", "no", "inconclusive", "n/a")
        for part in claim["ours"]:
            assert part["verdict"] in ("yes", "no", "inconclusive")
            if part["verdict"] == "yes":  # never a yes to an effect smaller than its rule
                rule = next(r for r in claim["rule"] if r["text"] == part["rule"])
                side = 1 if rule["direction"] == "below" else -1
                assert side * part["value"] <= side * rule["minimum_effect"]
    assert _claims(root)["tunagan-w-vs-z"]["verdict"] == "n/a"  # the toy store has no W
