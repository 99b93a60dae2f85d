"""Uncertainty, rankings with ties and verdict rules, checked where the truth is known.

- The statistics' building blocks against closed forms (Clopper–Pearson, Holm, rank groups, seeded resamples).
- Calibration in the planted world (tests/toy.py): the evaluation metrics' 95 % intervals cover the true value (a
  Monte Carlo over 10,000 held-out samples) at about their nominal rate across held-out seeds; two evaluations with
  different held-out seeds never order two methods in contradicting significant ways; the stated minimum detectable
  difference is detected about 80 % of the time.
- Every kind of verdict rule gives yes, no and inconclusive on data that must give each.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from latentatlas.params import ParamsError
from stages.reporting.claims import Claim, Part, Rule, combine
from stages.reporting.ranking import rank_attribute
from stages.reporting.samples import EditSamples, EvaluationDraws, EvaluationRecord, RecordError
from stages.reporting.statistics import (
    Estimate,
    clopper_pearson,
    correlation_interval,
    difference_of_shares,
    holm,
    minimum_detectable_difference,
    paired_p_values,
    rank_groups,
    resample_weights,
)
from tests.conftest import make_params
from tests.toy import ATTRIBUTES, attribute_values, make_world

ALPHAS = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])


def toy_record(
    world,
    directions: dict[str, np.ndarray],
    n_samples: int,
    seed: int,
    reference_spread: dict[str, float] | None = None,
) -> EvaluationRecord:
    """What an evaluation records for ``directions`` (attribute → vector) on ``n_samples`` held-out z of the toy
    world (seeded): edits of z, re-labeled by the planted attribute functions (what the toy labeler reads back from
    the toy generator's images, in closed form); the "lpips" column is the mean squared change of the toy
    generator's pixels (a cheap stand-in distance with the same role). NumPy only, one BLAS thread (tiny products
    are slower threaded on a shared machine). ``reference_spread``: the scores' standard deviations on the "fit
    data" (the evaluation takes them from the labeled store)."""
    with threadpool_limits(1):
        return _toy_record(world, directions, n_samples, seed, reference_spread)


def _toy_record(
    world, directions: dict[str, np.ndarray], n_samples: int, seed: int, reference_spread: dict[str, float] | None
) -> EvaluationRecord:
    generator = world.generator
    latents_z = np.random.default_rng(seed).standard_normal((n_samples, world.z_dim))

    def pixels(latents: np.ndarray) -> np.ndarray:
        return np.tanh((latents @ generator.A.T + generator.b) @ generator.B.T)

    originals = pixels(latents_z)
    edits = {}
    for attribute, vector in directions.items():
        unit = np.asarray(vector, dtype=np.float64) / np.linalg.norm(vector)
        edited = (latents_z[None] + ALPHAS[:, None, None] * unit).reshape(-1, world.z_dim)
        scores = attribute_values(edited, world.directions).to_numpy().reshape(len(ALPHAS), n_samples, -1)
        distance = ((pixels(edited).reshape(len(ALPHAS), n_samples, -1) - originals) ** 2).mean(-1)
        edits[(attribute, "plain")] = EditSamples(ALPHAS, scores, distance)
    return EvaluationRecord(np.arange(n_samples), ATTRIBUTES, edits, reference_spread=dict(reference_spread or {}))


def tilted(world, attribute: str, towards: str, degrees: float) -> np.ndarray:
    """A direction ``degrees`` away from the planted one of ``attribute``, towards ``towards``'s (orthogonal part)."""
    main, other = world.directions[attribute], world.directions[towards]
    other = other - main * (main @ other)
    angle = np.radians(degrees)
    return np.cos(angle) * main + np.sin(angle) * other / np.linalg.norm(other)


# ------------------------------------------------------------------------------------------------ building blocks


def test_resamples_are_seeded_paired_and_weigh_every_sample_once_on_row_zero() -> None:
    weights = resample_weights(32, 500, seed=1)
    assert weights.shape == (501, 32)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights[0], 1 / 32)
    np.testing.assert_allclose(weights[1:] * 32, np.round(weights[1:] * 32))  # counts of draws
    np.testing.assert_array_equal(weights, resample_weights(32, 500, seed=1))  # every process draws the same
    assert not np.array_equal(weights, resample_weights(32, 500, seed=2))
    assert not np.array_equal(weights[:, :31], resample_weights(31, 500, seed=1))


