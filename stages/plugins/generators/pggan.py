"""Progressive GAN (PGGAN) generators saved as InterFaceGAN ``.pth`` state dicts (e.g. ``pggan_celebahq.pth``).

The network is the one InterFaceGAN's ``models/pggan_generator_model.py`` defines (genforce/interfacegan, MIT
License, Copyright (c) 2019 Yujun Shen): this module follows its structure and state-dict key layout closely, so
that its files load unchanged, and reproduces its outputs (see ``tests/test_generators_interfacegan.py``).

Architecture, for a batch of N, latent size L = C0 and B blocks (resolution R = 4·2^(B-1); channels C1..CB are read
from the file's tensor shapes, e.g. 512, 512, 512, 512, 512, 256, 128, 64, 32, 16 for the released 1024-px models):

    z (N, L) → InterFaceGAN's preprocess: z / |z| · √L (onto the sphere every PGGAN z is drawn from)
      → view (N, L, 1, 1)
      block 1:  layer0: PixelNorm → Conv 4×4, padding 3 → (N, C1, 4, 4) → ·scale + bias → LeakyReLU(0.2)
                layer1: PixelNorm → Conv 3×3 → (N, C1, 4, 4) → ·scale + bias → LeakyReLU(0.2)
      block b:  layer{2b-2}: PixelNorm → nearest ×2 → Conv 3×3 (or one fused transposed conv) → (N, Cb, 4·2^(b-1), ...)
                layer{2b-1}: PixelNorm → Conv 3×3 → (N, Cb, ...)
      output{B-1}: PixelNorm → Conv 1×1 · (1/√CB) + bias → (N, 3, R, R), linear (nominally [-1, 1], not clamped)

Every weight is stored unscaled (N(0, 1) in training, the TF "equalized learning rate"); each layer multiplies by
``gain / √fan_in`` at run time (gain √2, 1 for ToRGB). ``lod`` (level of detail, 0 in released models) skips the
last ``lod`` blocks and upsamples the coarser image instead, as the official forward does.

State-dict keys (InterFaceGAN's): ``lod``; ``layer{i}.conv.weight`` (out, in, k, k) or, for a fused-scale
upsampling layer, ``layer{i}.weight`` (3, 3, in, out) (TF layout); ``layer{i}.wscale.bias`` (out,);
``output{b}.conv.weight`` (3, C_{b+1}, 1, 1) and ``output{b}.wscale.bias`` (3,) per block b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentatlas.params import PathStr, PluginParams
from stages.plugins.generators.base import GENERATORS, GeneratorFileError
from stages.plugins.generators.state_dicts import (
    check_against_module,
    existing_file,
    file_fingerprint,
    load_state_dict,
    progressive_block_channels,
    require_keys,
)
from stages.runtime.weight_files import build_on_meta, materialize

#: What a PGGAN file must be, quoted in errors.
EXPECTED_FILE = (
    "an InterFaceGAN PGGAN generator state dict (.pth with keys lod, layer0.conv.weight, output0.conv.weight)"
)

#: The epsilon of InterFaceGAN's PixelNormLayer.
PIXEL_NORM_EPSILON = 1e-8


def pixel_norm(features: torch.Tensor, epsilon: float = PIXEL_NORM_EPSILON) -> torch.Tensor:
    """(N, C, ...) features / root-mean-square over C (computed in float32, so fp16 autocast cannot overflow it)."""
    values = features.float()
    return (values / torch.sqrt(torch.mean(values**2, dim=1, keepdim=True) + epsilon)).to(features.dtype)


def sphere_normalize(latents_z: torch.Tensor) -> torch.Tensor:
    """InterFaceGAN's ``preprocess`` of z: (N, L) → (N, L) rows rescaled to norm √L (a zero row stays zero)."""
    values = latents_z.float()
    norms = values.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return values / norms * math.sqrt(values.shape[1])


