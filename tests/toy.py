"""A tiny seeded world with planted semantic directions, for testing direction-fitting methods and their evaluation.

Everything is known in closed form, so a test can check values, not just shapes:

- latents z ~ N(0, I_D) (D = 24 by default); optionally a "w" space, ``w = z @ M`` with M orthogonal (D, D).
- planted unit directions (D,) in z space::

      pose     continuous, pose  = 30 · (n_pose · z)                 (degrees; the generator's dominant direction)
      smile    binary,     smile = sigmoid(2.5 · n_smile · z)          (a probability in [0, 1])
      age      continuous, age   = 40 + 12 · (n_age · z)               cos(n_age, n_gender) = 0.5
      gender   binary,     gender = sigmoid(2.5 · n_gender · z)
      glasses  binary,     glasses = sigmoid(2.5 · n_glasses · z)      cos(n_glasses, n_gender) = 0.6

- :class:`ToyGenerator`: z → h = A z + b (the "first block", F = 48 features) → images = tanh(B h / c) reshaped to
  (3, 8, 8) in [-1, 1]. ``A = U diag(s) Vᵀ`` with the largest singular value on V's column ``n_pose``, so SeFa's and
  GANSpace's top component is the pose direction. It meets the ``Generator`` and ``FactorizableGenerator`` protocols.
- :class:`ToyLabeler`: reads z back from an image (atanh, then the pseudo-inverse of the decoder, all in float64)
  and returns the planted attribute functions: a deterministic "perfect classifier", so edit → synthesize → label
  loops can be checked exactly.
- :func:`sample_dataset` / :func:`make_context`: latents plus labels from the labeler, with label noise (logit noise
  for the probability attributes, Gaussian for the continuous ones) and an extra ``noise`` column (uniform, independent
  of z) that no method should be able to separate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from stages.plugins.methods.base import FitContext

ATTRIBUTES: tuple[str, ...] = ("pose", "smile", "age", "gender", "glasses")
BINARY: tuple[str, ...] = ("smile", "gender", "glasses")
CONTINUOUS: tuple[str, ...] = ("pose", "age")
SHARPNESS = 2.5  # slope of the binary attributes' sigmoid
COS_GENDER_GLASSES = 0.6
COS_GENDER_AGE = 0.5


def planted_directions(z_dim: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """The planted unit directions (D,) float64 by attribute name (see the module docstring)."""
    if z_dim < 6:
        raise ValueError(f"the toy world needs z_dim >= 6, got {z_dim}")
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((z_dim, z_dim)))  # orthonormal columns
    e = [basis[:, k] for k in range(z_dim)]
    directions = {
        "pose": e[0],
        "smile": e[1],
        "gender": e[3],
        "glasses": COS_GENDER_GLASSES * e[3] + np.sqrt(1 - COS_GENDER_GLASSES**2) * e[4],
        "age": COS_GENDER_AGE * e[3] + np.sqrt(1 - COS_GENDER_AGE**2) * e[2],
    }
    return {name: directions[name] / np.linalg.norm(directions[name]) for name in ATTRIBUTES}


def attribute_values(latents_z: np.ndarray, directions: dict[str, np.ndarray]) -> pd.DataFrame:
    """(N, D) z → the noise-free planted attributes, one column each, in :data:`ATTRIBUTES` order."""
    latents_z = np.asarray(latents_z, dtype=np.float64)
    t = {name: latents_z @ directions[name] for name in ATTRIBUTES}
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    return pd.DataFrame(
        {
            "pose": 30.0 * t["pose"],
            "smile": sigmoid(SHARPNESS * t["smile"]),
            "age": 40.0 + 12.0 * t["age"],
            "gender": sigmoid(SHARPNESS * t["gender"]),
            "glasses": sigmoid(SHARPNESS * t["glasses"]),
        }
    )


class ToyGenerator:
    """A linear-first-layer toy generator, z ∈ R^D → (N, 3, 8, 8) images in [-1, 1].

    ``projection_matrix()`` is A (F, D); ``early_features(z, 1)`` is h = A z + b (F,), ``early_features(z, 2)`` the
    (192,) pre-tanh pixels. With ``with_mapping`` it also has a "w" space, ``w = z @ M`` (M orthogonal), and a "w+"
    space of ``num_ws`` = 2 layers whose image is that of their mean w: an edit confined to one layer moves the
    image half as far as the same edit of w.
    """

    name = "toy"
    resolution = 8

    def __init__(
        self, z_dim: int = 24, n_features: int = 48, seed: int = 0, with_mapping: bool = False, dominant: str = "pose"
    ) -> None:
        if n_features < z_dim:
            raise ValueError("the toy generator needs n_features >= z_dim to be invertible")
        rng = np.random.default_rng(seed + 1)
        self.z_dim = z_dim
        self.directions = planted_directions(z_dim, seed)
        # right singular vectors: the dominant planted direction first, then an orthonormal completion
        others = rng.standard_normal((z_dim, z_dim - 1))
        others -= np.outer(self.directions[dominant], self.directions[dominant] @ others)
        completion, _ = np.linalg.qr(others)
        right = np.column_stack([self.directions[dominant], completion])  # (D, D) orthogonal
        left, _ = np.linalg.qr(rng.standard_normal((n_features, z_dim)))  # (F, D) orthonormal columns
        self.singular_values = np.concatenate([[4.0], np.linspace(1.6, 0.5, z_dim - 1)])
        self.dominant_direction = self.directions[dominant].copy()
        self.A = left @ np.diag(self.singular_values) @ right.T  # (F, D)
        self.b = 0.05 * rng.standard_normal(n_features)
        decoder = rng.standard_normal((3 * 8 * 8, n_features)) / np.sqrt(n_features)  # (192, F)
        pixel_std = np.sqrt(np.mean(np.diag(decoder @ self.A @ self.A.T @ decoder.T)))
        self.B = decoder * (0.5 / pixel_std)  # pre-tanh pixels have std ≈ 0.5: far from saturation
        self.mapping = np.linalg.qr(rng.standard_normal((z_dim, z_dim)))[0] if with_mapping else None
        self.latent_spaces = ("z", "w", "w+") if with_mapping else ("z",)
        self.w_dim, self.num_ws = (z_dim, 2) if with_mapping else (None, None)
        self.fingerprint = f"toy:D={z_dim}:F={n_features}:seed={seed}:w={with_mapping}"
        self.calls: list[tuple[str, int]] = []  # (function, batch size) of every call, for memory-bound tests

    def to(self, device: torch.device) -> ToyGenerator:
        return self

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.mapping is None:
            return {}
        return {"w": latents_z @ torch.as_tensor(self.mapping, dtype=latents_z.dtype)}

    def w_plus(self, latents_w: torch.Tensor) -> torch.Tensor:
        """(N, w_dim) → (N, num_ws, w_dim): w repeated per layer."""
        return latents_w[:, None, :].expand(-1, self.num_ws, -1).contiguous()

    def to_z(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        if space == "z":
            return latents
        if space == "w+" and self.mapping is not None:
            return latents.mean(dim=1) @ torch.as_tensor(self.mapping.T, dtype=latents.dtype)
        if space == "w" and self.mapping is not None:
            return latents @ torch.as_tensor(self.mapping.T, dtype=latents.dtype)
        raise ValueError(f"toy generator has no latent space {space!r}; it has {self.latent_spaces}")

    def projection_matrix(self) -> torch.Tensor:
        return torch.as_tensor(self.A, dtype=torch.float32)

    def style_weights(self) -> list[torch.Tensor]:
        """(F, w_dim) per W+ layer: each layer's w reaches h = A z through A M / num_ws (z = M · mean(w+))."""
        if self.mapping is None:
            raise AttributeError("style_weights: the toy generator has no W space")
        weight = torch.as_tensor(self.A @ self.mapping / self.num_ws, dtype=torch.float32)
        return [weight] * self.num_ws

    def early_features(self, latents: torch.Tensor, layer: int = 1) -> torch.Tensor:
        self.calls.append(("early_features", int(latents.shape[0])))
        h = latents.double() @ torch.as_tensor(self.A.T) + torch.as_tensor(self.b)
        if layer == 1:
            return h.float()
        if layer == 2:
            return (h @ torch.as_tensor(self.B.T)).float()
        raise ValueError(f"layer must be 1 or 2, got {layer}")

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        latents = torch.as_tensor(latents)
        if space == "w+" and (latents.dim() != 3 or latents.shape[1] != self.num_ws):
            raise ValueError(
                f"toy generator expects (N, {self.num_ws}, {self.z_dim}) w+ latents, got {tuple(latents.shape)}"
            )
        if space != "w+" and (latents.dim() != 2 or latents.shape[1] != self.z_dim):
            raise ValueError(f"toy generator expects (N, {self.z_dim}) latents, got {tuple(latents.shape)}")
        self.calls.append(("synthesize", int(latents.shape[0])))
        latents_z = self.to_z(latents.double(), space)
        pixels = (latents_z @ torch.as_tensor(self.A.T) + torch.as_tensor(self.b)) @ torch.as_tensor(self.B.T)
        return torch.tanh(pixels).reshape(-1, 3, 8, 8).float()


