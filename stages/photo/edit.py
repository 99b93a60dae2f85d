"""Edit your own photo: invert it, move its latent along a fitted direction, re-score every edit.

``latentatlas edit PHOTO --directions directions/<method> --attribute happy --alphas -3,-1.5,0,1.5,3`` runs

1. a check that the directions fit the generator params.yaml names: their latent space must be one of the
   generator's, their dimension that space's, and — when the stores they were fitted on are still in the data dir —
   the generator that synthesised those stores must be this one (``meta["input_fingerprint"]`` is the labels
   store's fingerprint; the labels store names its images store, whose inputs hold the generator's fingerprint);
2. the inversion (:class:`stages.photo.invert.InvertStage` into ``<out>/latents.zarr``: a rerun with the same photo and
   settings reuses it), in the direction's space (z for z directions; W+ for W directions on a style-based
   generator, where each W+ layer — or only ``--layers a,b`` — moves along the W direction, else W);
3. the edits ``latent + α n`` for every α (``n`` made orthogonal to the ``--keep`` directions, InterFaceGAN's
   conditional editing, :mod:`stages.latent.editing`), synthesised;
4. the labeler of params.yaml on the photo's crop, its reconstruction and every edit;
5. ``<out>/<method>-<attribute>.png``: photo | reconstruction | one image per α, each captioned with its scores of
   the attribute and the kept ones; the same scores (every attribute) in ``.csv`` and ``.json`` beside it.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont

from latentatlas.atomic import atomic_write_bytes, atomic_write_json
from latentatlas.errors import LatentAtlasError
from latentatlas.layout import IMAGES_STORE, LABELS_STORE, LATENTS_STORE
from latentatlas.locations import StorePath, store_path
from latentatlas.params import Params
from latentatlas.stores import ParquetChunkStore, StoreError, ZarrChunkStore
from stages.latent.directions import DirectionSet
from stages.latent.editing import edit, edit_layers
from stages.photo.align import AlignmentSettings
from stages.photo.invert import InversionSettings, InvertStage, reconstruct_images, resolve_space
from stages.plugins.generators import Generator, generator_for
from stages.plugins.generators.synthesis import uint8_to_images
from stages.plugins.labelers import Labeler, labeler_for
from stages.plugins.labelers.base import labeler_members, reads_sample_ids
from stages.plugins.labelers.scoring import score_frame
from stages.runtime.chunked import run_stage


class EditInputError(LatentAtlasError, ValueError):
    """An attribute the directions do not have, or ``--keep`` / ``--layers`` that do not fit the edit (the CLI's
    parameter types check the options' syntax)."""


class DirectionsMismatchError(LatentAtlasError, ValueError):
    """Directions fitted for another generator or another latent space than the one being edited."""


# ------------------------------------------------------------------------------------------------ checks


def generator_fingerprint_of_directions(directions: DirectionSet, data_dir: str | StorePath) -> str | None:
    """The fingerprint of the generator whose samples ``directions`` were fitted on, traced through the stores of
    ``data_dir`` (labels → images → the generator); None when they cannot tell (the stores were rebuilt since,
    are gone, or the set was imported)."""
    if "generator_fingerprint" in directions.meta:
        return str(directions.meta["generator_fingerprint"])
    labels_fingerprint = directions.meta.get("input_fingerprint")
    if not labels_fingerprint:
        return None
    data_dir = store_path(data_dir)
    try:
        labels = ParquetChunkStore.open(data_dir / LABELS_STORE, "labels")
        if labels.info.fingerprint != labels_fingerprint:
            return None
        images = ZarrChunkStore.open(data_dir / IMAGES_STORE, "images")
        if labels.info.inputs.get("images") != images.info.fingerprint:
            return None
    except StoreError:
        return None
    generator = images.info.inputs.get("generator")
    return str(generator) if generator is not None else None


def latent_dim(generator: Generator, space: str) -> int:
    """The dimension of a direction in ``space`` ("z" or "w") for ``generator``."""
    if space == "z":
        return int(generator.z_dim)
    if space in ("w", "w+"):
        return int(generator.w_dim)
    raise DirectionsMismatchError(f"unknown latent space {space!r}")


def check_directions(
    directions: DirectionSet, where: str, generator: Generator, data_dir: str | StorePath
) -> str | None:
    """Refuse directions that cannot edit ``generator``'s latents.

    Returns:
        The traced generator fingerprint (equal to ``generator.fingerprint``), or None when it cannot be traced
        (then only the space and dimension were checked, and a warning says so).

    Raises:
        DirectionsMismatchError: another latent space than the generator's, another dimension, or fitted on
            another generator's samples.
    """
    if directions.space not in generator.latent_spaces or directions.space == "w+":
        raise DirectionsMismatchError(
            f"{where}: directions in space {directions.space!r}, but generator "
            f"{generator.name!r} has {list(generator.latent_spaces)} (W directions "
            f"edit W+ codes layer by layer; a set in another space belongs to another "
            f"generator)"
        )
    expected = latent_dim(generator, directions.space)
    if directions.dim != expected:
        raise DirectionsMismatchError(
            f"{where}: {directions.dim}-d directions in {directions.space}, but generator "
            f"{generator.name!r} has a {expected}-d {directions.space}: they were fitted "
            f"for another generator"
        )
    traced = generator_fingerprint_of_directions(directions, data_dir)
    if traced is None:
        why = (
            "imported set"
            if directions.meta.get("imported")
            else f"the stores they were fitted on are no longer in {data_dir}"
        )
        warnings.warn(
            f"{where}: cannot check which generator these directions were fitted for ({why}); only their "
            f"space and dimension were checked",
            stacklevel=2,
        )
        return None
    if traced != generator.fingerprint:
        raise DirectionsMismatchError(
            f"{where}: fitted on samples of generator {traced}, but params.yaml's generator "
            f"is {generator.fingerprint}; fit them for this generator (or use its "
            f"params file)"
        )
    return traced


def edit_space_for(direction_space: str, generator: Generator, requested: str | None) -> str:
    """The space to invert into so that ``direction_space`` directions can edit the result.

    z directions edit z latents; W directions edit W latents, or W+ codes layer by layer (the default on a
    generator with W+).

    Raises:
        DirectionsMismatchError: a requested space the directions cannot edit.
    """
    if direction_space == "z":
        if requested not in (None, "z"):
            raise DirectionsMismatchError(f"z directions edit z latents: invert with --space z, not {requested!r}")
        return resolve_space("z", generator)
    if requested == "z":
        raise DirectionsMismatchError("W directions edit W or W+ latents: invert with --space w or w+, not 'z'")
    return resolve_space(
        requested if requested is not None else ("w+" if "w+" in generator.latent_spaces else "w"), generator
    )


def scoring_labeler(params: Params, labeler: Labeler | None = None) -> Labeler:
    """The labeler of params.yaml, refusing one that looks labels up by sample id (it cannot score new images).

    Raises:
        EditInputError: such a labeler.
    """
    built = labeler_for(params.label, labeler)
    by_id = [
        getattr(member, "name", type(member).__name__) for member in labeler_members(built) if reads_sample_ids(member)
    ]
    if by_id:
        raise EditInputError(
            f"labeler {by_id} reads labels by sample id and cannot score new images; set "
            f"params.yaml label.labeler to one that scores images (e.g. faces)"
        )
    return built


# ------------------------------------------------------------------------------------------------ editing


def edited_latents(
    latents: torch.Tensor,
    space: str,
    directions: DirectionSet,
    attribute: str,
    alphas: Sequence[float],
    keep: Sequence[str],
    layers: tuple[int, int] | None,
) -> torch.Tensor:
    """(1, ...) inverted latents → (M, ...) edits, one per α (W+: :func:`stages.latent.editing.edit_layers`)."""
    keep_arg = list(keep) or None
    if space == "w+":
        edited = edit_layers(latents, attribute, list(alphas), layers=layers, keep=keep_arg, directions=directions)
        return edited[:, 0]
    if layers is not None:
        raise EditInputError(f"--layers applies to W+ inversions; this one is in {space}")
    return edit(latents, attribute, list(alphas), keep=keep_arg, directions=directions)[:, 0]


# ------------------------------------------------------------------------------------------------ the strip

_LINE = 11


def render_strip(
    pixels: np.ndarray, titles: Sequence[str], scores: pd.DataFrame, shown: Sequence[str], header: str
) -> Image.Image:
    """One row of (K, H, W, 3) uint8 images with a header line and, under each, its title and its ``shown``
    scores (rows of ``scores`` in image order)."""
    side = int(pixels.shape[1])
    cell = 128 if side <= 128 else min(side, 256)
    font = ImageFont.load_default()
    header_height = _LINE + 8
    caption = _LINE * (len(shown) + 1) + 6
    sheet = Image.new("RGB", (len(pixels) * cell, header_height + cell + caption), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 3), header, fill="black", font=font)
    resample = Image.NEAREST if cell % side == 0 else Image.LANCZOS
    for position, (image, title) in enumerate(zip(pixels, titles)):
        left = position * cell
        sheet.paste(Image.fromarray(image).resize((cell, cell), resample), (left, header_height))
        lines = [title] + [f"{name[:12]} {float(scores.iloc[position][name]):.2f}" for name in shown]
        for number, line in enumerate(lines):
            draw.text((left + 4, header_height + cell + 3 + number * _LINE), line, fill="black", font=font)
        if position in (1, 2):  # separate photo | reconstruction | edits
            draw.line([(left, header_height), (left, header_height + cell + caption)], fill="gray", width=1)
    return sheet


