"""BigGAN-deep generators as ``pytorch-pretrained-biggan`` saves them: ``pytorch_model.bin`` + ``config.json``.

The network is the one of the ``pytorch-pretrained-biggan`` package (huggingface/pytorch-pretrained-BigGAN,
``pytorch_pretrained_biggan/model.py``, MIT License, Copyright (c) 2019 Thomas Wolf): this module follows its
structure and state-dict key layout closely, so that its files load unchanged, and reproduces its outputs in eval
mode (see ``tests/test_generators_biggan.py``). Only the generator of BigGAN-deep exists in that format.

Architecture, for a batch of N (everything from ``config.json``, checked against the tensor shapes: z_dim Z,
num_classes K, channel_width ch, ``layers`` = [(upsample?, in, out) in units of ch, ...], the self-attention position,
BN eps, n_stats; biggan-deep-256: Z = 128, K = 1000, ch = 128, 13 entries in ``layers`` incl. attention):

    noise (N, Z) (truncated normal, see below), class vector c (1, K) → embed = c Eᵀ (1, Z)
    cond = [noise, embed] (N, 2Z)
    gen_z: SN-linear 2Z → 4·4·16ch, viewed (N, 4, 4, 16ch) (TF layout) → (N, 16ch, 4, 4)
    per ``layers`` entry: GenBlock (N, in·ch, H, H) → (N, out·ch, H', H'), H' = 2H when upsampling:
        4 × [conditional BN(cond) → ReLU → SN-conv] (1×1 to in·ch/4, two 3×3, 1×1 to out·ch; nearest ×2 before the
        first 3×3), plus the skip x[:, :out·ch] (×2 nearest); SelfAttn (non-local block) before entry
        ``attention_layer_position``
    BN → ReLU → SN-conv 3×3 (ch → ch) → first 3 channels → tanh: (N, 3, R, R) in [-1, 1]

Spectral-normalized weights are stored as ``weight_orig`` with the power-iteration vectors ``weight_u`` /
``weight_v``; eval mode (what this loader reproduces) uses ``weight_orig / (u · W v)`` with the stored u, v.
(``BigGAN.from_pretrained`` returns its module in *train* mode, where every call runs one more power iteration and
changes u, v: call ``.eval()`` there to compare.)

BatchNorm statistics are "standing statistics": ``running_means`` / ``running_vars`` (n_stats, C), one row per
truncation 0, 1/(n_stats-1), ..., 1. For a truncation t the package takes ``coef, i = modf(t · (n_stats - 1))`` and,
if ``coef != 0``, ``row_i · coef + row_{i+1} · (1 - coef)`` (those weights, not the textbook linear interpolation):
reproduced here, with t kept as a Python float (``float(np.float32(0.4))`` selects a different row).

Latent z and truncation: BigGAN draws its noise from a normal truncated to [-2, 2], times the truncation t
(``truncated_noise_sample(truncation=t)``), and passes the same t to the model (BN statistics). The pipeline draws
z ~ N(0, I); ``synthesize`` maps it elementwise, deterministically, to that distribution by the inverse-CDF
transform ``noise = t · Φ⁻¹(Φ(-2) + Φ(z) · (Φ(2) - Φ(-2)))`` (Φ the standard normal CDF, in float64): monotone,
odd, ≈ 0.96·t·z near 0, every z ~ N(0, 1) gives noise ~ t · TruncNormal(-2, 2) exactly. So seeds differ from
``truncated_noise_sample`` (scipy's rejection-free sampler), not the distribution; ``synthesize_noise`` takes
BigGAN's noise directly, and :func:`standard_normal_from_noise` inverts the transform.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from latentatlas.params import AsList, ParamsError, PathStr, PluginParams
from stages.plugins.generators.base import GENERATORS, GeneratorFileError
from stages.plugins.generators.state_dicts import check_against_module, existing_file, file_fingerprint, load_state_dict
from stages.runtime.weight_files import bounded_repr, bounded_text, build_on_meta, materialize

WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"

#: What a BigGAN path must point to, quoted in errors.
EXPECTED_FOLDER = (
    f"a pytorch-pretrained-biggan model: a folder with {WEIGHTS_NAME} + {CONFIG_NAME}, or the "
    f"{WEIGHTS_NAME} with {CONFIG_NAME} beside it"
)

#: BigGAN's truncated normal: noise ∈ [-TRUNCATION_BOUND, TRUNCATION_BOUND] · truncation.
TRUNCATION_BOUND = 2.0

#: BigGAN-deep's bottleneck: each GenBlock's inner width is in_channels / 4.
REDUCTION_FACTOR = 4


def noise_from_standard_normal(latents_z: torch.Tensor, truncation: float) -> torch.Tensor:
    """(N, Z) z ~ N(0, I) → (N, Z) noise ~ truncation · TruncNormal(-2, 2), elementwise by the inverse CDF (in
    float64 on z's device; returned as float32)."""
    values = latents_z.double()
    low = torch.special.ndtr(torch.tensor(-TRUNCATION_BOUND, dtype=torch.float64, device=values.device))
    mass = 1 - 2 * low  # Φ(2) - Φ(-2)
    probabilities = low + torch.special.ndtr(values) * mass
    return (torch.special.ndtri(probabilities) * truncation).float()


def standard_normal_from_noise(noise: torch.Tensor, truncation: float) -> torch.Tensor:
    """The inverse of :func:`noise_from_standard_normal`: (N, Z) BigGAN noise (|noise| < 2·truncation) → z."""
    values = noise.double() / truncation
    low = torch.special.ndtr(torch.tensor(-TRUNCATION_BOUND, dtype=torch.float64, device=values.device))
    mass = 1 - 2 * low
    return torch.special.ndtri((torch.special.ndtr(values) - low) / mass).float()


# ----------------------------------------------------------------------------------------------- layers


class SpectralNormalized(nn.Module):
    """Holds ``weight_orig`` (out, ...), ``weight_u`` (out,), ``weight_v`` (fan_in,) and an optional bias; ``weight``
    (not saved) is ``weight_orig / (u · W v)``, computed in float32 by :meth:`refresh` after loading."""

    def __init__(self, weight_shape: tuple[int, ...], bias: bool) -> None:
        super().__init__()
        self.weight_orig = nn.Parameter(torch.zeros(weight_shape))
        self.register_buffer("weight_u", torch.zeros(weight_shape[0]))
        self.register_buffer("weight_v", torch.zeros(math.prod(weight_shape[1:])))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None
        self.register_buffer("weight", torch.zeros(weight_shape), persistent=False)

    @torch.no_grad()
    def refresh(self) -> None:
        matrix = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        sigma = torch.dot(self.weight_u, torch.mv(matrix, self.weight_v))
        self.weight.copy_(self.weight_orig / sigma)


class SNLinear(SpectralNormalized):
    """(N, in) → (N, out) with the spectral-normalized weight (out, in)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__((out_features, in_features), bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.linear(inputs, self.weight, self.bias)


class SNConv2d(SpectralNormalized):
    """(N, in, H, W) → (N, out, H, W), k×k kernel, 'same' padding, spectral-normalized weight (out, in, k, k)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), bias)
        self.padding = kernel_size // 2

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.conv2d(inputs, self.weight, self.bias, padding=self.padding)


