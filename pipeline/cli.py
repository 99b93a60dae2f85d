"""``latentatlas`` command line: one command per stage (what ``dvc.yaml`` runs), plus ``status`` and ``repro``.

Every error the user can fix (bad params, unknown plugin, missing weights, foreign/locked store, ...) is a
:class:`latentatlas.errors.LatentAtlasError`: it ends the command with one line naming the key or file and what was
expected, and exit status 1 (``--debug`` shows its traceback too). Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from latentatlas.errors import LatentAtlasError
from latentatlas.layout import IMAGES_STORE, LABELS_STORE, LATENTS_STORE, OutputLayout
from latentatlas.locations import LocationError, StorePath, store_path
from latentatlas.params import Params, ParamsError, load_params, load_preset
from pipeline.settings import apply_defaults

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
method_option = click.option("--method", required=True, help="a method listed in params.yaml: fit.methods")


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
    """``params.yaml`` validated once, every listed method's section typed by that method's own model."""
    from stages.methods import method_params_model

    return load_params(params_path, method_models=method_params_model)


def _run(stage_name: str, params_path: Path, data_dir: StorePath, engine: str, method: str | None = None,
         out_root: Path = Path(".")) -> None:
    from pipeline import engine as engines

    with user_errors():
        params = read_params(params_path)
        if method is not None and method not in params.fit.methods:
            raise ParamsError(f"{params_path}: fit.methods {params.fit.methods} does not list {method!r}")
        engines.run(stage_name, params, data_dir, engine, method=method, layout=OutputLayout(out_root))


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
def report(params_path: Path, data_dir: StorePath, out_root: Path) -> None:
    """Write OUT_ROOT/reports/report.html (self-contained) and reports/summary.md comparing every method."""
    with user_errors():
        from stages.report import build_report

        params = read_params(params_path)
        layout = OutputLayout(out_root)
        build_report(params, data_dir, params.fit.methods, layout=layout)
        click.echo(f"wrote {layout.report_html()} and {layout.report_markdown()}")


def preset_command(preset_path: Path, params_path: Path, dvc_args: tuple[str, ...]) -> list[str]:
    """``dvc exp run -S key=value ...`` for every key the preset changes (values as JSON, which DVC reads as YAML),
    after checking that ``params_path`` with the preset applied validates."""
    import json

    from stages.methods import method_params_model

    overrides = load_preset(preset_path, params_path, method_models=method_params_model)
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

    With --preset, runs the preset's overrides of params.yaml as a DVC experiment (`dvc exp show` lists it)."""
    import os
    import subprocess

    apply_defaults()
    if preset_path is None:
        command = ["dvc", "repro", *dvc_args]
    else:
        with user_errors():
            command = preset_command(preset_path, Path("params.yaml"), dvc_args)
        click.echo("running: " + " ".join(command))
    if os.environ.get("PREFECT_API_URL"):
        raise SystemExit(subprocess.call(command))
    from pipeline.prefect_server import PrefectServerError, free_port, local_prefect_server

    if not _port_is_free(port):
        port = free_port()
    try:
        with local_prefect_server(Path(".prefect").resolve(), port=port, ui=True) as api_url:
            click.echo(f"Prefect UI: {api_url.removesuffix('/api')}  (runs stay in .prefect/ for `make ui`)")
            raise SystemExit(subprocess.call(command, env={**os.environ, "PREFECT_API_URL": api_url}))
    except PrefectServerError as error:
        raise click.ClickException(f"{error}; run plain `dvc repro` to use ephemeral Prefect servers") from None


def _port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@main.command()
@data_dir_option
def status(data_dir: Path) -> None:
    """Show each store's state: chunks written, complete or not, fingerprint."""
    from latentatlas.stores import ParquetChunkStore, StoreError, ZarrChunkStore

    for name, store_cls in ((LATENTS_STORE, ZarrChunkStore), (IMAGES_STORE, ZarrChunkStore),
                            (LABELS_STORE, ParquetChunkStore)):
        path = data_dir / name
        try:
            store = store_cls.open(path)
        except StoreError as error:
            click.echo(f"{name:14s} {error}")
            continue
        info = store.info
        written = info.n_chunks - len(store.pending_chunks())
        state = "complete" if info.complete else "incomplete"
        click.echo(f"{name:14s} {state:10s} {written}/{info.n_chunks} chunks  N={info.n_samples}  "
                   f"fingerprint={info.fingerprint}")


if __name__ == "__main__":
    main()
