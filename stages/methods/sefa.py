"""SeFa, closed-form factorisation of latent semantics (Shen & Zhou, CVPR 2021), for generators whose latent enters
through a linear layer (:class:`stages.generators.FactorizableGenerator`).

The first layer maps z to ``y = A z + b`` with A (F, D). A unit move n changes y by ``A n``; the directions that
change the first layer's output most (Sec. 3.2, Eq. 5–6) solve::

    n* = argmax_{‖n‖=1} ‖A n‖²   →   the eigenvectors of AᵀA (D, D), by descending eigenvalue

so the top k components are the top k eigenvectors, eigenvalue λ_k = ‖A n_k‖². They are computed in float64 with
``torch.linalg.eigh`` (AᵀA is symmetric) and sorted explicitly by descending eigenvalue: the official code calls
``np.linalg.eig``, which neither assumes symmetry nor sorts.

No labels are needed to fit; each component is then named by the attribute it moves most, and oriented so that it
increases that attribute (:mod:`stages.methods.naming`). The official code also normalises each row of A (each
output unit's weight vector over z) before factorising; that is ``normalize_rows=True`` here. The default follows
the paper's Eq. 6 (plain AᵀA).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from stages.directions import DirectionSet
from stages.methods.base import METHODS, FitContext, MethodInputError, MethodSpec
from stages.methods.naming import NamingParams, component_names, name_components, orient_and_name

METHOD = "sefa"


class SeFaParams(BaseModel):
    """Parameters of :func:`fit_sefa`."""

    model_config = ConfigDict(extra="forbid")

    n_components: int = Field(10, ge=1, description="number of top eigenvectors kept")
    normalize_rows: bool = Field(False, description="normalise each row of A to unit norm first (the official "
                                                    "code's variant); False = the paper's Eq. 6")
    orient: bool = Field(True, description="flip each component so that its named attribute increases along it")
    naming: NamingParams = Field(default_factory=NamingParams, description="how components are named")


def factorize(projection: torch.Tensor | np.ndarray, n_components: int,
              normalize_rows: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
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


def fit_sefa(context: FitContext, params: SeFaParams) -> DirectionSet:
    """SeFa components of ``context.generator``, named by the attribute each moves most."""
    generator = context.generator
    if generator is None or not hasattr(generator, "projection_matrix"):
        raise MethodInputError(f"{METHOD}: needs a FactorizableGenerator (with projection_matrix()); got "
                               f"{type(generator).__name__}")
    vectors, eigenvalues, trace = factorize(generator.projection_matrix(), params.n_components, params.normalize_rows)
    if params.orient:
        vectors, namings = orient_and_name(vectors, context, params.naming, space="z")
    else:
        namings = name_components(vectors, context, params.naming, space="z")
    names = component_names(len(vectors))
    stats = {name: {"eigenvalue": float(eigenvalues[k]), "eigenvalue_fraction": float(eigenvalues[k] / trace),
                    **namings[k]} for k, name in enumerate(names)}
    meta = {"params": params.model_dump(), "input_fingerprint": context.input_fingerprint,
            "generator": getattr(generator, "fingerprint", None)}
    return DirectionSet(method=METHOD, space="z", names=names, vectors=vectors.astype(np.float32), stats=stats,
                        meta=meta)


@METHODS.register(METHOD)
def sefa_spec() -> MethodSpec:
    return MethodSpec(params_model=SeFaParams, fit=fit_sefa, supervised=False, needs_generator=True)
