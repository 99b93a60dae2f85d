"""StyleGAN (v1) generators saved as InterFaceGAN ``.pth`` state dicts (e.g. ``stylegan_ffhq.pth``,
``stylegan_celebahq.pth``).

The network is the one InterFaceGAN's ``models/stylegan_generator_model.py`` defines (genforce/interfacegan, MIT
License, Copyright (c) 2019 Yujun Shen): this module follows its structure and state-dict key layout closely, so
that its files load unchanged, and reproduces its outputs (see ``tests/test_generators_interfacegan.py``).

Architecture, for a batch of N (sizes read from the file: z_dim L, hidden H, w_dim D, M mapping layers, B blocks,
resolution R = 4·2^(B-1), num_ws = 2B; the released 1024-px FFHQ model has L = H = D = 512, M = 8, num_ws = 18):

    mapping      z (N, L) → InterFaceGAN's preprocess z / |z| · √L → PixelNorm → M × [dense · (√2/√fan_in · 0.01)
                 + 0.01 · bias → LeakyReLU(0.2)] → w (N, D)
    truncation   w → w+ (N, num_ws, D): row l = w_avg + c_l · (w − w_avg), c_l = ψ for l < truncation_layers else 1
    synthesis    const (1, C0, 4, 4) → layer0 epilogue(w+[:, 0]) → layer1: conv 3×3, epilogue(w+[:, 1])
                 block b ≥ 1: layer{2b}: nearest ×2 + conv 3×3 (or fused transposed conv at ≥ 128 px) → blur [1,2,1]²
                 → epilogue(w+[:, 2b]); layer{2b+1}: conv 3×3 → epilogue(w+[:, 2b+1])
                 output{B-1}: conv 1×1 · (1/√C) + bias → (N, 3, R, R), linear (nominally [-1, 1], not clamped)
    epilogue     + noise · strength (the file's fixed noise maps) → + bias → LeakyReLU(0.2) → instance norm
                 → x · (1 + style_scale) + style_bias, with (style_scale, style_bias) = dense(w_l) (2C,)

Convolution weights are stored unscaled and multiplied by ``√2 / √fan_in`` at run time (TF "equalized learning
rate"). ``synthesis.lod`` (0 in released models) skips the last blocks and upsamples instead, as officially.

State-dict keys (InterFaceGAN's): ``mapping.dense{i}.linear.weight`` (out, in) / ``.wscale.bias``;
``truncation.w_avg`` (D,); ``synthesis.lod``; ``synthesis.layer0.first_layer`` (1, C0, 4, 4);
``synthesis.layer{k}.conv.weight`` (out, in, 3, 3) or ``synthesis.layer{k}.weight`` (3, 3, in, out) (fused);
``synthesis.layer{k}.blur.kernel`` (C, 1, 3, 3) for even k ≥ 2; ``synthesis.layer{k}.epilogue.{bias,
apply_noise.weight, apply_noise.noise, style_mod.dense.linear.weight, style_mod.dense.wscale.bias}``;
``synthesis.output{b}.conv.weight`` (3, C, 1, 1) / ``.bias``. InterFaceGAN does not save its truncation
coefficients (``truncation.truncation``): ψ and the truncated layers are this loader's kwargs.

Latent spaces and truncation (InterFaceGAN's defaults ψ = 0.7 on the first 8 layers, as its
``model_settings.STYLEGAN_TRUNCATION_PSI`` / ``STYLEGAN_TRUNCATION_LAYERS``):

- ``map(z)["w"]`` is the truncated w, ``w_avg + ψ · (w − w_avg)``, as the Generator protocol asks;
- ``synthesize(w, "w")`` feeds that w to the truncated layers and, when ``truncation_layers < num_ws``, the
  un-truncated ``w_avg + (w − w_avg) / ψ`` to the others, so ``synthesize(z, "z") == synthesize(map(z)["w"], "w")``
  and both equal InterFaceGAN's image of z. (The stored w is an affine image of InterFaceGAN's w, so a boundary
  fitted on it has the same normal.) With ``truncation_layers < num_ws``, ψ must be > 0, and ``w`` repeated
  num_ws times is *not* the same W+ code as ``synthesize`` builds from ``w``;
- ``synthesize(w_plus, "w+")`` uses the (N, num_ws, D) code as given: it is InterFaceGAN's ``wp`` (already
  truncated), e.g. ``wp`` of its ``synthesize(z, 'Z')``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from latentatlas.params import ParamsError, PathStr, PluginParams
from stages.plugins.generators.base import GENERATORS, GeneratorFileError
from stages.plugins.generators.pggan import pixel_norm, sphere_normalize
from stages.plugins.generators.state_dicts import (
    check_against_module,
    existing_file,
    file_fingerprint,
    load_state_dict,
    progressive_block_channels,
    require_keys,
)
from stages.runtime.weight_files import build_on_meta, materialize

#: What a StyleGAN file must be, quoted in errors.
EXPECTED_FILE = (
    "an InterFaceGAN StyleGAN (v1) generator state dict (.pth with keys mapping.dense0.linear.weight, "
    "truncation.w_avg, synthesis.layer0.first_layer)"
)

#: InterFaceGAN's defaults (``model_settings.STYLEGAN_TRUNCATION_PSI`` / ``STYLEGAN_TRUNCATION_LAYERS``).
DEFAULT_TRUNCATION_PSI = 0.7
DEFAULT_TRUNCATION_LAYERS = 8

#: Mapping-network learning-rate multiplier: its weights are stored ×(1/0.01) and scaled back at run time.
MAPPING_LR_MULTIPLIER = 0.01

#: Fixed epsilon of InterFaceGAN's InstanceNormLayer.
INSTANCE_NORM_EPSILON = 1e-8


def instance_norm(features: torch.Tensor, epsilon: float = INSTANCE_NORM_EPSILON) -> torch.Tensor:
    """(N, C, H, W) → zero mean, unit RMS per sample and channel (in float32, so fp16 autocast cannot overflow)."""
    values = features.float()
    values = values - torch.mean(values, dim=[2, 3], keepdim=True)
    values = values / torch.sqrt(torch.mean(values**2, dim=[2, 3], keepdim=True) + epsilon)
    return values.to(features.dtype)


class WScaleBias(nn.Module):
    """The bias InterFaceGAN keeps in a ``wscale`` submodule (key ``...wscale.bias``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class DenseLayer(nn.Module):
    """(N, in) → (N, out): ``x Wᵀ · gain·lr/√in + lr · bias``, then LeakyReLU(0.2) when ``activate``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        gain: float = math.sqrt(2.0),
        lr_multiplier: float = MAPPING_LR_MULTIPLIER,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.wscale = WScaleBias(out_features)
        self.scale = gain / math.sqrt(in_features) * lr_multiplier
        self.lr_multiplier = lr_multiplier
        self.activate = activate

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.linear(inputs) * self.scale + self.wscale.bias.view(1, -1) * self.lr_multiplier
        return F.leaky_relu(outputs, 0.2) if self.activate else outputs


class MappingNetwork(nn.Module):
    """z (N, L) → w (N, D): PixelNorm then ``num_layers`` dense layers (keys ``dense{i}``)."""

    def __init__(self, z_dim: int, hidden_dim: int, w_dim: int, num_layers: int) -> None:
        super().__init__()
        for index in range(num_layers):
            self.add_module(
                f"dense{index}",
                DenseLayer(z_dim if index == 0 else hidden_dim, w_dim if index == num_layers - 1 else hidden_dim),
            )
        self.num_layers = num_layers

    def forward(self, latents_z: torch.Tensor) -> torch.Tensor:
        features = pixel_norm(latents_z)
        for index in range(self.num_layers):
            features = getattr(self, f"dense{index}")(features)
        return features


class Truncation(nn.Module):
    """Holds ``w_avg`` (D,), the file's average w (TF ``dlatent_avg``)."""

    def __init__(self, w_dim: int) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))