def standing_statistics(running: torch.Tensor, truncation: float) -> torch.Tensor:
    """(n_stats, C) per-truncation statistics → (C,) for ``truncation``, exactly as pytorch-pretrained-biggan
    selects them (``modf`` of t·(n_stats-1); weights coef on row i and 1 - coef on row i + 1)."""
    coefficient, start = math.modf(truncation / (1.0 / (running.shape[0] - 1)))
    start = int(start)
    if coefficient != 0.0:
        return running[start] * coefficient + running[start + 1] * (1 - coefficient)
    return running[start]


class ConditionalBatchNorm(nn.Module):
    """(N, C, H, W), cond (N, 2Z) → normalized with the standing statistics, · (1 + scale(cond)) + offset(cond)."""

    def __init__(self, channels: int, condition_dim: int, n_stats: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))
        self.scale = SNLinear(condition_dim, channels, bias=False)
        self.offset = SNLinear(condition_dim, channels, bias=False)

    def forward(self, features: torch.Tensor, truncation: float, condition: torch.Tensor) -> torch.Tensor:
        mean = standing_statistics(self.running_means, truncation).view(1, -1, 1, 1)
        variance = standing_statistics(self.running_vars, truncation).view(1, -1, 1, 1)
        weight = 1 + self.scale(condition).unsqueeze(-1).unsqueeze(-1)
        bias = self.offset(condition).unsqueeze(-1).unsqueeze(-1)
        return (features - mean) / torch.sqrt(variance + self.eps) * weight + bias


