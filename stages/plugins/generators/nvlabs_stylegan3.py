"""StyleGAN3 (alias-free) generator, configs T and R, loaded from NVlabs' training-snapshot pickles without running
any code from the file.

Architecture (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"; sizes read from the file): for a
batch of N, resolution R and ``num_layers`` L (14 by default),

    z (N, z_dim) [+ class] → mapping MLP → w (N, w_dim) → truncation → ws (N, L + 2, w_dim)
    input: Fourier features of C_0 frequencies, rotated/translated by an affine of ws[0] → (N, C_0, S_0, S_0)
    layer i = 0..L: modulated conv (k×k; 1×1 in config R and in the last, ToRGB layer) of ws[i + 1]
                    → bias → ↑ upsample, FIR low-pass → leaky ReLU·√2, clamp → FIR low-pass, ↓ downsample
                    → (N, C_i, S_i, S_i)
    output: layer L (ToRGB, no nonlinearity) × output_scale → (N, 3, R, R) float, nominally in [-1, 1]

Cutoffs f_c, stop bands f_t and sampling rates s_i follow the paper's geometric schedule from ``first_cutoff`` to
R/2 (the last ``num_critical`` layers critically sampled); S_i = s_i + 2·margin_size except the last two (R);
C_i = min(channel_base / 2 / f_c,i, channel_max). Config R uses radially symmetric (2-D) down-sampling filters.
The FIR filters are Kaiser-windowed sinc (or jinc) designs; the file's stored filters are used as they are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
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
    downsample_strided,
    generator_arguments,
    generator_from_snapshot,
    split_kwargs,
    upfirdn2d,
    upsample_polyphase,
)
from stages.plugins.generators.nvlabs_pickle import NVlabsSnapshot
from stages.runtime.weight_files import bounded_repr

IMPLEMENTATION = "latentatlas-stylegan3-v1"

#: Synthesis (and per-layer) arguments of NVlabs' StyleGAN3 generator this module implements, with their defaults.
SYNTHESIS_DEFAULTS: dict[str, Any] = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_layers": 14,
    "num_critical": 2,
    "first_cutoff": 2,
    "first_stopband": 2**2.1,
    "last_stopband_rel": 2**0.3,
    "margin_size": 10,
    "output_scale": 0.25,
    "num_fp16_res": 4,
    "conv_kernel": 3,
    "filter_size": 6,
    "lrelu_upsampling": 2,
    "use_radial_filters": False,
    "conv_clamp": 256,
}
#: Arguments that only matter for training.
SYNTHESIS_IGNORED = ("magnitude_ema_beta",)
MAPPING_DEFAULTS: dict[str, Any] = {"num_layers": 2, "lr_multiplier": 0.01}
MAPPING_IGNORED = ("w_avg_beta", "freeze_layers", "freeze_embed")
#: Plain attributes the files record on each network, compared with ours after building.
RECORDED_ATTRIBUTES = (
    "weight_gain",
    "bias_gain",
    "num_ws",
    "num_layers",
    "output_scale",
    "channels",
    "size",
    "sampling_rate",
    "bandwidth",
    "is_torgb",
    "use_fp16",
    "in_channels",
    "out_channels",
    "in_size",
    "out_size",
    "conv_kernel",
    "conv_clamp",
    "up_factor",
    "down_factor",
    "up_taps",
    "down_taps",
    "padding",
)


def kaiser_beta(numtaps: int, width: float) -> float:
    """Kaiser window β for a FIR of ``numtaps`` whose transition band is ``width`` (fraction of Nyquist)."""
    attenuation = 2.285 * (numtaps - 1) * math.pi * width + 7.95  # dB, Kaiser's estimate
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR with unit DC gain: (numtaps,) sinc, or (numtaps, numtaps) jinc if ``radial``;
    None for a single tap (identity). ``cutoff`` and ``width`` (transition band) in the units of ``fs``."""
    if numtaps == 1:
        return None
    beta = kaiser_beta(numtaps, width / (fs / 2))
    window = np.kaiser(numtaps, beta)
    if not radial:
        taps = np.arange(numtaps) - (numtaps - 1) / 2
        relative_cutoff = cutoff / (fs / 2)
        fir = relative_cutoff * np.sinc(relative_cutoff * taps) * window
        return torch.as_tensor(fir / fir.sum(), dtype=torch.float32)
    positions = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    radius = torch.as_tensor(np.hypot(*np.meshgrid(positions, positions)), dtype=torch.float64)
    argument = 2 * math.pi * cutoff * radius
    jinc = torch.where(
        radius > 0,
        torch.special.bessel_j1(argument) / (math.pi * radius.clamp_min(1e-30)),
        torch.full_like(radius, cutoff),
    )  # limit at r = 0: J1(2πfr)/(πr) → f
    fir = jinc.numpy() * np.outer(window, window)
    return torch.as_tensor(fir / fir.sum(), dtype=torch.float32)


