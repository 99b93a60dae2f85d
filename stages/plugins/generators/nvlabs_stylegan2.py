"""StyleGAN2(-ADA) generator, loaded from NVlabs' training-snapshot pickles (``stylegan2-ada-pytorch`` and the
``stylegan2`` config of the ``stylegan3`` repository) without running any code from the file.

Architecture (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN", config F with skip
generator; sizes read from the file): for a batch of N and resolution R = 2^k,

    z (N, z_dim) [+ class (N, c_dim)] → mapping MLP → w (N, w_dim) → truncation → ws (N, num_ws, w_dim)
    block b4:  const (C4, 4, 4) → conv1 → x (N, C4, 4, 4);            torgb → img (N, 3, 4, 4)
    block b8:  conv0 (↑2) → conv1 → x (N, C8, 8, 8);                  img ↑2 + torgb → (N, 3, 8, 8)
    ... up to bR: img (N, 3, R, R), float, nominally in [-1, 1]

with C_r = min(channel_base // r, channel_max). Every conv is a modulated 3×3 convolution: weights scaled per input
channel by styles s = A w + b (the layer's ``affine``), demodulated to unit output norm, then fixed noise
(``noise_const`` × ``noise_strength``), bias, leaky ReLU × √2, clamp to ±conv_clamp. Upsampling is a transposed
convolution followed by the [1, 3, 3, 1] FIR filter. num_ws = 2·log2(R) − 2: block b_r uses ws[i], ws[i+1] for its
convs and ws[i+2] for its ToRGB, which the next block's first conv shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stages.plugins.generators.base import GENERATORS, GeneratorFileError
from stages.plugins.generators.nvlabs_common import (
    LRELU_GAIN,
    LRELU_SLOPE,
    EqualizedLinear,
    MappingNetwork,
    NVlabsSnapshotParams,
    StyleGANGenerator,
    StyleGANNet,
    assemble_from_snapshot,
    bias_lrelu_clamp,
    bound_recorded_arguments,
    compute_dtype,
    generator_arguments,
    generator_from_snapshot,
    split_kwargs,
    upfirdn2d,
)
from stages.plugins.generators.nvlabs_pickle import NVlabsSnapshot
from stages.runtime.weight_files import bounded_repr

IMPLEMENTATION = "latentatlas-stylegan2-v1"

#: Synthesis arguments of NVlabs' StyleGAN2 generator this module implements, with the constructors' defaults.
SYNTHESIS_DEFAULTS: dict[str, Any] = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_fp16_res": 0,
    "conv_clamp": None,
    "architecture": "skip",
    "resample_filter": [1, 3, 3, 1],
    "kernel_size": 3,
    "use_noise": True,
    "activation": "lrelu",
}
#: Synthesis arguments that only change speed or training, never the images.
SYNTHESIS_IGNORED = ("fp16_channels_last", "fused_modconv_default", "channels_last", "freeze_layers")
MAPPING_DEFAULTS: dict[str, Any] = {
    "num_layers": 8,
    "embed_features": None,
    "layer_features": None,
    "activation": "lrelu",
    "lr_multiplier": 0.01,
}
MAPPING_IGNORED = ("w_avg_beta", "freeze_layers", "freeze_embed")
#: Plain attributes the files record on each network, compared with ours after building.
RECORDED_ATTRIBUTES = (
    "weight_gain",
    "bias_gain",
    "num_ws",
    "resolution",
    "in_channels",
    "num_conv",
    "num_torgb",
    "is_last",
    "up",
    "padding",
    "conv_clamp",
    "use_fp16",
    "architecture",
    "img_resolution_log2",
)


def resample_fir(taps: Sequence[float]) -> torch.Tensor:
    """(k, k) 2-D FIR from 1-D ``taps``: their outer product, normalised to sum 1."""
    fir = torch.as_tensor(taps, dtype=torch.float32)
    fir = fir.ger(fir)
    return fir / fir.sum()


def conv2d_resample(
    x: torch.Tensor, weight: torch.Tensor, fir: torch.Tensor | None, up: int, padding: int, groups: int
) -> torch.Tensor:
    """Grouped 2-D convolution, optionally upsampling by ``up`` (= 1 or 2).

    Args:
        x: (1, G·I, H, W).
        weight: (G·O, I, k, k).
        fir: (f, f) low-pass filter applied after a stride-``up`` transposed convolution (unused for up = 1).
        padding: the convolution's padding (k // 2).

    Returns:
        (1, G·O, H·up, W·up) for ``padding = k // 2``.
    """
    if up == 1:
        return F.conv2d(x, weight, padding=padding, groups=groups)
    out_total, in_per_group, kh, kw = weight.shape
    # A transposed convolution takes (in, out) weights: swap them within each group.
    weight = weight.reshape(groups, out_total // groups, in_per_group, kh, kw).transpose(1, 2)
    weight = weight.reshape(groups * in_per_group, out_total // groups, kh, kw)
    fir_width = fir.shape[-1]
    pad_lo = padding + (fir_width + up - 1) // 2 - (kw - 1)  # what remains for the FIR after the transposed conv
    pad_hi = padding + (fir_width - up) // 2 - (kw - up)
    conv_pad = max(min(-pad_lo, -pad_hi), 0)
    x = F.conv_transpose2d(x, weight, stride=up, padding=conv_pad, groups=groups)
    return upfirdn2d(x, fir, padding=[pad_lo + conv_pad, pad_hi - conv_pad] * 2, gain=up**2)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    up: int,
    fir: torch.Tensor | None,
    padding: int,
    fused: bool = True,
) -> torch.Tensor:
    """Style-modulated convolution, one weight per sample (run as a grouped convolution; ``fused=False``: one
    convolution with the shared weight between a per-input-channel and a per-output-channel scale, as NVlabs'
    ``fused_modconv=False``, the same sums in another order).

    Args:
        x: (N, I, H, W) features (fp32, or fp16 in fp16 layers).
        weight: (O, I, k, k).
        styles: (N, I) per-sample input-channel scales.
        demodulate: rescale each output channel's modulated weight to unit L2 norm.

    Returns:
        (N, O, H·up, W·up).
    """
    batch, in_channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # bring both to O(1) first so that fp16 cannot overflow
        weight = weight * (
            1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, in_channels, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), fir, up, padding, groups=1)
        if demodulate:  # Σ_i,k (w[o,i,k]·s[n,i])² as (N, I) @ (I, O)
            norms = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # (N, O)
            x = x * norms.to(x.dtype).reshape(batch, out_channels, 1, 1)
        return x
    per_sample = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)  # (N, O, I, k, k)
    if demodulate:
        norms = (per_sample.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (N, O)
        per_sample = per_sample * norms.reshape(batch, out_channels, 1, 1, 1)
    x = conv2d_resample(
        x.reshape(1, batch * in_channels, height, width),
        per_sample.reshape(batch * out_channels, in_channels, kh, kw).to(x.dtype),
        fir,
        up,
        padding,
        groups=batch,
    )
    return x.reshape(batch, out_channels, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally ↑2) + noise + bias + lrelu·√2 + clamp: (N, I, r/up, r/up) → (N, O, r, r).

    Parameters: ``weight`` (O, I, k, k), ``bias`` (O,), ``affine`` (w_dim → I), ``noise_strength`` ();
    buffers ``resample_filter`` (f, f), ``noise_const`` (r, r).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int,
        fir: torch.Tensor,
        conv_clamp: float | None,
        kernel_size: int,
        use_noise: bool,
    ) -> None:
        super().__init__()
        self.in_channels, self.resolution, self.up = in_channels, resolution, up
        self.conv_clamp, self.use_noise = conv_clamp, use_noise
        self.padding = kernel_size // 2
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", fir.clone())
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, reference_ops: bool = True) -> torch.Tensor:
        """x (N, I, r/up, r/up), w (N, w_dim) → (N, O, r, r) in x's dtype (``reference_ops=False``: the
        shared-weight form of the modulated convolution, equal up to float rounding)."""
        styles = self.affine(w)
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=True,
            up=self.up,
            fir=self.resample_filter,
            padding=self.padding,
            fused=reference_ops,
        )
        if self.use_noise and noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return bias_lrelu_clamp(x, self.bias, LRELU_SLOPE, LRELU_GAIN, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv without demodulation + bias + clamp: (N, I, r, r) → (N, img_channels, r, r)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.in_channels, self.conv_clamp = in_channels, conv_clamp
        self.weight_gain = 1 / math.sqrt(in_channels)  # of the 1×1 kernel, folded into the styles
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, reference_ops: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, up=1, fir=None, padding=0, fused=reference_ops)
        return bias_lrelu_clamp(x, self.bias, None, 1.0, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution r of the skip generator: (x (N, C_{r/2}, r/2, r/2) or the learned const, img (N, 3, r/2,
    r/2) or None, ws (N, num_conv + 1, w_dim)) → (x (N, C_r, r, r), img (N, 3, r, r) float32)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        use_fp16: bool,
        fir: torch.Tensor,
        conv_clamp: float | None,
        kernel_size: int,
        use_noise: bool,
    ) -> None:
        super().__init__()
        self.in_channels, self.resolution, self.is_last, self.use_fp16 = in_channels, resolution, is_last, use_fp16
        self.architecture = "skip"
        self.register_buffer("resample_filter", fir.clone())
        layer_args = dict(
            w_dim=w_dim,
            resolution=resolution,
            fir=fir,
            conv_clamp=conv_clamp,
            kernel_size=kernel_size,
            use_noise=use_noise,
        )
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer_args)
        self.conv1 = SynthesisLayer(out_channels, out_channels, up=1, **layer_args)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str,
        reference_ops: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = compute_dtype(self.use_fp16, ws.device)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, reference_ops)
        else:
            x = self.conv0(x.to(dtype), ws[:, 0], noise_mode, reference_ops)
            x = self.conv1(x, ws[:, 1], noise_mode, reference_ops)
        if img is not None:
            fir_width = self.resample_filter.shape[-1]
            pad = [(fir_width + 1) // 2, (fir_width - 2) // 2] * 2  # keeps the filtered samples centred
            img = upfirdn2d(img, self.resample_filter, up=2, padding=pad, gain=4)
        rgb = self.torgb(x, ws[:, self.num_conv], reference_ops).to(torch.float32)
        return x, rgb if img is None else img + rgb


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) → image (N, img_channels, R, R) float32 (skip architecture).

    Args:
        w_dim: width of w.
        img_resolution: R, a power of two ≥ 4.
        img_channels: 3 for RGB.
        channel_base, channel_max: block r has min(channel_base // r, channel_max) channels.
        num_fp16_res: the highest resolutions that run in fp16 (on CUDA; min. 8), as the file was trained.
        conv_clamp: clamp of every conv output (None: none).
        resample_filter: 1-D taps of the up-sampling FIR.
        kernel_size: conv kernel.
        use_noise: layers have noise inputs.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int,
        channel_max: int,
        num_fp16_res: int,
        conv_clamp: float | None,
        resample_filter: Sequence[float],
        kernel_size: int,
        use_noise: bool,
    ) -> None:
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two ≥ 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = log2
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        fir = resample_fir(resample_filter)
        self.num_ws = 0
        for resolution in self.block_resolutions:
            is_last = resolution == img_resolution
            block = SynthesisBlock(
                channels[resolution // 2] if resolution > 4 else 0,
                channels[resolution],
                w_dim,
                resolution,
                img_channels,
                is_last,
                resolution >= fp16_resolution,
                fir,
                conv_clamp,
                kernel_size,
                use_noise,
            )
            setattr(self, f"b{resolution}", block)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{r}") for r in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", reference_ops: bool = True) -> torch.Tensor:
        """(N, num_ws, w_dim) → (N, img_channels, R, R) float32 (``reference_ops=False``: the shared-weight form of
        every modulated convolution, equal up to float rounding; the form a compiler makes fast)."""
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        first = 0
        for block in self.blocks():
            x, img = block(x, img, ws[:, first : first + block.num_conv + block.num_torgb], noise_mode, reference_ops)
            first += block.num_conv
        return img

    def style_layers(self, include_torgb: bool = False) -> list[tuple[str, EqualizedLinear]]:
        """(name, affine) of the modulated convolutions in synthesis order, b4.conv1, b8.conv0, b8.conv1, ...: entry
        i is fed by W+ row i (num_ws − 1 of them). ``include_torgb`` adds each block's ToRGB after its convs."""
        layers: list[tuple[str, EqualizedLinear]] = []
        for block in self.blocks():
            names = (["conv0"] if block.in_channels else []) + ["conv1"] + (["torgb"] if include_torgb else [])
            layers += [(f"b{block.resolution}.{name}", getattr(block, name).affine) for name in names]
        return layers


