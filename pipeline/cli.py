"""``latentatlas`` command line: one command per stage (what ``dvc.yaml`` runs), plus ``status`` and ``repro``.

Every error the user can fix (bad params, unknown plugin, missing weights, foreign/locked store, ...) is a
:class:`latentatlas.errors.LatentAtlasError`: it ends the command with one line naming the key or file and what was
expected, and exit status 1 (``--debug`` shows its traceback too). Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from latentatlas.errors import LatentAtlasError
from latentatlas.layout import OutputLayout
from latentatlas.locations import LocationError, StorePath, store_path
from latentatlas.params import Params, ParamsError, load_params, load_preset
from pipeline.settings import apply_defaults

if TYPE_CHECKING:
    from latentatlas.store_status import DataDirStatus

params_option = click.option("--params", "params_path", type=click.Path(path_type=Path), default="params.yaml",
                             show_default=True, help="params file")


def _data_dir(context: click.Context, parameter: click.Parameter, value: str) -> StorePath:
    """``--data-dir``: a local path, or an object-store URL (s3://bucket/run, gs://…; see latentatlas/locations.py)."""
    try:
        return store_path(value)
    except LocationError as error:
        raise click.ClickException(f"--data-dir {error}") from None


data_dir_option = click.option("--data-dir", default="data", callback=_data_dir, show_default=True,
                               help="folder holding the stores: a local path or an object-store URL (s3://bucket/run)")
engine_option = click.option("--engine", type=click.Choice(["prefect", "local"]), default="prefect",
                             show_default=True, help="prefect: a flow with one task per chunk; local: a plain loop")
out_root_option = click.option("--out-root", type=click.Path(path_type=Path, file_okay=False), default=".",
                               show_default=True, help="root of directions/, evaluations/, metrics/ and reports/")
method_option = click.option("--method", required=True,
                             help="a method listed in params.yaml: fit.methods, or a variant's name in fit.variants")


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(click.style(f"warning: {message}", fg="yellow"), err=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Quiet, offline defaults; warnings as one yellow line; a user-fixable error (a LatentAtlasError) as one line
    and exit 1, with its traceback under ``--debug``. Anything else propagates with its traceback."""
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


def _run(stage_name: str, params_path: Path, data_dir: StorePath, engine: str, method: str | None = None,
         out_root: Path = Path(".")) -> None:
    from pipeline import engine as engines

    with user_errors():
        params = read_params(params_path)
        if method is not None and method not in params.fit.entries and not (
                stage_name == "evaluate" and _is_imported(OutputLayout(out_root), method)):
            raise ParamsError(f"{params_path}: fit.methods {params.fit.methods} does not list {method!r}, nor does "
                              f"fit.variants {sorted(params.fit.variants)}"
                              + (" (nor is it an imported directions set)" if stage_name == "evaluate" else ""))
        engines.run(stage_name, params, data_dir, engine, method=method, layout=OutputLayout(out_root))


def _is_imported(layout: OutputLayout, name: str) -> bool:
    """Whether ``directions/<name>/`` holds a set brought in by ``latentatlas directions import``."""
    from stages.latent.directions import DirectionsError, DirectionSet

    try:
        return bool(DirectionSet.load(layout.directions(name)).meta.get("imported"))
    except DirectionsError:
        return False


@click.group(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="show the traceback of user errors too")
def main(debug: bool) -> None:
    """latentatlas: find and judge semantic directions in the latent space of pretrained GANs."""


def _stage_command(stage_name: str, summary: str) -> click.Command:
    @params_option
    @data_dir_option
    @engine_option
    def command(params_path: Path, data_dir: StorePath, engine: str) -> None:
        _run(stage_name, params_path, data_dir, engine)

    command.__doc__ = summary
    return main.command(name=stage_name)(command)


_stage_command("sample", "Sample latents z ~ N(0, I) into DATA_DIR/latents.zarr, chunk by chunk.")
_stage_command("synthesize", "Synthesize images from the latents into DATA_DIR/images.zarr.")
_stage_command("label", "Score every image with the labeler suite into DATA_DIR/labels/*.parquet.")


@main.command(name="train-labeler")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              default="train_labeler.yaml", help="YAML settings (stages/plugins/labelers/training.py: TrainLabelerParams)")
def train_labeler_command(config_path: Path) -> None:
    """Train a multi-label attribute classifier (ResNet, one-cycle, progressive resizing) on an image folder with
    CelebA-style or CSV labels; writes OUT/model.pt (for label.labeler: torch-classifier, kwargs: {checkpoint:
    OUT/model.pt}) and OUT/metrics.json. Resumes after the last finished epoch."""
    with user_errors():
        from stages.plugins.labelers.training import load_train_params, train_labeler

        params = load_train_params(config_path)

        def report(result) -> None:
            click.echo(f"epoch {result.epoch + 1}/{params.epochs}  size {result.image_size}  "
                       f"train loss {result.train_loss:.4f}  val loss {result.val_loss:.4f}  "
                       f"val accuracy {result.val_accuracy_mean:.4f}  val F{params.beta:g} "
                       f"{result.val_fbeta_mean:.4f}  {result.seconds:.1f} s")

        metrics = train_labeler(params, on_epoch=report)
        click.echo(f"wrote {Path(params.out) / 'model.pt'} and metrics.json: val accuracy "
                   f"{metrics['val']['accuracy_mean']:.4f}, F{params.beta:g} {metrics['val']['fbeta_mean']:.4f}")


# ---------------------------------------------------------------------- real photos: train-encoder, invert, edit


def _inversion_options(command):
    """Options shared by `invert` and `edit`: how a photo becomes a crop and a latent."""
    options = [
        click.option("--space", type=click.Choice(["z", "w", "w+"]), default=None,
                     help="latent space of the inversion [default: w+ for style-based generators, else z; edit: "
                          "the directions' space (W directions: w+)]"),
        click.option("--steps", type=click.IntRange(min=0), default=100, help="optimisation steps per photo"),
        click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=0.1,
                     help="Adam's peak step, in standard deviations of the latent"),
        click.option("--lpips-net", type=click.Choice(["vgg", "alex"]), default="vgg", help="LPIPS trunk of the loss"),
        click.option("--init", type=click.Choice(["encoder", "mean", "random"]), default="encoder",
                     help="start: the trained encoder's guess (falls back to mean w / random z when the default "
                          "encoder file is absent), the mean w, or a random latent"),
        click.option("--encoder", "encoder_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="encoder file [default: models/encoder/encoder.pt]"),
        click.option("--align/--no-align", default=None,
                     help="detect the face (MTCNN) and align it to the generator's canonical crop [default: on for "
                          "the embedded face generator]; --no-align centre-crops the photo"),
        click.option("--face-index", type=click.IntRange(min=0), default=None,
                     help="the face to use when a photo has several (0 = the largest)"),
        click.option("--device", default="auto", help="auto | cpu | cuda | cuda:<k>"),
        params_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _inversion_setup(params: Params, space: str | None, steps: int, learning_rate: float, lpips_net: str,
                     init: str, encoder_path: Path | None, align: bool | None, face_index: int | None, device: str,
                     batch_size: int = 8):
    """(settings, alignment, encoder path) from the shared options; says when the encoder is missing."""
    from latentatlas.layout import ENCODER_DIR
    from stages.photo.encoder import ENCODER_FILE
    from stages.plugins.generators import generator_for
    from stages.photo.invert import choose_init, default_alignment, inversion_settings, resolve_space

    settings = inversion_settings(space=space, steps=steps, learning_rate=learning_rate, lpips_net=lpips_net,
                                  init=init, device=device, batch_size=batch_size)
    alignment = default_alignment(params.generator.name, align, face_index)
    generator = generator_for(params.generator)
    named = encoder_path is not None
    encoder_path = encoder_path if named else Path(ENCODER_DIR) / ENCODER_FILE
    settings, encoder_path, note = choose_init(settings, encoder_path, resolve_space(space, generator), named)
    if note:
        click.echo(click.style(f"note: {note}", fg="yellow"), err=True)
    return generator, settings, alignment, encoder_path


@main.command(name="train-encoder")
@params_option
@data_dir_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default="models/encoder",
              help="folder for encoder.pt and metrics.json")
@click.option("--epochs", type=click.IntRange(min=1), default=3)
@click.option("--batch-size", type=click.IntRange(min=1), default=64)
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=2e-3)
@click.option("--width", type=click.IntRange(min=1), default=32, help="channels of the first conv")
@click.option("--input-size", type=click.IntRange(min=8), default=32, help="side images are resized to (power of 2)")
@click.option("--val-samples", type=click.IntRange(min=1), default=500, help="held-out samples (the last ones)")
@click.option("--max-train-samples", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=click.IntRange(min=0), default=0)
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:<k>")
def train_encoder_command(params_path: Path, data_dir: StorePath, out_dir: Path, epochs: int, batch_size: int,
                          learning_rate: float, width: int, input_size: int, val_samples: int,
                          max_train_samples: int | None, seed: int, device: str) -> None:
    """Train the image → latent encoder on DATA_DIR's (image, latent) pairs into OUT/encoder.pt (the starting
    point of `invert` and `edit`). Checkpoints every epoch and resumes after the last finished one."""
    with user_errors():
        from stages.photo.encoder import encoder_settings
        from stages.train_encoder import train_encoder

        params = read_params(params_path)
        settings = encoder_settings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, width=width,
                                    input_size=input_size, val_samples=val_samples,
                                    max_train_samples=max_train_samples, seed=seed, device=device)

        def report(result) -> None:
            scores = "  ".join(f"{space}: R² {values['r2']:.3f} cos {values['cosine']:.3f}"
                               for space, values in result.validation.items())
            click.echo(f"epoch {result.epoch + 1}/{settings.epochs}  train loss {result.train_loss:.4f}  "
                       f"val {scores}  {result.seconds:.1f} s")

        metrics = train_encoder(params, data_dir, out_dir, settings, on_epoch=report)
        click.echo(f"wrote {out_dir / 'encoder.pt'} and metrics.json ({metrics['n_train']} training samples)")


@main.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="folder receiving latents.zarr (the inverted latents) and images.zarr (their reconstructions)")
@click.option("--chunk-size", type=click.IntRange(min=1), default=8, help="photos per chunk (the unit of resume)")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, help="photos optimised together")
@_inversion_options
def invert(photos: tuple[Path, ...], out_dir: Path, chunk_size: int, batch_size: int, space: str | None,
           steps: int, learning_rate: float, lpips_net: str, init: str, encoder_path: Path | None,
           align: bool | None, face_index: int | None, device: str, params_path: Path) -> None:
    """Invert PHOTOS (files or folders, sorted by name) into OUT/latents.zarr, chunk by chunk (a rerun resumes),
    and write their reconstructions to OUT/images.zarr: `latentatlas label --data-dir OUT` then labels them."""
    with user_errors():
        import numpy as np

        from stages.runtime.chunked import run_stage
        from stages.photo.invert import InvertStage, ReconstructStage

        params = read_params(params_path)
        generator, settings, alignment, encoder = _inversion_setup(
            params, space, steps, learning_rate, lpips_net, init, encoder_path, align, face_index, device, batch_size)
        stage = InvertStage(params, list(photos), out_dir, settings, alignment, encoder, chunk_size=chunk_size,
                            generator=generator)
        with stage, click.progressbar(stage.pending, label=f"invert {len(stage.photos)} photos", file=None) as bar:
            for index in bar:
                stage.run_chunk(index)
            stage.finish()
        run_stage(ReconstructStage(params, out_dir, generator=generator))
        store = stage.store
        lpips_values = np.asarray(store.arrays["reconstruction_lpips"][:])
        psnr_values = np.asarray(store.arrays["reconstruction_psnr"][:])
        names = store.info.details["photos"]
        for name, lpips_value, psnr_value in list(zip(names, lpips_values, psnr_values))[:20]:
            click.echo(f"{name:32s} LPIPS ({settings.lpips_net}) {lpips_value:.3f}  PSNR {psnr_value:5.1f} dB")
        if len(names) > 20:
            click.echo(f"… {len(names) - 20} more; all {len(names)}: LPIPS median {np.median(lpips_values):.3f}, "
                       f"max {lpips_values.max():.3f}; PSNR median {np.median(psnr_values):.1f} dB")
        click.echo(f"wrote {out_dir / 'latents.zarr'} ({stage.space}) and {out_dir / 'images.zarr'}")


@main.command()
@click.argument("photo", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--directions", "directions_path", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="a directions set: directions/<method>")
@click.option("--attribute", required=True, help="the direction to move along (e.g. happy)")
@click.option("--alphas", default="-3,-1.5,0,1.5,3", help="comma-separated edit strengths")
@click.option("--keep", default=None, help="comma-separated attributes to hold fixed (conditional editing)")
@click.option("--layers", default=None, help="W+ only: move layers start,stop (e.g. 0,8) [default: all]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="folder for latents.zarr, the strip (PNG) and the scores (CSV, JSON) [default: edits/<photo>]")
@data_dir_option
@_inversion_options
def edit(photo: Path, directions_path: Path, attribute: str, alphas: str, keep: str | None, layers: str | None,
         out_dir: Path | None, data_dir: StorePath, space: str | None, steps: int, learning_rate: float,
         lpips_net: str, init: str, encoder_path: Path | None, align: bool | None, face_index: int | None,
         device: str, params_path: Path) -> None:
    """Invert PHOTO, edit it along ATTRIBUTE of a directions set for every alpha, and re-score each edit: writes
    OUT/<method>-<attribute>.png (photo | reconstruction | edits), .csv and .json, and prints the scores."""
    with user_errors():
        from stages.photo.edit import parse_alphas, parse_layers, parse_names, photo_edit, scores_table

        strengths = parse_alphas(alphas)
        kept = parse_names(keep, "--keep")
        layer_range = parse_layers(layers)
        params = read_params(params_path)
        generator, settings, alignment, encoder = _inversion_setup(
            params, space, steps, learning_rate, lpips_net, init, encoder_path, align, face_index, device)
        out_dir = out_dir if out_dir is not None else Path("edits") / photo.stem
        result = photo_edit(params, photo, directions_path, attribute, strengths, out_dir, settings, alignment,
                            encoder, keep=kept, layers=layer_range, data_dir=data_dir, generator=generator)
        click.echo(scores_table(result))
        click.echo(f"reconstruction ({result.space}): LPIPS ({settings.lpips_net}) {result.reconstruction_lpips:.3f}, "
                   f"PSNR {result.reconstruction_psnr:.1f} dB")
        click.echo(f"wrote {result.strip}, {result.csv.name} and {result.json.name}")


@main.command()
@method_option
@params_option
@data_dir_option
@out_root_option
@engine_option
def fit(method: str, params_path: Path, data_dir: StorePath, out_root: Path, engine: str) -> None:
    """Fit one method's directions from the labeled latents into OUT_ROOT/directions/<method>/ (one DVC job per
    method)."""
    _run("fit", params_path, data_dir, engine, method=method, out_root=out_root)


@main.command()
@method_option
@params_option
@data_dir_option
@out_root_option
@engine_option
def evaluate(method: str, params_path: Path, data_dir: StorePath, out_root: Path, engine: str) -> None:
    """Evaluate OUT_ROOT/directions/<method>/ on held-out latents: metrics/<method>.json, curves, traversal
    grids."""
    _run("evaluate", params_path, data_dir, engine, method=method, out_root=out_root)


@main.command()
@params_option
@data_dir_option
@out_root_option
@click.option("--include", "included", multiple=True,
              help="also rank this evaluated directions set (e.g. one brought in by `directions import`)")
def report(params_path: Path, data_dir: StorePath, out_root: Path, included: tuple[str, ...]) -> None:
    """Write OUT_ROOT/reports/report.html (self-contained) and reports/summary.md comparing every method."""
    with user_errors():
        from stages.report import build_report

        params = read_params(params_path)
        layout = OutputLayout(out_root)
        entries = params.fit.entries
        build_report(params, data_dir, [*entries, *(n for n in included if n not in entries)], layout=layout)
        click.echo(f"wrote {layout.report_html()}, {layout.report_markdown()} and {layout.reproduction_markdown()}")


@main.command()
@params_option
@data_dir_option
@out_root_option
@click.option("--host", default="127.0.0.1", help="address to listen on (other than loopback: the network sees it)")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="port [default: 8765, or a free one when it is taken]; 0: a free one")
@click.option("--invert-steps", type=click.IntRange(min=0), default=40, help="optimisation steps for a dropped photo")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:<k>")
def explore(params_path: Path, data_dir: StorePath, out_root: Path, host: str, port: int | None, invert_steps: int,
            device: str) -> None:
    """Serve a web app over a finished run: a slider per direction (live image and scores), compare mode, photo
    upload, exports. Prints the URL; Ctrl-C stops it."""
    with user_errors():
        from pipeline.explore.app import open_and_serve

        open_and_serve(read_params(params_path), data_dir, out_root, host, port, invert_steps, device, click.echo)


def preset_command(preset_path: Path, params_path: Path, dvc_args: tuple[str, ...]) -> list[str]:
    """``dvc exp run -S key=value ...`` for every key the preset changes (values as JSON, which DVC reads as YAML),
    after checking that ``params_path`` with the preset applied validates."""
    import json

    from stages.plugins.methods import method_params_model
    from stages.plugins.params import plugin_params_model

    overrides = load_preset(preset_path, params_path, method_models=method_params_model,
                            plugin_models=plugin_params_model)
    set_args = [arg for key, value in overrides for arg in ("-S", f"{key}={json.dumps(value)}")]
    return ["dvc", "exp", "run", *set_args, *dvc_args]


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=4200, help="port of the Prefect server (and its UI) started for the run")
@click.option("--preset", "preset_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="a partial params file (e.g. params/interfacegan-500k.yaml): run it as `dvc exp run -S ...`")
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
def repro(port: int, preset_path: Path | None, dvc_args: tuple[str, ...]) -> None:
    """`dvc repro [DVC_ARGS]` with a Prefect server for the run: flows show up in its UI, and stage processes skip
    the ephemeral server each would start (≈15 s each). Uses $PREFECT_API_URL instead when it is set.

    With --preset, runs the preset's overrides of params.yaml as a DVC experiment (`dvc exp show` lists it).

    The server lives exactly as long as the run: SIGINT (Ctrl-C), SIGTERM or SIGHUP stop DVC and its stage, then
    the server; a server left by a run that was SIGKILLed is found in .prefect/ and stopped at the next repro."""
    apply_defaults()
    with _signals_exit():
        _repro(port, preset_path, dvc_args)


def _repro(port: int, preset_path: Path | None, dvc_args: tuple[str, ...]) -> None:
    import os

    if preset_path is None:
        command = ["dvc", "repro", *dvc_args]
    else:
        with user_errors():
            command = preset_command(preset_path, Path("params.yaml"), dvc_args)
        click.echo("running: " + " ".join(command))
    if os.environ.get("PREFECT_API_URL"):
        raise SystemExit(run_until_signalled(command, dict(os.environ)))
    from pipeline.prefect_server import PrefectServerError, free_port, local_prefect_server, stop_orphaned_server

    home = Path(".prefect").resolve()
    orphan = stop_orphaned_server(home)
    if orphan is not None:
        click.echo(f"stopped the Prefect server a killed run left on port {orphan.port} (pid {orphan.pid})")
    if not _port_is_free(port):
        port = free_port()
    try:
        with local_prefect_server(home, port=port, ui=True) as api_url:
            click.echo(f"Prefect UI: {api_url.removesuffix('/api')}  (runs stay in .prefect/ for `make ui`)")
            status = run_until_signalled(command, {**os.environ, "PREFECT_API_URL": api_url})
    except PrefectServerError as error:
        raise click.ClickException(f"{error}; run plain `dvc repro` to use ephemeral Prefect servers") from None
    raise SystemExit(status)


#: The signals that end ``repro`` in order (DVC's process group first, then the Prefect server).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_exit() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``SystemExit(128 + signal)`` (as SIGINT raises
    KeyboardInterrupt), so ``finally`` clauses and context managers (the Prefect server's) run on the way out."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, leave) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_until_signalled(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` in its own process group and return its exit status.

    SIGINT, SIGTERM and SIGHUP sent to this process are passed on to that whole group (DVC and the stage it runs),
    and this process waits for it to end, so that whatever the caller holds (the Prefect server) is released after
    it; a second signal SIGKILLs the group. The previous handlers are put back afterwards.
    """
    import os
    import subprocess

    child = subprocess.Popen(command, env=env, process_group=0)
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL if len(received) > 1 else signum)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        return 128 + received[0]
    return status if status >= 0 else 128 - status


