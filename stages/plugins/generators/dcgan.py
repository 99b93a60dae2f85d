"""DCGAN generator (the PyTorch-tutorial architecture) and the pretrained 64×64 face model ``dcgan-digiface``.

Architecture, shapes for a batch of N (``ngf`` = 64, ``nz`` = 100 for the pretrained face model):

    z (N, nz, 1, 1) → ConvT 4×4/1 → (N, 8·ngf, 4, 4) → ConvT 4×4/2 → (N, 4·ngf, 8, 8) → (N, 2·ngf, 16, 16)
      → (N, ngf, 32, 32) → ConvT → (N, 3, 64, 64) → tanh

Every ConvT but the last is followed by BatchNorm (inference statistics) and ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from latentatlas.params import PluginParams
from stages.plugins.generators.base import GENERATORS
from stages.runtime.weights import WEIGHTS, WeightsError, weights_path


class DCGANNet(nn.Module):
    """The network alone: (N, nz) or (N, nz, 1, 1) latents → (N, nc, 64, 64) images in [-1, 1]."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        widths = [ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)  # the name and indices match the tutorial's state dict keys
        self.nz = nz

    def forward(self, latents_z: torch.Tensor) -> torch.Tensor:
        if latents_z.dim() == 2:
            latents_z = latents_z[:, :, None, None]
        return self.main(latents_z)

    def blocks(self) -> list[nn.Sequential]:
        """The five blocks (ConvT [+ BN + ReLU] / ConvT + tanh) in order."""
        layers = list(self.main)
        return [nn.Sequential(*layers[i : i + 3]) for i in range(0, len(layers) - 2, 3)] + [nn.Sequential(*layers[-2:])]


class DCGANGenerator:
    """A DCGAN behind the :class:`~stages.plugins.generators.Generator` protocol (z space only: no mapping network)."""

    latent_spaces = ("z",)

    def __init__(self, net: DCGANNet, name: str, fingerprint: str, resolution: int = 64) -> None:
        self.net = net.eval()
        self.name = name
        self.z_dim = net.nz
        self.resolution = resolution
        self.fingerprint = fingerprint

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device) -> DCGANGenerator:
        self.net.to(device)
        return self

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def projection_matrix(self) -> torch.Tensor:
        """(8·ngf·16, z_dim) = (8192, 100) matrix of the first ConvTranspose2d, whose (nz, C, 4, 4) weight maps
        z to a 4×4 feature map: output[c, i, j] = Σ_k z_k · weight[k, c, i, j]."""
        weight = self.net.main[0].weight.detach()
        return weight.reshape(weight.shape[0], -1).T

    def early_features(self, latents: torch.Tensor, layer: int = 1) -> torch.Tensor:
        """(N, z_dim) z → (N, F) flattened activations after block ``layer`` (1..5; 1 is (N, 512, 4, 4))."""
        blocks = self.net.blocks()
        if not 1 <= layer <= len(blocks):
            raise ValueError(f"layer must be in 1..{len(blocks)}, got {layer}")
        features = latents.to(self.device)[:, :, None, None]
        for block in blocks[:layer]:
            features = block(features)
        return features.flatten(1)

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        if space != "z":
            raise ValueError(f"generator {self.name!r} has only the latent space 'z', not {space!r}")
        if latents.dim() != 2 or latents.shape[1] != self.z_dim:
            raise ValueError(
                f"generator {self.name!r} expects latents of shape (N, {self.z_dim}), got {tuple(latents.shape)}"
            )
        return self.net(latents.to(self.device))


class DCGANDigifaceParams(PluginParams):
    """``dcgan-digiface`` takes no kwargs: its weights are the pinned ``gan-face-generate`` package's."""


@GENERATORS.register("dcgan-digiface", params=DCGANDigifaceParams)
def build_dcgan_digiface(params: DCGANDigifaceParams) -> DCGANGenerator:
    """The 64×64 face DCGAN (z ∈ R^100) trained on DigiFace-1M, from the ``gan-face-generate`` package."""
    path = weights_path("dcgan-digiface")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "netG_state_dict" not in checkpoint:
        raise WeightsError(f"{path}: expected a checkpoint with key 'netG_state_dict', found {sorted(checkpoint)}")
    net = DCGANNet(nz=100, ngf=64, nc=3)
    net.load_state_dict(checkpoint["netG_state_dict"], strict=True)
    return DCGANGenerator(net, "dcgan-digiface", fingerprint=f"dcgan-digiface:{WEIGHTS['dcgan-digiface'].sha256}")