def test_too_few_resamples_and_incomplete_records_are_refused(world) -> None:
    with pytest.raises(ParamsError, match="eval.bootstrap_resamples"):
        make_params(eval={"bootstrap_resamples": 100})
    frame = toy_record(world, {"smile": world.directions["smile"]}, 8, 0).edits_frame()
    with pytest.raises(RecordError, match=r"edits of 'smile' \(plain\): expected every one of 8 held-out samples"):
        EvaluationRecord.from_frames(frame.drop(index=3))


def test_exact_and_score_intervals_match_their_closed_forms() -> None:
    # Clopper–Pearson at the ends: [0, 1 − 0.025^(1/n)] and [0.025^(1/n), 1]
    assert clopper_pearson(0, 10).high == pytest.approx(1 - 0.025**0.1)
    assert clopper_pearson(10, 10).low == pytest.approx(0.025**0.1)
    assert clopper_pearson(24, 24).low == pytest.approx(0.8575, abs=1e-4)
    middle = clopper_pearson(50, 100)
    assert middle.value == 0.5 and middle.low == pytest.approx(0.3983, abs=1e-4)
    difference = difference_of_shares((80, 100), (70, 100))  # Newcombe (1998), hybrid score: about [−0.02, 0.22]
    assert difference.value == pytest.approx(0.1) and difference.low < 0 < difference.high < 0.25
    rho = correlation_interval(0.5, 103)  # Fisher z: tanh(atanh(0.5) ± 1.96 / 10)
    assert (rho.low, rho.high) == pytest.approx(
        (np.tanh(np.arctanh(0.5) - 0.196), np.tanh(np.arctanh(0.5) + 0.196)), abs=1e-3
    )


def test_holm_steps_down_and_keeps_the_order() -> None:
    adjusted = holm(np.array([0.01, 0.04, 0.03, np.nan, 0.005]))
    np.testing.assert_allclose(adjusted[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])


def test_paired_p_values_see_the_pairing() -> None:
    """Two statistics with a common sample-to-sample variation: their difference is tight although each alone is
    wide, so the paired test separates them."""
    rng = np.random.default_rng(0)
    shared = rng.standard_normal(40) * 5
    values = np.stack([shared + 1.0 + 0.1 * rng.standard_normal(40), shared + 0.1 * rng.standard_normal(40)], axis=1)
    draws = resample_weights(40, 2000, seed=3) @ values
    p_values = paired_p_values(draws)
    assert p_values[0, 1] == p_values[1, 0] < 0.001
    assert Estimate.from_draws(draws[:, 0]).low < Estimate.from_draws(draws[:, 1]).high  # intervals overlap


def test_rank_groups_order_only_what_is_significant() -> None:
    better = np.zeros((4, 4), dtype=bool)
    # A beats C and D, B beats C and D; nothing separates A from B or C from D: two groups
    better[0, 2] = better[0, 3] = better[1, 2] = better[1, 3] = True
    assert rank_groups([0, 1, 2, 3], better) == [1, 1, 2, 2]
    # B does not beat C: A, B, C chain together; only D is separated from all three
    better[1, 2] = False
    better[2, 3] = True
    assert rank_groups([0, 1, 2, 3], better) == [1, 1, 1, 2]
    assert rank_groups([0, 1, 2, 3], np.zeros((4, 4), dtype=bool)) == [1, 1, 1, 1]


# ------------------------------------------------------------------------------------------------ calibration


@pytest.fixture(scope="module")
def world():
    return make_world(z_dim=24)


@pytest.fixture(scope="module")
def fit_spread(world) -> dict[str, float]:
    """Each planted attribute's standard deviation over 20,000 samples: the evaluation's unit ("fit data")."""
    latents_z = np.random.default_rng(12345).standard_normal((20000, world.z_dim))
    return attribute_values(latents_z, world.directions).std(ddof=0).to_dict()


