"""TunaGAN (Mao, Lou, Yuan, "TunaGAN: Interpretable GAN for Smart Editing"): linear and
nonlinear models from the latent space to each attribute, in z or (when the generator has one) w.

Per attribute a, with latents x (N, D) of the chosen ``space`` and scores s (N,) (Sec. 4.2):

- **binary** attributes (``binary_attributes`` when given; otherwise any attribute whose values all lie in [0, 1])
  are thresholded, y = [s ≥ ``binary_threshold``], and modelled by logistic regression (linear) or by a 2-layer MLP
  with a logit output and BCE loss (nonlinear);
- **continuous** attributes are standardised and modelled by linear regression, or the MLP with an MSE loss.

The MLP is ``Linear(D, H) → ReLU → Dropout(p) → Linear(H, 1)`` ("a two-layer NN ... with dropout as
regularization"). Data are split 80/20 into train / validation (Sec. 3).

Directions. Linear: the unit weight vector w / ‖w‖ (increasing the attribute). Nonlinear: each sample follows its
own normalised gradient ∇f(x) / ‖∇f(x)‖ of the MLP output (logit, or standardised value) — a path, not a vector
(Sec. 4.2 and Fig. 7; :func:`stages.latent.editing.edit` does this when given :func:`stages.latent.fields.load_model`'s
module). The MLP's state dict is saved beside the directions (``meta["models"][a]["file"]``, listed in
``meta["extra_files"]``), and the attribute's ``vectors`` row is the normalised mean of the per-sample unit gradients
over the training latents, for consumers that need one vector; ``stats[a]["gradient_coherence"]`` = ‖mean unit gradient‖
says how well one vector stands for the path (1 = every sample moves the same way).

Separability score (Sec. 5.2, Table 1): ``SS = exp(H(Y | Ŷ))``, the exponential of the conditional entropy (in nats)
of the true labels given the model's predicted labels, on the validation split; the overall score is
``exp(Σ_a H_a)`` = the product of the per-attribute scores (Table 1's "Overall" column is that product). SS = 1 is
perfect separability, and it is at most the number of classes (2 for a binary attribute); the paper's "minimum value
0" contradicts its own exp(·). Continuous attributes are discretised for SS into ``separability_bins`` quantile bins
of the training targets (true and predicted values share the bin edges). The paper used an SVM for its linear SS;
we use the same linear models as for the directions (logistic / least squares).

Deviations: the paper's "embedding network" that turns trajectory finding into gradient descent is replaced by
direct normalised-gradient steps on the latent (the same path, without training a second network); the MLP width,
dropout rate and optimiser settings are not given in the paper and are ours.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LinearRegression, LogisticRegression
from torch import nn

from stages.latent.directions import DirectionSet, concatenate_direction_sets
from stages.latent.fields import AttributeMLP
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec, supervised_inputs, unit

METHOD = "tunagan"


class TunaGANParams(BaseModel):
    """Parameters of :func:`fit_tunagan` (split and architecture from the paper; training settings are ours)."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field("z", description="latent space to fit in: 'z', or 'w' when context.latents has it")
    model: Literal["linear", "nonlinear"] = Field(
        "nonlinear",
        description="'linear': logistic / linear regression, one vector per attribute; 'nonlinear': "
        "2-layer MLP, per-sample gradient paths (plus their mean as the vector)",
    )
    binary_attributes: list[str] | None = Field(
        None, description="attributes to treat as binary; None = every attribute whose values all lie in [0, 1]"
    )
    binary_threshold: float = Field(0.5, description="binary label y = [score >= threshold]")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="validation fraction (paper: 80/20 split)")
    logistic_C: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic regression (sklearn default)")
    max_iter: int = Field(1000, ge=1, description="iteration cap of the logistic regression")
    hidden_dim: int = Field(256, ge=1, description="MLP hidden width")
    dropout: float = Field(0.2, ge=0, lt=1, description="MLP dropout rate (after the hidden ReLU)")
    epochs: int = Field(30, ge=1, description="MLP training epochs")
    lr: float = Field(1e-3, gt=0, description="MLP Adam learning rate")
    batch_size: int = Field(256, ge=1, description="MLP mini-batch size")
    weight_decay: float = Field(0.0, ge=0, description="MLP Adam weight decay")
    separability_bins: int = Field(
        2, ge=2, description="quantile bins used to discretise continuous attributes for the separability score"
    )
    min_samples: int = Field(
        20,
        ge=4,
        description="fewest valid samples per attribute; each binary class needs "
        "max(2, min_samples // 10) training samples",
    )
    seed: int = Field(0, description="seed of the split, initialisation, dropout and batch order")