def lowpass_filter_buffer(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """:func:`design_lowpass_filter`, except on the meta device (a network built to receive a file's tensors, which
    include its filters): an empty tensor of the filter's shape, so that a file's sizes cost no design work before
    they are checked against its tensors."""
    if torch.get_default_device().type != "meta":
        return design_lowpass_filter(numtaps, cutoff, width, fs, radial)
    if numtaps == 1:
        return None
    return torch.empty([numtaps, numtaps] if radial else [numtaps])


def layer_schedule(
    img_resolution: int,
    img_channels: int,
    channel_base: float,
    channel_max: int,
    num_layers: int,
    num_critical: int,
    first_cutoff: float,
    first_stopband: float,
    last_stopband_rel: float,
    margin_size: int,
) -> dict[str, np.ndarray]:
    """Per-layer design of the paper (index 0..num_layers; float64 arrays of num_layers + 1): ``cutoffs`` f_c,
    ``stopbands`` f_t, ``sampling_rates`` s, ``half_widths`` f_h = max(f_t, s/2) − f_c, ``sizes`` (pixels incl.
    margins) and ``channels``."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return {
        "cutoffs": cutoffs,
        "stopbands": stopbands,
        "sampling_rates": sampling_rates,
        "half_widths": half_widths,
        "sizes": sizes,
        "channels": channels,
    }


class SynthesisInput(nn.Module):
    """ws[0] (N, w_dim) → Fourier features (N, channels, size, size).

    Buffers: ``freqs`` (channels, 2) and ``phases`` (channels,) of the sinusoids, ``transform`` (3, 3) a user
    transform of the image plane (identity as trained). Parameters: ``affine`` (w_dim → 4: rotation cos/sin and
    translation x/y of the features), ``weight`` (channels, channels) a learned channel mixing.
    """

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.w_dim, self.channels, self.size = w_dim, channels, size
        self.sampling_rate, self.bandwidth = sampling_rate, bandwidth
        freqs = torch.randn(channels, 2)  # uniform-ish in a disc of radius `bandwidth`
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = EqualizedLinear(w_dim, 4, bias_init=[1, 0, 0, 0])
        nn.init.zeros_(self.affine.weight)
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """(N, w_dim) → (N, channels, size, size) float32."""
        batch = w.shape[0]
        params = self.affine(w)  # (N, 4): cos, sin of the rotation, translation x, y (before normalisation)
        params = params / params[:, :2].norm(dim=1, keepdim=True)
        rotation = torch.eye(3, device=w.device).unsqueeze(0).repeat(batch, 1, 1)
        rotation[:, 0, 0] = params[:, 0]
        rotation[:, 0, 1] = -params[:, 1]
        rotation[:, 1, 0] = params[:, 1]
        rotation[:, 1, 1] = params[:, 0]
        translation = torch.eye(3, device=w.device).unsqueeze(0).repeat(batch, 1, 1)
        translation[:, 0, 2] = -params[:, 2]
        translation[:, 1, 2] = -params[:, 3]
        transforms = rotation @ translation @ self.transform.unsqueeze(0)  # (N, 3, 3)
        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # (N, channels)
        freqs = freqs @ transforms[:, :2, :2]  # (N, channels, 2)
        # Fade out frequencies the user transform pushed above the band.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * self.size / self.sampling_rate
        theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = nn.functional.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # (N, H, W, channels)
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (math.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    padding: int,
    input_gain: torch.Tensor,
    fused: bool = True,
) -> torch.Tensor:
    """Per-sample modulated convolution (a grouped convolution over the batch; ``fused=False``: one convolution with
    the shared weight between a per-input-channel and a per-output-channel scale, the same sums in another order).

    Args:
        x: (N, I, H, W).
        weight: (O, I, k, k).
        styles: (N, I).
        demodulate: normalise each output channel's modulated weight to unit L2 norm.
        padding: zero padding on each side (k − 1: the layers keep the full convolution).
        input_gain: () scale of the input, 1/√(running mean square of x).

    Returns:
        (N, O, H + 2·padding − k + 1, likewise W).
    """
    batch, in_channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    if demodulate:  # normalise magnitudes first (keeps fp16 in range; demodulation cancels the scales)
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    if not fused:  # w'[n,o,i] = w[o,i]·s[n,i]·d[n,o]·g, so conv(x, w'_n) = d[n,o] · conv(x·s_n·g, w)
        x = x * (styles * input_gain).to(x.dtype).reshape(batch, in_channels, 1, 1)
        x = nn.functional.conv2d(x, weight.to(x.dtype), padding=padding)
        if demodulate:  # Σ_i,k (w[o,i,k]·s[n,i])² as (N, I) @ (I, O)
            norms = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # (N, O)
            x = x * norms.to(x.dtype).reshape(batch, out_channels, 1, 1)
        return x
    per_sample = weight.unsqueeze(0) * styles.unsqueeze(1).unsqueeze(3).unsqueeze(4)  # (N, O, I, k, k)
    if demodulate:
        norms = (per_sample.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (N, O)
        per_sample = per_sample * norms.unsqueeze(2).unsqueeze(3).unsqueeze(4)
    per_sample = per_sample * input_gain.expand(batch, in_channels).unsqueeze(1).unsqueeze(3).unsqueeze(4)
    x = nn.functional.conv2d(
        x.reshape(1, batch * in_channels, height, width),
        per_sample.reshape(batch * out_channels, in_channels, kh, kw).to(x.dtype),
        padding=padding,
        groups=batch,
    )
    return x.reshape(batch, out_channels, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """(N, in_channels, in_size, in_size) → (N, out_channels, out_size, out_size): modulated conv, bias, then the
    alias-free nonlinearity (↑ up_factor with ``up_filter``, lrelu·√2 and clamp, ``down_filter``, ↓ down_factor).
    The ToRGB layer (``is_torgb``) has a 1×1 conv without demodulation and no nonlinearity.

    Parameters: ``weight`` (O, I, k, k), ``bias`` (O,), ``affine`` (w_dim → I); buffers ``magnitude_ema`` () the
    running mean square of the input, ``up_filter`` / ``down_filter`` ((taps,), (taps, taps) radial, or absent).
    """

    def __init__(
        self,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        use_fp16: bool,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        in_sampling_rate: int,
        out_sampling_rate: int,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
        conv_kernel: int,
        filter_size: int,
        lrelu_upsampling: int,
        use_radial_filters: bool,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.is_torgb, self.use_fp16, self.conv_clamp = is_torgb, use_fp16, conv_clamp
        self.in_channels, self.out_channels, self.in_size, self.out_size = in_channels, out_channels, in_size, out_size
        self.conv_kernel = 1 if is_torgb else conv_kernel
        working_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.up_factor = int(round(working_rate / in_sampling_rate))
        self.down_factor = int(round(working_rate / out_sampling_rate))
        if in_sampling_rate * self.up_factor != working_rate or out_sampling_rate * self.down_factor != working_rate:
            raise ValueError(
                f"sampling rates {in_sampling_rate} → {out_sampling_rate} are not integer ratios of {working_rate}"
            )
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer(
            "up_filter", lowpass_filter_buffer(self.up_taps, in_cutoff, in_half_width * 2, working_rate)
        )
        self.register_buffer(
            "down_filter",
            lowpass_filter_buffer(
                self.down_taps,
                out_cutoff,
                out_half_width * 2,
                working_rate,
                radial=use_radial_filters and not is_critically_sampled,
            ),
        )
        # Pad so that the output has out_size samples, centred as the paper's symmetric sample grid (App. C.3).
        pad_total = (out_size - 1) * self.down_factor + 1 - (in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        self.padding = [pad_lo, pad_total - pad_lo, pad_lo, pad_total - pad_lo]

    def forward(self, x: torch.Tensor, w: torch.Tensor, reference_ops: bool = True) -> torch.Tensor:
        """x (N, in_channels, in_size, in_size), w (N, w_dim) → (N, out_channels, out_size, out_size).

        ``reference_ops=False``: the same layer in the form a compiler makes fast (a shared-weight convolution
        between two channel scales; polyphase upsampling and strided downsampling, which skip the inserted zeros
        and the dropped samples), equal up to float rounding."""
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))
        dtype = compute_dtype(self.use_fp16, x.device)
        x = modulated_conv2d(
            x.to(dtype),
            self.weight,
            styles,
            demodulate=not self.is_torgb,
            padding=self.conv_kernel - 1,
            input_gain=self.magnitude_ema.rsqrt(),
            fused=reference_ops,
        )
        x = bias_lrelu_clamp(x, self.bias, None, 1.0, None)
        if reference_ops:
            x = upfirdn2d(x, self.up_filter, up=self.up_factor, padding=self.padding, gain=self.up_factor**2)
        else:
            x = upsample_polyphase(x, self.up_filter, self.up_factor, self.padding, self.up_factor**2)
        x = bias_lrelu_clamp(
            x, None, None if self.is_torgb else LRELU_SLOPE, 1.0 if self.is_torgb else LRELU_GAIN, self.conv_clamp
        )
        if reference_ops:
            return upfirdn2d(x, self.down_filter, down=self.down_factor)
        return downsample_strided(x, self.down_filter, self.down_factor)


class SynthesisNetwork(nn.Module):
    """ws (N, num_layers + 2, w_dim) → image (N, img_channels, R, R) float32. Layer names ``L{i}_{size}_{channels}``
    as in the files; arguments as :data:`SYNTHESIS_DEFAULTS` (see the module docstring)."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: float,
        channel_max: int,
        num_layers: int,
        num_critical: int,
        first_cutoff: float,
        first_stopband: float,
        last_stopband_rel: float,
        margin_size: int,
        output_scale: float,
        num_fp16_res: int,
        conv_kernel: int,
        filter_size: int,
        lrelu_upsampling: int,
        use_radial_filters: bool,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        if num_layers <= num_critical:
            raise ValueError(f"num_layers ({num_layers}) must exceed num_critical ({num_critical})")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_layers, self.num_ws, self.output_scale = num_layers, num_layers + 2, output_scale
        plan = layer_schedule(
            img_resolution,
            img_channels,
            channel_base,
            channel_max,
            num_layers,
            num_critical,
            first_cutoff,
            first_stopband,
            last_stopband_rel,
            margin_size,
        )
        rates, sizes, channels = plan["sampling_rates"], plan["sizes"], plan["channels"]
        self.input = SynthesisInput(w_dim, int(channels[0]), int(sizes[0]), float(rates[0]), float(plan["cutoffs"][0]))
        self.layer_names: list[str] = []
        for index in range(num_layers + 1):
            previous = max(index - 1, 0)
            layer = SynthesisLayer(
                w_dim,
                is_torgb=index == num_layers,
                is_critically_sampled=index >= num_layers - num_critical,
                use_fp16=bool(rates[index] * 2**num_fp16_res > img_resolution),
                in_channels=int(channels[previous]),
                out_channels=int(channels[index]),
                in_size=int(sizes[previous]),
                out_size=int(sizes[index]),
                in_sampling_rate=int(rates[previous]),
                out_sampling_rate=int(rates[index]),
                in_cutoff=float(plan["cutoffs"][previous]),
                out_cutoff=float(plan["cutoffs"][index]),
                in_half_width=float(plan["half_widths"][previous]),
                out_half_width=float(plan["half_widths"][index]),
                conv_kernel=conv_kernel,
                filter_size=filter_size,
                lrelu_upsampling=lrelu_upsampling,
                use_radial_filters=use_radial_filters,
                conv_clamp=conv_clamp,
            )
            name = f"L{index}_{layer.out_size}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", reference_ops: bool = True) -> torch.Tensor:
        """(N, num_ws, w_dim) → (N, img_channels, R, R) float32 (``noise_mode`` is accepted: there is no noise;
        ``reference_ops``: see :meth:`SynthesisLayer.forward`)."""
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = self.input(ws[:, 0])
        for index, name in enumerate(self.layer_names):
            x = getattr(self, name)(x, ws[:, index + 1], reference_ops)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def style_layers(self, include_torgb: bool = False) -> list[tuple[str, EqualizedLinear]]:
        """(name, affine) of the modulated convolutions L0 ... L{num_layers − 1}: entry i is fed by W+ row i + 1
        (row 0 drives the input's rotation/translation, not a style). ``include_torgb`` adds the last layer."""
        names = self.layer_names if include_torgb else self.layer_names[:-1]
        return [(name, getattr(self, name).affine) for name in names]


