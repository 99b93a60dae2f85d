"""Nonlinear attribute models over the latent space (TunaGAN's 2-layer MLP, Mao, Lou & Yuan, "TunaGAN:
Interpretable GAN for Smart Editing"), as a fitted direction set carries them and edits follow them.

A direction set whose ``meta["models"]`` names a model for a direction carries its weights in its extras; the model
is a :class:`stages.latent.editing.LatentField`, so edits of that direction follow its gradient per sample.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.latent.directions import DirectionSet


class AttributeMLP(nn.Module):
    """The nonlinear attribute model f: (N, D) latents → (N,) logit (binary) or standardised value (continuous).

    Implements :class:`stages.latent.editing.LatentField` (``gradient``), so it can be passed to ``edit``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 256,
        dropout: float = 0.2,
        kind: str = "binary",
        target_mean: float = 0.0,
        target_scale: float = 1.0,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden_dim)
        self.output = nn.Linear(hidden_dim, 1)
        self.dropout = dropout
        self.kind = kind
        self.target_mean, self.target_scale, self.threshold = float(target_mean), float(target_scale), float(threshold)

    def config(self) -> dict[str, Any]:
        return {
            "in_dim": self.hidden.in_features,
            "hidden_dim": self.hidden.out_features,
            "dropout": self.dropout,
            "kind": self.kind,
            "target_mean": self.target_mean,
            "target_scale": self.target_scale,
            "threshold": self.threshold,
        }

    def reset_parameters(self, generator: torch.Generator) -> None:
        """nn.Linear's default initialisation, drawn from ``generator`` (no global RNG)."""
        for layer in (self.hidden, self.output):
            nn.init.kaiming_uniform_(layer.weight, a=np.sqrt(5), generator=generator)
            bound = 1.0 / np.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        hidden = torch.relu(self.hidden(latents))
        if self.training and self.dropout > 0:  # inverted dropout with an explicit generator (deterministic)
            keep = torch.bernoulli(torch.full_like(hidden, 1 - self.dropout), generator=generator)
            hidden = hidden * keep / (1 - self.dropout)
        return self.output(hidden).squeeze(-1)

    def predict(self, latents: torch.Tensor) -> torch.Tensor:
        """(N,) probability (binary) or value in the attribute's units (continuous), in eval mode."""
        with torch.no_grad():
            out = self.eval()(latents.to(device=self.hidden.weight.device, dtype=self.hidden.weight.dtype))
        return torch.sigmoid(out) if self.kind == "binary" else out * self.target_scale + self.target_mean

    def gradient(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, D) gradient of the output (logit / standardised value) w.r.t. each latent, in eval mode."""
        self.eval()
        with torch.enable_grad():
            x = latents.detach().to(device=self.hidden.weight.device, dtype=self.hidden.weight.dtype)
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(self(x).sum(), x)
        return grad.to(device=latents.device, dtype=latents.dtype)


def load_model(directions: DirectionSet, attribute: str) -> AttributeMLP:
    """The trained MLP for ``attribute`` from a (loaded) TunaGAN DirectionSet, in eval mode on the CPU."""
    models = directions.meta.get("models", {})
    if attribute not in models:
        raise KeyError(
            f"{directions.method} has no nonlinear model for {attribute!r}; models: {sorted(models)} "
            f"(fit with model='nonlinear')"
        )
    config = dict(models[attribute])
    payload = directions.extras.get(config.pop("file"))
    if payload is None:
        raise KeyError(f"{directions.method}: the model file for {attribute!r} is missing from the directions")
    model = AttributeMLP(**config)
    model.load_state_dict(torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True))
    return model.eval()
