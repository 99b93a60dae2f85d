"""The common directions format every fitting method writes, and every consumer (evaluation, CLI, notebooks) reads.

On disk, ``directions/<method>/``:

- ``directions.npy``: float32 (K, D) array, one unit-norm direction per row, in latent space ``space``.
- ``directions.json``: ``{"method", "space", "names": [K names], "stats": {name: {...}}, "meta": {...}}``.
  ``names`` are attribute names for supervised methods, ``"c017"``-style component names (with the attribute they
  move most in ``stats``) for unsupervised ones. ``meta`` holds the method's params and the fingerprint of the
  input store.
- any extra files a method needs (e.g. a nonlinear model's ``model.pt``), listed in ``meta["extra_files"]``. In
  memory they are ``DirectionSet.extras`` (file name → bytes); ``save`` writes them and ``load`` reads them back.

Both files are written atomically; ``directions.json`` last, so its presence means the set is complete.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentatlas.atomic import atomic_write_bytes, atomic_write_json
from latentatlas.errors import LatentAtlasError

VECTORS_FILE = "directions.npy"
INDEX_FILE = "directions.json"


class DirectionsError(LatentAtlasError, ValueError):
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
    extras: dict[str, bytes] = field(default_factory=dict)  # extra files by name (e.g. a state dict), saved beside

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        for name in self.extras:
            if not name or Path(name).name != name or name in (VECTORS_FILE, INDEX_FILE):
                raise DirectionsError(
                    f"{self.method}: extra file name {name!r} must be a plain file name other "
                    f"than {VECTORS_FILE} / {INDEX_FILE}"
                )
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.names):
            raise DirectionsError(
                f"{self.method}: vectors of shape {self.vectors.shape} do not match {len(self.names)} names"
            )
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

    def cosine_similarity(self) -> np.ndarray:
        """(K, K) float64 cosine similarities between the directions (InterFaceGAN's boundary correlation)."""
        vectors = self.vectors.astype(np.float64)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors @ vectors.T

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        for name, payload in sorted(self.extras.items()):
            atomic_write_bytes(folder / name, payload)
        buffer = io.BytesIO()
        np.save(buffer, self.vectors, allow_pickle=False)
        atomic_write_bytes(folder / VECTORS_FILE, buffer.getvalue())
        meta = dict(self.meta)
        if self.extras:
            meta["extra_files"] = sorted(self.extras)
        atomic_write_json(
            folder / INDEX_FILE,
            {"method": self.method, "space": self.space, "names": self.names, "stats": self.stats, "meta": meta},
        )

    @classmethod
    def load(cls, folder: Path) -> DirectionSet:
        folder = Path(folder)
        index_path, vectors_path = folder / INDEX_FILE, folder / VECTORS_FILE
        if not index_path.is_file() or not vectors_path.is_file():
            raise DirectionsError(
                f"{folder}: not a complete directions folder (expected {INDEX_FILE} and "
                f"{VECTORS_FILE}); run the fit stage for it"
            )
        try:
            index = json.loads(index_path.read_text())
            vectors = np.load(vectors_path, allow_pickle=False)
            meta = index.get("meta", {})
            extras = {}
            for name in meta.get("extra_files", []):
                if Path(name).name != name or not (folder / name).is_file():
                    raise DirectionsError(f"{folder}: extra file {name!r} listed in {INDEX_FILE} is missing")
                extras[name] = (folder / name).read_bytes()
            return cls(
                method=index["method"],
                space=index["space"],
                names=list(index["names"]),
                vectors=vectors,
                stats=index.get("stats", {}),
                meta=meta,
                extras=extras,
            )
        except (json.JSONDecodeError, KeyError, ValueError) as error:
            raise DirectionsError(f"{folder}: unreadable directions ({error})") from error


def concatenate_direction_sets(parts: list[DirectionSet]) -> DirectionSet:
    """One set from per-attribute sets of one method: names, vectors, stats and extra files concatenated; the
    first part's meta, plus every part's meta by direction name under ``per_attribute_meta``."""
    first = parts[0]
    if any(part.space != first.space or part.method != first.method for part in parts):
        raise DirectionsError(f"{first.method}: per-attribute results disagree on method or latent space")
    extras: dict[str, bytes] = {}
    for part in parts:
        clash = set(extras) & set(part.extras)
        if clash:
            raise DirectionsError(
                f"{first.method}: per-attribute results both write extra files {sorted(clash)}; "
                f"a separable method must name its extra files per attribute"
            )
        extras |= part.extras
    meta = dict(first.meta)
    meta.pop("extra_files", None)
    meta["per_attribute_meta"] = {name: part.meta for part in parts for name in part.names}
    return DirectionSet(
        method=first.method,
        space=first.space,
        names=[n for part in parts for n in part.names],
        vectors=np.concatenate([part.vectors for part in parts]),
        stats={k: v for part in parts for k, v in part.stats.items()},
        meta=meta,
        extras=extras,
    )


def select_directions(
    directions: DirectionSet, attributes: list[str], allow_missing: bool = False
) -> dict[str, tuple[np.ndarray, str]]:
    """For each attribute, the (D,) direction that edits it and the name it has in the set.

    Supervised sets name directions by attribute. Unsupervised ones name components (``c017``) and record in their
    stats the attribute each moves most and the correlation; the component with the largest |correlation| for the
    attribute is taken, its sign flipped if the correlation is negative so that +α increases the attribute.

    With ``allow_missing`` (unsupervised sets: a component exists only for what the method happened to discover),
    attributes without a component are left out instead.

    Raises:
        DirectionsError: an attribute has no direction (and ``allow_missing`` is off), or none has.
    """
    selected: dict[str, tuple[np.ndarray, str]] = {}
    for attribute in attributes:
        if attribute in directions.names:
            selected[attribute] = (directions[attribute], attribute)
            continue
        candidates = [
            (abs(float(stats.get("correlation", 0.0))), name, float(stats.get("correlation", 0.0)))
            for name, stats in directions.stats.items()
            if stats.get("attribute") == attribute and name in directions.names
        ]
        if not candidates and allow_missing:
            continue
        if not candidates:
            raise DirectionsError(
                f"{directions.method}: no direction for attribute {attribute!r} (its directions: "
                f"{directions.names[:8]}{'…' if len(directions.names) > 8 else ''}; unsupervised "
                f"components are matched through stats[name]['attribute'])"
            )
        _, name, correlation = max(candidates)
        selected[attribute] = (directions[name] * (1.0 if correlation >= 0 else -1.0), name)
    if not selected:
        raise DirectionsError(
            f"{directions.method}: none of the attributes {attributes} has a direction; for an "
            f"unsupervised method, see which attributes its components were named after in "
            f"directions/{directions.method}/directions.json"
        )
    return selected
