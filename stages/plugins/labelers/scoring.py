"""Scoring images with a labeler: the one way every stage does it (label, fit's component naming, evaluate).

Images go through the labeler in batches, under inference mode, and the scores are checked: one row per image, one
column per attribute, all finite (NaN allowed only in the columns of a labeler with ``missing_scores_allowed``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from latentatlas.errors import LatentAtlasError
from stages.plugins.labelers.base import Labeler, labeler_members, reads_sample_ids
from stages.runtime.device import inference_context


class LabelerOutputError(LatentAtlasError, RuntimeError):
    """A labeler returned scores of the wrong shape or non-finite values."""


def _checked(labeler: Labeler, scores: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``scores`` as a (n_rows, A) float32 CPU tensor, or LabelerOutputError naming the shape."""
    if scores.shape != (n_rows, len(labeler.attributes)):
        raise LabelerOutputError(
            f"labeler {labeler.name!r} returned scores of shape {tuple(scores.shape)}, "
            f"expected ({n_rows}, {len(labeler.attributes)})"
        )
    return scores.float().cpu()


def _missing_allowed(labeler: Labeler) -> np.ndarray:
    """(A,) bool: the columns that may hold NaN — those of a labeler (alone or in a suite) that opts in with
    ``missing_scores_allowed = True`` (the ``http`` labeler: images whose requests failed). Infinities never pass."""
    return np.array(
        [
            bool(getattr(member, "missing_scores_allowed", False))
            for member in labeler_members(labeler)
            for _ in member.attributes
        ],
        dtype=bool,
    )


def _finite(labeler: Labeler, scores: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(scores) & ~(np.isnan(scores) & _missing_allowed(labeler))
    if bad.any():
        columns = sorted({labeler.attributes[k] for k in np.nonzero(bad)[1]})
        raise LabelerOutputError(f"labeler {labeler.name!r} returned non-finite scores for {columns}")
    return scores


def score_images(labeler: Labeler, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """(N, 3, H, W) images in [-1, 1] → (N, A) float32 scores, in batches of ``batch_size``."""
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        outputs.append(_checked(labeler, labeler.score(batch), batch.shape[0]))
    return _finite(labeler, torch.cat(outputs).numpy())


def check_sample_ids(labeler: Labeler, n_samples: int) -> None:
    """Let every labeler that reads sample ids (alone or in a suite) check it labels samples ``0 … n_samples - 1``.

    Raises:
        LabelerError: (from the labeler) ids missing, or beyond the run's N.
    """
    for member in labeler_members(labeler):
        if reads_sample_ids(member):
            member.check_sample_ids(n_samples)


def score_samples(
    labeler: Labeler, sample_ids: np.ndarray, images: Callable[[], torch.Tensor], batch_size: int
) -> np.ndarray:
    """The (N, A) float32 scores of the N samples ``sample_ids`` (int64), columns in ``labeler.attributes`` order.

    A labeler that reads sample ids (:class:`stages.plugins.labelers.base.SampleIdLabeler`) looks them up with
    ``score_ids``; any other scores ``images()`` — the samples' (N, 3, H, W) images in [-1, 1], loaded once and only
    when some labeler needs them — in batches of ``batch_size``. A suite mixing both concatenates its members'
    columns in order.
    """
    members = labeler_members(labeler)
    if not any(reads_sample_ids(member) for member in members):
        return score_images(labeler, images(), batch_size)
    loaded: torch.Tensor | None = None
    parts = []
    for member in members:
        if reads_sample_ids(member):
            parts.append(_finite(member, _checked(member, member.score_ids(sample_ids), len(sample_ids)).numpy()))
        else:
            loaded = images() if loaded is None else loaded
            parts.append(score_images(member, loaded, batch_size))
    return np.concatenate(parts, axis=1)


def score_frame(labeler: Labeler, images: torch.Tensor, batch_size: int, device: torch.device) -> pd.DataFrame:
    """(N, 3, H, W) images in [-1, 1] → DataFrame (N, A) with one column per attribute, computed on ``device``."""
    with inference_context(device, amp=False):
        scores = score_images(labeler, images.to(device), batch_size)
    return pd.DataFrame(scores, columns=list(labeler.attributes))