def test_intervals_cover_the_true_value_at_their_nominal_rate(world, fit_spread) -> None:
    """Across 150 held-out seeds of 32 samples, each 95 % interval (effect, entanglement, the LPIPS stand-in and
    the paired difference of two methods' effects) covers the truth 88–99 % of the time."""
    directions = {"smile": tilted(world, "smile", "gender", 40.0)}
    rival = {"smile": tilted(world, "smile", "pose", 60.0)}
    keys = ("slope_std", "entanglement", "lpips")

    def measure(n_samples: int, seed: int, resamples: int) -> dict[str, np.ndarray]:
        draws = EvaluationDraws(toy_record(world, directions, n_samples, seed, fit_spread), resamples, seed)
        other = EvaluationDraws(toy_record(world, rival, n_samples, seed, fit_spread), resamples, seed)
        measured = {key: draws.value("smile", key) for key in keys}
        measured["effect difference"] = measured["slope_std"] - other.value("smile", "slope_std")
        return measured

    truth = {key: float(values[0]) for key, values in measure(10000, seed=10_000, resamples=1).items()}
    covered = {key: 0 for key in truth}
    seeds = range(150)
    with threadpool_limits(1):
        for seed in seeds:
            for key, values in measure(32, seed, resamples=1000).items():
                interval = Estimate.from_draws(values)
                covered[key] += interval.low <= truth[key] <= interval.high
    rates = {key: count / len(seeds) for key, count in covered.items()}
    assert truth["entanglement"] > 0.05 and abs(truth["effect difference"]) > 0.05  # nothing degenerate
    assert all(0.88 <= rate <= 0.99 for rate in rates.values()), rates


def test_exact_share_intervals_cover_at_least_their_nominal_rate() -> None:
    """moved_fraction's interval (Clopper–Pearson) covers a true share of 0.7 in ≥ 95 % of 2000 samples of 32
    (every toy attribute is monotone along a line, so the planted world moves all samples or none)."""
    successes = np.random.default_rng(3).binomial(32, 0.7, size=2000)
    covers = {k: (interval := clopper_pearson(k, 32)).low <= 0.7 <= interval.high for k in range(33)}
    assert 0.95 <= np.mean([covers[int(k)] for k in successes]) <= 0.99


def test_different_heldout_seeds_never_contradict_each_other(world, fit_spread) -> None:
    """Five methods for smile (the planted direction, an exact copy of it, 30° and 60° tilts, a random direction),
    ranked on six held-out seeds: no two rankings order a pair in opposite significant ways, the copy is never
    separated from the truth, and the truth is always separated from the random direction."""
    rng = np.random.default_rng(7)
    methods = {
        "truth": world.directions["smile"],
        "copy": world.directions["smile"].copy(),
        "tilt30": tilted(world, "smile", "gender", 30.0),
        "tilt60": tilted(world, "smile", "glasses", 60.0),
        "random": rng.standard_normal(world.z_dim),
    }
    details = {name: {"directions": {"smile": {"fit": {}}}} for name in methods}
    orderings = []
    for seed in range(6):
        draws = {
            name: EvaluationDraws(toy_record(world, {"smile": vector}, 48, 100 + seed, fit_spread), 1000, seed)
            for name, vector in methods.items()
        }
        ranking = rank_attribute("smile", draws, details)
        significant = {(a, b) for a in methods for b in methods if a != b and ranking.group[a] < ranking.group[b]}
        assert ranking.group["truth"] == ranking.group["copy"]
        assert ranking.group["truth"] < ranking.group["random"]
        orderings.append(significant)
    for first, second in itertools.combinations(orderings, 2):
        assert not {(b, a) for a, b in first} & second


def test_the_stated_detectable_difference_is_detected_80_percent_of_the_time() -> None:
    """Paired samples whose true mean difference equals the minimum detectable difference computed from the standard
    error: the bootstrap test at 5 % rejects in about 80 % of 300 replications."""
    n_samples, spread = 40, 1.0
    difference = minimum_detectable_difference(spread / np.sqrt(n_samples), comparisons=1)
    weights = resample_weights(n_samples, 1000, seed=5)
    rejected = 0
    rng = np.random.default_rng(11)
    for _ in range(300):
        shared = rng.standard_normal(n_samples) * 3
        values = np.stack([shared + difference + spread * rng.standard_normal(n_samples), shared], axis=1)
        rejected += paired_p_values(weights @ values)[0, 1] < 0.05
    assert 0.72 <= rejected / 300 <= 0.88


# ------------------------------------------------------------------------------------------------ verdict rules


