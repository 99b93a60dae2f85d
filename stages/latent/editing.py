"""One latent-editing API for every consumer (evaluation, CLI, notebooks): move latents along a direction.

Linear editing (InterFaceGAN Sec. 2.2, "single attribute manipulation")::

    z_edit = z + α n                      n a unit (D,) direction, α a scalar or an (M,) array of strengths

Conditional editing (InterFaceGAN Sec. 2.2, "conditional manipulation"): to change the primal attribute p while
keeping attributes c_1..c_k fixed, move along the component of p orthogonal to span(c_1..c_k), renormalised::

    n = (p − C (CᵀC)⁻¹ Cᵀ p) / ‖·‖        C = [c_1 .. c_k] (D, k)

With one condition this is ``n = p − (pᵀc) c`` (unit c); with two it is the paper's
``n = p − a c_1 − b c_2``, ``a = (pᵀc_1 − (pᵀc_2)(c_1ᵀc_2)) / (1 − (c_1ᵀc_2)²)`` and b symmetrically. To first order
an attribute that is linear along c_j (score ≈ λ c_jᵀ z) does not change.

Nonlinear editing (TunaGAN Sec. 4.2): a model f of the attribute over the latent space gives a per-sample path:
repeatedly step ``z ← z + h · ∇f(z) / ‖∇f(z)‖`` (optionally projected off the kept directions first) until the path
length reaches |α|; α < 0 follows −∇f. Any object with ``gradient(latents) -> (N, D)`` (:class:`LatentField`, e.g.
TunaGAN's saved MLP) can be passed to :func:`edit` instead of a vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from latentatlas.errors import LatentAtlasError
from stages.latent.directions import DirectionSet, select_directions
from stages.latent.fields import load_model

#: Path step of gradient-following (nonlinear) edits, in latent units.
FIELD_STEP = 0.05


class EditError(LatentAtlasError, ValueError):
    """Latents, directions or strengths that do not fit together."""


@runtime_checkable
class LatentField(Protocol):
    """A differentiable attribute model over the latent space, for nonlinear (per-sample) editing."""

    def gradient(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, D) float latents → (N, D) gradient of the attribute score (or logit) with respect to them."""
        ...


ArrayLike = np.ndarray | torch.Tensor
DirectionLike = np.ndarray | torch.Tensor | str | LatentField


