"""``table``: labels a user already has (human annotators, another tool), read from a Parquet or CSV file keyed by
``sample_id``, written into the labels store like any labeler's scores.

    label:
      labeler: table
      kwargs: {path: annotations/labels.csv, columns: [smiling, glasses]}   # columns: null = every other column

The table must hold exactly one row per sample of the run (``sample_id`` 0 … N-1, N = ``sample.n_samples``) and
numeric values (bools count as 0/1). It does not look at images: the label stage asks it for the labels of each
chunk's sample ids (:class:`stages.plugins.labelers.base.SampleIdLabeler`), so it cannot score *new* images — evaluation
and the naming of unsupervised components need a labeler that does (compose one with ``label.labelers``).

Fingerprint: the file's sha256, the id column and the columns read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import Field, field_validator

from latentatlas.params import AsList, PathStr, PluginParams
from stages.plugins.labelers.base import LABELERS, LabelerError, file_sha256

LABELER_NAME = "table"
TableFormat = Literal["auto", "parquet", "csv"]
FORMATS: tuple[str, ...] = get_args(TableFormat)
#: How many offending ids an error message shows.
SHOWN_IDS = 5


def _fail(path: Path | str, message: str) -> LabelerError:
    return LabelerError(f"labeler {LABELER_NAME!r}: {path}: {message}")


def _shown(ids: np.ndarray) -> str:
    listed = ", ".join(str(int(i)) for i in ids[:SHOWN_IDS])
    return f"{listed}{', …' if len(ids) > SHOWN_IDS else ''}"


def read_table(path: Path, file_format: str) -> pd.DataFrame:
    """The file as a DataFrame (Parquet: ``.parquet``/``.pq``; CSV: anything else under ``auto``).

    Raises:
        LabelerError: missing or unreadable file, or an unknown format.
    """
    if file_format not in FORMATS:
        raise _fail(path, f"format: expected one of {list(FORMATS)}, got {file_format!r}")
    if not path.is_file():
        raise _fail(path, "file not found")
    parquet = file_format == "parquet" or (file_format == "auto" and path.suffix.lower() in (".parquet", ".pq"))
    try:
        if parquet:
            return pq.read_table(path).to_pandas()
        return pd.read_csv(path)
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _fail(path, f"cannot be read as {'Parquet' if parquet else 'CSV'}: {detail[:200]}") from None


class TableLabeler:
    """Labels looked up by sample id in a table: (N,) int64 ids → (N, A) float32, one column per ``attributes``.

    Args:
        path: the file (for messages).
        sample_ids: (M,) int64 ids of the table's rows, distinct.
        values: (M, A) float32 labels, finite, row k for ``sample_ids[k]``.
        attributes: the A column names.
        fingerprint: see the module docstring.
    """

    name = LABELER_NAME

    def __init__(
        self, path: Path, sample_ids: np.ndarray, values: np.ndarray, attributes: tuple[str, ...], fingerprint: str
    ) -> None:
        order = np.argsort(sample_ids, kind="stable")
        self.path = path
        self.sorted_ids = sample_ids[order]
        self.values = np.ascontiguousarray(values[order], dtype=np.float32)
        self.attributes = attributes
        self.fingerprint = fingerprint
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> TableLabeler:
        self.device = torch.device(device)
        return self

    def check_sample_ids(self, n_samples: int) -> None:
        """Raise unless the table has a row for every sample ``0 … n_samples - 1`` and for no other id.

        Raises:
            LabelerError: ids beyond the run's latents (or negative), or samples without a row.
        """
        beyond = self.sorted_ids[(self.sorted_ids < 0) | (self.sorted_ids >= n_samples)]
        if len(beyond):
            raise _fail(
                self.path,
                f"{len(beyond)} sample_id values are outside the run's latents (N = {n_samples}, "
                f"ids 0 … {n_samples - 1}): {_shown(beyond)}",
            )
        if len(self.sorted_ids) < n_samples:
            missing = np.setdiff1d(np.arange(n_samples, dtype=np.int64), self.sorted_ids, assume_unique=True)
            raise _fail(
                self.path,
                f"no labels for {len(missing)} of the run's {n_samples} samples; missing sample_id {_shown(missing)}",
            )

    def score_ids(self, sample_ids: np.ndarray) -> torch.Tensor:
        """(N,) int64 sample ids → (N, A) float32 labels on the labeler's device.

        Raises:
            LabelerError: an id has no row in the table.
        """
        sample_ids = np.asarray(sample_ids, dtype=np.int64)
        positions = np.searchsorted(self.sorted_ids, sample_ids)
        positions = np.minimum(positions, len(self.sorted_ids) - 1)
        absent = sample_ids[self.sorted_ids[positions] != sample_ids]
        if len(absent):
            raise _fail(self.path, f"no labels for sample_id {_shown(absent)}")
        return torch.from_numpy(self.values[positions]).to(self.device)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Refused: a table holds the labels of the run's own samples and cannot score new images.

        Raises:
            LabelerError: always.
        """
        raise LabelerError(
            f"labeler {LABELER_NAME!r} ({self.path}) labels the run's own samples by sample_id and "
            f"cannot score new images (evaluation, naming unsupervised components); compose it with "
            f"an image labeler in label.labelers and evaluate that labeler's attributes"
        )


