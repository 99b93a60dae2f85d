"""The photo encoder: a small CNN from images to latents, trained on the pipeline's own (image, latent) pairs.

The "hybrid" inversion (Zhu et al., "Generative Visual Manipulation on the Natural Image Manifold", 2016; and
In-Domain GAN Inversion) starts the per-image optimisation from an encoder's guess instead of the mean latent: the
guess already has the pose, colouring and layout, so a few optimisation steps do what hundreds would from the mean.
The training pairs cost nothing here: ``data/images.zarr`` holds G(z) for every z of ``data/latents.zarr``.

Network, for (N, 3, S, S) images in [-1, 1] (S = ``input_size``, other sizes are resized to it first) and
``width`` w:

    conv 3×3/2 (w) → conv 3×3/2 (2w) → conv 3×3 (2w) → conv 3×3/2 (4w) → conv 3×3 (4w) → … until 4×4 (≤ 8w ch.)
      each followed by GroupNorm(8) and LeakyReLU(0.2) → flatten → Linear (512) + LeakyReLU → Linear (Σ dims)

One output per stored latent space (``z`` (N, z_dim), and ``w`` (N, w_dim) for a style-based generator); the
targets are standardised per dimension (mean and standard deviation of the first training chunk, kept as buffers)
and the loss is their mean squared error. The encoder is a starting point, not an inverter: it predicts E[latent |
image], which is shrunk towards the mean, and the optimisation does the rest (:mod:`stages.photo.invert`).

Training it is the ``train-encoder`` stage (:mod:`stages.train_encoder`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError
from torch import nn

from latentatlas.errors import LatentAtlasError

ENCODER_FILE = "encoder.pt"
METRICS_FILE = "metrics.json"
#: Bumped whenever the architecture or the training recipe changes (part of the fingerprint).
ENCODER_VERSION = "cnn-v1"


class EncoderError(LatentAtlasError, ValueError):
    """Bad encoder settings, an encoder file that cannot be read, or one trained for another generator."""


class EncoderSettings(BaseModel):
    """How the encoder is trained (``latentatlas train-encoder`` options)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    epochs: PositiveInt = Field(3, description="passes over the training samples")
    batch_size: PositiveInt = Field(64, description="images per optimisation step")
    learning_rate: float = Field(2e-3, gt=0, description="Adam's peak learning rate (5 % warm-up, cosine decay)")
    width: PositiveInt = Field(32, description="channels of the first conv (doubling per halving, at most 8×)")
    input_size: int = Field(32, ge=8, le=1024, description="side the images are resized to (a power of two)")
    val_samples: PositiveInt = Field(500, description="held-out samples (the last ones) for validation")
    max_train_samples: PositiveInt | None = Field(None, description="use only the first N training samples")
    seed: int = Field(0, ge=0, description="initial weights and shuffling")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto | cpu | cuda | cuda:<k>")

    def model_post_init(self, context: Any) -> None:
        if self.input_size & (self.input_size - 1):
            raise ValueError(f"input_size must be a power of two, got {self.input_size}")


def encoder_settings(**values: Any) -> EncoderSettings:
    """:class:`EncoderSettings` from keyword values, or an EncoderError naming the bad one."""
    try:
        return EncoderSettings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise EncoderError(f"encoder {where}: {first['msg']} (got {first.get('input')!r})") from None


