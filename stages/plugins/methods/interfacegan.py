"""InterFaceGAN (Shen, Gu, Tang & Zhou, "Interpreting the Latent Space of GANs for Semantic Face Editing",
CVPR 2020): a linear SVM boundary per attribute; its unit normal is the direction.

For one attribute with scores s over N latents (InterFaceGAN Sec. 3, "implementation details"; official code
``utils/manipulator.py: train_boundary``):

1. sort the samples by s; the top ``ratio``·N are positives, the bottom ``ratio``·N negatives (paper: 10K + 10K of
   500K, i.e. ratio 0.02 — this drops the ambiguous middle);
2. split each side 70/30 (seeded) into train / validation;
3. fit a linear SVM ``sign(nᵀz + b)`` on the training part; the direction is ``n / ‖n‖`` (it points towards the
   high scores);
4. separability (Sec. 3.1, Fig. 2): accuracy on the validation part, and on all *remaining* (middle) samples labelled
   by thresholding s at the midpoint of the extreme scores, ``(max s + min s) / 2``, as the official code does
   (``remaining_threshold="median"`` uses the median instead).

Continuous attributes (age, pose) use the same rule. The official code uses ``sklearn.svm.SVC(kernel="linear")``,
whose cost grows quadratically (or worse) with the number of samples. Here the default solver is liblinear's
``LinearSVC`` with the squared hinge loss solved in the primal (linear time, converges in a few Newton steps);
``loss="hinge"`` gives SVC's exact objective (hinge loss, L2 penalty, same C) by dual coordinate descent. Both differ
from SVC in that liblinear also penalises the intercept (through ``intercept_scaling``); ``bench/bench_svm.py``
measures the resulting normals against SVC's (cosine ≥ 0.99). ``solver="svc"`` reproduces the official code
exactly, for small data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.svm import SVC, LinearSVC

from stages.latent.directions import DirectionSet
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec, supervised_inputs, unit

METHOD = "interfacegan"


class InterFaceGANParams(BaseModel):
    """Parameters of :func:`fit_interfacegan` (defaults from the paper and its official code)."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field("z", description="latent space to fit in (a key of context.latents: 'z', or 'w')")
    ratio: float = Field(
        0.02,
        gt=0,
        le=0.5,
        description="fraction of samples taken from each end of the score "
        "ranking as positives / negatives (paper: 10K of 500K)",
    )
    split_ratio: float = Field(
        0.7, gt=0, lt=1, description="fraction of the chosen samples used for training; the rest is the validation set"
    )
    C: float = Field(
        1.0, gt=0, description="SVM regularisation (inverse strength); sklearn's and the official code's default"
    )
    solver: Literal["linear_svc", "svc"] = Field(
        "linear_svc",
        description="'linear_svc': liblinear LinearSVC (linear time; see loss); 'svc': libsvm "
        "SVC(kernel='linear') as in the official code (quadratic, small data only)",
    )
    loss: Literal["squared_hinge", "hinge"] = Field(
        "squared_hinge",
        description="LinearSVC loss: 'squared_hinge' is solved in the primal (trust-region Newton, "
        "a handful of iterations, right for N >> D); 'hinge' is SVC's exact objective, "
        "solved in the dual (slower to converge on overlapping classes)",
    )
    max_iter: int = Field(100_000, ge=1, description="iteration cap of the LinearSVC solver")
    tol: float = Field(1e-4, gt=0, description="stopping tolerance of the solver")
    remaining_threshold: Literal["midrange", "median"] = Field(
        "midrange",
        description="how the remaining (middle) samples are labelled for the separability accuracy: "
        "'midrange' = (max + min score) / 2 as the official code; 'median' = the median "
        "score of all valid samples (robust for continuous attributes with outliers)",
    )
    min_per_side: int = Field(10, ge=2, description="fewest chosen samples per side; fewer is an input error")
    seed: int = Field(0, description="seed of the train/validation shuffle")