@pytest.mark.parametrize(
    "rule, cases",
    [
        # a ratio that must fall ("at least halves": ≤ 0.5, interval below 1)
        (
            Rule("ratio", "below", 0.5, 1.0),
            {"yes": (0.3, 0.2, 0.45), "no": (0.96, 0.9, 1.02), "inconclusive": (0.45, 0.2, 1.3)},
        ),
        # a ratio that must stay up ("keeps at least half": ≥ 0.5, interval above 0)
        (
            Rule("ratio", "above", 0.5, 0.0),
            {"yes": (0.8, 0.3, 1.1), "no": (0.1, -0.05, 0.3), "inconclusive": (0.4, -0.2, 0.9)},
        ),
        # an accuracy bar with chance as no effect (≥ 0.95, interval above 0.5)
        (
            Rule("accuracy", "above", 0.95, 0.5),
            {"yes": (0.97, 0.93, 0.99), "no": (0.80, 0.77, 0.83), "inconclusive": (0.90, 0.68, 0.99)},
        ),
        # a bar (non-inferiority: the whole interval above −0.03)
        (
            Rule("difference", "above", -0.03, -0.03),
            {"yes": (0.01, -0.02, 0.04), "no": (-0.10, -0.15, -0.05), "inconclusive": (0.0, -0.08, 0.08)},
        ),
        # a bar below (agreement within 0.10)
        (
            Rule("gap", "below", 0.10, 0.10),
            {"yes": (0.05, 0.04, 0.07), "no": (0.3, 0.25, 0.35), "inconclusive": (0.08, 0.05, 0.12)},
        ),
    ],
)
def test_every_kind_of_rule_gives_yes_no_and_inconclusive(rule: Rule, cases: dict) -> None:
    for verdict, (value, low, high) in cases.items():
        assert rule.judge(Estimate(value, low, high)) == verdict, (rule.text, verdict)
    assert rule.judge(Estimate(0.3, np.nan, np.nan)) == "inconclusive"  # no interval: cannot tell


def test_an_effect_smaller_than_the_rule_is_never_a_yes() -> None:
    """The issue's case: entanglement 0.55 → 0.53 (a 4 % reduction) on a tight interval is no, not yes."""
    rule = Rule("entanglement with / without", "below", 0.75, 1.0)
    assert rule.judge(Estimate(0.53 / 0.55, 0.93, 0.99)) == "no"
    for value in np.linspace(0.751, 1.5, 30):  # whatever the interval, short of the minimum effect is never yes
        assert rule.judge(Estimate(value, value - 0.5, min(value + 0.01, 0.999))) != "yes"


def test_a_claim_holds_only_when_every_part_does() -> None:
    rule = Rule("ratio", "below", 0.5, 1.0)
    parts = {
        verdict: Part(verdict, Estimate(*values), rule)
        for verdict, values in {"yes": (0.3, 0.2, 0.4), "no": (0.9, 0.8, 0.95), "inconclusive": (0.4, 0.2, 1.2)}.items()
    }
    assert [parts[v].verdict for v in parts] == ["yes", "no", "inconclusive"]
    assert combine(["yes", "yes"]) == "yes" and combine(["yes", "inconclusive"]) == "inconclusive"
    assert combine(["yes", "inconclusive", "no"]) == "no" and combine([]) == "n/a"
    with pytest.raises(ValueError, match="wrong side"):
        Rule("ratio", "below", 1.5, 1.0)


def test_the_summary_line_gives_our_estimates_with_their_intervals() -> None:
    """REPRODUCTION.md's summary table shows ours beside the verdict: each part's estimate and interval, or with many
    parts how many got each verdict."""
    rule = Rule("ratio", "below", 0.5, 1.0)
    part = {
        label: Part(label, Estimate(*values), rule)
        for label, values in {
            "age": (0.3, 0.2, 0.4),
            "happy": (0.9, 0.8, 0.95),
            "male": (0.4, 0.2, 1.2),
            "yaw": (0.1, 0.05, 0.2),
        }.items()
    }
    claim = Claim("c", "paper", "text", "0.1", (rule,), parts=(part["age"], part["happy"]))
    assert claim.estimates_text == "age: 0.30 [0.20, 0.40]; happy: 0.90 [0.80, 0.95]"
    claim = Claim("c", "paper", "text", "0.1", (rule,), parts=tuple(part.values()))
    assert claim.estimates_text == "4 parts: 2 yes, 1 no, 1 inconclusive"
    assert Claim("c", "paper", "text", "0.1", (rule,)).estimates_text == "not measured"