def _port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@main.command()
@data_dir_option
@click.option("--quick", is_flag=True, help="check presence and sizes only, not checksums (reads no chunk data)")
def status(data_dir: Path, quick: bool) -> None:
    """Show each store's state: chunks done, complete or not, fingerprint, and every bad chunk (missing, damaged,
    wrong size, computed from other upstream chunks) or stale store, with the stage to rerun; exit 1 when a store
    is damaged, stale or unreadable. Reads every chunk to check its checksum unless --quick."""
    with user_errors():
        found = _print_data_dir_status(data_dir, deep=not quick)
        if found.needing_repair:
            raise click.ClickException(found.repair_message())


@main.command()
@data_dir_option
def verify(data_dir: Path) -> None:
    """Check every chunk of every store against its record (size, CRC32C) and its upstream chunks; exit 1 naming
    each bad chunk and the stage to rerun, 0 when every store is complete and sound."""
    with user_errors():
        if not _print_data_dir_status(data_dir, deep=True).all_complete:
            raise click.ClickException(f"{data_dir}: not every store is complete and sound (see above); rerun the "
                                       f"stages named (or `dvc repro`): they recompute exactly the bad chunks")


def _print_data_dir_status(data_dir: StorePath, deep: bool) -> "DataDirStatus":
    from latentatlas.store_status import data_dir_status

    found = data_dir_status(data_dir, deep=deep)
    for line in found.lines():
        click.echo(line)
    return found