class WScaleBias(nn.Module):
    """The per-channel bias that InterFaceGAN keeps in its ``wscale`` submodule (key ``...wscale.bias``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class PGGANLayer(nn.Module):
    """PixelNorm → [nearest ×2] → conv with run-time weight scale → + bias → [LeakyReLU(0.2)].

    (N, in_channels, H, W) → (N, out_channels, H', W'), H' = 2H when ``upsample`` (4 for the first layer, which
    maps a (N, L, 1, 1) latent to 4×4 with a 4×4 kernel and padding 3), else H.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        upsample: bool = False,
        fused_scale: bool = False,
        gain: float = math.sqrt(2.0),
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.fused_scale = upsample and fused_scale
        self.activate = activate
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        if self.fused_scale:  # TF layout (k, k, in, out), as InterFaceGAN stores it
            self.weight = nn.Parameter(torch.zeros(kernel_size, kernel_size, in_channels, out_channels))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.wscale = WScaleBias(out_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = pixel_norm(features)
        if self.fused_scale:
            # Upsample + 3×3 conv fused into one stride-2 transposed conv with the 4×4 kernel that sums the
            # four shifted copies of the 3×3 one (InterFaceGAN's and TF PGGAN's fused_scale).
            kernel = F.pad(self.weight * self.scale, (0, 0, 0, 0, 1, 1, 1, 1))
            kernel = kernel[1:, 1:] + kernel[:-1, 1:] + kernel[1:, :-1] + kernel[:-1, :-1]
            features = F.conv_transpose2d(features, kernel.permute(2, 3, 0, 1), stride=2, padding=1) / self.scale
        else:
            if self.upsample:
                features = F.interpolate(features, scale_factor=2, mode="nearest")
            features = self.conv(features)
        features = features * self.scale + self.wscale.bias.view(1, -1, 1, 1)
        return F.leaky_relu(features, 0.2) if self.activate else features


@dataclass(frozen=True)
class PGGANArchitecture:
    """What a PGGAN file's tensor shapes say: latent size, channels per block, fused-scale flags, resolution."""

    latent_dim: int
    channels: tuple[int, ...]  # C1..CB, one per block (4, 8, ... px)
    fused_scale: tuple[bool, ...]  # per block; always False for block 1

    @property
    def resolution(self) -> int:
        return 4 * 2 ** (len(self.channels) - 1)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], path: Path) -> PGGANArchitecture:
        """Read the architecture from the key layout and shapes.

        Raises:
            GeneratorFileError: the keys are not InterFaceGAN PGGAN's (e.g. a StyleGAN or BigGAN file).
        """
        require_keys(
            state, ["lod", "layer0.conv.weight", "layer0.wscale.bias", "output0.conv.weight"], path, EXPECTED_FILE
        )
        num_blocks = sum(1 for key in state if key.startswith("output") and key.endswith(".conv.weight"))
        require_keys(state, [f"output{block}.conv.weight" for block in range(num_blocks)], path, EXPECTED_FILE)
        first = state["layer0.conv.weight"]
        if first.dim() != 4 or tuple(first.shape[2:]) != (4, 4):
            raise GeneratorFileError(
                f"{path}: layer0.conv.weight has shape {tuple(first.shape)}, expected "
                f"(C1, latent, 4, 4); expected {EXPECTED_FILE}"
            )
        channels, fused = progressive_block_channels(state, "", int(first.shape[0]), num_blocks, path, EXPECTED_FILE)
        rgb_channels = int(state["output0.conv.weight"].shape[0])
        if rgb_channels != 3:
            raise GeneratorFileError(
                f"{path}: output0.conv.weight makes {rgb_channels} channels; expected an RGB "
                f"(3-channel) {EXPECTED_FILE}"
            )
        return cls(latent_dim=int(first.shape[1]), channels=tuple(channels), fused_scale=tuple(fused))


def _remember_level_of_detail(module: nn.Module, incompatible_keys: object) -> None:
    """Post-hook of ``load_state_dict``: keep the loaded ``lod`` buffer's value as ``module.level_of_detail``."""
    module.level_of_detail = float(module.lod)


class PGGANNet(nn.Module):
    """The PGGAN generator network: (N, L) latents (already sphere-normalized) → (N, 3, R, R) images."""

    def __init__(self, architecture: PGGANArchitecture) -> None:
        super().__init__()
        self.architecture = architecture
        previous = architecture.latent_dim
        for index, (channels, fused) in enumerate(zip(architecture.channels, architecture.fused_scale)):
            if index == 0:
                first = PGGANLayer(previous, channels, kernel_size=4, padding=3)
            else:
                first = PGGANLayer(previous, channels, upsample=True, fused_scale=fused)
            self.add_module(f"layer{2 * index}", first)
            self.add_module(f"layer{2 * index + 1}", PGGANLayer(channels, channels))
            self.add_module(
                f"output{index}", PGGANLayer(channels, 3, kernel_size=1, padding=0, gain=1.0, activate=False)
            )
            previous = channels
        self.register_buffer("lod", torch.zeros(()))
        #: ``lod`` as a Python number, refreshed whenever a state dict is loaded: the forward pass branches on it
        #: without reading a tensor (which would split a compiled graph).
        self.level_of_detail = 0.0
        self.register_load_state_dict_post_hook(_remember_level_of_detail)

    @property
    def num_blocks(self) -> int:
        return len(self.architecture.channels)

    def block(self, index: int, features: torch.Tensor) -> torch.Tensor:
        """Block ``index`` (0-based): its two conv layers, (N, C_in, H, H) → (N, C_index+1, H', H')."""
        features = getattr(self, f"layer{2 * index}")(features)
        return getattr(self, f"layer{2 * index + 1}")(features)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        features = latents.view(latents.shape[0], latents.shape[1], 1, 1)
        level_of_detail = self.level_of_detail
        last_run = 0
        for index in range(self.num_blocks):
            if index + 1 + level_of_detail < self.num_blocks + 1:  # the official test on block_idx + lod
                features = self.block(index, features)
                last_run = index
        image = getattr(self, f"output{last_run}")(features)
        for _ in range(last_run + 1, self.num_blocks):
            image = F.interpolate(image, scale_factor=2, mode="nearest")
        return image