class NoiseInput(nn.Module):
    """Adds the stored noise map (1, 1, H, W) times a per-channel strength (C,)."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.register_buffer("noise", torch.zeros(1, 1, size, size))
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.noise * self.weight.view(1, -1, 1, 1)


class StyleModulation(nn.Module):
    """AdaIN's style: w (N, D) → per-channel (scale, bias) via a dense layer; x · (scale + 1) + bias."""

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.dense = DenseLayer(w_dim, 2 * channels, gain=1.0, lr_multiplier=1.0, activate=False)

    def forward(self, features: torch.Tensor, latent_w: torch.Tensor) -> torch.Tensor:
        style = self.dense(latent_w).view(-1, 2, self.channels, 1, 1)
        return features * (style[:, 0] + 1) + style[:, 1]


class Epilogue(nn.Module):
    """After every conv: noise, bias, LeakyReLU(0.2), instance norm, style modulation. (N, C, H, H) → same."""

    def __init__(self, channels: int, size: int, w_dim: int) -> None:
        super().__init__()
        self.apply_noise = NoiseInput(channels, size)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style_mod = StyleModulation(channels, w_dim)

    def forward(self, features: torch.Tensor, latent_w: torch.Tensor) -> torch.Tensor:
        features = self.apply_noise(features)
        features = F.leaky_relu(features + self.bias.view(1, -1, 1, 1), 0.2)
        return self.style_mod(instance_norm(features), latent_w)


