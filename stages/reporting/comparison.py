"""The report's first section: per attribute, the same held-out faces edited by every method, side by side.

It is composed from what the evaluate stage wrote, never re-synthesized: the traversal grids
``reports/grids/<method>/<attribute>.png`` (rows: the first ``eval.grid_samples`` held-out samples, the same z for
every method, edited in the method's own space; columns: ``eval.alphas``; see
:func:`stages.reporting.contact_sheet.render_traversal_grid`) give the faces, and each method's per-sample record
(``metrics/<method>.samples.parquet``) gives the re-labeled target score under each face, the very numbers the
ranking is computed from. The unedited faces (α = 0) are one image per held-out z for every method, whatever its
space: the generator maps z to w with its truncation (``synthesize(z) == synthesize(map(z)["w"], "w")``); a method
whose α = 0 faces differ from the others' is flagged (its grid is from another evaluation).

Per attribute one table: a row per method, best rank first, with its rank group and mean rank beside it; in a row,
the first :data:`FACES_SHOWN` faces side by side, each at every α (left to right), as one JPEG strip of
:data:`THUMBNAIL`-pixel faces (the DCGAN's native 64 px; the grids store 128 px) with the score printed under each
face; the remaining faces fold away below.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from latentatlas.layout import OutputLayout
from stages.reporting.contact_sheet import GridLayoutError, traversal_grid_tiles
from stages.reporting.ranking import AttributeRanking
from stages.reporting.samples import EvaluationRecord

#: Side of each face in the comparison, in pixels.
THUMBNAIL = 64
#: Height of the score caption under each face, in pixels.
CAPTION = 14
#: Gap between two faces' α sequences in one strip, in pixels (a multiple of 16: JPEG blocks stay aligned, so the
#: same face encodes to the same pixels in every method's strip).
GAP = 16
#: Faces shown unfolded per attribute; the others are in a folded block below.
FACES_SHOWN = 2
#: JPEG quality of the strips (faces of 64 px: 85 keeps them free of visible blocks at ~2 KB a face).
JPEG_QUALITY = 85
#: Mean absolute difference (0–255) above which two methods' unedited faces count as different faces.
SAME_FACE_TOLERANCE = 4.0


class ComparisonError(ValueError):
    """A traversal grid does not match the evaluation it belongs to (another layout or other α)."""


@dataclass(frozen=True)
class MethodEdits:
    """One method's edits of one attribute: ``tiles`` (S, M, T, T, 3) uint8 faces (S held-out samples, M α) and
    ``scores`` (S, M) their re-labeled target scores (NaN where the labeler does not score the attribute)."""

    method: str
    tiles: np.ndarray
    scores: np.ndarray


def load_edits(grid: Path, method: str, attribute: str, record: EvaluationRecord) -> MethodEdits:
    """``method``'s faces from its grid (downsized to :data:`THUMBNAIL`) and their scores from its record.

    Raises:
        ComparisonError: the grid's α columns are not the record's, or its rows are not the record's first held-out
            samples (ids 0, 1, ...).
    """
    edits = record.edits[(attribute, "plain")]
    try:
        with Image.open(grid) as sheet:
            tiles = traversal_grid_tiles(sheet, len(edits.alphas))
    except GridLayoutError as error:
        raise ComparisonError(f"{grid}: {error}; rerun the evaluate stage for {method!r}") from None
    rows = tiles.shape[0]
    # the grid's rows are the first held-out samples (ids 0, 1, ...: the first rows of the first chunk)
    if not np.array_equal(record.sample_ids[:rows], np.arange(rows)):
        raise ComparisonError(
            f"{grid}: {rows} rows, but {method!r}'s record holds held-out samples {record.sample_ids[:rows].tolist()}"
            f" instead of 0..{rows - 1}; rerun the evaluate stage for {method!r}"
        )
    small = np.stack(
        [
            np.stack([np.asarray(Image.fromarray(face).resize((THUMBNAIL, THUMBNAIL), Image.BOX)) for face in row])
            for row in tiles
        ]
    )
    scores = (
        edits.scores[:, :rows, record.score_names.index(attribute)].T
        if attribute in record.score_names
        else np.full((rows, len(edits.alphas)), np.nan)
    )
    return MethodEdits(method, small, scores)


def different_faces(edits: list[MethodEdits], alphas: np.ndarray) -> list[str]:
    """The methods whose unedited faces (α = 0) differ from the first method's (another evaluation's grid)."""
    zero = int(np.flatnonzero(np.asarray(alphas) == 0)[0])
    reference = edits[0].tiles[:, zero].astype(np.float64)
    differing = []
    for entry in edits[1:]:
        rows = min(len(reference), len(entry.tiles))
        if np.abs(entry.tiles[:rows, zero].astype(np.float64) - reference[:rows]).mean() > SAME_FACE_TOLERANCE:
            differing.append(entry.method)
    return differing


def strip(tiles: np.ndarray, scores: np.ndarray) -> Image.Image:
    """One method's row: F faces side by side, each at every α, the score under each face; (F, M, T, T, 3) tiles
    and (F, M) scores → an image F · M · T + (F − 1) · GAP wide, T + CAPTION high."""
    faces, strengths = tiles.shape[:2]
    image = Image.new("RGB", (faces * strengths * THUMBNAIL + (faces - 1) * GAP, THUMBNAIL + CAPTION), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=11)
    for face in range(faces):
        for column in range(strengths):
            left = face * (strengths * THUMBNAIL + GAP) + column * THUMBNAIL
            image.paste(Image.fromarray(tiles[face, column]), (left, 0))
            score = scores[face, column]
            text = f"{score:.2f}" if np.isfinite(score) else "–"
            draw.text((left + THUMBNAIL / 2, THUMBNAIL + 1), text, fill=(40, 40, 40), font=font, anchor="mt")
    return image


def jpeg_data_uri(image: Image.Image, quality: int = JPEG_QUALITY) -> str:
    """The image as a ``data:image/jpeg;base64,...`` URI (baseline JPEG, 4:2:0)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _alpha_header(alphas: np.ndarray, faces: list[int]) -> str:
    """The α of each column over the strips (per face a row of spans exactly as wide as the strip's columns)."""
    groups = []
    for face in faces:
        cells = "".join(
            f"<span class='{'zero' if alpha == 0 else ''}' style='width:{THUMBNAIL}px'>"
            f"{'α = 0' if alpha == 0 else f'{alpha:+g}'}</span>"
            for alpha in alphas
        )
        groups.append(
            f"<div class='face' style='width:{len(alphas) * THUMBNAIL}px'><div class='who'>held-out sample {face}"
            f"</div><div class='alphas'>{cells}</div></div>"
        )
    return f"<div class='faces' style='gap:{GAP}px'>{''.join(groups)}</div>"