def make_classifier(params: InterFaceGANParams) -> LinearSVC | SVC:
    """The (unfitted) sklearn SVM that ``params`` asks for."""
    if params.solver == "svc":
        return SVC(kernel="linear", C=params.C, tol=max(params.tol, 1e-3))
    return LinearSVC(
        C=params.C,
        loss=params.loss,
        dual=params.loss == "hinge",
        fit_intercept=True,
        max_iter=params.max_iter,
        tol=params.tol,
        random_state=params.seed,
    )


@dataclass(frozen=True)
class Selection:
    """InterFaceGAN's sample selection for one attribute: indices into the (N,) scores, labels 1 = high score."""

    train_idx: np.ndarray
    train_y: np.ndarray
    val_idx: np.ndarray
    val_y: np.ndarray
    remaining_idx: np.ndarray
    remaining_y: np.ndarray
    info: dict[str, Any]


def select_samples(scores: np.ndarray, params: InterFaceGANParams, attribute: str = "attribute") -> Selection:
    """Steps 1–2 and the remaining-set labels of the module docstring, on (N,) scores (non-finite ones skipped).

    Raises:
        MethodInputError: too few valid samples for ``ratio``, a split leaving a part empty, or tied extremes.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    valid = np.flatnonzero(np.isfinite(scores))
    n = valid.size
    chosen = min(int(n * params.ratio), n // 2)
    if chosen < params.min_per_side:
        raise MethodInputError(
            f"{METHOD}: {attribute!r}: ratio {params.ratio} of {n} valid samples gives {chosen} "
            f"per side, fewer than min_per_side={params.min_per_side}; sample more latents or "
            f"raise the ratio"
        )
    order = valid[np.argsort(-scores[valid], kind="stable")]  # indices, descending score
    ranked = scores[order]
    if ranked[chosen - 1] <= ranked[n - chosen]:
        raise MethodInputError(
            f"{METHOD}: {attribute!r}: the top and bottom {chosen} scores overlap (lowest chosen "
            f"positive {ranked[chosen - 1]:.4g} <= highest chosen negative "
            f"{ranked[n - chosen]:.4g}); the attribute is too often tied to separate"
        )
    train_num = int(chosen * params.split_ratio)
    if train_num < 1 or chosen - train_num < 1:
        raise MethodInputError(
            f"{METHOD}: {attribute!r}: {chosen} per side cannot be split {params.split_ratio} "
            f"into non-empty train and validation parts"
        )
    rng = np.random.default_rng(params.seed)
    positive = order[:chosen][rng.permutation(chosen)]
    negative = order[n - chosen :][rng.permutation(chosen)]
    remaining_idx = order[chosen : n - chosen]
    decision_value = (ranked[0] + ranked[-1]) / 2 if params.remaining_threshold == "midrange" else np.median(ranked)
    ones = lambda k: np.ones(k, dtype=np.int64)  # noqa: E731
    return Selection(
        train_idx=np.concatenate([positive[:train_num], negative[:train_num]]),
        train_y=np.concatenate([ones(train_num), 0 * ones(train_num)]),
        val_idx=np.concatenate([positive[train_num:], negative[train_num:]]),
        val_y=np.concatenate([ones(chosen - train_num), 0 * ones(chosen - train_num)]),
        remaining_idx=remaining_idx,
        remaining_y=(scores[remaining_idx] >= decision_value).astype(np.int64),
        info={
            "n_samples": int(n),
            "n_invalid": int(scores.size - n),
            "n_per_side": int(chosen),
            "n_train": 2 * train_num,
            "n_val": 2 * (chosen - train_num),
            "n_remaining": int(remaining_idx.size),
            "positive_threshold": float(ranked[chosen - 1]),
            "negative_threshold": float(ranked[n - chosen]),
            "decision_value": float(decision_value),
        },
    )


def _accuracy(
    latents: np.ndarray, index: np.ndarray, truth: np.ndarray, coef: np.ndarray, intercept: float, chunk: int = 65536
) -> float | None:
    """Accuracy of ``sign(coef·z + intercept)`` on ``latents[index]``, in chunks (bounded memory)."""
    if index.size == 0:
        return None
    correct = 0
    for start in range(0, index.size, chunk):
        rows = index[start : start + chunk]
        predicted = (latents[rows].astype(np.float64) @ coef + intercept > 0).astype(np.int64)
        correct += int(np.sum(predicted == truth[start : start + chunk]))
    return correct / index.size


def fit_attribute(
    latents: np.ndarray, scores: np.ndarray, params: InterFaceGANParams, attribute: str = "attribute"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the InterFaceGAN boundary for one attribute.

    Args:
        latents: (N, D) latents.
        scores: (N,) attribute scores (any real values; non-finite ones are dropped, like the official code's
            ``invalid_value``).
        params: the method parameters.
        attribute: name used in error messages.

    Returns:
        ``(vector, stats)``: the (D,) float32 unit normal, pointing towards high scores; stats with
        ``val_accuracy``, ``remaining_accuracy`` (the paper's separability on the rest of the data), the counts,
        the score thresholds and the SVM's intercept (for the unit normal).

    Raises:
        MethodInputError: mismatched shapes, too few samples for ``ratio``, or extremes that do not differ.
    """
    latents = np.asarray(latents)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if latents.ndim != 2 or latents.shape[0] != scores.shape[0]:
        raise MethodInputError(
            f"{METHOD}: {attribute!r}: latents {latents.shape} and scores {scores.shape} do not "
            f"align (expected (N, D) and (N,))"
        )
    selection = select_samples(scores, params, attribute)
    classifier = make_classifier(params).fit(latents[selection.train_idx].astype(np.float64), selection.train_y)
    coef = np.asarray(classifier.coef_, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(coef))
    if not np.isfinite(norm) or norm == 0:
        raise MethodInputError(f"{METHOD}: {attribute!r}: the SVM found no boundary (zero normal)")
    intercept = float(np.asarray(classifier.intercept_).reshape(-1)[0])
    stats: dict[str, Any] = {
        "train_accuracy": _accuracy(latents, selection.train_idx, selection.train_y, coef, intercept),
        "val_accuracy": _accuracy(latents, selection.val_idx, selection.val_y, coef, intercept),
        "remaining_accuracy": _accuracy(latents, selection.remaining_idx, selection.remaining_y, coef, intercept),
        **selection.info,
        "n_remaining_positive": int(selection.remaining_y.sum()),
        "intercept": intercept / norm,  # offset of the unit-normal hyperplane: nᵀz + intercept = 0
        "solver": params.solver if params.solver == "svc" else f"linear_svc/{params.loss}",
        "solver_iterations": int(np.max(classifier.n_iter_)),
    }
    return unit(coef), stats


