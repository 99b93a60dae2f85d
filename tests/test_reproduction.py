"""Variants, the reproduction of the papers' findings, and gradient-path evaluation, on the planted toy world
(tests/toy.py), where the truth is known: gender is planted at cos 0.6 with glasses and 0.5 with age, so the λ = 0
map finds those cosines and the orthogonality penalty must shrink them; smile and pose are orthogonal to everything.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
import torch

from latentatlas.layout import OutputLayout
from latentatlas.params import ParamsError
from stages.runtime.chunked import run_stage
from stages.latent.directions import DirectionSet
from stages.evaluate import EvaluateStage
from stages.latent.metrics import field_perceptual_path_length
from stages.fit import run_fit
from stages.latent.perceptual import build_lpips
from stages.plugins.methods.ortho_linear import OrthoLinearParams, fit_mapping
from stages.latent.fields import AttributeMLP
from stages.report import build_report, ranking_tables
from stages.reporting.reproduction import Entry
from tests.conftest import make_params, run_toy_spine
from tests.toy import cosine, make_world

ATTRIBUTES = ["gender", "glasses", "age", "smile"]
FIT = {"methods": ["interfacegan", "ortho-linear", "tunagan", "tunagan-linear"], "attributes": ATTRIBUTES,
       "device": "cpu",
       "params": {"interfacegan": {"ratio": 0.1}, "ortho-linear": {"lam": 2.0, "epochs": 30},
                  "tunagan": {"epochs": 15, "hidden_dim": 64}, "tunagan-linear": {}},
       "variants": {"ortho-linear-noreg": {"method": "ortho-linear", "lam": 0.0, "epochs": 30}}}
EVAL = {"n_samples": 24, "chunk_size": 24, "alphas": [-2.0, -1.0, 0.0, 1.0, 2.0], "attributes": ATTRIBUTES,
        "condition_on": ["gender"], "ppl_samples": 4, "grid_samples": 2, "batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """Every entry (four methods and one variant) fitted, evaluated and reported on the toy world."""
    root = tmp_path_factory.mktemp("toy-reproduction")
    world = make_world(z_dim=24)
    params = make_params(sample={"n_samples": 3000, "chunk_size": 1000}, fit=FIT, eval=EVAL,
                         report={"min_fit_r2": 0.1, "reference_attribute": "gender"})
    run_toy_spine(params, root / "data", world)
    layout, lpips = OutputLayout(root), build_lpips("alex")
    for entry in params.fit.entries:
        run_fit(params, root / "data", entry, layout=layout)
        run_stage(EvaluateStage(params, root / "data", entry, layout=layout, generator=world.generator,
                                labeler=world.labeler, lpips=lpips))
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
    bad = [({"x": {"lam": 0.0}}, r"variants.x.method: missing"),
           ({"x": {"method": "svm-magic"}}, r"variants.x.method: unknown method 'svm-magic'"),
           ({"x": {"method": "ortho-linear", "lamb": 0.0}}, r"variants.x.lamb: Extra inputs"),
           ({"sefa": {"method": "ortho-linear"}}, r"variants.sefa: 'sefa' is a registered method's name"),
           ({"ortho-linear": {"method": "ortho-linear"}}, r"variants.ortho-linear: also listed in fit.methods"),
           ({"a/b": {"method": "ortho-linear"}}, r"variants.a/b: a variant's name becomes directions/<name>/"),
           ({"x": {"method": "ortho-linear-noreg"}, "ortho-linear-noreg": {"method": "ortho-linear"}},
            r"variants.x.method: 'ortho-linear-noreg' is another variant")]
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
    root, *_ = toy_run
    metric = json.loads((root / "metrics" / "ortho-linear.json").read_text())
    details = _details(root, "ortho-linear")
    headline = ("slope_std", "entanglement", "lpips", "moved_fraction")  # spelled out: not the stage's own function
    assert set(metric) == {"space", "layers", "n_heldout", "directions", "summary"}
    assert (metric["space"], metric["layers"], metric["n_heldout"]) == ("z", None, EVAL["n_samples"])
    assert (details["space"], details["layers"], details["n_heldout"]) == ("z", None, EVAL["n_samples"])
    assert set(metric["directions"]) == set(ATTRIBUTES)
    for attribute in ATTRIBUTES:
        assert metric["directions"][attribute] == {key: details["directions"][attribute][key] for key in headline}
        assert all(np.isfinite(value) for value in metric["directions"][attribute].values()), attribute
    assert set(metric["summary"]) >= set(headline)
    assert metric["summary"] == {key: value for key, value in details["summary"].items() if key in (*headline, "ppl")}

    def leaves(tree) -> int:
        return sum(leaves(v) for v in tree.values()) if isinstance(tree, dict) else 1

    assert leaves(metric) <= 6 * len(ATTRIBUTES) + 10 < leaves(details) / 4  # the Table II cells live in details
    assert "table_ii" in details["directions"]["glasses"] and "fit" in details["directions"]["glasses"]


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
    base, reg = _details(root, "ortho-linear-noreg")["directions"]["gender"], \
        _details(root, "ortho-linear")["directions"]["gender"]
    for other in ("glasses", "age"):
        assert reg["table_ii"][other]["mean_abs_change"] < 0.7 * base["table_ii"][other]["mean_abs_change"], other
    assert reg["entanglement"] < base["entanglement"] and reg["slope_std"] > 0
    verdicts = _verdicts(text, "Pham Van")
    assert verdicts[:3] == ["yes", "yes", "yes"], verdicts


def test_normalised_penalty_keeps_the_fit_where_the_literal_one_breaks_it() -> None:
    """Weakly explained standardised targets: the literal ‖W Wᵀ − I‖ pins each row to unit norm, so the predictions
    overshoot and R² goes negative; the penalty on the normalised Gram matrix decorrelates the rows and keeps R²."""
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((4000, 30))
    planted = rng.standard_normal((3, 30))
    planted[1] = 0.8 * planted[0] + 0.2 * planted[1]  # two correlated attributes
    targets = latents @ (planted * np.array([[0.06], [0.06], [0.3]])).T + rng.standard_normal((4000, 3))
    fits = {(penalty, lam): fit_mapping(latents, targets, OrthoLinearParams(lam=lam, penalty=penalty, epochs=20))[2]
            for penalty in ("gram_identity", "normalized_gram") for lam in (0.0, 2.0)}
    least_squares = fits[("normalized_gram", 0.0)]
    assert np.all(least_squares["r2_train"] > 0.05)
    assert np.min(fits[("gram_identity", 2.0)]["r2_train"]) < 0  # the bug the literal penalty has
    normalised = fits[("normalized_gram", 2.0)]
    assert np.all(normalised["r2_train"] > 0) and normalised["r2_train"][2] > least_squares["r2_train"][2] - 0.02
    assert normalised["gram_offdiag_mean_abs"] < 0.3 * least_squares["gram_offdiag_mean_abs"]


def test_a_direction_that_does_not_fit_cannot_rank_first() -> None:
    def entry(effect: float, entanglement: float, r2: float | None) -> dict:
        fit = {} if r2 is None else {"r2_val": r2}
        return {"slope_std": effect, "entanglement": entanglement, "lpips": 0.1, "fit": fit}

    metrics = {"overfit": {"directions": {"age": entry(2.0, 0.01, -0.3)}},  # best numbers, but explains nothing
               "fits": {"directions": {"age": entry(0.5, 0.2, 0.6)}},
               "svm": {"directions": {"age": entry(0.4, 0.3, None)}}}
    gated = ranking_tables(metrics, min_fit_r2=0.1)["age"]
    assert list(gated.index) == ["fits", "svm", "overfit"]
    assert gated.loc["overfit", "fit"].startswith("✗") and gated.loc["fits", "fit"] == ""
    assert gated.loc["overfit", "rank"] > gated["rank"].drop("overfit").max()
    assert ranking_tables(metrics)["age"].index[0] == "overfit"  # without the gate it would win


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
    accuracy, cosines, conditional_verdict = _verdicts(text, "Shen")
    assert accuracy == "yes"  # every planted attribute is linear in z: > 95 % validation accuracy
    assert conditional_verdict == "yes"


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
    DirectionSet("abs-pose", "z", ["pose"], world.directions["pose"][None],
                 meta={"models": {"pose": {"file": "mlp_000_pose.pt", **model.config()}}},
                 extras={"mlp_000_pose.pt": buffer.getvalue()}).save(tmp_path / "directions" / "abs-pose")
    run_params = params.model_copy(update={"eval": params.eval.model_copy(update={"attributes": ["pose"],
                                                                                  "condition_on": []})})
    stage = EvaluateStage(run_params, root / "data", "abs-pose", layout=OutputLayout(tmp_path),
                          generator=world.generator, labeler=world.labeler, lpips=lpips)
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


# ------------------------------------------------------------------------------- verdicts that must say no / partly


def _unit_vectors(cosines_with_first: list[float]) -> np.ndarray:
    """(1 + K, 1 + K) unit rows: the first is e₀, row k has cosine ``cosines_with_first[k - 1]`` with it and is
    orthogonal to the other rows' remaining parts (so only the listed cosines with the first row are non-zero)."""
    vectors = np.eye(1 + len(cosines_with_first))
    for k, cos in enumerate(cosines_with_first, start=1):
        vectors[k] = cos * vectors[0] + np.sqrt(1.0 - cos ** 2) * np.eye(1 + len(cosines_with_first))[k]
    return vectors