@main.group()
def directions() -> None:
    """Bring published directions in (InterFaceGAN, GANSpace, SeFa) and write ours out."""


@directions.command(name="import")
@click.option("--format", "source_format", type=click.Choice(["interfacegan", "ganspace", "sefa"]), required=True,
              help="the files' format (see stages/latent/interchange.py)")
@click.option("--name", required=True, help="the set's name: written to OUT_ROOT/directions/<name>/")
@click.option("--model", default=None, help="InterFaceGAN: the model prefix of the file names (e.g. stylegan_ffhq)")
@click.option("--space", type=click.Choice(["z", "w"]), default=None,
              help="latent space (default: from the file names; z for SeFa)")
@click.option("--components", "n_components", type=click.IntRange(min=1), default=None,
              help="GANSpace / SeFa: keep the first N components")
@out_root_option
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
def import_directions_command(source_format: str, name: str, model: str | None, space: str | None,
                              n_components: int | None, out_root: Path, files: tuple[Path, ...]) -> None:
    """Import published FILES as a directions set, evaluated and ranked like a fitted one
    (`latentatlas evaluate --method NAME`, `latentatlas report --include NAME`)."""
    with user_errors():
        from stages.latent.interchange import import_directions

        layout = OutputLayout(out_root)
        imported = import_directions(source_format, list(files), name, model=model, space=space,
                                     n_components=n_components)
        imported.save(layout.directions(name))
        click.echo(f"wrote {layout.directions(name)}: {len(imported.names)} directions in {imported.space} "
                   f"({', '.join(imported.names[:6])}{', …' if len(imported.names) > 6 else ''})")


@directions.command(name="export")
@click.option("--method", required=True, help="the directions set: OUT_ROOT/directions/<method>/")
@click.option("--format", "target_format", type=click.Choice(["interfacegan"]), default="interfacegan")
@click.option("--model", required=True, help="model prefix of the boundary file names (e.g. stylegan_ffhq)")
@click.option("--to", "target", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="folder for the boundary files")
@out_root_option
def export_directions_command(method: str, target_format: str, model: str, target: Path, out_root: Path) -> None:
    """Write a directions set as InterFaceGAN boundary files (one (1, D) .npy per direction)."""
    with user_errors():
        from stages.latent.directions import DirectionSet
        from stages.latent.interchange import export_interfacegan

        written = export_interfacegan(DirectionSet.load(OutputLayout(out_root).directions(method)), target, model)
        click.echo(f"wrote {len(written)} boundary files to {target}")


if __name__ == "__main__":
    main()