class ToyLabeler:
    """Reads the planted attributes back from toy images: z = pinv(B A) (atanh(x) − B b), then the attribute maps."""

    name = "toy-labeler"
    attributes = ATTRIBUTES

    def __init__(self, generator: ToyGenerator) -> None:
        self.generator = generator
        self._decoder_pinv = np.linalg.pinv(generator.B @ generator.A)  # (D, 192)
        self._offset = generator.B @ generator.b
        self.fingerprint = f"toy-labeler[{generator.fingerprint}]"

    def to(self, device: torch.device) -> ToyLabeler:
        return self

    def latents_from_images(self, images: torch.Tensor) -> np.ndarray:
        pixels = images.detach().double().reshape(images.shape[0], -1).clamp(-1 + 1e-7, 1 - 1e-7).numpy()
        return (np.arctanh(pixels) - self._offset) @ self._decoder_pinv.T

    def score(self, images: torch.Tensor) -> torch.Tensor:
        values = attribute_values(self.latents_from_images(images), self.generator.directions)
        return torch.from_numpy(np.array(values.to_numpy(), dtype=np.float32))

    def score_images(self, images: torch.Tensor) -> pd.DataFrame:
        """The ``FitContext.score_images`` callable: images → DataFrame of attribute scores."""
        return pd.DataFrame(self.score(images).numpy().astype(np.float64), columns=list(self.attributes))