def attribute_kind(scores: np.ndarray, attribute: str, params: TunaGANParams) -> str:
    """``"binary"`` or ``"continuous"`` by the rule in the module docstring."""
    if params.binary_attributes is not None:
        return "binary" if attribute in params.binary_attributes else "continuous"
    finite = scores[np.isfinite(scores)]
    return "binary" if finite.size and finite.min() >= 0 and finite.max() <= 1 else "continuous"


def separability_score(true_labels: np.ndarray, predicted_labels: np.ndarray) -> float:
    """``exp(H(Y | Ŷ))`` in nats from paired discrete labels (TunaGAN Sec. 5.2); 1 = perfectly separable."""
    true_labels, predicted_labels = np.asarray(true_labels), np.asarray(predicted_labels)
    if true_labels.shape != predicted_labels.shape or true_labels.size == 0:
        raise ValueError("separability_score needs two non-empty label arrays of the same shape")
    _, y = np.unique(true_labels, return_inverse=True)
    _, x = np.unique(predicted_labels, return_inverse=True)
    joint = np.zeros((x.max() + 1, y.max() + 1))
    np.add.at(joint, (x, y), 1.0)
    joint /= joint.sum()
    p_x = joint.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / p_x), 0.0)
    return float(np.exp(-terms.sum()))


def _split(n: int, params: TunaGANParams) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(params.seed).permutation(n)
    n_val = max(1, int(round(n * params.val_fraction)))
    return order[n_val:], order[:n_val]


