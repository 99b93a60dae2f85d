"""GANSpace (Härkönen, Hertzmann, Lehtinen & Paris, "GANSpace: Discovering Interpretable GAN Controls", NeurIPS
2020): PCA of early generator features, carried back to the latent space.

For a generator without a mapping network (BigGAN in the paper, our DCGAN; Sec. 2.2 "Principal components and
principal feature directions"):

1. sample z_j ~ N(0, I) (j = 1..N) and compute the early features y_j = G_1(z_j) (F,), flattened, at block ``layer``;
2. PCA of the y_j: mean μ, top-k principal axes V (F, k), coordinates x_j = Vᵀ(y_j − μ) (k,);
3. transfer the basis to z by least squares: ``U = argmin_U Σ_j ‖U x_j − z_j‖²`` (no intercept, as in the paper), so
   column u_k of U (D,) is the latent direction whose move reproduces a move along principal axis k; the direction is
   u_k / ‖u_k‖.

Memory is bounded by the batch, never N × F. Step 2 has two estimators, both fed batch by batch:

- ``"ipca"``: ``sklearn.decomposition.IncrementalPCA`` (GANSpace's default estimator); memory O(batch · F + k · F);
  CPU only.
- ``"covariance"``: streaming sums ``Σ y`` and ``Σ y yᵀ`` in float64 (torch, on ``context.device``), then
  ``torch.linalg.eigh`` of the covariance, sorted by descending eigenvalue; memory O(F²) (512 MiB for the DCGAN's
  first block, F = 8192); exact, and fast on a GPU.
- ``"auto"`` (default): covariance on a CUDA device when F ≤ ``max_covariance_features``, else ipca (on the CPU,
  IncrementalPCA was ~2× faster than the F × F float64 products for the DCGAN's F = 8192).

Step 3 accumulates the (k, k) and (k, D) normal-equation sums ``Σ x xᵀ``, ``Σ x zᵀ`` in float64 over a second pass
that regenerates the identical z batches from the seed. Stats: the explained variance ratio of each component (of the
total feature variance), and the R² of the regression back to z.

For a style-based generator (StyleGAN; Sec. 2.3 of the paper) the PCA runs on w = M(z) itself, the mapping
network's output: its principal axes are directions in W, and step 3 is not needed (``space: w``, the default when
the generator has W). Stats then hold the explained variance ratio of W.

Components have no intrinsic sign or name; each is named by the attribute it moves most and flipped to increase it
(:mod:`stages.plugins.methods.naming`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.decomposition import IncrementalPCA

from stages.latent.directions import DirectionSet
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec
from stages.plugins.methods.naming import NamingParams, component_names, name_components, orient_and_name

METHOD = "ganspace"


class GANSpaceParams(BaseModel):
    """Parameters of :func:`fit_ganspace`."""

    model_config = ConfigDict(extra="forbid")

    n_components: int = Field(20, ge=1, description="principal components kept")
    space: Literal["auto", "z", "w"] = Field(
        "auto",
        description="w: PCA of the mapped w (StyleGAN); z: PCA of block "
        "features regressed back to z; auto: w when the "
        "generator has W",
    )
    layer: int = Field(1, ge=1, description="generator block whose output features are analysed (1 = first)")
    n_samples: int = Field(20_000, ge=2, description="latents sampled for the PCA (fresh, seeded)")
    batch_size: int = Field(1_000, ge=1, description="latents per batch (bounds memory; >= n_components)")
    seed: int = Field(0, description="seed of the sampled latents")
    estimator: Literal["auto", "ipca", "covariance"] = Field(
        "auto",
        description="PCA estimator: incremental PCA, streaming float64 covariance, or auto (covariance on "
        "CUDA when F <= max_covariance_features, else incremental PCA)",
    )
    max_covariance_features: int = Field(
        8192, ge=1, description="largest F for which 'auto' picks the (F, F) covariance estimator"
    )
    orient: bool = Field(True, description="flip each component so that its named attribute increases along it")
    naming: NamingParams = Field(default_factory=NamingParams, description="how components are named")

    @model_validator(mode="after")
    def _check_sizes(self) -> GANSpaceParams:
        if self.batch_size < self.n_components:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be >= n_components ({self.n_components}): "
                f"incremental PCA needs at least k samples per batch"
            )
        if self.n_samples < self.batch_size:
            raise ValueError(f"n_samples ({self.n_samples}) must be >= batch_size ({self.batch_size})")
        return self


def _batches(params: GANSpaceParams, z_dim: int):
    """The seeded z batches, identical on every call (so the second pass sees the first pass's samples)."""
    generator = torch.Generator().manual_seed(params.seed)
    n_batches = -(-params.n_samples // params.batch_size)
    for size in np.array_split(np.arange(params.n_samples), n_batches):
        yield torch.randn(len(size), z_dim, generator=generator)


def _features(generator, latents_z: torch.Tensor, layer: int) -> torch.Tensor:
    with torch.no_grad():
        return generator.early_features(latents_z, layer).detach().flatten(1).to(torch.float64)


class _CovariancePCA:
    """Streaming float64 covariance PCA with IncrementalPCA's interface (partial_fit, finish, transform)."""

    def __init__(self, n_components: int, n_features: int, device: torch.device) -> None:
        self.n_components, self.device, self.count = n_components, device, 0
        self.sum = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.outer = torch.zeros(n_features, n_features, dtype=torch.float64, device=device)

    def partial_fit(self, features: torch.Tensor) -> None:
        features = features.to(self.device)
        self.sum += features.sum(dim=0)
        self.outer += features.T @ features
        self.count += features.shape[0]

    def finish(self) -> None:
        mean = self.sum / self.count
        covariance = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        del self.outer
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        order = torch.argsort(eigenvalues, descending=True)[: self.n_components]
        self.mean_, self.components_ = mean, eigenvectors[:, order]  # (F,), (F, k)
        self.explained_variance_ = eigenvalues[order].clamp_min(0).cpu().numpy()
        self.explained_variance_ratio_ = self.explained_variance_ / float(eigenvalues.clamp_min(0).sum())

    def transform(self, features: torch.Tensor) -> np.ndarray:
        return ((features.to(self.device) - self.mean_) @ self.components_).cpu().numpy()

    def components(self) -> np.ndarray:
        """(k, F) unit principal axes, in order."""
        return self.components_.T.cpu().numpy()


class _IncrementalPCA:
    """sklearn IncrementalPCA behind the same small interface."""

    def __init__(self, n_components: int) -> None:
        self.pca = IncrementalPCA(n_components=n_components)

    def partial_fit(self, features: torch.Tensor) -> None:
        self.pca.partial_fit(features.cpu().numpy())

    def finish(self) -> None:
        self.explained_variance_ = self.pca.explained_variance_.copy()
        self.explained_variance_ratio_ = self.pca.explained_variance_ratio_.copy()

    def transform(self, features: torch.Tensor) -> np.ndarray:
        return self.pca.transform(features.cpu().numpy())

    def components(self) -> np.ndarray:
        """(k, F) unit principal axes, in order."""
        return self.pca.components_.copy()


def _fit_pca(
    params: GANSpaceParams,
    feature_batches,
    n_batches: int,
    what: str,
    progress=None,
    device: torch.device | str = "cpu",
) -> _CovariancePCA | _IncrementalPCA:
    """Step 2 over ``feature_batches`` (each (B, F) float64); the estimator as ``params.estimator`` says."""
    pca: _CovariancePCA | _IncrementalPCA | None = None
    estimator = params.estimator
    for step, features in enumerate(feature_batches):
        if pca is None:
            n_features = features.shape[1]
            if params.n_components > n_features:
                raise MethodInputError(
                    f"{METHOD}: n_components={params.n_components} exceeds the {n_features} features of {what}"
                )
            if estimator == "auto":
                on_gpu = torch.device(device).type == "cuda"
                estimator = "covariance" if on_gpu and n_features <= params.max_covariance_features else "ipca"
            pca = (
                _CovariancePCA(params.n_components, n_features, torch.device(device))
                if estimator == "covariance"
                else _IncrementalPCA(params.n_components)
            )
            pca.estimator = estimator
        pca.partial_fit(features)
        if progress is not None:
            progress(step + 1, n_batches, {})
    pca.finish()
    return pca


def principal_w_directions(
    generator, params: GANSpaceParams, progress=None, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """PCA of w = mapping(z) (the paper's StyleGAN variant): (k, w_dim) float64 unit directions in W, in PCA order,
    and info with ``explained_variance_ratio`` (k,), ``explained_variance`` (k,) and the ``estimator``."""
    n_batches = -(-params.n_samples // params.batch_size)
    if params.n_samples // n_batches < params.n_components:
        raise MethodInputError(
            f"{METHOD}: batches of ~{params.n_samples // n_batches} samples are smaller than "
            f"n_components={params.n_components}"
        )

    def mapped():
        for latents_z in _batches(params, int(generator.z_dim)):
            with torch.no_grad():
                yield generator.map(latents_z.to(device))["w"].detach().to(torch.float64).cpu()

    pca = _fit_pca(params, mapped(), n_batches, "w", progress, device)
    vectors = pca.components()
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    info = {
        "explained_variance_ratio": np.asarray(pca.explained_variance_ratio_, dtype=np.float64),
        "explained_variance": np.asarray(pca.explained_variance_, dtype=np.float64),
        "regression_norm": np.ones(len(vectors)),
        "regression_r2": 1.0,
        "n_batches": n_batches,
        "estimator": pca.estimator,
    }
    return vectors, info


def principal_directions(
    generator, params: GANSpaceParams, progress=None, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Steps 1–3 of the module docstring.

    Returns:
        ``(vectors, info)``: (k, D) float64 unit latent directions, in PCA order; info with
        ``explained_variance_ratio`` (k,), ``explained_variance`` (k,), ``regression_norm`` (k,) = ‖u_k‖,
        ``regression_r2`` (overall R² of z ≈ U x) and the ``estimator`` used.
    """
    z_dim = int(generator.z_dim)
    n_batches = -(-params.n_samples // params.batch_size)
    if params.n_samples // n_batches < params.n_components:
        raise MethodInputError(
            f"{METHOD}: batches of ~{params.n_samples // n_batches} samples are smaller than "
            f"n_components={params.n_components}"
        )
    first_pass = (_features(generator, latents_z, params.layer) for latents_z in _batches(params, z_dim))
    half_progress = None if progress is None else (lambda step, total, metrics: progress(step, 2 * total, metrics))
    pca = _fit_pca(params, first_pass, n_batches, f"layer {params.layer}", half_progress, device)
    estimator = pca.estimator
    gram = np.zeros((params.n_components, params.n_components))
    cross = np.zeros((params.n_components, z_dim))
    z_sq = 0.0
    for step, latents_z in enumerate(_batches(params, z_dim)):
        coordinates = pca.transform(_features(generator, latents_z, params.layer))  # (B, k)
        z = latents_z.double().numpy()
        gram += coordinates.T @ coordinates
        cross += coordinates.T @ z
        z_sq += float((z**2).sum())
        if progress is not None:
            progress(n_batches + step + 1, 2 * n_batches, {})
    basis = np.linalg.lstsq(gram, cross, rcond=None)[0]  # (k, D): row k is u_k
    norms = np.linalg.norm(basis, axis=1)
    if np.any(norms == 0):
        raise MethodInputError(f"{METHOD}: a principal component has no latent counterpart (zero regression)")
    residual = z_sq - np.sum(basis * cross)  # Σ‖z − Uᵀx‖² at the least-squares optimum = Σ‖z‖² − tr(Bᵀ C)
    info = {
        "explained_variance_ratio": np.asarray(pca.explained_variance_ratio_, dtype=np.float64),
        "explained_variance": np.asarray(pca.explained_variance_, dtype=np.float64),
        "regression_norm": norms,
        "regression_r2": 1.0 - residual / z_sq,
        "n_batches": n_batches,
        "estimator": estimator,
    }
    return basis / norms[:, None], info


def fit_ganspace(context: FitContext, params: GANSpaceParams) -> DirectionSet:
    """GANSpace components of ``context.generator``, named by the attribute each moves most."""
    generator = context.generator
    has_w = generator is not None and "w" in getattr(generator, "latent_spaces", ())
    if generator is None or not (hasattr(generator, "early_features") or has_w):
        raise MethodInputError(
            f"{METHOD}: needs a FactorizableGenerator (with early_features()) or one with a W "
            f"space; got {type(generator).__name__}"
        )
    space = params.space if params.space != "auto" else ("w" if "w" in generator.latent_spaces else "z")
    if space == "w":
        if "w" not in generator.latent_spaces:
            raise MethodInputError(
                f"{METHOD}: space w asked for, but the generator has {list(generator.latent_spaces)}"
            )
        vectors, info = principal_w_directions(generator, params, progress=context.progress, device=context.device)
    else:
        vectors, info = principal_directions(generator, params, progress=context.progress, device=context.device)
    if params.orient:
        vectors, namings = orient_and_name(vectors, context, params.naming, space=space)
    else:
        namings = name_components(vectors, context, params.naming, space=space)
    names = component_names(len(vectors))
    stats = {
        name: {
            "explained_variance_ratio": float(info["explained_variance_ratio"][k]),
            "explained_variance": float(info["explained_variance"][k]),
            "regression_norm": float(info["regression_norm"][k]),
            **namings[k],
        }
        for k, name in enumerate(names)
    }
    meta = {
        "params": params.model_dump(),
        "input_fingerprint": context.input_fingerprint,
        "generator": getattr(generator, "fingerprint", None),
        "regression_r2": float(info["regression_r2"]),
        "n_batches": int(info["n_batches"]),
        "estimator": info["estimator"],
    }
    return DirectionSet(
        method=METHOD, space=space, names=names, vectors=vectors.astype(np.float32), stats=stats, meta=meta
    )


@METHODS.register(METHOD)
def ganspace_spec() -> MethodSpec:
    return MethodSpec(params_model=GANSpaceParams, fit=fit_ganspace, supervised=False, needs_generator=True)