class BatchNorm(nn.Module):
    """The final, unconditional BN: (N, C, H, W) → normalized with the standing statistics, affine weight/bias."""

    def __init__(self, channels: int, n_stats: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, features: torch.Tensor, truncation: float) -> torch.Tensor:
        return F.batch_norm(
            features,
            standing_statistics(self.running_means, truncation),
            standing_statistics(self.running_vars, truncation),
            self.weight,
            self.bias,
            training=False,
            momentum=0.0,
            eps=self.eps,
        )


class GenBlock(nn.Module):
    """BigGAN-deep residual block: (N, in, H, H), cond → (N, out, H', H'), H' = 2H when ``upsample``."""

    def __init__(
        self, in_channels: int, out_channels: int, condition_dim: int, upsample: bool, n_stats: int, eps: float
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.out_channels = out_channels
        middle = in_channels // REDUCTION_FACTOR
        self.bn_0 = ConditionalBatchNorm(in_channels, condition_dim, n_stats, eps)
        self.conv_0 = SNConv2d(in_channels, middle, 1)
        self.bn_1 = ConditionalBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_1 = SNConv2d(middle, middle, 3)
        self.bn_2 = ConditionalBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_2 = SNConv2d(middle, middle, 3)
        self.bn_3 = ConditionalBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_3 = SNConv2d(middle, out_channels, 1)

    def forward(self, features: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        skip = features
        features = self.conv_0(F.relu(self.bn_0(features, truncation, condition)))
        features = F.relu(self.bn_1(features, truncation, condition))
        if self.upsample:
            features = F.interpolate(features, scale_factor=2, mode="nearest")
        features = self.conv_1(features)
        features = self.conv_2(F.relu(self.bn_2(features, truncation, condition)))
        features = self.conv_3(F.relu(self.bn_3(features, truncation, condition)))
        skip = skip[:, : self.out_channels]  # drops channels: out is in or in / 2
        if self.upsample:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return features + skip


class SelfAttention(nn.Module):
    """Non-local block (SAGAN): (N, C, H, W) → x + γ · attention output, same shape (keys, values 2× pooled)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.snconv1x1_theta = SNConv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_phi = SNConv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_g = SNConv2d(channels, channels // 2, 1, bias=False)
        self.snconv1x1_o_conv = SNConv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        theta = self.snconv1x1_theta(features).view(batch, channels // 8, height * width)
        phi = F.max_pool2d(self.snconv1x1_phi(features), 2).view(batch, channels // 8, height * width // 4)
        attention = torch.softmax(torch.bmm(theta.permute(0, 2, 1), phi), dim=-1)  # (N, HW, HW/4)
        values = F.max_pool2d(self.snconv1x1_g(features), 2).view(batch, channels // 2, height * width // 4)
        attended = torch.bmm(values, attention.permute(0, 2, 1)).view(batch, channels // 2, height, width)
        return features + self.gamma * self.snconv1x1_o_conv(attended)


# ----------------------------------------------------------------------------------------------- network


@dataclass(frozen=True)
class BigGANConfig:
    """``config.json`` of a pytorch-pretrained-biggan model (``class_embed_dim`` is unused by the network)."""

    output_dim: int
    z_dim: int
    channel_width: int
    num_classes: int
    layers: tuple[tuple[bool, int, int], ...]
    attention_layer_position: int
    eps: float
    n_stats: int

    @property
    def resolution(self) -> int:
        return 4 * 2 ** sum(1 for upsample, _, _ in self.layers if upsample)

    @classmethod
    def from_json(cls, path: Path) -> BigGANConfig:
        """Parse and check ``config.json``.

        Raises:
            GeneratorFileError: unreadable JSON, a missing or ill-typed key, or an inconsistent architecture.
        """
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as error:  # ValueError: bad JSON, bad UTF-8, 5000-digit ints
            raise GeneratorFileError(
                f"{path}: not readable JSON ({bounded_text(str(error))}); expected the "
                f"{CONFIG_NAME} of {EXPECTED_FOLDER}"
            ) from None
        if not isinstance(raw, dict):
            raise GeneratorFileError(f"{path}: holds a JSON {type(raw).__name__}, expected an object (BigGANConfig)")

        def integer(key: str, minimum: int) -> int:
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise GeneratorFileError(
                    f"{path}: {key!r} is {bounded_repr(value)}, expected an integer >= {minimum} (a BigGANConfig)"
                )
            return value

        layers = raw.get("layers")
        if (
            not isinstance(layers, list)
            or not layers
            or not all(
                isinstance(entry, list)
                and len(entry) == 3
                and isinstance(entry[0], bool)
                and all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in entry[1:])
                for entry in layers
            )
        ):
            raise GeneratorFileError(
                f"{path}: 'layers' is {bounded_repr(layers)}, expected a list of [upsample, in, out] (a BigGANConfig)"
            )
        for index, (_, size_in, size_out) in enumerate(layers):
            previous_out = layers[index - 1][2] if index else 16
            if size_in != previous_out or size_out not in (size_in, size_in // 2) or size_out * 2 < size_in:
                raise GeneratorFileError(
                    f"{path}: layers[{index}] = {bounded_repr(layers[index])} does not chain (in "
                    f"must be the previous out, 16 for the first; out = in or in / 2)"
                )
        if layers[-1][2] != 1:
            raise GeneratorFileError(
                f"{path}: the last 'layers' entry {bounded_repr(layers[-1])} must end at 1 "
                f"(channel_width channels, the final BatchNorm's width)"
            )
        eps = raw.get("eps")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
            raise GeneratorFileError(
                f"{path}: 'eps' is {bounded_repr(eps)}, expected a positive number (a BigGANConfig)"
            )
        config = cls(
            output_dim=integer("output_dim", 4),
            z_dim=integer("z_dim", 1),
            channel_width=integer("channel_width", 1),
            num_classes=integer("num_classes", 1),
            layers=tuple((bool(up), int(size_in), int(size_out)) for up, size_in, size_out in layers),
            attention_layer_position=integer("attention_layer_position", 0),
            eps=float(eps),
            n_stats=integer("n_stats", 2),
        )
        if config.resolution != config.output_dim:
            raise GeneratorFileError(
                f"{path}: 'layers' upsample 4 px to {config.resolution} px but 'output_dim' is {config.output_dim}"
            )
        return config


class BigGANNet(nn.Module):
    """Embedding plus generator, with the package's module names (``embeddings``, ``generator.*``):
    (N, Z) noise, (N or 1, K) class vectors → (N, 3, R, R) images in [-1, 1]."""

    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = nn.Linear(config.num_classes, config.z_dim, bias=False)
        self.generator = nn.Module()
        width = config.channel_width
        condition_dim = 2 * config.z_dim
        self.generator.gen_z = SNLinear(condition_dim, 4 * 4 * 16 * width)
        layers: list[nn.Module] = []
        for index, (upsample, size_in, size_out) in enumerate(config.layers):
            if index == config.attention_layer_position:
                layers.append(SelfAttention(width * size_in))
            layers.append(
                GenBlock(width * size_in, width * size_out, condition_dim, upsample, config.n_stats, config.eps)
            )
        self.generator.layers = nn.ModuleList(layers)
        self.generator.bn = BatchNorm(width, config.n_stats, config.eps)
        self.generator.conv_to_rgb = SNConv2d(width, width, 3)

    def refresh(self) -> None:
        """Recompute every spectral-normalized weight from the loaded ``weight_orig`` / ``u`` / ``v``."""
        for module in self.modules():
            if isinstance(module, SpectralNormalized):
                module.refresh()

    def condition(self, noise: torch.Tensor, class_vector: torch.Tensor) -> torch.Tensor:
        """(N, Z) noise, (N or 1, K) class vectors → (N, 2Z) condition [noise, class embedding]."""
        embedding = self.embeddings(class_vector).expand(noise.shape[0], -1)
        return torch.cat((noise, embedding.to(noise.dtype)), dim=1)

    def stem(self, condition: torch.Tensor) -> torch.Tensor:
        """(N, 2Z) → (N, 16·ch, 4, 4): gen_z, read in TF's (4, 4, C) order."""
        features = self.generator.gen_z(condition)
        features = features.view(-1, 4, 4, 16 * self.config.channel_width)
        return features.permute(0, 3, 1, 2).contiguous()

    def apply_layer(
        self, index: int, features: torch.Tensor, condition: torch.Tensor, truncation: float
    ) -> torch.Tensor:
        layer = self.generator.layers[index]
        return layer(features, condition, truncation) if isinstance(layer, GenBlock) else layer(features)

    def forward(self, noise: torch.Tensor, class_vector: torch.Tensor, truncation: float) -> torch.Tensor:
        condition = self.condition(noise, class_vector)
        features = self.stem(condition)
        for index in range(len(self.generator.layers)):
            features = self.apply_layer(index, features, condition, truncation)
        features = F.relu(self.generator.bn(features, truncation))
        return torch.tanh(self.generator.conv_to_rgb(features)[:, :3])


class BigGANGenerator:
    """A pytorch-pretrained-biggan BigGAN-deep, built for one class (or class mixture) and one truncation, behind
    the :class:`~stages.plugins.generators.Generator` protocol (z space only; z ~ N(0, I) mapped to BigGAN's truncated
    noise as the module docstring explains)."""

    latent_spaces = ("z",)

    def __init__(
        self, net: BigGANNet, name: str, fingerprint: str, class_vector: torch.Tensor, truncation: float
    ) -> None:
        self.net = net.eval().requires_grad_(False)
        self.name = name
        self.z_dim = net.config.z_dim
        self.resolution = net.config.resolution
        self.fingerprint = fingerprint
        self.truncation = truncation
        self.class_vector = class_vector  # (1, num_classes)

    @property
    def device(self) -> torch.device:
        return self.net.embeddings.weight.device

    def to(self, device: torch.device) -> BigGANGenerator:
        self.net.to(device)
        self.class_vector = self.class_vector.to(device)
        return self

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def noise(self, latents_z: torch.Tensor) -> torch.Tensor:
        """(N, z_dim) z ~ N(0, I) → (N, z_dim) BigGAN noise ~ truncation · TruncNormal(-2, 2), on the device."""
        if latents_z.dim() != 2 or latents_z.shape[1] != self.z_dim:
            raise ValueError(
                f"generator {self.name!r} expects latents of shape (N, {self.z_dim}), got {tuple(latents_z.shape)}"
            )
        return noise_from_standard_normal(latents_z.to(self.device), self.truncation)

    def synthesize_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """(N, z_dim) BigGAN noise (what ``truncated_noise_sample`` returns) → (N, 3, R, R) images in [-1, 1]."""
        return self.net(noise.to(self.device, torch.float32), self.class_vector, self.truncation)

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """(N, z_dim) z ~ N(0, I) → (N, 3, R, R) images in [-1, 1] of the generator's class, at its truncation."""
        if space != "z":
            raise ValueError(f"generator {self.name!r} has only the latent space 'z', not {space!r}")
        return self.synthesize_noise(self.noise(latents))

    def projection_matrix(self) -> torch.Tensor:
        """(16·ch·16, z_dim) matrix A: the noise columns of gen_z's spectral-normalized weight. ``A @ noise`` plus
        the bias and the class embedding's share is gen_z's output (rows in gen_z's (4, 4, 16·ch) order).
        It acts on BigGAN's noise, which is ≈ 0.96·truncation·z for |z| ≲ 1 (an isotropic scale), so its singular
        directions serve in z too."""
        return self.net.generator.gen_z.weight[:, : self.z_dim].detach()

    def early_features(self, latents: torch.Tensor, layer: int = 1) -> torch.Tensor:
        """(N, z_dim) z → (N, F) flattened activations: layer 1 is gen_z's (N, 16·ch, 4, 4); layer k > 1 is after
        entry k - 1 of ``generator.layers`` (GenBlocks and the self-attention)."""
        num_layers = len(self.net.generator.layers) + 1
        if not 1 <= layer <= num_layers:
            raise ValueError(f"layer must be in 1..{num_layers}, got {layer}")
        condition = self.net.condition(self.noise(latents), self.class_vector)
        features = self.net.stem(condition)
        for index in range(layer - 1):
            features = self.net.apply_layer(index, features, condition, self.truncation)
        return features.flatten(1)


# ----------------------------------------------------------------------------------------------- loading


def model_files(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) for ``path``: a folder holding both, or the weights file with its config beside it
    (``config.json``, or ``<prefix>-config.json`` for ``<prefix>-pytorch_model.bin`` as the package caches them).

    Raises:
        GeneratorFileError: either file is missing.
    """
    given = Path(path).expanduser()
    if given.is_dir():
        return existing_file(given / WEIGHTS_NAME, EXPECTED_FOLDER), existing_file(given / CONFIG_NAME, EXPECTED_FOLDER)
    weights = existing_file(given, EXPECTED_FOLDER)
    candidates = [weights.with_name(CONFIG_NAME)]
    if weights.name.endswith("-" + WEIGHTS_NAME):
        candidates.insert(0, weights.with_name(weights.name[: -len(WEIGHTS_NAME)] + CONFIG_NAME))
    for candidate in candidates:
        if candidate.is_file():
            return weights, candidate
    raise GeneratorFileError(f"{weights}: no {candidates[0].name} beside it; expected {EXPECTED_FOLDER}")


def load_biggan(path: str | Path) -> tuple[BigGANNet, Path, Path]:
    """The network at ``path`` (see :func:`model_files`), and its weights and config paths.

    Raises:
        GeneratorFileError: a missing or unreadable file, or weights that do not fit the config.
    """
    weights_path, config_path = model_files(path)
    config = BigGANConfig.from_json(config_path)
    state = load_state_dict(weights_path, EXPECTED_FOLDER)
    bound_config(config, state, config_path, weights_path)
    try:  # on the meta device: the config's sizes cost no memory until they match the weights' shapes
        net = build_on_meta(lambda: BigGANNet(config))
    except (ValueError, RuntimeError) as error:
        raise GeneratorFileError(
            f"{config_path}: does not describe a BigGAN-deep network ({bounded_text(str(error))})"
        ) from None
    check_against_module(state, net, weights_path, f"the BigGAN-deep model that {config_path} describes")
    materialize(net, state)
    net.refresh()
    return net, weights_path, config_path


def bound_config(config: BigGANConfig, state: dict[str, torch.Tensor], config_path: Path, weights_path: Path) -> None:
    """Bound ``config.json``'s sizes by the weights file's own tensors before a network is built from them: every
    size (and each block's width, channel_width × its multiplier) by the number of weights the tensors hold, the
    number of blocks by the number of tensors (each block has many).

    Raises:
        GeneratorFileError: the first size out of bounds, naming it and the bound.
    """
    weights = sum(tensor.numel() for tensor in state.values())
    sizes = {
        "z_dim": config.z_dim,
        "num_classes": config.num_classes,
        "channel_width": config.channel_width,
        "n_stats": config.n_stats,
        "output_dim": config.output_dim,
        "channel_width × the widest 'layers' entry": config.channel_width
        * max(max(size_in, size_out) for _, size_in, size_out in config.layers)
        * 16,
    }
    for name, value in sizes.items():
        if value > weights:
            raise GeneratorFileError(
                f"{config_path}: refused: {name} is {value:,}, more than the {weights:,} weights "
                f"{weights_path.name} holds: a size may not exceed the weights' count"
            )
    if len(config.layers) > len(state):
        raise GeneratorFileError(
            f"{config_path}: refused: 'layers' has {len(config.layers):,} entries, more than the "
            f"{len(state):,} tensors {weights_path.name} holds"
        )


def class_vector_for(
    config: BigGANConfig, class_index: int | None, class_onehot: list[float] | None, config_path: Path
) -> torch.Tensor:
    """(1, num_classes) float32 class vector from exactly one of ``class_index`` / ``class_onehot``.

    Raises:
        ParamsError: neither or both given, an index out of range, or a vector of the wrong length / not finite.
    """
    if (class_index is None) == (class_onehot is None):
        raise ParamsError(
            f"biggan: give exactly one of class_index (0..{config.num_classes - 1}) or class_onehot "
            f"(a list of {config.num_classes} weights): the model ({config_path}) is class-conditional"
        )
    if class_index is not None:
        if (
            isinstance(class_index, bool)
            or not isinstance(class_index, int)
            or not 0 <= class_index < config.num_classes
        ):
            raise ParamsError(
                f"biggan: class_index {class_index!r} is not a class of this model: expected an "
                f"integer in 0..{config.num_classes - 1} ({config_path})"
            )
        vector = torch.zeros(1, config.num_classes)
        vector[0, class_index] = 1.0
        return vector
    if (
        not isinstance(class_onehot, (list, tuple))
        or len(class_onehot) != config.num_classes
        or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            for value in class_onehot
        )
    ):
        raise ParamsError(
            f"biggan: class_onehot must be a list of {config.num_classes} finite numbers (one per "
            f"class of {config_path}), got {str(class_onehot)[:80]}"
        )
    return torch.tensor([list(map(float, class_onehot))], dtype=torch.float32)


class BigGANParams(PluginParams):
    """``generator.kwargs`` of ``biggan``: the model and exactly one of ``class_index`` / ``class_onehot`` (checked
    against the model's classes when it is read)."""

    path: PathStr = Field(
        description=f"the folder with {WEIGHTS_NAME} + {CONFIG_NAME}, or the .bin with its config beside it"
    )
    class_index: int | None = Field(
        None, ge=0, description="the class (an ImageNet index 0..999 for the released models)"
    )
    class_onehot: Annotated[list[float], AsList] | None = Field(
        None, min_length=1, description="a (one-hot or mixed) weight per class"
    )
    truncation: float = Field(
        0.4, gt=0, le=1, description="t ∈ (0, 1]: noise ~ t · TruncNormal(-2, 2) and the BN statistics of t"
    )


@GENERATORS.register("biggan", params=BigGANParams)
def build_biggan(params: BigGANParams) -> BigGANGenerator:
    """A BigGAN-deep from a pytorch-pretrained-biggan folder, for one class, at one truncation.

    ``params.truncation`` t: noise ~ t · TruncNormal(-2, 2) and the BN statistics of t (0.4 as in the package's
    README example; 1 = no truncation of the BN statistics, noise still bounded by 2).

    Raises:
        GeneratorFileError: missing / unreadable files, or weights that do not fit ``config.json``.
        ParamsError: no class, both kinds, or a class out of the model's range.
    """
    net, weights_path, config_path = load_biggan(params.path)
    class_index, truncation = params.class_index, params.truncation
    class_vector = class_vector_for(net.config, class_index, params.class_onehot, config_path)
    settings = {
        "class": class_vector.flatten().tolist() if class_index is None else class_index,
        "truncation": float(truncation),
    }
    return BigGANGenerator(
        net,
        "biggan",
        fingerprint=file_fingerprint("biggan", [weights_path, config_path], settings),
        class_vector=class_vector,
        truncation=float(truncation),
    )
