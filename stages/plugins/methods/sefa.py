"""SeFa, closed-form factorisation of latent semantics (Shen & Zhou, "Closed-Form Factorization of Latent
Semantics in GANs", CVPR 2021), for generators whose latent enters through a linear layer
(:class:`stages.plugins.generators.FactorizableGenerator`), and for style-based generators, where w enters every
synthesis layer through an affine style map (``space: w``: A is those maps' weights stacked, for all or the chosen
layers, and the directions live in W).

The first layer maps z to ``y = A z + b`` with A (F, D). A unit move n changes y by ``A n``; the directions that
change the first layer's output most (Sec. 3.2, Eq. 5–6) solve::

    n* = argmax_{‖n‖=1} ‖A n‖²   →   the eigenvectors of AᵀA (D, D), by descending eigenvalue

so the top k components are the top k eigenvectors, eigenvalue λ_k = ‖A n_k‖². They are computed in float64 with
``torch.linalg.eigh`` (AᵀA is symmetric) and sorted explicitly by descending eigenvalue: the official code calls
``np.linalg.eig``, which neither assumes symmetry nor sorts.

No labels are needed to fit; each component is then named by the attribute it moves most, and oriented so that it
increases that attribute (:mod:`stages.plugins.methods.naming`). The official code also normalises each row of A (each
output unit's weight vector over z) before factorising; that is ``normalize_rows=True`` here. The default follows
the paper's Eq. 6 (plain AᵀA).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from stages.latent.directions import DirectionSet
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec
from stages.plugins.methods.naming import NamingParams, component_names, name_components, orient_and_name

METHOD = "sefa"


class SeFaParams(BaseModel):
    """Parameters of :func:`fit_sefa`."""

    model_config = ConfigDict(extra="forbid")

    n_components: int = Field(10, ge=1, description="number of top eigenvectors kept")
    space: Literal["auto", "z", "w"] = Field(
        "auto",
        description="w: the style-modulation weights of a style-based "
        "generator (directions in W); z: the first layer's "
        "projection; auto: w when the generator has W",
    )
    layers: list[int] | None = Field(
        None, description="space w: the W+ layers whose style weights are factorised (null: all)"
    )
    normalize_rows: bool = Field(
        False,
        description="normalise each row of A to unit norm first (the official "
        "code's variant); False = the paper's Eq. 6",
    )
    orient: bool = Field(True, description="flip each component so that its named attribute increases along it")
    naming: NamingParams = Field(default_factory=NamingParams, description="how components are named")


def factorize(
    projection: torch.Tensor | np.ndarray, n_components: int, normalize_rows: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """Top ``n_components`` eigenvectors of AᵀA for A (F, D).

    Returns:
        ``(vectors, eigenvalues, trace)``: (k, D) float64 orthonormal rows, their (k,) eigenvalues, descending, and
        the sum of all D eigenvalues (trace of AᵀA). Each vector's sign is fixed so that its largest-magnitude entry
        is positive (deterministic; naming may flip it).
    """
    matrix = torch.as_tensor(projection).detach().to(device="cpu", dtype=torch.float64)
    if matrix.dim() != 2:
        raise MethodInputError(f"{METHOD}: projection_matrix() must be 2-d (F, z_dim), got {tuple(matrix.shape)}")
    if not torch.isfinite(matrix).all():
        raise MethodInputError(f"{METHOD}: projection matrix has non-finite entries")
    dim = matrix.shape[1]
    if not 1 <= n_components <= dim:
        raise MethodInputError(f"{METHOD}: n_components={n_components} must be in 1..{dim} (the latent dimension)")
    if normalize_rows:
        norms = matrix.norm(dim=1, keepdim=True)
        matrix = matrix / torch.where(norms > 0, norms, torch.ones_like(norms))
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix.T @ matrix)  # ascending, columns
    if not float(eigenvalues.max()) > 0:
        raise MethodInputError(f"{METHOD}: the projection matrix is zero: nothing to factorise")
    order = torch.argsort(eigenvalues, descending=True)[:n_components]
    vectors = eigenvectors[:, order].T.numpy().copy()  # (k, D)
    signs = np.sign(vectors[np.arange(len(vectors)), np.abs(vectors).argmax(axis=1)])
    return vectors * signs[:, None], eigenvalues[order].numpy().copy(), float(eigenvalues.sum())


def style_matrix(generator, layers: list[int] | None) -> torch.Tensor:
    """The style-modulation weights of the chosen W+ layers stacked into one (Σ C_i, w_dim) matrix A: the SeFa
    paper's StyleGAN case, where w enters every layer through an affine map ``style_i = A_i w + b_i``."""
    weights = list(generator.style_weights())
    chosen = range(len(weights)) if layers is None else layers
    bad = [index for index in chosen if not 0 <= index < len(weights)]
    if bad:
        raise MethodInputError(f"{METHOD}: layers {bad} out of range: the generator has {len(weights)} styled layers")
    return torch.cat([torch.as_tensor(weights[index]).detach().cpu().to(torch.float64) for index in chosen])


def fit_sefa(context: FitContext, params: SeFaParams) -> DirectionSet:
    """SeFa components of ``context.generator``, named by the attribute each moves most."""
    generator = context.generator
    has_styles = (
        generator is not None and hasattr(generator, "style_weights") and "w" in getattr(generator, "latent_spaces", ())
    )
    space = params.space if params.space != "auto" else ("w" if has_styles else "z")
    if space == "w":
        if not has_styles:
            raise MethodInputError(
                f"{METHOD}: space w needs a style-based generator (with style_weights()); got "
                f"{type(generator).__name__}"
            )
        matrix = style_matrix(generator, params.layers)
    else:
        if generator is None or not hasattr(generator, "projection_matrix"):
            raise MethodInputError(
                f"{METHOD}: needs a FactorizableGenerator (with projection_matrix()); got {type(generator).__name__}"
            )
        if params.layers is not None:
            raise MethodInputError(f"{METHOD}: layers select style layers; they apply to space w only")
        matrix = generator.projection_matrix()
    vectors, eigenvalues, trace = factorize(matrix, params.n_components, params.normalize_rows)
    if params.orient:
        vectors, namings = orient_and_name(vectors, context, params.naming, space=space)
    else:
        namings = name_components(vectors, context, params.naming, space=space)
    names = component_names(len(vectors))
    stats = {
        name: {"eigenvalue": float(eigenvalues[k]), "eigenvalue_fraction": float(eigenvalues[k] / trace), **namings[k]}
        for k, name in enumerate(names)
    }
    meta = {
        "params": params.model_dump(),
        "input_fingerprint": context.input_fingerprint,
        "generator": getattr(generator, "fingerprint", None),
    }
    return DirectionSet(
        method=METHOD, space=space, names=names, vectors=vectors.astype(np.float32), stats=stats, meta=meta
    )


@METHODS.register(METHOD)
def sefa_spec() -> MethodSpec:
    return MethodSpec(params_model=SeFaParams, fit=fit_sefa, supervised=False, needs_generator=True)
