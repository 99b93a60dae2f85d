"""Supervised linear mapping with orthogonality regularisation (Pham Van et al., "Interpreting the Latent Space of
Generative Adversarial Networks using Supervised Learning", 2020).

One linear map from the latent space to all A attributes at once (Sec. III-B, Eq. 1 and 4)::

    ŷ = z Wᵀ + b                         z (N, D), W (A, D), b (A,), ŷ (N, A)
    J(W, b) = MSE(ŷ, y) + λ ‖Ĝ − I_A‖²_F      λ = 2 (Sec. IV-C-1)

Direction i is row i of W, normalised: moving z along w_i changes ŷ_j by α w_jᵀ w_i (Eq. 2–3), so the penalty,
which pushes the rows towards orthogonality, makes editing attribute i leave the others alone. The paper's Table III
(the cosine between "Young" and every other attribute's row, with and without the penalty) is stored in
``meta["cosine_similarity"]``; :func:`compare_regularisation` reproduces that comparison for λ vs 0, and the report
builds it from a λ = 0 entry (``fit.variants``) beside the λ > 0 one (:mod:`stages.reporting.reproduction`).

Where this follows the paper and where it deviates:

- **Which matrix.** The paper writes ``‖wᵀw − I‖`` with ``f_w ∈ R^{512×40}``, i.e. its w is our Wᵀ (D, A), so wᵀw is
  the (A, A) Gram matrix of the attribute rows, ``W Wᵀ``. (``WᵀW`` is (D, D) of rank ≤ A < D: it can never equal
  I_D, so that reading would be a constant pull, not an orthogonality constraint.)
- **Which Gram matrix** (``penalty``). Taken literally (``penalty="gram_identity"``, G = W Wᵀ), the penalty also
  pins every row to unit norm. But the least-squares row of a standardised attribute has norm √R² (its multiple
  correlation with z ~ N(0, I)), so for any attribute that z explains only partly the literal penalty fights the
  data term: it inflates the row to norm 1, the predictions' variance to 1, and the MSE beyond the variance — a
  negative R², i.e. a "direction" worse than predicting the mean (the default run's ``age`` and ``male`` had
  r2_train −0.32 and −0.07 at λ = 2). The paper's intent (Sec. III-B and Table III) is decorrelated *directions*
  ("to penalize similar coefficients", measured by cosine), not unit-norm rows, so the default
  (``penalty="normalized_gram"``) penalises the Gram matrix of the normalised rows, Ĝ = D⁻¹ W Wᵀ D⁻¹ with
  D = diag(‖w_i‖): its diagonal is 1, so ‖Ĝ − I‖²_F = Σ_{i≠j} cos²(w_i, w_j), and each row keeps the scale its
  attribute needs. With λ = 0 both are plain least squares.
- **Which norm.** Eq. 4 leaves ‖·‖ unspecified; it cites Bansal et al. 2018 (ref. [9]), whose "soft orthogonality"
  regulariser is the squared Frobenius norm, used here (``penalty_norm="frobenius"`` gives the plain norm).
- **Targets are standardised** (each attribute to zero mean, unit variance on the training split; default
  ``standardize_targets=True``). The paper's targets are 40 classifier probabilities in [0, 1] and it does not
  standardise. We deviate because our labelers mix scales (probabilities, degrees of pose, years of age): raw MSE
  would be dominated by the large-scale attributes. Directions are unaffected by a per-attribute rescaling when
  λ = 0; R² is reported in the original units (it is scale-free), on the training and the held-out split.
- **Latents are not standardised** (they are N(0, I) in z; in w the directions must stay in w's own coordinates).
- The mapping is fitted jointly for all attributes (the penalty couples them), so unlike the other supervised methods
  there is no independent per-attribute fit; :func:`fit_mapping` is the array-level entry point.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from stages.latent.directions import DirectionSet
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec, supervised_inputs, unit

METHOD = "ortho-linear"


class OrthoLinearParams(BaseModel):
    """Parameters of :func:`fit_ortho_linear` (λ = 2 from the paper; the paper gives no training settings: ours)."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field("z", description="latent space to fit in (a key of context.latents)")
    lam: float = Field(2.0, ge=0, description="weight λ of the orthogonality penalty (paper: 2); 0 = least squares")
    penalty: Literal["normalized_gram", "gram_identity"] = Field(
        "normalized_gram",
        description="'normalized_gram': ‖Ĝ − I‖ on the Gram matrix of the normalised rows (the "
        "cosines between directions; rows keep their scale); 'gram_identity': the "
        "literal ‖W Wᵀ − I‖, which also pins every row to unit norm (see the module "
        "doc)",
    )
    penalty_norm: Literal["frobenius_squared", "frobenius"] = Field(
        "frobenius_squared",
        description="norm of the penalty: squared Frobenius (Bansal et al.'s soft "
        "orthogonality, the paper's ref. [9]) or plain Frobenius",
    )
    standardize_targets: bool = Field(
        True,
        description="standardise each attribute on the training split before "
        "the MSE (a deviation from the paper, see the module doc)",
    )
    epochs: int = Field(50, ge=1, description="passes over the training split (converged on the toy at 3K-20K samples)")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate")
    batch_size: int = Field(512, ge=1, description="mini-batch size")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="held-out fraction for the R² statistics")
    seed: int = Field(0, description="seed of the split, the initialisation and the batch order")