class ConstLayer(nn.Module):
    """Layer 0: the learned constant (1, C0, 4, 4), repeated for the batch, then the epilogue."""

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.first_layer = nn.Parameter(torch.zeros(1, channels, 4, 4))
        self.epilogue = Epilogue(channels, 4, w_dim)

    def forward(self, latent_w: torch.Tensor) -> torch.Tensor:
        return self.epilogue(self.first_layer.repeat(latent_w.shape[0], 1, 1, 1), latent_w)


class Blur(nn.Module):
    """Depthwise 3×3 blur with the stored kernel (C, 1, 3, 3) ([1, 2, 1]ᵀ[1, 2, 1] / 16 in released files)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.zeros(channels, 1, 3, 3))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.conv2d(features, self.kernel.to(features.dtype), padding=1, groups=features.shape[1])


class ConvLayer(nn.Module):
    """A 3×3 conv layer, (N, in, H, H) → (N, out, H', H') with H' = 2H when ``upsample`` (nearest ×2 then conv, or
    the fused stride-2 transposed conv), then blur (upsampling layers only) and the epilogue."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int,
        w_dim: int,
        upsample: bool = False,
        fused_scale: bool = False,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.fused_scale = upsample and fused_scale
        self.scale = math.sqrt(2.0) / math.sqrt(in_channels * 9)
        if self.fused_scale:  # TF layout (3, 3, in, out), as InterFaceGAN stores it
            self.weight = nn.Parameter(torch.zeros(3, 3, in_channels, out_channels))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        if upsample:
            self.blur = Blur(out_channels)
        self.epilogue = Epilogue(out_channels, size, w_dim)

    def forward(self, features: torch.Tensor, latent_w: torch.Tensor) -> torch.Tensor:
        if self.fused_scale:
            kernel = F.pad(self.weight * self.scale, (0, 0, 0, 0, 1, 1, 1, 1))
            kernel = kernel[1:, 1:] + kernel[:-1, 1:] + kernel[1:, :-1] + kernel[:-1, :-1]
            features = F.conv_transpose2d(features, kernel.permute(2, 3, 0, 1), stride=2, padding=1)
        else:
            if self.upsample:
                features = F.interpolate(features, scale_factor=2, mode="nearest")
            features = self.conv(features) * self.scale
        if self.upsample:
            features = self.blur(features)
        return self.epilogue(features, latent_w)


