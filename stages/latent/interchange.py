"""Directions from elsewhere, and ours for elsewhere: the published anchors in the directions format.

Read (``latentatlas directions import``):

- **InterFaceGAN** boundaries (Shen, Gu, Tang & Zhou, "Interpreting the Latent Space of GANs for Semantic Face
  Editing", CVPR 2020): one ``.npy`` per attribute, a (1, D) unit normal, named
  ``<model>_<attribute>[_c_<attr>[_<attr>…]][_w]_boundary.npy`` (``pggan_celebahq_age_c_gender_boundary.npy``,
  ``stylegan_ffhq_smile_w_boundary.npy``), or ``boundary_<Attribute>.npy`` in a folder ``<model>_<z|w>/``. The
  attribute becomes the direction's name (``age``, or ``age|gender`` for one conditioned on gender); ``_w`` means
  space W.
- **GANSpace** components (Härkönen, Hertzmann, Lehtinen & Paris, "GANSpace: Discovering Interpretable GAN
  Controls", NeurIPS 2020): the ``.npz`` its ``decomposition.py`` caches, with ``lat_comp`` (K, …, D) latent-space
  components, ``lat_stdev`` and ``var_ratio``; a file name ending in ``_w`` (before ``.npz``) means space W.
- **SeFa** factorisations (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021): a
  (K, D) ``.npy`` of eigenvectors, or an ``.npz`` with ``boundaries`` (K, D) and optionally ``eigen_values`` (K,).

Written (``latentatlas directions export --format interfacegan``): one InterFaceGAN boundary ``.npy`` per
direction, (1, D) float32, named ``<model>_<name>[_w]_boundary.npy``, which InterFaceGAN's ``edit.py`` reads.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from stages.latent.directions import DirectionsError, DirectionSet

ImportFormat = Literal["interfacegan", "ganspace", "sefa"]
IMPORT_FORMATS: tuple[str, ...] = ("interfacegan", "ganspace", "sefa")

_INTERFACEGAN_NAME = re.compile(r"^(?P<stem>.+?)(?P<w>_w)?_boundary\.npy$")
_INTERFACEGAN_FOLDER_NAME = re.compile(r"^boundary_(?P<attribute>.+)\.npy$")


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DirectionsError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DirectionsError(f"{path}: not a readable .npy array ({error})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DirectionsError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DirectionsError(f"{path}: not a readable .npz archive ({error})") from None


def _unit_rows(vectors: np.ndarray, source: Path) -> np.ndarray:
    """(K, D) float32 unit rows. Rows that are unit-norm already (to 1e-6) keep their exact values, so a published
    boundary goes back out byte for byte."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] < 2:
        raise DirectionsError(f"{source}: expected (K, D) directions, got shape {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
        raise DirectionsError(f"{source}: directions have non-finite entries")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    if np.any(norms == 0):
        raise DirectionsError(f"{source}: a direction is all zeros")
    rescaled = (vectors.astype(np.float64) / norms).astype(np.float32)
    keep = np.abs(norms - 1.0) <= 1e-6
    return np.where(keep, vectors.astype(np.float32), rescaled)


def interfacegan_name(path: Path, model: str | None) -> tuple[str, str, list[str]]:
    """``(attribute, space, conditioned_on)`` from an InterFaceGAN boundary file name.

    ``model`` (e.g. ``stylegan_ffhq``) is the prefix to strip; without it the model is taken to be the first two
    underscore-separated words (``pggan_celebahq``), which fits every file InterFaceGAN published.
    """
    folder_match = _INTERFACEGAN_FOLDER_NAME.match(path.name)
    if folder_match:
        space = "w" if path.parent.name.endswith("_w") else "z"
        return folder_match.group("attribute").lower(), space, []
    match = _INTERFACEGAN_NAME.match(path.name)
    if not match:
        raise DirectionsError(
            f"{path}: not an InterFaceGAN boundary name (expected "
            f"<model>_<attribute>[_c_<attribute>...][_w]_boundary.npy or boundary_<Attribute>.npy)"
        )
    stem = match.group("stem")
    if model is not None:
        if not stem.startswith(f"{model}_"):
            raise DirectionsError(f"{path}: does not start with the model name {model!r}")
        rest = stem[len(model) + 1 :]
    else:
        parts = stem.split("_")
        if len(parts) < 3:
            raise DirectionsError(f"{path}: cannot tell the model from the attribute in {stem!r}; pass --model")
        rest = "_".join(parts[2:])
    attribute, _, conditions = rest.partition("_c_")
    if not attribute:
        raise DirectionsError(f"{path}: no attribute in {stem!r}")
    return attribute, "w" if match.group("w") else "z", [c for c in conditions.split("_") if c]


def import_interfacegan(paths: Sequence[Path], name: str, model: str | None = None) -> DirectionSet:
    """One direction per boundary file (all in one latent space and dimension)."""
    names, vectors, stats, spaces = [], [], {}, set()
    for path in sorted(Path(p) for p in paths):
        attribute, space, conditions = interfacegan_name(path, model)
        boundary = _read_npy(path)
        if boundary.ndim == 2 and boundary.shape[0] == 1:
            boundary = boundary[0]
        if boundary.ndim != 1:
            raise DirectionsError(f"{path}: expected a (1, D) boundary, got shape {boundary.shape}")
        direction_name = attribute if not conditions else f"{attribute}|{'+'.join(conditions)}"
        if direction_name in names:
            raise DirectionsError(f"{path}: a second boundary for {direction_name!r}")
        names.append(direction_name)
        vectors.append(boundary)
        spaces.add(space)
        stats[direction_name] = {"attribute": attribute, "conditioned_on": conditions, "source_file": path.name}
    if not names:
        raise DirectionsError("no boundary files given")
    if len(spaces) > 1:
        raise DirectionsError(
            f"{name}: boundaries of both Z and W given ({sorted(spaces)}); import each space as its own set"
        )
    if len({len(v) for v in vectors}) > 1:
        raise DirectionsError(f"{name}: boundaries of different dimensions {sorted({len(v) for v in vectors})}")
    stacked = np.stack(vectors)
    return DirectionSet(
        name,
        spaces.pop(),
        names,
        _unit_rows(stacked, Path(paths[0])),
        stats=stats,
        meta=_imported_meta("interfacegan", paths),
    )


def import_ganspace(path: Path, name: str, space: str | None = None, n_components: int | None = None) -> DirectionSet:
    """GANSpace's ``lat_comp`` as components ``c000``…, with their variance ratio and latent std in the stats."""
    path = Path(path)
    archive = _read_npz(path)
    if "lat_comp" not in archive:
        raise DirectionsError(f"{path}: not a GANSpace components file (no 'lat_comp' array; has {sorted(archive)})")
    components = archive["lat_comp"]
    components = components.reshape(components.shape[0], -1)
    if n_components is not None:
        components = components[:n_components]
    space = space or ("w" if path.stem.endswith("_w") else "z")
    names = [f"c{k:03d}" for k in range(components.shape[0])]
    stats = {}
    for k, component_name in enumerate(names):
        stats[component_name] = {
            key: float(archive[key][k])
            for key in ("var_ratio", "lat_stdev")
            if key in archive and archive[key].shape[0] > k
        }
    return DirectionSet(
        name, space, names, _unit_rows(components, path), stats=stats, meta=_imported_meta("ganspace", [path])
    )


def import_sefa(path: Path, name: str, space: str = "z", n_components: int | None = None) -> DirectionSet:
    """SeFa's eigenvectors as components ``c000``… (largest eigenvalue first), eigenvalues in the stats."""
    path = Path(path)
    if path.suffix == ".npz":
        archive = _read_npz(path)
        if "boundaries" not in archive:
            raise DirectionsError(f"{path}: expected a 'boundaries' array (K, D) (has {sorted(archive)})")
        boundaries, eigen_values = archive["boundaries"], archive.get("eigen_values")
    else:
        boundaries, eigen_values = _read_npy(path), None
    boundaries = boundaries.reshape(boundaries.shape[0], -1)
    if n_components is not None:
        boundaries = boundaries[:n_components]
    names = [f"c{k:03d}" for k in range(boundaries.shape[0])]
    stats = {
        component_name: ({"eigen_value": float(eigen_values[k])} if eigen_values is not None else {})
        for k, component_name in enumerate(names)
    }
    return DirectionSet(
        name, space, names, _unit_rows(boundaries, path), stats=stats, meta=_imported_meta("sefa", [path])
    )


def _imported_meta(source_format: str, paths: Sequence[Path]) -> dict:
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return {
        "imported": True,
        "format": source_format,
        "sources": sorted(Path(p).name for p in paths),
        "fingerprint": f"imported-{source_format}-{digest.hexdigest()[:16]}",
    }


def import_directions(
    source_format: str,
    paths: Sequence[Path],
    name: str,
    *,
    model: str | None = None,
    space: str | None = None,
    n_components: int | None = None,
) -> DirectionSet:
    """Read published directions of ``source_format`` (see the module docstring) into a :class:`DirectionSet`.

    Raises:
        DirectionsError: unknown format, missing or unreadable files, names or shapes that do not fit the format.
    """
    if source_format == "interfacegan":
        directions = import_interfacegan(paths, name, model)
        if space is not None and space != directions.space:
            raise DirectionsError(f"{name}: the file names say space {directions.space!r}, --space says {space!r}")
        return directions
    if len(paths) != 1:
        raise DirectionsError(f"{source_format}: expected one file, got {len(paths)}")
    if source_format == "ganspace":
        return import_ganspace(paths[0], name, space, n_components)
    if source_format == "sefa":
        return import_sefa(paths[0], name, space or "z", n_components)
    raise DirectionsError(f"unknown directions format {source_format!r}; expected one of {IMPORT_FORMATS}")


def export_interfacegan(directions: DirectionSet, folder: Path, model: str) -> list[Path]:
    """Write each direction as an InterFaceGAN boundary, (1, D) float32 ``<model>_<name>[_w]_boundary.npy``.

    Raises:
        DirectionsError: a space InterFaceGAN has no boundary files for (only z and w), or a name that is not a
            plain file-name word.
    """
    if directions.space not in ("z", "w"):
        raise DirectionsError(f"{directions.method}: InterFaceGAN boundaries live in z or w, not {directions.space!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for direction_name in directions.names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", direction_name):
            raise DirectionsError(f"{directions.method}: direction name {direction_name!r} cannot be a file name")
        suffix = "_w" if directions.space == "w" else ""
        target = folder / f"{model}_{direction_name}{suffix}_boundary.npy"
        buffer = io.BytesIO()
        np.save(buffer, directions[direction_name][None, :].astype(np.float32), allow_pickle=False)
        target.write_bytes(buffer.getvalue())
        written.append(target)
    return written