def _entry(name: str, base_method: str, names: list[str], vectors: np.ndarray, details: dict | None = None,
           stats: dict | None = None, meta: dict | None = None, space: str = "z") -> Entry:
    directions = DirectionSet(name, space, names, vectors, stats=stats or {}, meta=meta or {})
    return Entry(name=name, base_method=base_method, directions=directions, details=details or {"directions": {}})


def _ortho_pair(reg_cosines: list[float], entanglement: tuple[float, float], reg_effect: float) -> dict[str, Entry]:
    """A λ = 0 entry (young at cos 0.6 / 0.4 with male / smile) and a λ = 2 one with ``reg_cosines``; editing young
    changes the others by ``entanglement`` (λ = 0, λ = 2) and young itself by 0.8 and ``reg_effect``."""
    names = ["young", "male", "smile"]
    stats = {name: {"r2_train": 0.5, "r2_val": 0.4} for name in names}

    def details(entangled: float, effect: float) -> dict:
        cells = {other: {"original": 0.0, "edited_plus": entangled, "mean_abs_change": entangled}
                 for other in ("male", "smile")}
        return {"directions": {"young": {"table_ii": cells, "entanglement": entangled, "slope_std": effect}}}

    return {"noreg": _entry("noreg", "ortho-linear", names, _unit_vectors([0.6, 0.4]),
                            details(entanglement[0], 0.8), stats, meta={"params": {"lam": 0.0}}),
            "ortho": _entry("ortho", "ortho-linear", names, _unit_vectors(reg_cosines),
                            details(entanglement[1], reg_effect), stats, meta={"params": {"lam": 2.0}})}