class ToRGB(nn.Module):
    """(N, C, H, H) → (N, 3, H, H): 1×1 conv · (1/√C) + bias."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 1, bias=False)
        self.scale = 1 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features) * self.scale + self.bias.view(1, -1, 1, 1)


@dataclass(frozen=True)
class StyleGANArchitecture:
    """What a StyleGAN v1 file's tensor shapes say."""

    z_dim: int
    hidden_dim: int
    w_dim: int
    mapping_layers: int
    channels: tuple[int, ...]  # C0 (const) then one per block: 4, 8, ... px
    fused_scale: tuple[bool, ...]  # per block; False for block 0

    @property
    def num_blocks(self) -> int:
        return len(self.channels)

    @property
    def resolution(self) -> int:
        return 4 * 2 ** (self.num_blocks - 1)

    @property
    def num_ws(self) -> int:
        return 2 * self.num_blocks

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], path: Path) -> StyleGANArchitecture:
        """Read the architecture from the key layout and shapes.

        Raises:
            GeneratorFileError: the keys are not InterFaceGAN StyleGAN's (e.g. a PGGAN or BigGAN file).
        """
        require_keys(
            state,
            [
                "mapping.dense0.linear.weight",
                "truncation.w_avg",
                "synthesis.lod",
                "synthesis.layer0.first_layer",
                "synthesis.output0.conv.weight",
            ],
            path,
            EXPECTED_FILE,
        )
        mapping_layers = sum(1 for key in state if key.startswith("mapping.dense") and key.endswith(".linear.weight"))
        num_blocks = sum(1 for key in state if key.startswith("synthesis.output") and key.endswith(".conv.weight"))
        require_keys(
            state,
            [f"mapping.dense{index}.linear.weight" for index in range(mapping_layers)]
            + [f"synthesis.output{block}.conv.weight" for block in range(num_blocks)],
            path,
            EXPECTED_FILE,
        )
        first_dense = state["mapping.dense0.linear.weight"]
        first_channels = int(state["synthesis.layer0.first_layer"].shape[1])
        channels, fused = progressive_block_channels(
            state, "synthesis.", first_channels, num_blocks, path, EXPECTED_FILE
        )
        return cls(
            z_dim=int(first_dense.shape[1]),
            hidden_dim=int(first_dense.shape[0]),
            w_dim=int(state["truncation.w_avg"].shape[0]),
            mapping_layers=mapping_layers,
            channels=tuple(channels),
            fused_scale=tuple(fused),
        )


def _remember_level_of_detail(module: nn.Module, incompatible_keys: object) -> None:
    """Post-hook of ``load_state_dict``: keep the loaded ``lod`` buffer's value as ``module.level_of_detail``."""
    module.level_of_detail = float(module.lod)


class SynthesisNetwork(nn.Module):
    """w+ (N, num_ws, D) → (N, 3, R, R) images."""

    def __init__(self, architecture: StyleGANArchitecture) -> None:
        super().__init__()
        self.num_blocks = architecture.num_blocks
        w_dim = architecture.w_dim
        for block, channels in enumerate(architecture.channels):
            size = 4 * 2**block
            if block == 0:
                self.add_module("layer0", ConstLayer(channels, w_dim))
            else:
                self.add_module(
                    f"layer{2 * block}",
                    ConvLayer(
                        architecture.channels[block - 1],
                        channels,
                        size,
                        w_dim,
                        upsample=True,
                        fused_scale=architecture.fused_scale[block],
                    ),
                )
            self.add_module(f"layer{2 * block + 1}", ConvLayer(channels, channels, size, w_dim))
            self.add_module(f"output{block}", ToRGB(channels))
        self.register_buffer("lod", torch.zeros(()))
        #: ``lod`` as a Python number, refreshed whenever a state dict is loaded: the forward pass branches on it
        #: without reading a tensor (which would split a compiled graph).
        self.level_of_detail = 0.0
        self.register_load_state_dict_post_hook(_remember_level_of_detail)

    def forward(self, latents_w_plus: torch.Tensor) -> torch.Tensor:
        level_of_detail = self.level_of_detail
        features = self.layer0(latents_w_plus[:, 0])
        features = self.layer1(features, latents_w_plus[:, 1])
        last_run = 0
        for block in range(1, self.num_blocks):
            if block + 1 + level_of_detail < self.num_blocks + 1:  # the official test on block_idx + lod
                features = getattr(self, f"layer{2 * block}")(features, latents_w_plus[:, 2 * block])
                features = getattr(self, f"layer{2 * block + 1}")(features, latents_w_plus[:, 2 * block + 1])
                last_run = block
        image = getattr(self, f"output{last_run}")(features)
        for _ in range(last_run + 1, self.num_blocks):
            image = F.interpolate(image, scale_factor=2, mode="nearest")
        return image