class TableLabelerParams(PluginParams):
    """``label.kwargs`` of ``table``."""

    path: PathStr = Field(description="the table: Parquet (.parquet, .pq) or CSV")
    columns: Annotated[list[str], AsList] | None = Field(
        None, min_length=1, description="the label columns to read (null: every column but the ids)"
    )
    id_column: str = Field("sample_id", min_length=1, description="the column holding the sample ids")
    format: TableFormat = Field("auto", description="auto: by the file's suffix")

    @field_validator("columns")
    @classmethod
    def _distinct_names(cls, columns: list[str] | None) -> list[str] | None:
        if columns is not None:
            if not all(columns):
                raise ValueError("expected non-empty column names")
            repeated = sorted({column for column in columns if columns.count(column) > 1})
            if repeated:
                raise ValueError(f"{repeated} are named more than once")
        return columns


@LABELERS.register(LABELER_NAME, params=TableLabelerParams)
def build_table_labeler(params: TableLabelerParams) -> TableLabeler:
    """The ``table`` labeler: ``params.path`` (Parquet or CSV), its ``columns`` (None: every column but the ids),
    ``id_column`` holding the sample ids, ``format`` auto | parquet | csv.

    Raises:
        LabelerError: a missing/unreadable file, no id column, ids that are not integers or repeat, ``columns``
            naming absent columns, non-numeric or missing values — each in one line.
    """
    file, columns, id_column = Path(params.path), params.columns, params.id_column
    frame = read_table(file, params.format)
    frame.columns = [str(column) for column in frame.columns]
    if id_column not in frame.columns:
        raise _fail(
            file, f"no {id_column!r} column (columns: {list(frame.columns)[:10]}); name the id column with id_column:"
        )
    ids = frame[id_column]
    if ids.isna().any():
        raise _fail(file, f"{int(ids.isna().sum())} rows have no {id_column}")
    if not (
        pd.api.types.is_integer_dtype(ids) or (pd.api.types.is_float_dtype(ids) and bool((ids == ids.round()).all()))
    ):
        raise _fail(file, f"{id_column} must hold integer sample ids, got dtype {ids.dtype}")
    sample_ids = ids.to_numpy().astype(np.int64)
    unique, counts = np.unique(sample_ids, return_counts=True)
    if (counts > 1).any():
        repeated = unique[counts > 1]
        raise _fail(file, f"{len(repeated)} sample ids appear more than once: {_shown(repeated)}")
    available = [column for column in frame.columns if column != id_column]
    if columns is None:
        chosen = available
    else:
        absent = [column for column in columns if column not in available]
        if absent:
            raise _fail(file, f"columns: {absent} are not in the table (it has {available[:20]})")
        chosen = list(columns)
    if not chosen:
        raise _fail(file, f"no label columns besides {id_column!r}")
    non_numeric = [
        column
        for column in chosen
        if not (pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]))
    ]
    if non_numeric:
        kinds = {column: str(frame[column].dtype) for column in non_numeric[:5]}
        raise _fail(
            file, f"columns {non_numeric} are not numeric ({kinds}); label values must be numbers (or booleans)"
        )
    values = frame[chosen].astype(np.float64).to_numpy().astype(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise _fail(
            file,
            f"{int(bad.sum())} values are missing or not finite, e.g. column {chosen[cols[0]]!r} at "
            f"sample_id {int(sample_ids[rows[0]])}",
        )
    settings = {"id_column": id_column, "columns": chosen}
    fingerprint = f"{LABELER_NAME}:{file_sha256(file)}:{json.dumps(settings, sort_keys=True)}"
    return TableLabeler(file, sample_ids, values, tuple(chosen), fingerprint)
