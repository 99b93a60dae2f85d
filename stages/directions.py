"""The common directions format every fitting method writes, and every consumer (evaluation, CLI, notebooks) reads.

On disk, ``directions/<method>/``:

- ``directions.npy``: float32 (K, D) array, one unit-norm direction per row, in latent space ``space``.
- ``directions.json``: ``{"method", "space", "names": [K names], "stats": {name: {...}}, "meta": {...}}``.
  ``names`` are attribute names for supervised methods, ``"c017"``-style component names (with the attribute they
  move most in ``stats``) for unsupervised ones. ``meta`` holds the method's params and the fingerprint of the
  input store.
- any extra files a method needs (e.g. a nonlinear model's ``model.pt``), listed in ``meta["extra_files"]``.

Both files are written atomically; ``directions.json`` last, so its presence means the set is complete.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.atomic import atomic_write_bytes, atomic_write_json

VECTORS_FILE = "directions.npy"
INDEX_FILE = "directions.json"


class DirectionsError(ValueError):
    """A directions folder that is missing, incomplete or inconsistent."""


@dataclass
class DirectionSet:
    """K unit-norm directions in one latent space, with their names, fit statistics and provenance."""

    method: str
    space: str
    names: list[str]
    vectors: np.ndarray  # (K, D) float32, unit-norm rows
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.names):
            raise DirectionsError(f"{self.method}: vectors of shape {self.vectors.shape} do not match "
                                  f"{len(self.names)} names")
        if len(set(self.names)) != len(self.names):
            raise DirectionsError(f"{self.method}: direction names are not unique: {self.names}")
        norms = np.linalg.norm(self.vectors, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-4):
            raise DirectionsError(f"{self.method}: directions must be unit-norm, got norms {norms.round(4).tolist()}")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __getitem__(self, name: str) -> np.ndarray:
        """The (D,) direction called ``name``."""
        try:
            return self.vectors[self.names.index(name)]
        except ValueError:
            raise KeyError(f"{self.method} has no direction {name!r}; it has {self.names}") from None

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        buffer = io.BytesIO()
        np.save(buffer, self.vectors, allow_pickle=False)
        atomic_write_bytes(folder / VECTORS_FILE, buffer.getvalue())
        atomic_write_json(folder / INDEX_FILE, {"method": self.method, "space": self.space, "names": self.names,
                                                "stats": self.stats, "meta": self.meta})

    @classmethod
    def load(cls, folder: Path) -> "DirectionSet":
        folder = Path(folder)
        index_path, vectors_path = folder / INDEX_FILE, folder / VECTORS_FILE
        if not index_path.is_file() or not vectors_path.is_file():
            raise DirectionsError(f"{folder}: not a complete directions folder (expected {INDEX_FILE} and "
                                  f"{VECTORS_FILE}); run the fit stage for it")
        try:
            index = json.loads(index_path.read_text())
            vectors = np.load(vectors_path, allow_pickle=False)
            return cls(method=index["method"], space=index["space"], names=list(index["names"]), vectors=vectors,
                       stats=index.get("stats", {}), meta=index.get("meta", {}))
        except (json.JSONDecodeError, KeyError, ValueError) as error:
            raise DirectionsError(f"{folder}: unreadable directions ({error})") from error