def build_direction_set(
    results: dict[str, tuple[np.ndarray, dict[str, Any]]], params: InterFaceGANParams, input_fingerprint: str = ""
) -> DirectionSet:
    """Assemble per-attribute :func:`fit_attribute` results (e.g. from parallel tasks), in the given order."""
    names = list(results)
    return DirectionSet(
        method=METHOD,
        space=params.space,
        names=names,
        vectors=np.stack([results[name][0] for name in names]),
        stats={name: results[name][1] for name in names},
        meta={"params": params.model_dump(), "input_fingerprint": input_fingerprint},
    )


def fit_interfacegan(context: FitContext, params: InterFaceGANParams) -> DirectionSet:
    """One boundary normal per attribute in ``context.attributes``, each fitted independently
    (:func:`fit_attribute`)."""
    latents = supervised_inputs(context, METHOD, params.space)
    results = {}
    for step, attribute in enumerate(context.attributes):
        results[attribute] = fit_attribute(latents, context.labels[attribute].to_numpy(), params, attribute)
        context.progress(step + 1, len(context.attributes), {"val_accuracy": results[attribute][1]["val_accuracy"]})
    return build_direction_set(results, params, context.input_fingerprint)


@METHODS.register(METHOD)
def interfacegan_spec() -> MethodSpec:
    return MethodSpec(params_model=InterFaceGANParams, fit=fit_interfacegan, supervised=True, separable=True)