def _train_mlp(
    x: torch.Tensor, target: torch.Tensor, model: AttributeMLP, params: TunaGANParams, generator: torch.Generator
) -> float:
    loss_fn = nn.BCEWithLogitsLoss() if model.kind == "binary" else nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(params.epochs):
        permutation = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], params.batch_size):
            batch = permutation[start : start + params.batch_size].to(x.device)
            loss = loss_fn(model(x[batch], generator=generator), target[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return float(loss.detach())


def mean_unit_gradient(model: AttributeMLP, latents: torch.Tensor, chunk: int = 4096) -> tuple[np.ndarray, float]:
    """The unit (D,) mean of the per-sample unit gradients, and ``gradient_coherence`` = the mean's norm (≤ 1)."""
    total = torch.zeros(latents.shape[1], dtype=torch.float64)
    for start in range(0, latents.shape[0], chunk):
        grad = model.gradient(latents[start : start + chunk]).double().cpu()
        total += (grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)).sum(dim=0)
    mean = (total / latents.shape[0]).numpy()
    coherence = float(np.linalg.norm(mean))
    if coherence == 0:
        raise MethodInputError(f"{METHOD}: the MLP's gradients vanish or cancel out; no mean direction")
    return mean / coherence, coherence


@dataclass(frozen=True)
class AttributeTarget:
    """One attribute's valid scores prepared for fitting: its kind, the train/validation split, and what the
    validation split is judged on (classes for a binary attribute, quantile bins of the value for a continuous one).

    Attributes:
        kind: ``"binary"`` or ``"continuous"``.
        scores: (N,) valid scores.
        train_idx, val_idx: the split's row indices.
        labels: (N,) 0/1 classes (binary), else None.
        target_mean, target_scale: standardisation of a continuous target (0 and 1 for binary).
        edges: separability bin edges of a continuous attribute (from the training split), else None.
    """

    kind: str
    scores: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    labels: np.ndarray | None
    target_mean: float
    target_scale: float
    edges: np.ndarray | None

    @property
    def binary(self) -> bool:
        return self.kind == "binary"

    def training_values(self) -> np.ndarray:
        """(N,) what an MLP regresses: the classes, or the standardised value."""
        return self.labels if self.binary else (self.scores - self.target_mean) / self.target_scale

    def validation_stats(self, predicted: np.ndarray) -> dict[str, Any]:
        """``val_accuracy`` (binary; ``predicted`` are classes) or ``val_r2`` (continuous; predicted values), and
        the separability score of the validation split."""
        if self.binary:
            truth = self.labels[self.val_idx]
            return {
                "val_accuracy": float(np.mean(predicted == truth)),
                "separability": separability_score(truth, predicted),
            }
        observed = self.scores[self.val_idx]
        residual = np.sum((observed - predicted) ** 2)
        total = np.sum((observed - observed.mean()) ** 2)
        return {
            "val_r2": float(1 - residual / total) if total > 0 else None,
            "separability": separability_score(np.digitize(observed, self.edges), np.digitize(predicted, self.edges)),
        }


def _valid_inputs(
    latents: np.ndarray, scores: np.ndarray, params: TunaGANParams, attribute: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """(N, D) latents and (N,) finite scores as float64, and how many non-finite ones were dropped."""
    latents = np.asarray(latents, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if latents.ndim != 2 or latents.shape[0] != scores.shape[0]:
        raise MethodInputError(
            f"{METHOD}: {attribute!r}: latents {latents.shape} and scores {scores.shape} do not "
            f"align (expected (N, D) and (N,))"
        )
    valid = np.isfinite(scores)
    if int(valid.sum()) < params.min_samples:
        raise MethodInputError(
            f"{METHOD}: {attribute!r}: {int(valid.sum())} valid samples, fewer than min_samples={params.min_samples}"
        )
    return latents[valid], scores[valid], int((~valid).sum())


def prepare_target(scores: np.ndarray, params: TunaGANParams, attribute: str) -> AttributeTarget:
    """The attribute's kind, split and validation truth (see :class:`AttributeTarget`)."""
    kind = attribute_kind(scores, attribute, params)
    train_idx, val_idx = _split(scores.size, params)
    if kind == "binary":
        labels = (scores >= params.binary_threshold).astype(np.int64)
        counts = np.bincount(labels[train_idx], minlength=2)
        if counts.min() < max(2, params.min_samples // 10):
            raise MethodInputError(
                f"{METHOD}: {attribute!r}: thresholding at {params.binary_threshold} leaves "
                f"{counts.tolist()} (negative, positive) training samples; a binary model needs "
                f"both classes (declare it continuous or change binary_threshold)"
            )
        return AttributeTarget(kind, scores, train_idx, val_idx, labels, 0.0, 1.0, None)
    target_mean, target_scale = float(scores[train_idx].mean()), float(scores[train_idx].std())
    if target_scale == 0:
        raise MethodInputError(f"{METHOD}: {attribute!r}: constant on the training split")
    edges = np.quantile(scores[train_idx], np.linspace(0, 1, params.separability_bins + 1)[1:-1])
    return AttributeTarget(kind, scores, train_idx, val_idx, None, target_mean, target_scale, edges)


def _fit_linear(
    latents: np.ndarray, target: AttributeTarget, params: TunaGANParams, attribute: str
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic (binary) or least-squares (continuous) regression: the unit (D,) weight vector and the validation
    predictions (classes or values)."""
    train, val = target.train_idx, target.val_idx
    if target.binary:
        classifier = LogisticRegression(C=params.logistic_C, max_iter=params.max_iter)
        classifier.fit(latents[train], target.labels[train])
        weight, predicted = classifier.coef_.reshape(-1), classifier.predict(latents[val])
    else:
        regression = LinearRegression().fit(latents[train], target.scores[train])
        weight, predicted = regression.coef_.reshape(-1), regression.predict(latents[val])
    if not np.linalg.norm(weight) > 0:
        raise MethodInputError(f"{METHOD}: {attribute!r}: the linear model has a zero weight vector")
    return unit(weight), predicted


def _fit_mlp(
    latents: np.ndarray, target: AttributeTarget, params: TunaGANParams, device: torch.device
) -> tuple[np.ndarray, np.ndarray, AttributeMLP, dict[str, float]]:
    """TunaGAN's 2-layer MLP: the unit mean of its per-sample unit gradients, the validation predictions, the
    trained model (on the CPU) and its ``final_train_loss`` and ``gradient_coherence``."""
    generator = torch.Generator().manual_seed(params.seed)
    model = AttributeMLP(
        latents.shape[1],
        params.hidden_dim,
        params.dropout,
        target.kind,
        target.target_mean,
        target.target_scale,
        params.binary_threshold,
    )
    model.reset_parameters(generator)
    model.to(device)
    x = torch.as_tensor(latents, dtype=torch.float32, device=device)
    values = torch.as_tensor(target.training_values(), dtype=torch.float32, device=device)
    stats = {"final_train_loss": _train_mlp(x[target.train_idx], values[target.train_idx], model, params, generator)}
    prediction = model.predict(x[target.val_idx]).cpu().numpy().astype(np.float64)
    predicted = (prediction >= 0.5).astype(np.int64) if target.binary else prediction
    mean_direction, stats["gradient_coherence"] = mean_unit_gradient(model, x[target.train_idx])
    return unit(mean_direction), predicted, model.cpu(), stats


def fit_attribute(
    latents: np.ndarray,
    scores: np.ndarray,
    params: TunaGANParams,
    attribute: str = "attribute",
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, dict[str, Any], AttributeMLP | None]:
    """Fit TunaGAN's model for one attribute.

    Args:
        latents: (N, D) latents of ``params.space``.
        scores: (N,) attribute scores (non-finite ones are dropped).
        params: the method parameters (``params.model`` picks linear or nonlinear).
        attribute: its name (for ``binary_attributes`` and messages).
        device: torch device for the MLP.

    Returns:
        ``(vector, stats, model)``: the unit (D,) float32 direction; stats with ``kind``, ``separability``,
        ``val_accuracy`` (binary) or ``val_r2`` (continuous), counts, and for the MLP ``gradient_coherence``;
        ``model`` is the trained :class:`AttributeMLP` (None for the linear model).

    Raises:
        MethodInputError: shape mismatch, too few samples, or a single class after thresholding.
    """
    latents, scores, n_invalid = _valid_inputs(latents, scores, params, attribute)
    target = prepare_target(scores, params, attribute)
    stats: dict[str, Any] = {
        "kind": target.kind,
        "model": params.model,
        "n_train": int(target.train_idx.size),
        "n_val": int(target.val_idx.size),
        "n_invalid": n_invalid,
    }
    if target.binary:
        stats["positive_fraction"] = float(target.labels.mean())
    model: AttributeMLP | None = None
    if params.model == "linear":
        vector, predicted = _fit_linear(latents, target, params, attribute)
    else:
        vector, predicted, model, training = _fit_mlp(latents, target, params, torch.device(device))
        stats.update(training)
    stats.update(target.validation_stats(predicted))
    return vector, stats, model


def _file_name(attribute: str, index: int) -> str:
    return f"mlp_{index:03d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', attribute)}.pt"


def build_direction_set(
    results: dict[str, tuple[np.ndarray, dict[str, Any], AttributeMLP | None]],
    params: TunaGANParams,
    input_fingerprint: str = "",
) -> DirectionSet:
    """Assemble per-attribute :func:`fit_attribute` results (e.g. from parallel tasks) into one DirectionSet."""
    names = list(results)
    extras: dict[str, bytes] = {}
    models: dict[str, dict[str, Any]] = {}
    for index, (name, (_, _, model)) in enumerate(results.items()):
        if model is not None:
            buffer = io.BytesIO()
            torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, buffer)
            models[name] = {"file": _file_name(name, index), **model.config()}
            extras[models[name]["file"]] = buffer.getvalue()
    log_total = float(sum(np.log(results[name][1]["separability"]) for name in names))
    meta = {
        "params": params.model_dump(),
        "input_fingerprint": input_fingerprint,
        "separability_overall": float(np.exp(log_total)),
    }
    if models:
        meta["models"] = models
    return DirectionSet(
        method=METHOD,
        space=params.space,
        names=names,
        vectors=np.stack([results[name][0] for name in names]),
        stats={name: results[name][1] for name in names},
        meta=meta,
        extras=extras,
    )


def fit_tunagan(context: FitContext, params: TunaGANParams) -> DirectionSet:
    """One model per attribute in ``context.attributes`` (independent fits, :func:`fit_attribute`)."""
    latents = supervised_inputs(context, METHOD, params.space)
    unknown = sorted(set(params.binary_attributes or []) - set(context.attributes))
    if unknown:
        raise MethodInputError(
            f"{METHOD}: binary_attributes {unknown} are not among the attributes {list(context.attributes)}"
        )
    results = {}
    for step, attribute in enumerate(context.attributes):
        results[attribute] = fit_attribute(
            latents, context.labels[attribute].to_numpy(), params, attribute, device=context.device
        )
        context.progress(step + 1, len(context.attributes), {"separability": results[attribute][1]["separability"]})
    return build_direction_set(results, params, context.input_fingerprint)


def combine_tunagan(parts: list[DirectionSet]) -> DirectionSet:
    """Join per-attribute TunaGAN sets (fitted as parallel tasks): directions and model files concatenated, the
    model index merged, and the overall separability recomputed as the product of the per-attribute scores."""
    joined = concatenate_direction_sets(parts)
    meta = {key: value for key, value in parts[0].meta.items() if key not in ("models", "extra_files")}
    meta["separability_overall"] = float(
        np.exp(sum(np.log(joined.stats[name]["separability"]) for name in joined.names))
    )
    models = {name: entry for part in parts for name, entry in part.meta.get("models", {}).items()}
    if models:
        meta["models"] = models
    joined.meta = meta
    return joined


class TunaGANLinearParams(TunaGANParams):
    """TunaGAN's linear models (logistic / linear regression), as their own method for side-by-side comparison."""

    model: Literal["linear", "nonlinear"] = Field(
        "linear", description="'linear' (the default of this entry) or 'nonlinear'"
    )


@METHODS.register(METHOD)
def tunagan_spec() -> MethodSpec:
    return MethodSpec(
        params_model=TunaGANParams, fit=fit_tunagan, supervised=True, separable=True, combine=combine_tunagan
    )


@METHODS.register(f"{METHOD}-linear")
def tunagan_linear_spec() -> MethodSpec:
    return MethodSpec(
        params_model=TunaGANLinearParams, fit=fit_tunagan, supervised=True, separable=True, combine=combine_tunagan
    )
