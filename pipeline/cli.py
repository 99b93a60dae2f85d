"""``latentatlas`` command line: one command per stage (what ``dvc.yaml`` runs), the photo commands, plus ``status``
and ``repro``.

Each command parses its options (typed by ``pipeline/options.py``), calls one function (``pipeline/commands.py``;
stages run through ``pipeline/engine.py``) and prints what it returns.

Every error the user can fix (bad params, unknown plugin, missing weights, foreign/locked store, ...) is a
:class:`latentatlas.errors.LatentAtlasError`: it ends the command with one line naming the key or file and what was
expected, and exit status 1 (``--debug`` shows its traceback too). A malformed option is a usage error (exit 2)
naming the option. Any other exception is a bug and keeps its traceback.

Imports of ``stages/`` and ``pipeline.commands`` (torch, Prefect) happen inside the commands that need them, never
at import time, so that ``latentatlas --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import click

from latentatlas.errors import LatentAtlasError
from latentatlas.locations import LocationError, StorePath, store_path
from latentatlas.params import Params, load_params
from pipeline.options import EditOptions, InversionOptions, edit_options, encoder_options, inversion_options
from pipeline.repro import preset_command, run_repro
from pipeline.settings import apply_defaults

if TYPE_CHECKING:
    from latentatlas.store_status import DataDirStatus
    from stages.photo.encoder import EncoderSettings

__all__ = ["main", "preset_command", "read_params", "user_errors"]

params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(path_type=Path),
    default="params.yaml",
    show_default=True,
    help="params file",
)


def _data_dir(context: click.Context, parameter: click.Parameter, value: str) -> StorePath:
    """``--data-dir``: a local path, or an object-store URL (s3://bucket/run, gs://…; see latentatlas/locations.py)."""
    try:
        return store_path(value)
    except LocationError as error:
        raise click.ClickException(f"--data-dir {error}") from None


data_dir_option = click.option(
    "--data-dir",
    default="data",
    callback=_data_dir,
    show_default=True,
    help="folder holding the stores: a local path or an object-store URL (s3://bucket/run)",
)
engine_option = click.option(
    "--engine",
    type=click.Choice(["prefect", "local"]),
    default="prefect",
    show_default=True,
    help="prefect: a flow with one task per chunk; local: a plain loop",
)
out_root_option = click.option(
    "--out-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=".",
    show_default=True,
    help="root of directions/, evaluations/, metrics/ and reports/",
)
method_option = click.option(
    "--method", required=True, help="a method listed in params.yaml: fit.methods, or a variant's name in fit.variants"
)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(click.style(f"warning: {message}", fg="yellow"), err=True)


def _note(line: str) -> None:
    click.echo(click.style(f"note: {line}", fg="yellow"), err=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Quiet, offline defaults; warnings as one yellow line; a user-fixable error (a LatentAtlasError) as one line
    and exit 1, with its traceback under ``--debug``. Anything else propagates with its traceback.

    A ``with`` block, or a decorator of a command (innermost, right above its ``def``)."""
    apply_defaults()
    warnings.showwarning = _warning_line
    try:
        yield
    except LatentAtlasError as error:
        context = click.get_current_context(silent=True)
        if context is not None and context.find_root().params.get("debug"):
            raise
        raise click.ClickException(str(error)) from None


def read_params(params_path: Path) -> Params:
    """``params.yaml`` validated once, every listed method's section typed by that method's own model, and the
    generator's and labelers' kwargs validated by their own params models."""
    from stages.plugins.methods import method_params_model
    from stages.plugins.params import plugin_params_model

    return load_params(params_path, method_models=method_params_model, plugin_models=plugin_params_model)


def _commands() -> ModuleType:
    """:mod:`pipeline.commands`, what the commands call (imported when a command runs: it imports the stages)."""
    from pipeline import commands

    return commands


@click.group(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="show the traceback of user errors too")
def main(debug: bool) -> None:
    """latentatlas: find and judge semantic directions in the latent space of pretrained GANs."""


def _stage_command(stage_name: str, summary: str) -> click.Command:
    @params_option
    @data_dir_option
    @engine_option
    @user_errors()
    def command(params_path: Path, data_dir: StorePath, engine: str) -> None:
        _commands().run_stage(stage_name, read_params(params_path), params_path, data_dir, engine)

    command.__doc__ = summary
    return main.command(name=stage_name)(command)


_stage_command("sample", "Sample latents z ~ N(0, I) into DATA_DIR/latents.zarr, chunk by chunk.")
_stage_command("synthesize", "Synthesize images from the latents into DATA_DIR/images.zarr.")
_stage_command("label", "Score every image with the labeler suite into DATA_DIR/labels/*.parquet.")


@main.command(name="train-labeler")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default="train_labeler.yaml",
    help="YAML settings (stages/plugins/labelers/training.py: TrainLabelerParams)",
)
@user_errors()
def train_labeler_command(config_path: Path) -> None:
    """Train a multi-label attribute classifier (ResNet, one-cycle, progressive resizing) on an image folder with
    CelebA-style or CSV labels; writes OUT/model.pt (for label.labeler: torch-classifier, kwargs: {checkpoint:
    OUT/model.pt}) and OUT/metrics.json. Resumes after the last finished epoch."""
    click.echo(_commands().train_labeler(config_path, say=click.echo))


# ---------------------------------------------------------------------- real photos: train-encoder, invert, edit


@main.command(name="train-encoder")
@params_option
@data_dir_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default="models/encoder",
    help="folder for encoder.pt and metrics.json",
)
@encoder_options()
@user_errors()
def train_encoder_command(params_path: Path, data_dir: StorePath, out_dir: Path, settings: EncoderSettings) -> None:
    """Train the image → latent encoder on DATA_DIR's (image, latent) pairs into OUT/encoder.pt (the starting
    point of `invert` and `edit`). Checkpoints every epoch and resumes after the last finished one."""
    click.echo(_commands().train_encoder(read_params(params_path), data_dir, out_dir, settings, say=click.echo))


@main.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="folder receiving latents.zarr (the inverted latents) and images.zarr (their reconstructions)",
)
@click.option("--chunk-size", type=click.IntRange(min=1), default=8, help="photos per chunk (the unit of resume)")
@inversion_options(batch_size=True)
@params_option
@click.option(
    "--engine",
    type=click.Choice(["prefect", "local"]),
    default="local",
    help="local: a loop in this process; prefect: a flow with one task per chunk (workers: runtime.*)",
)
@user_errors()
def invert(
    photos: tuple[Path, ...],
    out_dir: Path,
    chunk_size: int,
    inversion: InversionOptions,
    params_path: Path,
    engine: str,
) -> None:
    """Invert PHOTOS (files or folders, sorted by name) into OUT/latents.zarr, chunk by chunk (a rerun resumes),
    and write their reconstructions to OUT/images.zarr: `latentatlas label --data-dir OUT` then labels them."""
    click.echo(
        _commands().invert_photos(read_params(params_path), photos, out_dir, inversion, chunk_size, engine, note=_note)
    )


@main.command()
@click.argument("photo", type=click.Path(path_type=Path, dir_okay=False))
@edit_options()
@data_dir_option
@inversion_options()
@params_option
@user_errors()
def edit(photo: Path, edit: EditOptions, data_dir: StorePath, inversion: InversionOptions, params_path: Path) -> None:
    """Invert PHOTO, edit it along ATTRIBUTE of a directions set for every alpha, and re-score each edit: writes
    OUT/<method>-<attribute>.png (photo | reconstruction | edits), .csv and .json, and prints the scores."""
    click.echo(_commands().edit_photo(read_params(params_path), photo, edit, inversion, data_dir, note=_note))


@main.command()
@method_option
@params_option
@data_dir_option
@out_root_option
@engine_option
@user_errors()
def fit(method: str, params_path: Path, data_dir: StorePath, out_root: Path, engine: str) -> None:
    """Fit one method's directions from the labeled latents into OUT_ROOT/directions/<method>/ (one DVC job per
    method; a killed fit resumes at its unfinished attributes)."""
    _commands().run_stage("fit", read_params(params_path), params_path, data_dir, engine, method, out_root)


@main.command()
@method_option
@params_option
@data_dir_option
@out_root_option
@engine_option
@user_errors()
def evaluate(method: str, params_path: Path, data_dir: StorePath, out_root: Path, engine: str) -> None:
    """Evaluate OUT_ROOT/directions/<method>/ on held-out latents: metrics/<method>.json, curves, traversal
    grids."""
    _commands().run_stage("evaluate", read_params(params_path), params_path, data_dir, engine, method, out_root)


@main.command()
@params_option
@data_dir_option
@out_root_option
@click.option(
    "--include",
    "included",
    multiple=True,
    help="also rank this evaluated directions set (e.g. one brought in by `directions import`)",
)
@user_errors()
def report(params_path: Path, data_dir: StorePath, out_root: Path, included: tuple[str, ...]) -> None:
    """Write OUT_ROOT/reports/report.html (self-contained) and reports/summary.md comparing every method."""
    click.echo(_commands().write_report(read_params(params_path), data_dir, out_root, included))


@main.command()
@params_option
@data_dir_option
@out_root_option
@click.option("--host", default="127.0.0.1", help="address to listen on (other than loopback: the network sees it)")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="port [default: 8765, or a free one when it is taken]; 0: a free one",
)
@click.option("--invert-steps", type=click.IntRange(min=0), default=40, help="optimisation steps for a dropped photo")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:<k>")
@user_errors()
def explore(
    params_path: Path, data_dir: StorePath, out_root: Path, host: str, port: int | None, invert_steps: int, device: str
) -> None:
    """Serve a web app over a finished run: a slider per direction (live image and scores), compare mode, photo
    upload, exports. Prints the URL; Ctrl-C stops it."""
    from pipeline.explore.app import open_and_serve  # FastAPI, torch: only when the command runs

    open_and_serve(read_params(params_path), data_dir, out_root, host, port, invert_steps, device, click.echo)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=4200, help="port of the Prefect server (and its UI) started for the run")
@click.option(
    "--preset",
    "preset_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="a partial params file (e.g. params/interfacegan-500k.yaml): run it as `dvc exp run -S ...`",
)
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
@user_errors()
def repro(port: int, preset_path: Path | None, dvc_args: tuple[str, ...]) -> None:
    """`dvc repro [DVC_ARGS]` with a Prefect server for the run: flows show up in its UI, and stage processes skip
    the ephemeral server each would start (≈15 s each). Uses $PREFECT_API_URL instead when it is set.

    With --preset, runs the preset's overrides of params.yaml as a DVC experiment (`dvc exp show` lists it).

    The server lives exactly as long as the run: SIGINT (Ctrl-C), SIGTERM or SIGHUP stop DVC and its stage, then
    the server; a server left by a run that was SIGKILLed is found in .prefect/ and stopped at the next repro."""
    raise SystemExit(run_repro(port, preset_path, dvc_args, say=click.echo))


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--attribute", "attributes", multiple=True, help="show only this attribute (repeatable)")
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
@user_errors()
def experiments(attributes: tuple[str, ...], dvc_args: tuple[str, ...]) -> None:
    """The rank groups of every DVC experiment, per attribute: entries down, experiments across (what
    `dvc exp show` holds, without its param and dependency columns). DVC_ARGS go to `dvc exp show` (e.g. -A, --rev)."""
    from pipeline.experiments import dvc_exp_show, experiment_rankings, format_rankings

    click.echo(format_rankings(experiment_rankings(dvc_exp_show(dvc_args)), attributes))


@main.command()
@data_dir_option
@click.option("--quick", is_flag=True, help="check presence and sizes only, not checksums (reads no chunk data)")
@user_errors()
def status(data_dir: Path, quick: bool) -> None:
    """Show each store's state: chunks done, complete or not, fingerprint, and every bad chunk (missing, damaged,
    wrong size, computed from other upstream chunks) or stale store, with the stage to rerun; exit 1 when a store
    is damaged, stale or unreadable. Reads every chunk to check its checksum unless --quick."""
    found = _print_data_dir_status(data_dir, deep=not quick)
    if found.needing_repair:
        raise click.ClickException(found.repair_message())


@main.command()
@data_dir_option
@user_errors()
def verify(data_dir: Path) -> None:
    """Check every chunk of every store against its record (size, CRC32C) and its upstream chunks; exit 1 naming
    each bad chunk and the stage to rerun, 0 when every store is complete and sound."""
    if not _print_data_dir_status(data_dir, deep=True).all_complete:
        raise click.ClickException(
            f"{data_dir}: not every store is complete and sound (see above); rerun the "
            f"stages named (or `dvc repro`): they recompute exactly the bad chunks"
        )


def _print_data_dir_status(data_dir: StorePath, deep: bool) -> DataDirStatus:
    from latentatlas.store_status import data_dir_status

    found = data_dir_status(data_dir, deep=deep)
    for line in found.lines():
        click.echo(line)
    return found


@main.group()
def directions() -> None:
    """Bring published directions in (InterFaceGAN, GANSpace, SeFa) and write ours out."""


@directions.command(name="import")
@click.option(
    "--format",
    "source_format",
    type=click.Choice(["interfacegan", "ganspace", "sefa"]),
    required=True,
    help="the files' format (see stages/latent/interchange.py)",
)
@click.option("--name", required=True, help="the set's name: written to OUT_ROOT/directions/<name>/")
@click.option("--model", default=None, help="InterFaceGAN: the model prefix of the file names (e.g. stylegan_ffhq)")
@click.option(
    "--space",
    type=click.Choice(["z", "w"]),
    default=None,
    help="latent space (default: from the file names; z for SeFa)",
)
@click.option(
    "--components",
    "n_components",
    type=click.IntRange(min=1),
    default=None,
    help="GANSpace / SeFa: keep the first N components",
)
@out_root_option
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@user_errors()
def import_directions_command(
    source_format: str,
    name: str,
    model: str | None,
    space: str | None,
    n_components: int | None,
    out_root: Path,
    files: tuple[Path, ...],
) -> None:
    """Import published FILES as a directions set, evaluated and ranked like a fitted one
    (`latentatlas evaluate --method NAME`, `latentatlas report --include NAME`)."""
    click.echo(_commands().import_directions(source_format, files, name, model, space, n_components, out_root))


@directions.command(name="export")
@click.option("--method", required=True, help="the directions set: OUT_ROOT/directions/<method>/")
@click.option("--format", "target_format", type=click.Choice(["interfacegan"]), default="interfacegan")
@click.option("--model", required=True, help="model prefix of the boundary file names (e.g. stylegan_ffhq)")
@click.option(
    "--to",
    "target",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="folder for the boundary files",
)
@out_root_option
@user_errors()
def export_directions_command(method: str, target_format: str, model: str, target: Path, out_root: Path) -> None:
    """Write a directions set as InterFaceGAN boundary files (one (1, D) .npy per direction)."""
    click.echo(_commands().export_directions(method, model, target, out_root))


if __name__ == "__main__":
    main()