class PGGANGenerator:
    """An InterFaceGAN PGGAN behind the :class:`~stages.plugins.generators.Generator` protocol (z space only).

    ``synthesize(z)`` applies InterFaceGAN's preprocess (z rescaled to norm √z_dim), so the pipeline's z ~ N(0, I)
    gives what ``PGGANGenerator.easy_sample`` + ``synthesize`` give in InterFaceGAN.
    """

    latent_spaces = ("z",)

    def __init__(self, net: PGGANNet, name: str, fingerprint: str) -> None:
        self.net = net.eval().requires_grad_(False)
        self.name = name
        self.z_dim = net.architecture.latent_dim
        self.resolution = net.architecture.resolution
        self.fingerprint = fingerprint

    @property
    def device(self) -> torch.device:
        return self.net.lod.device

    def to(self, device: torch.device) -> PGGANGenerator:
        self.net.to(device)
        return self

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def _check_z(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 2 or latents.shape[1] != self.z_dim:
            raise ValueError(
                f"generator {self.name!r} expects latents of shape (N, {self.z_dim}), got {tuple(latents.shape)}"
            )
        return sphere_normalize(latents.to(self.device))

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """(N, z_dim) z → (N, 3, R, R) images, nominally in [-1, 1] (not clamped)."""
        if space != "z":
            raise ValueError(f"generator {self.name!r} has only the latent space 'z', not {space!r}")
        return self.net(self._check_z(latents))

    def projection_matrix(self) -> torch.Tensor:
        """(C1·16, z_dim) matrix A of the first layer: its conv (4×4 kernel, padding 3) on the (N, L, 1, 1) latent
        gives ``out[c, i, j] = scale · Σ_k weight[c, k, 3-i, 3-j] · z_k``; rows in (c, i, j) order, i.e. A @ z is the
        flattened (C1, 4, 4) map before bias and activation (z after InterFaceGAN's normalization)."""
        layer = self.net.layer0
        weight = layer.conv.weight.detach().flip(2, 3) * layer.scale  # (C1, L, 4, 4)
        return weight.permute(0, 2, 3, 1).reshape(-1, weight.shape[1])

    def early_features(self, latents: torch.Tensor, layer: int = 1) -> torch.Tensor:
        """(N, z_dim) z → (N, C_layer·H·H) flattened activations after block ``layer`` (1..B; 1 is (N, C1, 4, 4))."""
        if not 1 <= layer <= self.net.num_blocks:
            raise ValueError(f"layer must be in 1..{self.net.num_blocks}, got {layer}")
        latents = self._check_z(latents)
        features = latents.view(latents.shape[0], latents.shape[1], 1, 1)
        for index in range(layer):
            features = self.net.block(index, features)
        return features.flatten(1)


def load_pggan(path: str | Path) -> tuple[PGGANNet, Path]:
    """The network saved at ``path`` (architecture from its tensor shapes), and the resolved path.

    Raises:
        GeneratorFileError: missing, unreadable or not an InterFaceGAN PGGAN state dict.
    """
    resolved = existing_file(path, EXPECTED_FILE)
    state = load_state_dict(resolved, EXPECTED_FILE)
    architecture = PGGANArchitecture.from_state_dict(state, resolved)
    net = build_on_meta(lambda: PGGANNet(architecture))  # no memory until the shapes fit the file
    check_against_module(state, net, resolved, EXPECTED_FILE)
    level_of_detail = float(state["lod"])
    if not 0 <= level_of_detail < net.num_blocks:
        raise GeneratorFileError(
            f"{resolved}: lod is {level_of_detail}, expected 0 <= lod < {net.num_blocks} (the "
            f"number of blocks); expected {EXPECTED_FILE}"
        )
    materialize(net, state)
    return net, resolved


class PGGANParams(PluginParams):
    """``generator.kwargs`` of ``pggan``."""

    path: PathStr


@GENERATORS.register("pggan", params=PGGANParams)
def build_pggan(params: PGGANParams) -> PGGANGenerator:
    """A PGGAN from an InterFaceGAN ``.pth`` state dict (``pggan_celebahq.pth``, ...; ``params.path``, ``~``
    expanded); resolution, latent size and channels come from the file."""
    net, resolved = load_pggan(params.path)
    return PGGANGenerator(net, "pggan", fingerprint=file_fingerprint("pggan", [resolved], {}))
