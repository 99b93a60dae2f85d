"""A PNG contact sheet: the first samples with their labels written under each image, for a person to eyeball."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from latentatlas.atomic import atomic_write_bytes, remove_temp_files
from latentatlas.stores import os_error

_CELL = 128  # images are upscaled (nearest) to this side so 64 px faces are legible
_LINE = 11
#: A traversal grid's header (title and α line) and the caption under each of its images, in pixels.
_GRID_HEADER, _GRID_CAPTION = 2 * _LINE + 6, _LINE + 4


def render_contact_sheet(
    pixels: np.ndarray, sample_ids: Sequence[int], attributes: Sequence[str], scores: np.ndarray, columns: int = 8
) -> Image.Image:
    """Grid of (N, H, W, 3) uint8 images, each captioned with its sample id and (N, A) attribute scores."""
    if pixels.shape[0] != scores.shape[0] or scores.shape[1] != len(attributes):
        raise ValueError(
            f"contact sheet: {pixels.shape[0]} images, scores {scores.shape}, {len(attributes)} attributes do not match"
        )
    font = ImageFont.load_default()
    caption_height = _LINE * (len(attributes) + 1) + 4
    rows = -(-len(pixels) // columns)
    sheet = Image.new("RGB", (columns * _CELL, rows * (_CELL + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for position, (image, sample_id, row_scores) in enumerate(zip(pixels, sample_ids, scores)):
        left, top = (position % columns) * _CELL, (position // columns) * (_CELL + caption_height)
        sheet.paste(Image.fromarray(image).resize((_CELL, _CELL), Image.NEAREST), (left, top))
        lines = [f"#{sample_id}"] + [f"{name[:13]} {value:.2f}" for name, value in zip(attributes, row_scores)]
        for line_number, line in enumerate(lines):
            draw.text((left + 3, top + _CELL + 2 + line_number * _LINE), line, fill="black", font=font)
    return sheet


def write_contact_sheet(path: Path, sheet: Image.Image, what: str = "the image") -> None:
    """Write ``sheet`` as a PNG at ``path`` atomically, first deleting the temp files a killed writer of ``path``
    left beside it. Call it where no other run writes ``path`` (under the lock of the stage that owns it).

    Raises:
        StoreError: the write failed (no space, no permission): one line naming ``path`` and ``what`` it is;
            ``path`` is then as it was and no temp file is left.
    """
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    try:
        remove_temp_files(path)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as error:
        raise os_error(error, f"{path}: cannot write {what}") from None


def render_traversal_grid(
    pixels: np.ndarray, alphas: Sequence[float], target_scores: np.ndarray, title: str
) -> Image.Image:
    """Rows of samples, columns of edit strengths: (S, M, H, W, 3) uint8 images, (S, M) target scores.

    The header gives α per column; each image is captioned with the target attribute's score after the edit. Every
    image is resized (nearest) to 128 × 128; :func:`traversal_grid_tiles` cuts them back out.
    """
    samples, strengths = pixels.shape[:2]
    if len(alphas) != strengths or target_scores.shape != (samples, strengths):
        raise ValueError(
            f"traversal grid: images {pixels.shape[:2]}, {len(alphas)} alphas and scores "
            f"{target_scores.shape} do not match"
        )
    font = ImageFont.load_default()
    header, caption = _GRID_HEADER, _GRID_CAPTION
    sheet = Image.new("RGB", (strengths * _CELL, header + samples * (_CELL + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((3, 2), title, fill="black", font=font)
    for column, alpha in enumerate(alphas):
        draw.text((column * _CELL + _CELL // 2 - 12, _LINE + 4), f"a={alpha:+.1f}", fill="black", font=font)
    for row in range(samples):
        top = header + row * (_CELL + caption)
        for column in range(strengths):
            left = column * _CELL
            sheet.paste(Image.fromarray(pixels[row, column]).resize((_CELL, _CELL), Image.NEAREST), (left, top))
            draw.text((left + 3, top + _CELL + 2), f"{target_scores[row, column]:.2f}", fill="black", font=font)
    return sheet


class GridLayoutError(ValueError):
    """An image is not a traversal grid of :func:`render_traversal_grid`'s layout."""


def traversal_grid_tiles(sheet: Image.Image, strengths: int) -> np.ndarray:
    """The (S, M, 128, 128, 3) uint8 images of a traversal grid written by :func:`render_traversal_grid` with
    M = ``strengths`` columns (the inverse of its layout: header, then per sample a row of images and their captions).

    Raises:
        GridLayoutError: the sheet's size is not that of such a grid (another layout, or another number of α).
    """
    width, height = sheet.size
    rows, leftover = divmod(height - _GRID_HEADER, _CELL + _GRID_CAPTION)
    if width != strengths * _CELL or leftover or rows < 1:
        raise GridLayoutError(
            f"a {width} × {height} image is not a traversal grid of {strengths} α columns "
            f"({strengths * _CELL} px wide, {_GRID_HEADER} + rows × {_CELL + _GRID_CAPTION} px high)"
        )
    pixels = np.asarray(sheet.convert("RGB"))
    tops = _GRID_HEADER + np.arange(rows) * (_CELL + _GRID_CAPTION)
    return np.stack(
        [
            np.stack([pixels[top : top + _CELL, column * _CELL : (column + 1) * _CELL] for column in range(strengths)])
            for top in tops
        ]
    )
