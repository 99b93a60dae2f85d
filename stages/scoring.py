"""Scoring images with a labeler: the one way every stage does it (label, fit's component naming, evaluate).

Images go through the labeler in batches, under inference mode, and the scores are checked: one row per image, one
column per attribute, all finite.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from latentatlas.errors import LatentAtlasError
from stages.device import inference_context
from stages.labelers.base import Labeler


class LabelerOutputError(LatentAtlasError, RuntimeError):
    """A labeler returned scores of the wrong shape or non-finite values."""


def score_images(labeler: Labeler, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """(N, 3, H, W) images in [-1, 1] → (N, A) float32 scores, in batches of ``batch_size``."""
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        scores = labeler.score(batch)
        if scores.shape != (batch.shape[0], len(labeler.attributes)):
            raise LabelerOutputError(f"labeler {labeler.name!r} returned scores of shape {tuple(scores.shape)}, "
                                     f"expected ({batch.shape[0]}, {len(labeler.attributes)})")
        outputs.append(scores.float().cpu())
    scores = torch.cat(outputs).numpy()
    bad = ~np.isfinite(scores)
    if bad.any():
        columns = sorted({labeler.attributes[k] for k in np.nonzero(bad)[1]})
        raise LabelerOutputError(f"labeler {labeler.name!r} returned non-finite scores for {columns}")
    return scores


def score_frame(labeler: Labeler, images: torch.Tensor, batch_size: int, device: torch.device) -> pd.DataFrame:
    """(N, 3, H, W) images in [-1, 1] → DataFrame (N, A) with one column per attribute, computed on ``device``."""
    with inference_context(device, amp=False):
        scores = score_images(labeler, images.to(device), batch_size)
    return pd.DataFrame(scores, columns=list(labeler.attributes))