class LatentEncoder(nn.Module):
    """(N, 3, H, W) images in [-1, 1] → ``{space: (N, dim)}`` latent predictions (see the module docstring).

    Args:
        outputs: latent dimension per space, e.g. ``{"z": 100}`` or ``{"z": 512, "w": 512}``.
        input_size: side the images are resized to (a power of two ≥ 8).
        width: channels of the first conv.
    """

    def __init__(self, outputs: dict[str, int], input_size: int = 64, width: int = 32) -> None:
        super().__init__()
        self.outputs = dict(outputs)
        self.input_size = int(input_size)
        self.width = int(width)
        layers: list[nn.Module] = []
        channels, side, c_in = width, input_size, 3
        while side > 4:
            layers += _conv_block(c_in, channels, stride=2)
            side //= 2
            if side < input_size // 2 and side > 4:  # a second conv at the middle resolutions
                layers += _conv_block(channels, channels, stride=1)
            c_in, channels = channels, min(channels * 2, width * 8)
        self.features = nn.Sequential(*layers)
        flat = c_in * side * side
        total = sum(self.outputs.values())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 512), nn.LeakyReLU(0.2), nn.Linear(512, total))
        for space, dim in self.outputs.items():
            self.register_buffer(f"mean_{_buffer_name(space)}", torch.zeros(dim))
            self.register_buffer(f"std_{_buffer_name(space)}", torch.ones(dim))

    def set_target_statistics(self, space: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise the ``space`` targets with these (dim,) statistics."""
        getattr(self, f"mean_{_buffer_name(space)}").copy_(mean)
        getattr(self, f"std_{_buffer_name(space)}").copy_(std.clamp_min(1e-6))

    def standardised(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] → ``{space: (N, dim)}`` standardised predictions (what the loss compares)."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(
                images,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                antialias=images.shape[-1] > self.input_size,
                align_corners=False,
            )
        flat = self.head(self.features(images))
        out, start = {}, 0
        for space, dim in self.outputs.items():
            out[space] = flat[:, start : start + dim]
            start += dim
        return out

    def standardise(self, space: str, latents: torch.Tensor) -> torch.Tensor:
        name = _buffer_name(space)
        return (latents - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] → ``{space: (N, dim)}`` latents in the generator's units."""
        return {
            space: value * getattr(self, f"std_{_buffer_name(space)}") + getattr(self, f"mean_{_buffer_name(space)}")
            for space, value in self.standardised(images).items()
        }


def _buffer_name(space: str) -> str:
    return space.replace("+", "_plus")


def _conv_block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(min(8, c_out), c_out), nn.LeakyReLU(0.2)]


# --------------------------------------------------------------------------------------------------- saved files


@dataclass(frozen=True)
class TrainedEncoder:
    """An encoder loaded from ``encoder.pt`` with what it was trained for."""

    network: LatentEncoder
    generator_fingerprint: str
    meta: dict[str, Any]
    sha256: str


def encoder_payload(network: LatentEncoder, meta: dict[str, Any]) -> bytes:
    """The bytes of ``encoder.pt``: a plain dict of tensors and containers (loads with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": f"latentatlas-encoder/{ENCODER_VERSION}",
            "outputs": network.outputs,
            "input_size": network.input_size,
            "width": network.width,
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "meta": meta,
        },
        buffer,
    )
    return buffer.getvalue()


def load_encoder(
    path: Path, generator_fingerprint: str | None = None, device: torch.device | str = "cpu"
) -> TrainedEncoder:
    """The encoder saved at ``path``, in eval mode on ``device``.

    Args:
        generator_fingerprint: when given, the generator the encoder must have been trained for.

    Raises:
        EncoderError: the file is missing or not an encoder of this version, or was trained for another generator.
    """
    path = Path(path)
    if not path.is_file():
        raise EncoderError(
            f"{path}: no encoder here; train one with `latentatlas train-encoder` (or `dvc repro "
            f"train-encoder`), or invert without it (--init mean)"
        )
    payload = path.read_bytes()
    try:
        saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        if saved.get("format") != f"latentatlas-encoder/{ENCODER_VERSION}":
            raise KeyError(f"format {saved.get('format')!r}")
        network = LatentEncoder(dict(saved["outputs"]), int(saved["input_size"]), int(saved["width"]))
        network.load_state_dict(saved["state_dict"], strict=True)
        meta = dict(saved["meta"])
    except (KeyError, RuntimeError, TypeError, AttributeError, EOFError, io.UnsupportedOperation) as error:
        raise EncoderError(
            f"{path}: not a latentatlas encoder of version {ENCODER_VERSION} ({error}); retrain it "
            f"with `latentatlas train-encoder`"
        ) from None
    trained_for = str(meta.get("generator_fingerprint"))
    if generator_fingerprint is not None and trained_for != generator_fingerprint:
        raise EncoderError(
            f"{path}: trained for generator {trained_for}, but params.yaml's generator is "
            f"{generator_fingerprint}; retrain it (`latentatlas train-encoder`) or invert without it "
            f"(--init mean)"
        )
    network.requires_grad_(False)
    return TrainedEncoder(network.eval().to(device), trained_for, meta, hashlib.sha256(payload).hexdigest())
