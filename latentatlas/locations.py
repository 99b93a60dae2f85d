"""Where stores live: a local folder (the default) or a prefix in an object store, named by an fsspec URL.

``--data-dir data`` and ``--data-dir file:///abs/data`` are local folders (:class:`pathlib.Path`): stores there are
written with temp files and renames, and locked with ``flock``. ``--data-dir s3://bucket/run`` (also ``gs://``,
``az://``/``abfs://``, and ``memory://`` for tests) is a prefix in an object store (:class:`upath.UPath` over
fsspec): there an object appears only once its upload is complete, so every chunk, Parquet part and metadata file
is written with one put, which is atomic; renames (copies there) are never used. Object stores have no locks: one
writer per store at a time is the user's to ensure (see :func:`latentatlas.stores.store_lock`).

Credentials and endpoints come from each backend's usual environment (``AWS_*`` incl. ``AWS_ENDPOINT_URL`` for
S3-compatible servers such as MinIO, ``GOOGLE_APPLICATION_CREDENTIALS``, ...), the same on every worker. The
backends are optional installs: ``pip install s3fs`` / ``gcsfs`` / ``adlfs``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from upath import UPath

from latentatlas.errors import LatentAtlasError

# Protocols whose writes become visible only when complete (one PUT or a committed upload).
OBJECT_STORE_PROTOCOLS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "memory": None,
}
_URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")

StorePath = Path | UPath


class LocationError(LatentAtlasError, ValueError):
    """A data dir URL names a protocol stores cannot live on, or its fsspec backend is not installed."""


def store_path(location: str | os.PathLike[str] | StorePath) -> StorePath:
    """A local :class:`~pathlib.Path` for a path or ``file://`` URL; a :class:`~upath.UPath` for an object store.

    Raises:
        LocationError: the URL's protocol is not an object store (writes there would not be atomic), or the
            fsspec backend for it is not installed (the message says which package).
    """
    if isinstance(location, UPath) and is_remote(location):
        return location
    text = os.fspath(location) if not isinstance(location, str) else location
    match = _URL.match(text)
    if match is None:
        return Path(text)
    protocol = match.group("protocol").lower()
    if protocol in ("file", "local"):
        return Path(match.group("rest"))
    if protocol not in OBJECT_STORE_PROTOCOLS:
        raise LocationError(
            f"{text}: stores cannot live on {protocol}:// (a chunk written there could be seen half "
            f"written); use a local path, a shared filesystem, or an object store: "
            f"{', '.join(sorted(p + '://' for p in OBJECT_STORE_PROTOCOLS))}"
        )
    try:
        path = UPath(text, **_storage_options(protocol))
        path.fs  # instantiates the backend: fails here if its package is missing  # noqa: B018
    except ImportError:
        package = OBJECT_STORE_PROTOCOLS[protocol]
        raise LocationError(
            f"{text}: {protocol}:// needs the fsspec backend {package!r}: pip install {package}"
        ) from None
    return path


def _storage_options(protocol: str) -> dict[str, Any]:
    """fsspec options for stores there: no listings cache. Several processes write one store (the driver its
    metadata, workers their chunks), so a cached listing or ETag would soon be stale (s3fs would even refuse to read
    an object rewritten since it was listed)."""
    return {} if protocol == "memory" else {"use_listings_cache": False}


def zarr_storage_options(path: StorePath) -> dict[str, Any] | None:
    """``storage_options`` for ``zarr.open_group(str(path), ...)``: the path's own for a remote one, else None."""
    return dict(path.storage_options) if is_remote(path) else None


def is_remote(path: Any) -> bool:
    """Whether ``path`` is in an object store (a :class:`~upath.UPath` with a non-local protocol)."""
    return isinstance(path, UPath) and path.protocol not in ("", "file", "local")


def location_string(location: str | os.PathLike[str] | StorePath) -> str:
    """What to hand to another process (a Dask worker) so :func:`store_path` gives back the same location: the URL
    of a remote path, the absolute path of a local one."""
    path = store_path(location)
    return str(path) if is_remote(path) else str(path.resolve())


def arrow_source(path: StorePath) -> tuple[str, Any]:
    """``(source, filesystem)`` for pyarrow readers and writers: the key and the fsspec filesystem of a remote path,
    the path and None (pyarrow's local filesystem) of a local one."""
    return (path.path, path.fs) if is_remote(path) else (str(path), None)