class StyleGANNet(nn.Module):
    """Mapping, ``w_avg`` and synthesis, with InterFaceGAN's module names (``mapping``, ``truncation``,
    ``synthesis``) so its state dicts load as they are."""

    def __init__(self, architecture: StyleGANArchitecture) -> None:
        super().__init__()
        self.architecture = architecture
        self.mapping = MappingNetwork(
            architecture.z_dim, architecture.hidden_dim, architecture.w_dim, architecture.mapping_layers
        )
        self.truncation = Truncation(architecture.w_dim)
        self.synthesis = SynthesisNetwork(architecture)


class StyleGANGenerator:
    """An InterFaceGAN StyleGAN v1 behind the :class:`~stages.plugins.generators.Generator` protocol: spaces z, w, w+
    (truncation as the module docstring explains)."""

    latent_spaces = ("z", "w", "w+")

    def __init__(
        self, net: StyleGANNet, name: str, fingerprint: str, truncation_psi: float, truncation_layers: int
    ) -> None:
        self.net = net.eval().requires_grad_(False)
        self.name = name
        architecture = net.architecture
        self.z_dim = architecture.z_dim
        self.w_dim = architecture.w_dim
        self.num_ws = architecture.num_ws
        self.resolution = architecture.resolution
        self.fingerprint = fingerprint
        self.truncation_psi = truncation_psi
        self.truncation_layers = truncation_layers
        #: ψ applied by ``map`` (1 when no layer is truncated).
        self.map_psi = truncation_psi if truncation_layers > 0 else 1.0

    @property
    def device(self) -> torch.device:
        return self.net.truncation.w_avg.device

    def to(self, device: torch.device) -> StyleGANGenerator:
        self.net.to(device)
        return self

    def layer_coefficients(self) -> torch.Tensor:
        """(1, num_ws, 1): ψ for the first ``truncation_layers`` layers, 1 for the others."""
        coefficients = torch.ones(1, self.num_ws, 1, device=self.device)
        coefficients[:, : min(self.truncation_layers, self.num_ws)] = self.truncation_psi
        return coefficients

    def _check(self, latents: torch.Tensor, shape: tuple[int, ...], space: str) -> torch.Tensor:
        if tuple(latents.shape[1:]) != shape or latents.dim() != len(shape) + 1:
            raise ValueError(
                f"generator {self.name!r} expects {space!r} latents of shape (N, "
                f"{', '.join(map(str, shape))}), got {tuple(latents.shape)}"
            )
        return latents.to(self.device)

    def mapped(self, latents_z: torch.Tensor) -> torch.Tensor:
        """(N, z_dim) z → (N, w_dim) un-truncated w (InterFaceGAN's ``synthesize(z, 'Z')['w']``)."""
        return self.net.mapping(sphere_normalize(self._check(latents_z, (self.z_dim,), "z")))

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, z_dim) z → ``{"w": (N, w_dim)}``, truncated: ``w_avg + ψ · (w − w_avg)`` (ψ = 1 when
        ``truncation_layers`` is 0)."""
        w_avg = self.net.truncation.w_avg
        return {"w": w_avg + (self.mapped(latents_z) - w_avg) * self.map_psi}

    def w_plus_from_z(self, latents_z: torch.Tensor) -> torch.Tensor:
        """(N, z_dim) z → (N, num_ws, w_dim) InterFaceGAN's ``wp``: each layer's w truncated by its coefficient."""
        w_avg = self.net.truncation.w_avg.view(1, 1, -1)
        latents_w = self.mapped(latents_z).unsqueeze(1).repeat(1, self.num_ws, 1)
        return w_avg + (latents_w - w_avg) * self.layer_coefficients()

    def w_plus(self, latents_w: torch.Tensor) -> torch.Tensor:
        """(N, w_dim) truncated w (as ``map`` returns it) → (N, num_ws, w_dim): w on the truncated layers, the
        un-truncated ``w_avg + (w − w_avg) / ψ`` on the others."""
        latents_w = self._check(latents_w, (self.w_dim,), "w").unsqueeze(1).repeat(1, self.num_ws, 1)
        if self.truncation_layers >= self.num_ws or self.map_psi == 1.0:
            return latents_w
        w_avg = self.net.truncation.w_avg.view(1, 1, -1)
        untruncated = w_avg + (latents_w - w_avg) / self.map_psi
        keep = torch.arange(self.num_ws, device=self.device).view(1, -1, 1) < self.truncation_layers
        return torch.where(keep, latents_w, untruncated)

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Latents of ``space`` → (N, 3, R, R) images, nominally in [-1, 1] (not clamped).

        ``z`` (N, z_dim); ``w`` (N, w_dim) truncated, as ``map`` returns it; ``w+`` (N, num_ws, w_dim) used as
        given (InterFaceGAN's ``wp``).
        """
        if space == "z":
            latents_w_plus = self.w_plus_from_z(latents)
        elif space == "w":
            latents_w_plus = self.w_plus(latents)
        elif space == "w+":
            latents_w_plus = self._check(latents, (self.num_ws, self.w_dim), "w+")
        else:
            raise ValueError(f"generator {self.name!r} has the latent spaces {self.latent_spaces}, not {space!r}")
        return self.net.synthesis(latents_w_plus)


