"""Name unsupervised components (SeFa, GANSpace, Voynov, ...) by the attribute they move most.

Primary rule (needs ``context.generator`` and ``context.score_images``): take a held-out batch of n fresh z ~ N(0, I)
(seeded, not the fitting latents), move it by ±α along component v (in the component's latent ``space``),
synthesize, score, and for every attribute a compute the Pearson correlation over the 2n edited samples between the
shift and the edited score::

    r_a = corr([−α]*n ++ [+α]*n,  [s_a(x_i − αv)]_i ++ [s_a(x_i + αv)]_i)

This is the shift's effect on a relative to a's spread across samples (for a linear effect Δ = λα and a spread σ,
r = λα / sqrt(λ²α² + σ²)), so it ranks attributes by how much the edit moves them. (Correlating the shift with the
*change* s_a(x ± αv) − s_a(x) instead would give |r| = 1 to every attribute a noise-free labeler sees move at all,
however little.) The component is named after argmax_a |r_a|; r is signed (> 0: moving along +v increases the
attribute), so :func:`orient_and_name` can flip v to make its named attribute increase along it. ``correlations``
also holds the mean change per attribute, ``mean_change``, in the attribute's units.

Fallback (no labeler at hand): correlate the projection ``latents @ v`` of the fitting latents with the stored labels
(``context.labels``); stats then say ``naming_source: "labels"``. This only sees correlation in the data, not the
causal effect of an edit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from stages.plugins.methods.base import FitContext, MethodInputError

LABELS_NOTE = (
    "no labeler at hand (score_images is None): named by the correlation of the projection latents·v "
    "with the stored labels, not by editing"
)


class NamingParams(BaseModel):
    """How unsupervised components are named (shared by every unsupervised method)."""

    model_config = ConfigDict(extra="forbid")

    n_samples: int = Field(64, ge=2, description="held-out latents edited per component")
    alpha: float = Field(3.0, gt=0, description="edit strength ±α along each unit component")
    seed: int = Field(20240, description="seed of the held-out latents (independent of the fitting data)")
    batch_size: int = Field(256, ge=1, description="images synthesized and scored per call")


def component_names(count: int) -> list[str]:
    """``["c000", "c001", ...]``."""
    return [f"c{k:03d}" for k in range(count)]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    mask = np.isfinite(x) & np.isfinite(y)
    x, y = x[mask] - x[mask].mean(), y[mask] - y[mask].mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator > 0 else 0.0


def _naming_attributes(context: FitContext, columns: list[str]) -> list[str]:
    wanted = list(context.attributes) or [c for c in columns if c != "sample_id"]
    return [a for a in wanted if a in columns]


def _score(context: FitContext, latents: torch.Tensor, space: str, batch_size: int) -> pd.DataFrame:
    frames = []
    with torch.no_grad():
        for start in range(0, latents.shape[0], batch_size):
            images = context.generator.synthesize(latents[start : start + batch_size], space=space)
            frames.append(pd.DataFrame(context.score_images(images)).reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


def _by_editing(vectors: np.ndarray, context: FitContext, params: NamingParams, space: str) -> list[dict[str, Any]]:
    generator = context.generator
    rng = torch.Generator().manual_seed(params.seed)
    latents_z = torch.randn(params.n_samples, generator.z_dim, generator=rng)
    latents = latents_z if space == "z" else generator.map(latents_z)[space]
    latents = latents.to(torch.float32)
    if latents.shape[1] != vectors.shape[1]:
        raise MethodInputError(
            f"components are {vectors.shape[1]}-d but the generator's {space!r} space is {latents.shape[1]}-d"
        )
    n = params.n_samples
    shifts = np.concatenate([np.full(n, -params.alpha), np.full(n, params.alpha)])
    results = []
    for vector in vectors:
        step = torch.as_tensor(vector, dtype=torch.float32)[None]
        edited = torch.cat([latents - params.alpha * step, latents + params.alpha * step])
        scores = _score(context, edited, space, params.batch_size)
        correlations, changes = {}, {}
        for attribute in _naming_attributes(context, list(scores.columns)):
            values = scores[attribute].to_numpy(dtype=np.float64)
            correlations[attribute] = _pearson(shifts, values)
            changes[attribute] = float(np.nanmean(values[n:] - values[:n]) / 2)  # per +α, from the ± pair
        result = _pick(correlations, "edit")
        result["mean_change"] = {a: round(c, 6) for a, c in changes.items()}
        results.append(result)
    return results


def _by_labels(vectors: np.ndarray, context: FitContext, space: str) -> list[dict[str, Any]]:
    if space not in context.latents:
        raise MethodInputError(
            f"cannot name components by labels: no {space!r} latents in the context (have {sorted(context.latents)})"
        )
    latents = np.asarray(context.latents[space], dtype=np.float64)
    attributes = _naming_attributes(context, list(context.labels.columns))
    results = []
    for vector in vectors:
        projection = latents @ np.asarray(vector, dtype=np.float64)
        correlations = {a: _pearson(projection, context.labels[a].to_numpy(dtype=np.float64)) for a in attributes}
        result = _pick(correlations, "labels")
        result["naming_note"] = LABELS_NOTE
        results.append(result)
    return results


def _pick(correlations: dict[str, float], source: str) -> dict[str, Any]:
    if not correlations:
        return {"attribute": None, "correlation": 0.0, "naming_source": source, "correlations": {}}
    best = max(correlations, key=lambda a: abs(correlations[a]))
    return {
        "attribute": best,
        "correlation": float(correlations[best]),
        "naming_source": source,
        "correlations": {a: round(float(r), 6) for a, r in correlations.items()},
    }


def name_components(
    vectors: np.ndarray, context: FitContext, params: NamingParams | None = None, space: str = "z"
) -> list[dict[str, Any]]:
    """For each (D,) row of ``vectors``, the attribute it moves most.

    Returns:
        one dict per component: ``attribute`` (str, or None when there is nothing to name by), ``correlation``
        (signed r of that attribute), ``naming_source`` (``"edit"`` | ``"labels"`` | ``"none"``),
        ``correlations`` (r for every attribute considered) and, for the labels fallback, ``naming_note``.
    """
    params = params or NamingParams()
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if context.score_images is not None and context.generator is not None:
        return _by_editing(vectors, context, params, space)
    if context.labels is not None and len(context.labels.columns) and space in context.latents:
        return _by_labels(vectors, context, space)
    return [
        {
            "attribute": None,
            "correlation": 0.0,
            "naming_source": "none",
            "correlations": {},
            "naming_note": "neither a labeler nor labels to name components by",
        }
        for _ in vectors
    ]


def orient_and_name(
    vectors: np.ndarray, context: FitContext, params: NamingParams | None = None, space: str = "z"
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """:func:`name_components`, then flip each component whose named attribute decreases along it.

    Eigen/PCA components have no intrinsic sign; after this, moving along +v increases the named attribute
    (``correlation`` ≥ 0) and ``flipped`` records whether the sign was changed.
    """
    vectors = np.array(vectors, dtype=np.float64, copy=True)
    namings = name_components(vectors, context, params, space)
    for k, naming in enumerate(namings):
        flip = naming["correlation"] < 0
        if flip:
            vectors[k] *= -1
            naming["correlation"] = -naming["correlation"]
            naming["correlations"] = {a: -r for a, r in naming["correlations"].items()}
            if "mean_change" in naming:
                naming["mean_change"] = {a: -c for a, c in naming["mean_change"].items()}
        naming["flipped"] = bool(flip)
    return vectors, namings