def comparison_table(
    edits: list[MethodEdits], ranking: AttributeRanking, alphas: np.ndarray, faces: list[int], spaces: dict[str, str]
) -> str:
    """One table: per method (``edits`` in rank order) its name, rank group, mean rank and space, and its strip of
    ``faces`` (indices into the grids' rows)."""
    rows = []
    for entry in edits:
        group = ranking.group[entry.method]
        rank = ranking.mean_rank[entry.method]
        fit = (
            ""
            if ranking.fits[entry.method]
            else f" · <span class='warning' title='held-out fit R² below {ranking.min_fit_r2:g}: ranked last'>"
            f"✗ fit</span>"
        )
        rows.append(
            f"<tr data-method='{html.escape(entry.method)}' data-group='{group}'>"
            f"<th><span class='method'>{html.escape(entry.method)}</span><br>"
            f"<span class='group g{min(group, 4)}'>group {group}</span> "
            f"<span class='meta'>rank {rank.value:.2f} · {html.escape(spaces[entry.method])}{fit}</span></th>"
            f"<td><img class='strip' alt='{html.escape(entry.method)}: {html.escape(ranking.attribute)} edits' "
            f"src='{jpeg_data_uri(strip(entry.tiles[faces], entry.scores[faces]))}'></td></tr>"
        )
    header = f"<tr><th></th><td>{_alpha_header(alphas, faces)}</td></tr>"
    table = f"<table class='compare'><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>"
    return f"<div class='scroll'>{table}</div>"


def comparison_html(
    ranking: AttributeRanking,
    layout: OutputLayout,
    records: dict[str, EvaluationRecord],
    spaces: dict[str, str],
    not_evaluated: list[str],
) -> str:
    """The side-by-side of one attribute (see the module docstring): every method of ``ranking`` that has a grid,
    best first. ``spaces``: method → where it edits (shown beside its name); ``not_evaluated``: the methods with no
    direction for this attribute (named under the table)."""
    attribute = ranking.attribute
    edits, missing = [], []
    for method in ranking.methods:
        grid = layout.traversal_grid(method, attribute)
        if grid.is_file():
            edits.append(load_edits(grid, method, attribute, records[method]))
        else:
            missing.append(method)
    notes = []
    if missing:
        notes.append(f"No traversal grid (rerun their evaluation): {', '.join(missing)}.")
    if not_evaluated:
        notes.append(f"No direction for {attribute}: {', '.join(not_evaluated)}.")
    title = (
        f"<h3 id='compare-{html.escape(attribute)}'>{html.escape(attribute)} "
        f"<small>best group: {html.escape(', '.join(ranking.best_group))}</small></h3>"
    )
    if not edits:
        return f"<section class='attribute'>{title}<p class='note'>{html.escape(' '.join(notes))}</p></section>"
    alphas = records[edits[0].method].edits[(attribute, "plain")].alphas
    differing = different_faces(edits, alphas)
    warning = (
        f"<p class='warning'>⚠ The unedited faces (α = 0) of {', '.join(differing)} differ from "
        f"{edits[0].method}'s: their grids come from another evaluation; rerun it.</p>"
        if differing
        else ""
    )
    rows = min(len(entry.tiles) for entry in edits)
    shown, folded = list(range(min(FACES_SHOWN, rows))), list(range(min(FACES_SHOWN, rows), rows))
    parts = [title, warning, comparison_table(edits, ranking, alphas, shown, spaces)]
    if folded:
        parts.append(
            f"<details><summary>{len(folded)} more held-out sample{'s' if len(folded) > 1 else ''}</summary>"
            + "".join(
                comparison_table(edits, ranking, alphas, folded[start : start + FACES_SHOWN], spaces)
                for start in range(0, len(folded), FACES_SHOWN)
            )
            + "</details>"
        )
    if notes:
        parts.append(f"<p class='note'>{html.escape(' '.join(notes))}</p>")
    return f"<section class='attribute' data-attribute='{html.escape(attribute)}'>{''.join(parts)}</section>"