def load_stylegan(path: str | Path) -> tuple[StyleGANNet, Path]:
    """The network saved at ``path`` (architecture from its tensor shapes), and the resolved path.

    Raises:
        GeneratorFileError: missing, unreadable or not an InterFaceGAN StyleGAN v1 state dict.
    """
    resolved = existing_file(path, EXPECTED_FILE)
    state = load_state_dict(resolved, EXPECTED_FILE)
    state.pop("truncation.truncation", None)  # InterFaceGAN drops it when saving; tolerate a file that kept it
    architecture = StyleGANArchitecture.from_state_dict(state, resolved)
    net = build_on_meta(lambda: StyleGANNet(architecture))  # no memory until the shapes fit the file
    check_against_module(state, net, resolved, EXPECTED_FILE)
    level_of_detail = float(state["synthesis.lod"])
    if not 0 <= level_of_detail < net.synthesis.num_blocks:
        raise GeneratorFileError(
            f"{resolved}: synthesis.lod is {level_of_detail}, expected 0 <= lod < "
            f"{net.synthesis.num_blocks} (the number of blocks); expected {EXPECTED_FILE}"
        )
    materialize(net, state)
    return net, resolved


class StyleGANParams(PluginParams):
    """``generator.kwargs`` of ``stylegan`` (v1, an InterFaceGAN state dict)."""

    path: PathStr = Field(description="the .pth file (~ expanded)")
    truncation_psi: float = Field(
        DEFAULT_TRUNCATION_PSI, description="ψ, the pull towards w_avg (1 disables truncation; InterFaceGAN's 0.7)"
    )
    truncation_layers: int = Field(
        DEFAULT_TRUNCATION_LAYERS, ge=0, description="how many of the first W+ layers are truncated (0 disables)"
    )


@GENERATORS.register("stylegan", params=StyleGANParams)
def build_stylegan(params: StyleGANParams) -> StyleGANGenerator:
    """A StyleGAN v1 from an InterFaceGAN ``.pth`` state dict (``stylegan_ffhq.pth``, ...); sizes come from the file.

    Raises:
        GeneratorFileError: the file is missing, unreadable or not an InterFaceGAN StyleGAN state dict.
        ParamsError: ψ = 0 on only some layers.
    """
    truncation_psi, truncation_layers = params.truncation_psi, params.truncation_layers
    net, resolved = load_stylegan(params.path)
    if truncation_psi == 0 and 0 < truncation_layers < net.architecture.num_ws:
        raise ParamsError(
            f"stylegan: truncation_psi 0 with truncation_layers {truncation_layers} < num_ws "
            f"{net.architecture.num_ws} leaves no w that determines the image; use psi > 0 or "
            f"truncation_layers >= {net.architecture.num_ws}"
        )
    settings = {
        "truncation_psi": float(truncation_psi),
        "truncation_layers": min(truncation_layers, net.architecture.num_ws),
    }
    return StyleGANGenerator(
        net,
        "stylegan",
        fingerprint=file_fingerprint("stylegan", [resolved], settings),
        truncation_psi=float(truncation_psi),
        truncation_layers=truncation_layers,
    )