def _as_vector(direction: ArrayLike | Sequence[float], dim: int, what: str) -> np.ndarray:
    vector = direction.detach().cpu().numpy() if isinstance(direction, torch.Tensor) else np.asarray(direction)
    vector = vector.astype(np.float64)
    if vector.shape != (dim,):
        raise EditError(f"{what} must have shape ({dim},) to match the latents, got {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise EditError(f"{what} has non-finite entries")
    norm = np.linalg.norm(vector)
    if norm == 0:
        raise EditError(f"{what} is the zero vector")
    return vector / norm


def _resolve(direction: ArrayLike | str, directions: DirectionSet | None, dim: int, what: str) -> np.ndarray:
    if isinstance(direction, str):
        if directions is None:
            raise EditError(f"{what} {direction!r} is a name: pass directions=<DirectionSet> to look it up")
        if directions.dim != dim:
            raise EditError(
                f"directions of {directions.method!r} live in a {directions.dim}-d space "
                f"({directions.space}), the latents are {dim}-d"
            )
        return _as_vector(directions[direction], dim, f"{what} {direction!r}")
    return _as_vector(direction, dim, what)


def _keep_basis(
    keep: Sequence[ArrayLike | str] | ArrayLike | None, directions: DirectionSet | None, dim: int
) -> np.ndarray:
    """(D, r) orthonormal basis of the span of the kept directions (r = 0 when nothing is kept)."""
    if keep is None:
        return np.zeros((dim, 0))
    if isinstance(keep, (np.ndarray, torch.Tensor)) and np.ndim(keep) == 2:
        keep = list(keep)
    if isinstance(keep, (str, np.ndarray, torch.Tensor)):
        keep = [keep]
    vectors = [_resolve(item, directions, dim, f"keep[{i}]") for i, item in enumerate(keep)]
    if not vectors:
        return np.zeros((dim, 0))
    matrix = np.stack(vectors, axis=1)  # (D, k)
    left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    rank = int(np.sum(singular > 1e-8 * singular[0]))
    return left[:, :rank]


def project_out(vectors: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Remove from ``vectors`` (..., D) their component in the span of the orthonormal ``basis`` (D, r)."""
    return vectors - (vectors @ basis) @ basis.T


def conditional_direction(
    primal: ArrayLike | str,
    keep: Sequence[ArrayLike | str] | ArrayLike,
    directions: DirectionSet | None = None,
    tol: float = 1e-3,
) -> np.ndarray:
    """The unit (D,) direction moving ``primal`` while holding every ``keep`` direction fixed to first order.

    ``n = normalise(p − P_C p)`` with P_C the orthogonal projector onto span(keep) (InterFaceGAN Sec. 2.2).

    Raises:
        EditError: a dimension mismatch, or a primal direction (numerically) inside the span of the kept ones
            (its orthogonal part has norm below ``tol``: nothing would be left to move along).
    """
    dim = directions.dim if directions is not None and isinstance(primal, str) else int(np.size(primal))
    p = _resolve(primal, directions, dim, "direction")
    basis = _keep_basis(keep, directions, dim)
    orthogonal = project_out(p, basis)
    norm = float(np.linalg.norm(orthogonal))
    if norm < tol:
        raise EditError(
            f"the primal direction lies inside the span of the kept directions (its orthogonal part "
            f"has norm {norm:.2e} < {tol}): it cannot change while they stay fixed"
        )
    return orthogonal / norm


def _as_latents(latents: ArrayLike) -> torch.Tensor:
    tensor = torch.as_tensor(latents) if not isinstance(latents, torch.Tensor) else latents
    if tensor.dim() != 2:
        raise EditError(f"latents must be (N, D), got shape {tuple(tensor.shape)}")
    if not torch.is_floating_point(tensor):
        tensor = tensor.float()
    return tensor


def _as_alphas(alpha: float | ArrayLike | Sequence[float]) -> tuple[np.ndarray, bool]:
    """(M,) float64 strengths, and whether the caller gave a scalar."""
    values = alpha.detach().cpu().numpy() if isinstance(alpha, torch.Tensor) else np.asarray(alpha)
    if values.ndim > 1:
        raise EditError(f"alpha must be a scalar or an (M,) array, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
        raise EditError(f"alpha must be finite numbers, got {alpha!r}")
    return values.reshape(-1).astype(np.float64), values.ndim == 0


def edit(
    latents: ArrayLike,
    direction: DirectionLike,
    alpha: float | ArrayLike | Sequence[float],
    keep: Sequence[ArrayLike | str] | ArrayLike | None = None,
    *,
    directions: DirectionSet | None = None,
    step_size: float = 0.05,
    tol: float = 1e-3,
) -> ArrayLike:
    """Move ``latents`` along ``direction`` by ``alpha``, holding the ``keep`` directions fixed.

    Args:
        latents: (N, D) numpy array or torch tensor.
        direction: a (D,) vector (normalised here), the name of a direction in ``directions``, or a
            :class:`LatentField` (nonlinear model: each sample follows its own normalised gradient, see
            :func:`follow_gradient`).
        alpha: scalar, or an (M,) array of strengths.
        keep: directions (vectors and/or names in ``directions``) to hold fixed; the primal direction is projected
            onto the orthogonal complement of their span and renormalised (:func:`conditional_direction`).
        directions: the :class:`DirectionSet` that names refer to.
        step_size: path step for nonlinear fields (ignored for vectors).
        tol: minimum norm of the primal direction's part orthogonal to ``keep``.

    Returns:
        (N, D) for a scalar ``alpha``, (M, N, D) for an array; numpy in → numpy out (latents' float dtype),
        torch in → torch out (same dtype and device).

    Raises:
        EditError: wrong shapes, a zero direction, a name without ``directions``, or a primal direction inside
            span(keep).
        KeyError: a name that ``directions`` does not have.
    """
    is_numpy = not isinstance(latents, torch.Tensor)
    tensor = _as_latents(latents)
    dim = int(tensor.shape[1])
    alphas, scalar = _as_alphas(alpha)
    if isinstance(direction, LatentField) and not isinstance(direction, (np.ndarray, torch.Tensor, str)):
        basis = _keep_basis(keep, directions, dim)
        edited = follow_gradient(tensor, direction, alphas, keep_basis=basis, step_size=step_size)
    else:
        vector = _resolve(direction, directions, dim, "direction")
        if keep is not None:
            vector = conditional_direction(vector, keep, directions=directions, tol=tol)
        step = torch.as_tensor(vector, dtype=tensor.dtype, device=tensor.device)
        strengths = torch.as_tensor(alphas, dtype=tensor.dtype, device=tensor.device)
        edited = tensor[None] + strengths[:, None, None] * step[None, None, :]
    if scalar:
        edited = edited[0]
    if is_numpy:
        return edited.detach().cpu().numpy()
    return edited


def follow_gradient(
    latents: torch.Tensor,
    field: LatentField,
    alphas: np.ndarray,
    keep_basis: np.ndarray | None = None,
    step_size: float = 0.05,
) -> torch.Tensor:
    """Per-sample nonlinear paths: (N, D) latents → (M, N, D), one slice per strength in ``alphas``.

    Each sample takes steps of length ``step_size`` (the last one shortened to land exactly) along its normalised
    gradient ``g / ‖g‖`` of ``field`` (after removing the component in span(``keep_basis``)); the path length equals
    |α|, and α < 0 walks along −g. Positive and negative strengths are each integrated once from the start, in
    increasing |α|, so M strengths cost as much as the largest one. A sample whose (projected) gradient vanishes
    stays where it is.
    """
    if step_size <= 0:
        raise EditError(f"step_size must be > 0, got {step_size}")
    dim = int(latents.shape[1])
    basis = torch.as_tensor(
        keep_basis if keep_basis is not None else np.zeros((dim, 0)), dtype=torch.float64, device=latents.device
    )
    start = latents.detach().to(torch.float64)
    out = torch.empty((len(alphas), *latents.shape), dtype=latents.dtype, device=latents.device)
    for sign in (1.0, -1.0):
        chosen = [i for i, a in enumerate(alphas) if (a > 0 if sign > 0 else a <= 0)]
        current, travelled = start.clone(), 0.0
        for index in sorted(chosen, key=lambda i: abs(alphas[i])):
            target = abs(float(alphas[index]))
            while travelled < target - 1e-12:
                h = min(step_size, target - travelled)
                gradient = field.gradient(current.to(latents.dtype)).detach().to(torch.float64)
                if gradient.shape != current.shape:
                    raise EditError(
                        f"field gradient has shape {tuple(gradient.shape)}, expected {tuple(current.shape)}"
                    )
                gradient = gradient - (gradient @ basis) @ basis.T
                norm = gradient.norm(dim=1, keepdim=True)
                unit_gradient = torch.where(norm > 1e-12, gradient / norm.clamp_min(1e-12), torch.zeros_like(gradient))
                current = current + sign * h * unit_gradient
                travelled += h
            out[index] = current.to(latents.dtype)
    return out


def edit_layers(
    latents_w_plus: ArrayLike,
    direction: ArrayLike | str,
    alpha: float | ArrayLike | Sequence[float],
    layers: tuple[int, int] | None = None,
    keep: Sequence[ArrayLike | str] | ArrayLike | None = None,
    *,
    directions: DirectionSet | None = None,
    tol: float = 1e-3,
) -> ArrayLike:
    """Edit W+ codes along a W direction in the layers ``[start, stop)`` only.

    Style-based generators feed one w per synthesis layer; moving only the coarse layers (e.g. ``(0, 4)``) changes
    pose and shape, the fine ones colour and texture (StyleGAN's style mixing). Each chosen layer's code moves by
    ``α n`` (n made conditional on ``keep`` as in :func:`edit`); the others stay. ``layers=None`` moves every layer.

    Args:
        latents_w_plus: (N, num_ws, w_dim) W+ codes (the generator's W+ code of each w: see
            the generator's ``w_plus``).
        direction: a (w_dim,) vector or a name in ``directions`` (a nonlinear field has no layer-wise meaning).
        alpha: scalar, or an (M,) array of strengths.
        layers: ``(start, stop)`` with ``0 <= start < stop <= num_ws``, or None for all.

    Returns:
        (N, num_ws, w_dim) for a scalar ``alpha``, (M, N, num_ws, w_dim) for an array; numpy in → numpy out.

    Raises:
        EditError: a layer range outside ``0..num_ws``, latents that are not (N, num_ws, D), or what :func:`edit`
            raises for the direction.
    """
    is_numpy = not isinstance(latents_w_plus, torch.Tensor)
    codes = torch.as_tensor(latents_w_plus)
    if codes.dim() != 3:
        raise EditError(f"W+ latents must be (N, num_ws, w_dim), got shape {tuple(codes.shape)}")
    if not torch.is_floating_point(codes):
        codes = codes.float()
    num_ws, dim = int(codes.shape[1]), int(codes.shape[2])
    start, stop = layers if layers is not None else (0, num_ws)
    if not 0 <= start < stop <= num_ws:
        raise EditError(
            f"layers must satisfy 0 <= start < stop <= {num_ws} (the generator's W+ layers), got [{start}, {stop}]"
        )
    vector = _resolve(direction, directions, dim, "direction")
    if keep is not None:
        vector = conditional_direction(vector, keep, directions=directions, tol=tol)
    alphas, scalar = _as_alphas(alpha)
    step = torch.as_tensor(vector, dtype=codes.dtype, device=codes.device)
    strengths = torch.as_tensor(alphas, dtype=codes.dtype, device=codes.device)
    edited = codes[None].repeat(len(alphas), 1, 1, 1)
    edited[:, :, start:stop, :] += strengths[:, None, None, None] * step
    if scalar:
        edited = edited[0]
    return edited.detach().cpu().numpy() if is_numpy else edited


@dataclass(frozen=True)
class DirectionEdit:
    """How one attribute's direction of a set moves latents: along its (D,) unit vector, or, when the set carries a
    nonlinear model for it (``field``), along that model's gradient path per sample.

    Attributes:
        attribute: the attribute the edit moves (``+α`` increases it).
        source: the direction's name in its set (the attribute itself, or an unsupervised component's name).
        vector: (D,) unit vector, sign-aligned so that +α increases the attribute.
        field: the nonlinear model edits follow, or None for a straight line.
    """

    attribute: str
    source: str
    vector: np.ndarray
    field: LatentField | None = None

    @property
    def kind(self) -> str:
        """``"gradient_path"`` (a nonlinear model's per-sample path) or ``"vector"``."""
        return "vector" if self.field is None else "gradient_path"

    def apply(
        self,
        latents: ArrayLike,
        alphas: float | ArrayLike | Sequence[float],
        keep: Sequence[ArrayLike] | None = None,
        step_size: float = FIELD_STEP,
    ) -> ArrayLike:
        """(N, D) latents → (M, N, D) edited at each of the (M,) ``alphas`` (see :func:`edit`)."""
        return edit(latents, self.vector if self.field is None else self.field, alphas, keep=keep, step_size=step_size)

    def apply_layers(
        self,
        latents_w_plus: ArrayLike,
        alphas: float | ArrayLike | Sequence[float],
        layers: tuple[int, int],
        keep: Sequence[ArrayLike] | None = None,
    ) -> ArrayLike:
        """(N, L, D) W+ codes → (M, N, L, D), layers ``layers`` moved along the vector (see :func:`edit_layers`;
        a gradient path has no layer-wise meaning, so W+ edits always follow the vector)."""
        return edit_layers(latents_w_plus, self.vector, alphas, layers, keep=keep)


def direction_edits(
    directions: DirectionSet, attributes: Sequence[str], *, allow_missing: bool = False, nonlinear: bool = True
) -> dict[str, DirectionEdit]:
    """For each attribute, how ``directions`` edits it (:func:`stages.latent.directions.select_directions` picks the
    direction; a nonlinear model the set carries for it is loaded unless ``nonlinear`` is off)."""
    models = directions.meta.get("models", {}) if nonlinear else {}
    return {
        attribute: DirectionEdit(
            attribute, source, vector, load_model(directions, source) if source in models else None
        )
        for attribute, (vector, source) in select_directions(
            directions, list(attributes), allow_missing=allow_missing
        ).items()
    }
