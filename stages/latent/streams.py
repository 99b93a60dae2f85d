"""The seeded random streams every stage draws latents from: each chunk of each stream is reproducible on its own.

A stream is numpy's PCG64 seeded with a tuple of words. The sample stage draws chunk i of the fitted latents from
``(sample.seed, i)``; evaluation draws held-out chunk i from ``(eval.seed, EVAL_STREAM, i)``, a third word that keeps
the held-out stream apart from every fit stream. The same words give the same latents on every machine, worker
count and order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EVAL_STREAM = 0x45A1  # a third seed word: the held-out stream never coincides with the fit stream (seed, chunk)


def seeded_normal(seed_words: Sequence[int], n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 draws of N(0, I) from numpy's PCG64 seeded with ``seed_words`` (e.g. ``(seed, chunk)``):
    the same words give the same latents on every machine, worker and order."""
    rng = np.random.Generator(np.random.PCG64(list(seed_words)))
    return rng.standard_normal((n, dim), dtype=np.float32)


def sample_latents_z(seed: int, chunk_index: int, n: int, z_dim: int) -> np.ndarray:
    """The (n, z_dim) float32 standard-normal latents of chunk ``chunk_index`` for ``seed``."""
    return seeded_normal((seed, chunk_index), n, z_dim)


def heldout_latents_z(seed: int, chunk_index: int, n: int, z_dim: int) -> np.ndarray:
    """The (n, z_dim) float32 held-out latents of chunk ``chunk_index``."""
    return seeded_normal((seed, EVAL_STREAM, chunk_index), n, z_dim)