def build_stylegan3_net(snapshot: NVlabsSnapshot) -> StyleGANNet:
    """A :class:`StyleGANNet` shaped by the snapshot's recorded arguments, holding its G_ema weights.

    Raises:
        GeneratorFileError: a StyleGAN2 (or other) generator, arguments this module does not implement, or tensors
            that do not fit.
    """
    source = snapshot.path
    synthesis_record = snapshot.generator.children().get("synthesis")
    if synthesis_record is None or "mapping" not in snapshot.generator.children():
        raise GeneratorFileError(
            f"{source}: G_ema has no mapping/synthesis networks; expected an NVlabs StyleGAN3 generator"
        )
    layer_names = set(synthesis_record.children())
    if "b4" in layer_names:
        raise GeneratorFileError(
            f"{source}: this is a StyleGAN2 generator (synthesis blocks b4, b8, ...); use "
            f"generator name 'stylegan2', not 'stylegan3'"
        )
    if "input" not in layer_names:
        raise GeneratorFileError(
            f"{source}: G_ema's synthesis has layers {bounded_repr(sorted(layer_names)[:6])}, "
            f"not the StyleGAN3 'input', 'L0_...'; expected an NVlabs StyleGAN3 generator"
        )
    sizes, mapping_kwargs, synthesis_kwargs = generator_arguments(snapshot)
    z_dim, c_dim, w_dim = sizes["z_dim"], sizes["c_dim"], sizes["w_dim"]
    img_resolution, img_channels = sizes["img_resolution"], sizes["img_channels"]
    synthesis_args = split_kwargs(synthesis_kwargs, SYNTHESIS_DEFAULTS, SYNTHESIS_IGNORED, str(source), "synthesis")
    mapping_args = split_kwargs(mapping_kwargs, MAPPING_DEFAULTS, MAPPING_IGNORED, str(source), "mapping")
    bound_recorded_arguments(
        snapshot,
        {**sizes, **mapping_args, **synthesis_args},
        {"mapping num_layers": mapping_args["num_layers"], "synthesis num_layers": synthesis_args["num_layers"]},
    )
    return assemble_from_snapshot(
        snapshot,
        str(source),
        "StyleGAN3",
        lambda: MappingNetwork(z_dim, c_dim, w_dim, **mapping_args),
        lambda: SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_args),
        RECORDED_ATTRIBUTES,
    )


@GENERATORS.register("stylegan3", params=NVlabsSnapshotParams)
def build_stylegan3(params: NVlabsSnapshotParams) -> StyleGANGenerator:
    """A StyleGAN3 (-T or -R) generator from an NVlabs snapshot pickle (its ``G_ema``), read as data."""
    return generator_from_snapshot(params, "stylegan3", build_stylegan3_net, IMPLEMENTATION)