def test_ortho_linear_verdicts_say_no_and_partly_when_the_numbers_do() -> None:
    """Mean |cos(young, ·)| 0.5 at λ = 0: 0.25 or less is 'yes', between 0.25 and 0.5 'partly', 0.5 or more 'no'."""
    from stages.reporting.reproduction import ortho_linear_section

    def verdicts(entries: dict[str, Entry]) -> list[str]:
        return [finding.verdict for finding in ortho_linear_section(entries, "young").findings]

    assert verdicts(_ortho_pair([0.2, 0.1], entanglement=(0.5, 0.2), reg_effect=0.6)) == ["yes", "yes", "yes"]
    assert verdicts(_ortho_pair([0.4, 0.3], entanglement=(0.5, 0.2), reg_effect=0.6))[0] == "partly"  # 0.35
    # the penalty made young more similar to the others, the edit more entangled, and young no longer moves
    assert verdicts(_ortho_pair([0.7, 0.4], entanglement=(0.5, 0.6), reg_effect=-0.1)) == ["no", "no", "no"]
    assert verdicts(_ortho_pair([0.6, 0.4], entanglement=(0.5, 0.5), reg_effect=0.0)) == ["no", "no", "no"]  # ties


def _interfacegan(accuracy: dict[str, tuple[float, float]], conditional_changes: dict[str, float]) -> Entry:
    """An interfacegan entry over male, smile, age (cos 0.5 between male and smile, both orthogonal to age) with the
    given (validation, rest-of-data) accuracies; editing smile or age, conditioned on male, changes male by 0.5 std
    plainly and by ``conditional_changes[attribute]`` std after projection, and still edits its own attribute."""
    vectors = _unit_vectors([0.5, 0.0])
    records = {attribute: {"slope_std": 0.7, "conditional_slope_std": 0.6,
                           "table_ii": {"male": {"mean_abs_change": 1.0}},
                           "conditional_table_ii": {"male": {"mean_abs_change": 2.0 * change}}}
               for attribute, change in conditional_changes.items()}
    stats = {name: {"val_accuracy": val, "remaining_accuracy": rest} for name, (val, rest) in accuracy.items()}
    return _entry("interfacegan", "interfacegan", ["male", "smile", "age"], vectors, stats=stats,
                  details={"condition_on": ["male"], "spread": {"male": 2.0}, "directions": records})


