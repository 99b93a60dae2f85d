"""What each ``latentatlas`` command does once its command line is parsed: one function per command, which returns
the text the command prints (``pipeline/cli.py`` parses, calls one of these, prints).

Stages run through :mod:`pipeline.engine` (a Prefect flow, or the local loop): the DAG's and the photo commands'
``invert`` (then ``reconstruct``). ``train-encoder``, ``train-labeler``, ``report`` and ``edit`` call their
``stages/`` function directly; :mod:`pipeline.engine` says why. ``say`` and ``note`` print a line while a command
runs (an epoch's results, a fallback chosen). A module only one command uses (the report, the trainers, the
directions formats) is imported by that command's function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from latentatlas.layout import IMAGES_STORE, LATENTS_STORE, OutputLayout
from latentatlas.locations import StorePath
from latentatlas.params import Params, ParamsError
from latentatlas.stores import ZarrChunkStore
from pipeline import engine as engines
from pipeline.options import EditOptions, InversionOptions

if TYPE_CHECKING:
    from stages.photo.encoder import EncoderSettings

Say = Callable[[str], None]


def run_stage(
    stage_name: str,
    params: Params,
    params_path: Path,
    data_dir: StorePath,
    engine: engines.Engine,
    method: str | None = None,
    out_root: Path = Path("."),
) -> None:
    """Run a DAG stage (``method``: the method of ``fit`` / ``evaluate``, whose outputs go under ``out_root``).

    Raises:
        ParamsError: ``method`` is neither listed in params nor (evaluate) an imported directions set.
    """
    options = {}
    if method is not None:
        layout = OutputLayout(out_root)
        if method not in params.fit.entries and not (stage_name == "evaluate" and _is_imported(layout, method)):
            raise ParamsError(
                f"{params_path}: fit.methods {params.fit.methods} does not list {method!r}, nor does "
                f"fit.variants {sorted(params.fit.variants)}"
                + (" (nor is it an imported directions set)" if stage_name == "evaluate" else "")
            )
        options = {"method": method, "layout": layout}
    engines.run(stage_name, params, data_dir, engine, **options)


def _is_imported(layout: OutputLayout, name: str) -> bool:
    """Whether ``directions/<name>/`` holds a set brought in by ``latentatlas directions import``."""
    from stages.latent.directions import DirectionsError, DirectionSet

    try:
        return bool(DirectionSet.load(layout.directions(name)).meta.get("imported"))
    except DirectionsError:
        return False


# ----------------------------------------------------------------------------------------------------- photos


def invert_photos(
    params: Params,
    photos: Sequence[Path],
    out_dir: Path,
    inversion: InversionOptions,
    chunk_size: int,
    engine: engines.Engine,
    note: Say,
) -> str:
    """Invert ``photos`` into ``out_dir/latents.zarr`` and reconstruct them into ``out_dir/images.zarr``, both
    through the engine (resumable by chunk); the summary of the reconstructions' LPIPS and PSNR."""
    plan = inversion.plan(params)
    if plan.note:
        note(plan.note)
    engines.run(
        "invert",
        params,
        out_dir,
        engine,
        photos=tuple(photos),
        settings=plan.settings,
        alignment=plan.alignment,
        encoder_path=plan.encoder_path,
        chunk_size=chunk_size,
    )
    engines.run("reconstruct", params, out_dir, engine)
    return inversion_summary(out_dir, plan.settings.lpips_net)


def inversion_summary(out_dir: Path, lpips_net: str, shown: int = 20) -> str:
    """The first ``shown`` photos' reconstruction LPIPS and PSNR, the medians of all, and what was written."""
    store = ZarrChunkStore.open(Path(out_dir) / LATENTS_STORE, "latents", require_complete=True)
    lpips_values = np.asarray(store.arrays["reconstruction_lpips"][:])
    psnr_values = np.asarray(store.arrays["reconstruction_psnr"][:])
    names = store.info.details["photos"]
    lines = [
        f"{name:32s} LPIPS ({lpips_net}) {lpips_value:.3f}  PSNR {psnr_value:5.1f} dB"
        for name, lpips_value, psnr_value in list(zip(names, lpips_values, psnr_values))[:shown]
    ]
    if len(names) > shown:
        lines.append(
            f"… {len(names) - shown} more; all {len(names)}: LPIPS median {np.median(lpips_values):.3f}, "
            f"max {lpips_values.max():.3f}; PSNR median {np.median(psnr_values):.1f} dB"
        )
    lines.append(
        f"wrote {Path(out_dir) / LATENTS_STORE} ({store.info.details['spaces'][0]}) and {Path(out_dir) / IMAGES_STORE}"
    )
    return "\n".join(lines)