def build_stylegan2_net(snapshot: NVlabsSnapshot) -> StyleGANNet:
    """A :class:`StyleGANNet` shaped by the snapshot's recorded arguments, holding its G_ema weights.

    Raises:
        GeneratorFileError: a StyleGAN3 (or other) generator, arguments this module does not implement, or tensors
            that do not fit.
    """
    source = snapshot.path
    synthesis_record = snapshot.generator.children().get("synthesis")
    mapping_record = snapshot.generator.children().get("mapping")
    if synthesis_record is None or mapping_record is None:
        raise GeneratorFileError(
            f"{source}: G_ema has no mapping/synthesis networks; expected an NVlabs StyleGAN2 generator"
        )
    layer_names = set(synthesis_record.children())
    if "input" in layer_names or any(name.startswith("L") for name in layer_names):
        raise GeneratorFileError(
            f"{source}: this is a StyleGAN3 generator (synthesis layers 'input', 'L0_...'); use "
            f"generator name 'stylegan3', not 'stylegan2'"
        )
    if "b4" not in layer_names:
        raise GeneratorFileError(
            f"{source}: G_ema's synthesis has layers {bounded_repr(sorted(layer_names)[:6])}, "
            f"not the StyleGAN2 blocks b4, b8, ...; expected an NVlabs StyleGAN2 generator"
        )
    sizes, mapping_kwargs, synthesis_kwargs = generator_arguments(snapshot)
    z_dim, c_dim, w_dim = sizes["z_dim"], sizes["c_dim"], sizes["w_dim"]
    img_resolution, img_channels = sizes["img_resolution"], sizes["img_channels"]
    synthesis_args = split_kwargs(synthesis_kwargs, SYNTHESIS_DEFAULTS, SYNTHESIS_IGNORED, str(source), "synthesis")
    mapping_args = split_kwargs(mapping_kwargs, MAPPING_DEFAULTS, MAPPING_IGNORED, str(source), "mapping")
    bound_recorded_arguments(
        snapshot, {**sizes, **mapping_args, **synthesis_args}, {"mapping num_layers": mapping_args["num_layers"]}
    )
    if synthesis_args.pop("architecture") != "skip":
        raise GeneratorFileError(
            f"{source}: only the 'skip' generator architecture (every NVlabs config) is "
            f"implemented, the file has {bounded_repr(synthesis_kwargs['architecture'])}"
        )
    activations = {"mapping": mapping_args.pop("activation"), "synthesis": synthesis_args.pop("activation")}
    if set(activations.values()) != {"lrelu"}:
        raise GeneratorFileError(
            f"{source}: only leaky-ReLU StyleGAN2 networks are implemented, the file records "
            f"activations {bounded_repr(activations)}"
        )
    return assemble_from_snapshot(
        snapshot,
        str(source),
        "StyleGAN2",
        lambda: MappingNetwork(z_dim, c_dim, w_dim, **mapping_args),
        lambda: SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_args),
        RECORDED_ATTRIBUTES,
    )


@GENERATORS.register("stylegan2", params=NVlabsSnapshotParams)
def build_stylegan2(params: NVlabsSnapshotParams) -> StyleGANGenerator:
    """A StyleGAN2 / StyleGAN2-ADA generator from an NVlabs snapshot pickle (its ``G_ema``), read as data."""
    return generator_from_snapshot(params, "stylegan2", build_stylegan2_net, IMPLEMENTATION)