@dataclass
class ToyWorld:
    """A generator, its labeler and the planted truth."""

    generator: ToyGenerator
    labeler: ToyLabeler
    directions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    def direction_in(self, name: str, space: str) -> np.ndarray:
        """The planted direction of ``name`` expressed in latent ``space`` (unit norm)."""
        if space == "z":
            return self.directions[name]
        if space == "w" and self.generator.mapping is not None:
            return self.directions[name] @ self.generator.mapping  # n·z = (n @ M)·w since z = w @ Mᵀ
        raise ValueError(f"no space {space!r}")


def make_world(z_dim: int = 24, seed: int = 0, with_mapping: bool = False) -> ToyWorld:
    generator = ToyGenerator(z_dim=z_dim, seed=seed, with_mapping=with_mapping)
    return ToyWorld(generator=generator, labeler=ToyLabeler(generator), directions=generator.directions)


def sample_dataset(
    world: ToyWorld, n: int, seed: int = 0, logit_noise: float = 0.3, continuous_noise: float = 0.05
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """``n`` latents and their labels, as the pipeline would produce them (synthesize, then label).

    Returns:
        latents: ``{"z": (n, D) float32}`` plus ``"w"`` when the world has a mapping.
        labels: DataFrame with ``sample_id``, the planted attributes (with label noise) and a ``noise`` column.
    """
    rng = np.random.default_rng(seed)
    latents_z = rng.standard_normal((n, world.z_dim)).astype(np.float32)
    z_tensor = torch.from_numpy(latents_z)
    labels = world.labeler.score_images(world.generator.synthesize(z_tensor))
    for name in BINARY:
        p = labels[name].to_numpy().clip(1e-6, 1 - 1e-6)
        labels[name] = 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + logit_noise * rng.standard_normal(n))))
    for name in CONTINUOUS:
        labels[name] += continuous_noise * labels[name].std() * rng.standard_normal(n)
    labels["noise"] = rng.uniform(0.0, 1.0, n)
    labels.insert(0, "sample_id", np.arange(n))
    latents = {"z": latents_z}
    for space, values in world.generator.map(z_tensor).items():
        latents[space] = values.numpy().astype(np.float32)
    return latents, labels


def make_context(
    world: ToyWorld,
    n: int = 4000,
    seed: int = 0,
    attributes: list[str] | None = None,
    with_labeler: bool = True,
    with_generator: bool = True,
) -> FitContext:
    """A :class:`FitContext` over ``n`` toy samples (all planted attributes by default)."""
    latents, labels = sample_dataset(world, n, seed)
    return FitContext(
        latents=latents,
        labels=labels,
        attributes=list(attributes or ATTRIBUTES),
        generator=world.generator if with_generator else None,
        score_images=world.labeler.score_images if with_labeler else None,
        input_fingerprint=f"toy:{n}:{seed}",
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