def edit_photo(
    params: Params, photo: Path, edit: EditOptions, inversion: InversionOptions, data_dir: StorePath, note: Say
) -> str:
    """Invert ``photo``, edit and re-score it (:func:`stages.photo.edit.photo_edit`); the scores table and what was
    written."""
    from stages.photo.edit import photo_edit, scores_table

    plan = inversion.plan(params)
    if plan.note:
        note(plan.note)
    out_dir = edit.out_dir if edit.out_dir is not None else Path("edits") / photo.stem
    result = photo_edit(
        params,
        photo,
        edit.directions_path,
        edit.attribute,
        edit.alphas,
        out_dir,
        plan.settings,
        plan.alignment,
        plan.encoder_path,
        keep=edit.keep,
        layers=edit.layers,
        data_dir=data_dir,
        generator=plan.generator,
    )
    return "\n".join(
        [
            scores_table(result),
            f"reconstruction ({result.space}): LPIPS ({plan.settings.lpips_net}) "
            f"{result.reconstruction_lpips:.3f}, PSNR {result.reconstruction_psnr:.1f} dB",
            f"wrote {result.strip}, {result.csv.name} and {result.json.name}",
        ]
    )


# ------------------------------------------------------------------------------------------------------- training


def train_encoder(params: Params, data_dir: StorePath, out_dir: Path, settings: EncoderSettings, say: Say) -> str:
    """Train the photo encoder (:func:`stages.train_encoder.train_encoder`), saying each epoch's results."""
    from stages.train_encoder import train_encoder as train

    def report(result) -> None:
        scores = "  ".join(
            f"{space}: R² {values['r2']:.3f} cos {values['cosine']:.3f}" for space, values in result.validation.items()
        )
        say(
            f"epoch {result.epoch + 1}/{settings.epochs}  train loss {result.train_loss:.4f}  val {scores}  "
            f"{result.seconds:.1f} s"
        )

    metrics = train(params, data_dir, out_dir, settings, on_epoch=report)
    return f"wrote {out_dir / 'encoder.pt'} and metrics.json ({metrics['n_train']} training samples)"


def train_labeler(config_path: Path, say: Say) -> str:
    """Train an attribute classifier from the YAML settings at ``config_path``, saying each epoch's results."""
    from stages.plugins.labelers.training import load_train_params
    from stages.plugins.labelers.training import train_labeler as train

    params = load_train_params(config_path)

    def report(result) -> None:
        say(
            f"epoch {result.epoch + 1}/{params.epochs}  size {result.image_size}  "
            f"train loss {result.train_loss:.4f}  val loss {result.val_loss:.4f}  "
            f"val accuracy {result.val_accuracy_mean:.4f}  val F{params.beta:g} {result.val_fbeta_mean:.4f}  "
            f"{result.seconds:.1f} s"
        )

    metrics = train(params, on_epoch=report)
    return (
        f"wrote {Path(params.out) / 'model.pt'} and metrics.json: val accuracy "
        f"{metrics['val']['accuracy_mean']:.4f}, F{params.beta:g} {metrics['val']['fbeta_mean']:.4f}"
    )


# ------------------------------------------------------------------------------------------ report, directions


def write_report(params: Params, data_dir: StorePath, out_root: Path, included: Sequence[str]) -> str:
    """The HTML report, summary and reproduction notes over every method of params and the ``included`` sets."""
    from stages.report import build_report

    layout = OutputLayout(out_root)
    entries = params.fit.entries
    build_report(params, data_dir, [*entries, *(name for name in included if name not in entries)], layout=layout)
    return f"wrote {layout.report_html()}, {layout.report_markdown()} and {layout.reproduction_markdown()}"


def import_directions(
    source_format: str,
    files: Sequence[Path],
    name: str,
    model: str | None,
    space: str | None,
    n_components: int | None,
    out_root: Path,
) -> str:
    """Import published direction files as the set ``directions/<name>/``."""
    from stages.latent.interchange import import_directions as read

    layout = OutputLayout(out_root)
    imported = read(source_format, list(files), name, model=model, space=space, n_components=n_components)
    imported.save(layout.directions(name))
    return (
        f"wrote {layout.directions(name)}: {len(imported.names)} directions in {imported.space} "
        f"({', '.join(imported.names[:6])}{', …' if len(imported.names) > 6 else ''})"
    )


def export_directions(method: str, model: str, target: Path, out_root: Path) -> str:
    """Write ``directions/<method>/`` as InterFaceGAN boundary files into ``target``."""
    from stages.latent.directions import DirectionSet
    from stages.latent.interchange import export_interfacegan

    written = export_interfacegan(DirectionSet.load(OutputLayout(out_root).directions(method)), target, model)
    return f"wrote {len(written)} boundary files to {target}"