def orthogonality_penalty(weight: torch.Tensor, penalty: str, norm: str) -> torch.Tensor:
    """The penalty of (A, D) ``weight``: ``‖G − I_A‖`` with G = W Wᵀ (``"gram_identity"``, the paper's wᵀw with
    w = Wᵀ) or the Gram matrix of the unit rows (``"normalized_gram"``: only the cosines between rows count)."""
    rows = weight if penalty == "gram_identity" else weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gram = rows @ rows.T  # (A, A)
    residual = gram - torch.eye(gram.shape[0], dtype=weight.dtype, device=weight.device)
    squared = (residual**2).sum()
    return squared if norm == "frobenius_squared" else torch.sqrt(squared + 1e-12)


def _r2(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    residual = ((truth - predicted) ** 2).sum(axis=0)
    total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - residual / np.where(total > 0, total, np.nan)


def fit_mapping(
    latents: np.ndarray,
    targets: np.ndarray,
    params: OrthoLinearParams,
    progress=None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit ŷ = z Wᵀ + b with the orthogonality penalty.

    Args:
        latents: (N, D) latents (rows with any non-finite target must already be dropped).
        targets: (N, A) attribute values.
        params: the method parameters.
        progress: optional ``progress(epoch, epochs, metrics)`` callback.
        device: torch device to train on. The model is tiny: on the CPU one thread is fastest
            (``torch.set_num_threads(1)`` in the worker; several threads contending for few cores are ~10× slower).

    Returns:
        ``(weight, bias, info)``: W (A, D) and b (A,) in the (standardised, if so configured) target units,
        float64; info with per-attribute ``r2_train`` / ``r2_val`` (original units), the final losses and
        ``gram_offdiag_mean_abs`` (mean |cos| between rows).
    """
    latents = np.asarray(latents, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n, dim = latents.shape
    n_attributes = targets.shape[1]
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(n)
    n_val = int(round(n * params.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if train_idx.size < max(2, n_attributes):
        raise MethodInputError(
            f"{METHOD}: {train_idx.size} training samples are too few for {n_attributes} "
            f"attributes; sample more latents or lower val_fraction"
        )
    mean = targets[train_idx].mean(axis=0) if params.standardize_targets else np.zeros(n_attributes)
    scale = targets[train_idx].std(axis=0) if params.standardize_targets else np.ones(n_attributes)
    if np.any(scale == 0):
        raise MethodInputError(f"{METHOD}: an attribute is constant on the training split")
    device = torch.device(device)
    y = torch.as_tensor((targets - mean) / scale, dtype=torch.float64, device=device)
    x = torch.as_tensor(latents, dtype=torch.float64, device=device)

    generator = torch.Generator().manual_seed(params.seed)
    bound = 1.0 / np.sqrt(dim)  # nn.Linear's default initialisation, with a private generator
    weight = (torch.rand(n_attributes, dim, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    bias = (torch.rand(n_attributes, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    weight, bias = weight.to(device), bias.to(device)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.Adam([weight, bias], lr=params.lr)
    train = torch.as_tensor(train_idx, device=device)
    mse = penalty = torch.tensor(0.0)
    for epoch in range(params.epochs):
        permutation = train[torch.randperm(train.numel(), generator=generator).to(device)]
        for start in range(0, permutation.numel(), params.batch_size):
            batch = permutation[start : start + params.batch_size]
            prediction = x[batch] @ weight.T + bias
            mse = ((prediction - y[batch]) ** 2).mean()
            penalty = orthogonality_penalty(weight, params.penalty, params.penalty_norm)
            loss = mse + params.lam * penalty
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if progress is not None:
            progress(epoch + 1, params.epochs, {"mse": float(mse.detach()), "penalty": float(penalty.detach())})

    weight_np, bias_np = weight.detach().cpu().numpy(), bias.detach().cpu().numpy()
    predicted = (latents @ weight_np.T + bias_np) * scale + mean  # original units
    rows = weight_np / np.linalg.norm(weight_np, axis=1, keepdims=True)
    cosines = rows @ rows.T
    info = {
        "r2_train": _r2(targets[train_idx], predicted[train_idx]),
        "r2_val": _r2(targets[val_idx], predicted[val_idx]) if n_val > 1 else np.full(n_attributes, np.nan),
        "row_norms": np.linalg.norm(weight_np, axis=1),
        "final_mse": float(mse.detach()),
        "final_penalty": float(penalty.detach()),
        "gram_offdiag_mean_abs": float(np.abs(cosines[~np.eye(n_attributes, dtype=bool)]).mean())
        if n_attributes > 1
        else 0.0,
        "n_train": int(train_idx.size),
        "n_val": int(n_val),
        "target_mean": mean,
        "target_scale": scale,
    }
    return weight_np, bias_np, info


def cosine_table(directions: DirectionSet) -> pd.DataFrame:
    """(K, K) DataFrame of cosines between the directions, indexed by name (the paper's Table III, all pairs)."""
    return pd.DataFrame(directions.cosine_similarity(), index=directions.names, columns=directions.names)


def fit_ortho_linear(context: FitContext, params: OrthoLinearParams) -> DirectionSet:
    """Directions = normalised rows of the jointly fitted W; stats: R² per attribute on the held-out split."""
    latents = supervised_inputs(context, METHOD, params.space)
    targets = context.labels[list(context.attributes)].to_numpy(dtype=np.float64)
    keep = np.all(np.isfinite(targets), axis=1)
    weight, bias, info = fit_mapping(
        latents[keep], targets[keep], params, progress=context.progress, device=context.device
    )
    names = list(context.attributes)
    finite = lambda value: float(value) if np.isfinite(value) else None  # noqa: E731  (JSON has no NaN)
    stats = {
        name: {
            "r2_val": finite(info["r2_val"][i]),
            "r2_train": finite(info["r2_train"][i]),
            "row_norm": float(info["row_norms"][i]),
            "bias": float(bias[i]),
            "target_mean": float(info["target_mean"][i]),
            "target_scale": float(info["target_scale"][i]),
        }
        for i, name in enumerate(names)
    }
    vectors = unit(weight)
    cosines = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    meta = {
        "params": params.model_dump(),
        "input_fingerprint": context.input_fingerprint,
        "cosine_similarity": {
            a: {b: round(float(cosines[i, j]), 6) for j, b in enumerate(names)} for i, a in enumerate(names)
        },
        "mean_abs_offdiag_cosine": info["gram_offdiag_mean_abs"],
        "final_mse": info["final_mse"],
        "final_penalty": info["final_penalty"],
        "n_train": info["n_train"],
        "n_val": info["n_val"],
        "n_dropped_nonfinite": int((~keep).sum()),
    }
    return DirectionSet(method=METHOD, space=params.space, names=names, vectors=vectors, stats=stats, meta=meta)


def compare_regularisation(
    context: FitContext, params: OrthoLinearParams, reference: str | None = None, baseline_lam: float = 0.0
) -> pd.DataFrame:
    """Fit with ``params.lam`` and with ``baseline_lam`` (default 0) and compare the direction cosines.

    Returns:
        With ``reference`` (the paper's Table III layout): one row per attribute, columns
        ``"lambda=<baseline>"`` and ``"lambda=<lam>"`` holding cos(reference, attribute), sorted by the baseline.
        Without: one row per attribute pair (a, b), a < b, with both cosines, plus a final ``("mean |cos|", "")`` row.
    """
    regularised = fit_ortho_linear(context, params)
    baseline = fit_ortho_linear(context, params.model_copy(update={"lam": baseline_lam}))
    base_label, reg_label = f"lambda={baseline_lam:g}", f"lambda={params.lam:g}"
    base_table, reg_table = cosine_table(baseline), cosine_table(regularised)
    if reference is not None:
        if reference not in base_table.index:
            raise MethodInputError(f"{METHOD}: reference {reference!r} is not among the attributes {baseline.names}")
        table = pd.DataFrame({base_label: base_table.loc[reference], reg_label: reg_table.loc[reference]})
        return table.sort_values(base_label, key=lambda column: -column.abs())
    names = baseline.names
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    table = pd.DataFrame(
        {base_label: [base_table.loc[a, b] for a, b in pairs], reg_label: [reg_table.loc[a, b] for a, b in pairs]},
        index=pd.MultiIndex.from_tuples(pairs, names=["a", "b"]),
    )
    table.loc[("mean |cos|", ""), :] = table.abs().mean()
    return table


@METHODS.register(METHOD)
def ortho_linear_spec() -> MethodSpec:
    return MethodSpec(params_model=OrthoLinearParams, fit=fit_ortho_linear, supervised=True)