def test_interfacegan_verdicts_say_no_and_partly_when_the_numbers_do() -> None:
    from stages.reporting.reproduction import interfacegan_section

    names = ["male", "smile", "age"]
    matching = pd.DataFrame([[1.0, 0.45, 0.0], [0.45, 1.0, 0.05], [0.0, 0.05, 1.0]], index=names, columns=names)
    apart = matching.copy()
    apart.loc["male", "smile"] = apart.loc["smile", "male"] = -0.1  # |cos − ρ| = 0.6 for that pair

    def verdicts(entry: Entry, correlation: pd.DataFrame) -> list[str]:
        return [finding.verdict for finding in interfacegan_section({"interfacegan": entry}, correlation).findings]

    passing = {name: (0.99, 0.9) for name in names}
    assert verdicts(_interfacegan(passing, {"smile": 0.1, "age": 0.2}), matching) == ["yes", "yes", "yes"]
    # smile misses the validation bar, age the rest-of-data bar; age's conditional edit moves male more than before
    some = {"male": (0.99, 0.9), "smile": (0.90, 0.9), "age": (0.99, 0.7)}
    section = interfacegan_section({"interfacegan": _interfacegan(some, {"smile": 0.1, "age": 0.6})}, apart)
    assert [finding.verdict for finding in section.findings] == ["partly", "no", "partly"]
    assert section.findings[0].note.startswith("Below the bars: smile, age.")
    assert "largest |cos − ρ| 0.60 (male/smile)" in section.findings[1].ours
    none = {name: (0.94, 0.9) for name in names}
    assert verdicts(_interfacegan(none, {"smile": 0.5, "age": 0.7}), matching) == ["no", "yes", "no"]


def test_tunagan_verdicts_say_partly_when_one_space_disagrees() -> None:
    """Nonlinear beats linear in Z (SS 1.2 < 1.5) but not in W (1.4 > 1.3): 'partly'; W beats Z for the linear
    models (1.3 < 1.5) but not for the nonlinear ones (1.4 > 1.2): 'partly'; with the W entries only, 'no'."""
    from stages.reporting.reproduction import tunagan_section

    def entry(name: str, model: str, space: str, separability: float) -> Entry:
        return _entry(name, "tunagan" if model == "nonlinear" else "tunagan-linear", ["smile"], np.eye(1),
                      stats={"smile": {"separability": separability}}, meta={"params": {"model": model}}, space=space)

    entries = {e.name: e for e in (entry("tunagan", "nonlinear", "z", 1.2), entry("tunagan-linear", "linear", "z", 1.5),
                                   entry("tunagan-w", "nonlinear", "w", 1.4),
                                   entry("tunagan-linear-w", "linear", "w", 1.3))}
    findings = tunagan_section(entries, ["z", "w"]).findings
    assert [finding.verdict for finding in findings[:2]] == ["partly", "partly"]
    only_w = {name: value for name, value in entries.items() if name.endswith("-w")}
    assert tunagan_section(only_w, ["z", "w"]).findings[0].verdict == "no"


def test_unsupervised_verdicts_say_no_when_the_centroid_loss_does_worse() -> None:
    from stages.reporting.reproduction import RCA_DROP_BAR, unsupervised_section

    def entries(centroid_rca: float, centroid_ppl: float) -> dict[str, Entry]:
        def entry(name: str, rca: float, ppl: float) -> Entry:
            meta = {"n_directions": 2, "rca_chance": 0.5, "steps": 10, "rca": rca, "ppl_mean": ppl}
            return _entry(name, name, ["d0", "d1"], np.eye(2), meta=meta, details={"directions": {}, "summary": {}})

        return {"voynov": entry("voynov", 0.8, 100.0), "centroid": entry("centroid", centroid_rca, centroid_ppl)}

    def verdicts(section) -> list[str]:
        return [finding.verdict for finding in section.findings]

    assert verdicts(unsupervised_section(entries(0.8 - RCA_DROP_BAR + 0.01, 90.0))) == ["yes", "yes"]
    assert verdicts(unsupervised_section(entries(0.8 - RCA_DROP_BAR - 0.01, 100.0))) == ["no", "no"]
    assert verdicts(unsupervised_section(entries(0.5, 130.0))) == ["no", "no"]


def _verdicts(text: str, author: str) -> list[str]:
    """The 'holds here' column of the findings table in the section of the paper by ``author``."""
    section = text.split(f"## {author}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "**" in line]
    return [row.split("**")[1] for row in rows]