@dataclass(frozen=True)
class PhotoEditResult:
    """What ``latentatlas edit`` wrote and measured."""

    strip: Path
    csv: Path
    json: Path
    scores: pd.DataFrame  # rows: photo, reconstruction, α=…; columns: every attribute of the labeler
    shown: list[str]  # the attribute and the kept ones
    space: str
    reconstruction_lpips: float
    reconstruction_psnr: float


def photo_edit(
    params: Params,
    photo: Path,
    directions_path: Path,
    attribute: str,
    alphas: Sequence[float],
    out_dir: Path,
    settings: InversionSettings,
    alignment: AlignmentSettings,
    encoder_path: Path | None,
    keep: Sequence[str] = (),
    layers: tuple[int, int] | None = None,
    data_dir: str | StorePath = "data",
    generator: Generator | None = None,
    labeler: Labeler | None = None,
) -> PhotoEditResult:
    """Invert ``photo``, edit it along ``attribute`` of the directions at ``directions_path`` by every α, score
    and draw it (see the module docstring). ``settings.space`` None: the space the directions need.

    Raises:
        DirectionsError: no complete directions set at ``directions_path``.
        DirectionsMismatchError: directions for another generator or space.
        EditInputError: an attribute or kept name the set does not have, ``layers`` outside W+.
        PhotoError, FaceDetectionError, InversionError, EncoderError: from the inversion.
    """
    generator = generator_for(params.generator, generator)
    directions = DirectionSet.load(directions_path)
    where = str(directions_path)
    missing = [name for name in [attribute, *keep] if name not in directions.names]
    if missing:
        raise EditInputError(f"{where} has no direction {missing}; it has {directions.names}")
    if attribute in keep:
        raise EditInputError(f"--keep {list(keep)} holds the edited attribute {attribute!r} itself")
    check_directions(directions, where, generator, data_dir)
    space = edit_space_for(directions.space, generator, settings.space)
    settings = settings.model_copy(update={"space": space})
    if layers is not None and space != "w+":
        raise EditInputError(f"--layers applies to W+ inversions; this one is in {space}")
    if layers is not None and layers[1] > int(generator.num_ws):
        raise EditInputError(
            f"--layers {layers[0]},{layers[1]}: generator {generator.name!r} has "
            f"{generator.num_ws} W+ layers (stop at most {generator.num_ws})"
        )
    scorer = scoring_labeler(params, labeler)
    stage = InvertStage(params, out_dir, [photo], settings, alignment, encoder_path, chunk_size=1, generator=generator)
    run_stage(stage)
    store = ZarrChunkStore.open(Path(out_dir) / LATENTS_STORE, "latents", require_complete=True)
    latents = torch.from_numpy(np.asarray(store.read_chunk(space, 0)))
    aligned = np.asarray(store.read_chunk("aligned", 0))
    lpips_value = float(np.asarray(store.read_chunk("reconstruction_lpips", 0))[0])
    psnr_value = float(np.asarray(store.read_chunk("reconstruction_psnr", 0))[0])
    edits = edited_latents(latents, space, directions, attribute, alphas, keep, layers)
    resolution = int(generator.resolution)
    device = stage.inverter.device
    reconstruction = reconstruct_images(generator, latents.to(device), space, resolution)
    edited_pixels = reconstruct_images(generator, edits.to(device).float(), space, resolution)
    pixels = np.concatenate([aligned, reconstruction, edited_pixels])
    score_size = params.synthesize.store_resolution or resolution
    images = uint8_to_images(pixels)
    if images.shape[-1] != score_size:
        images = torch.nn.functional.interpolate(
            images,
            size=(score_size, score_size),
            mode="bilinear",
            antialias=images.shape[-1] > score_size,
            align_corners=False,
        )
    scorer.to(device)
    scores = score_frame(scorer, images, params.label.batch_size, device)
    titles = ["photo", "reconstruction"] + [f"alpha {alpha:+g}" for alpha in alphas]
    scores.insert(0, "alpha", [math.nan, math.nan, *alphas])
    scores.insert(0, "image", titles)
    shown = [name for name in [attribute, *keep] if name in scores.columns]
    if attribute not in scores.columns:
        warnings.warn(
            f"the labeler of params.yaml does not score {attribute!r} (it has "
            f"{list(scorer.attributes)}); the strip shows its other columns",
            stacklevel=2,
        )
        shown = [name for name in scorer.attributes][:4]
    layer_note = ""
    if space == "w+":
        start, stop = layers if layers is not None else (0, int(generator.num_ws))
        layer_note = f", W+ layers {start}-{stop - 1}"
    header = (
        f"{Path(photo).name}: {attribute} along {directions.method} ({directions.space}{layer_note})"
        + (f", keeping {', '.join(keep)}" if keep else "")
        + f" | reconstruction LPIPS {lpips_value:.3f}, PSNR {psnr_value:.1f} dB"
    )
    strip = render_strip(pixels, titles, scores, shown, header)
    out_dir = Path(out_dir)
    stem = f"{directions.method}-{attribute}"
    strip_path, csv_path, json_path = (out_dir / f"{stem}.png", out_dir / f"{stem}.csv", out_dir / f"{stem}.json")
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    atomic_write_bytes(strip_path, buffer.getvalue())
    atomic_write_bytes(csv_path, scores.to_csv(index=False, float_format="%.6g").encode())
    atomic_write_json(
        json_path,
        {
            "photo": str(photo),
            "directions": str(directions_path),
            "method": directions.method,
            "direction_space": directions.space,
            "inversion_space": space,
            "attribute": attribute,
            "keep": list(keep),
            "layers": list(layers) if layers is not None else None,
            "alphas": list(alphas),
            "reconstruction": {"lpips": lpips_value, "lpips_net": settings.lpips_net, "psnr": psnr_value},
            "latents": str(out_dir / LATENTS_STORE),
            "strip": strip_path.name,
            "scores": json.loads(scores.to_json(orient="records")),
        },
    )
    return PhotoEditResult(strip_path, csv_path, json_path, scores, shown, space, lpips_value, psnr_value)


def scores_table(result: PhotoEditResult) -> str:
    """The printed table: one row per image (photo, reconstruction, each α), the attribute and kept columns."""
    frame = result.scores[["image", *result.shown]]
    widths = [max(len(str(column)), 14) for column in frame.columns]
    lines = ["  ".join(str(column).ljust(width) for column, width in zip(frame.columns, widths))]
    for _, row in frame.iterrows():
        cells = [str(row["image"]).ljust(widths[0])]
        cells += [f"{float(row[name]):.3f}".ljust(width) for name, width in zip(result.shown, widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)
