"""``latentatlas`` command line: one command per stage (what ``dvc.yaml`` runs), plus ``status``.

Every error the user can fix (bad params, unknown plugin, missing weights, foreign/locked store, ...) ends the
command with one line naming the key or file and what was expected, and exit status 1.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from pipeline.locations import LocationError, StorePath, store_path
from pipeline.params import ParamsError, load_params, load_preset
from pipeline.settings import apply_defaults
from pipeline.stores import StoreError
from stages.directions import DirectionsError
from stages.registry import RegistryError
from stages.weights import WeightsError

# MethodInputError and DirectionsError are ValueErrors; so are pydantic's and our own input checks.
USER_ERRORS: tuple[type[Exception], ...] = (ParamsError, StoreError, RegistryError, WeightsError, DirectionsError,
                                            ValueError, TypeError)

params_option = click.option("--params", "params_path", type=click.Path(path_type=Path), default="params.yaml",
                             show_default=True, help="params file")


def _data_dir(context: click.Context, parameter: click.Parameter, value: str) -> StorePath:
    """``--data-dir``: a local path, or an object-store URL (s3://bucket/run, gs://…; see pipeline/locations.py)."""
    try:
        return store_path(value)
    except LocationError as error:
        raise click.ClickException(f"--data-dir {error}") from None


data_dir_option = click.option("--data-dir", default="data", callback=_data_dir, show_default=True,
                               help="folder holding the stores: a local path or an object-store URL (s3://bucket/run)")
engine_option = click.option("--engine", type=click.Choice(["prefect", "local"]), default="prefect",
                             show_default=True, help="prefect: a flow with one task per chunk; local: a plain loop")


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(click.style(f"warning: {message}", fg="yellow"), err=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Quiet, offline defaults; warnings as one yellow line; a user-fixable error as one line and exit 1."""
    apply_defaults()
    warnings.showwarning = _warning_line
    try:
        yield
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None


def _run_stage(stage_name: str, params_path: Path, data_dir: Path, engine: str) -> None:
    with user_errors():
        params = load_params(params_path)
        if engine == "prefect":
            from pipeline.flows import run_stage_flow

            run_stage_flow(stage_name, params, data_dir)
        else:
            from stages.chunked import run_stage
            from stages.spine import STAGES

            run_stage(STAGES[stage_name](params, data_dir))


@click.group(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
def main() -> None:
    """latentatlas: find and judge semantic directions in the latent space of pretrained GANs."""


def _stage_command(stage_name: str, summary: str) -> click.Command:
    @params_option
    @data_dir_option
    @engine_option
    def command(params_path: Path, data_dir: Path, engine: str) -> None:
        _run_stage(stage_name, params_path, data_dir, engine)

    command.__doc__ = summary
    return main.command(name=stage_name)(command)


_stage_command("sample", "Sample latents z ~ N(0, I) into DATA_DIR/latents.zarr, chunk by chunk.")
_stage_command("synthesize", "Synthesize images from the latents into DATA_DIR/images.zarr.")
_stage_command("label", "Score every image with the labeler suite into DATA_DIR/labels/*.parquet.")


@main.command()
@click.option("--method", required=True, help="a method listed in params.yaml: fit.methods")
@params_option
@data_dir_option
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False), default="directions",
              help="directions are written to OUT_DIR/<method>/")
@engine_option
def fit(method: str, params_path: Path, data_dir: Path, out_dir: Path, engine: str) -> None:
    """Fit one method's directions from the labeled latents (one DVC job per method)."""
    with user_errors():
        params = load_params(params_path)
        if method not in params.fit.methods:
            raise ParamsError(f"{params_path}: fit.methods {params.fit.methods} does not list {method!r}")
        if engine == "prefect":
            from pipeline.flows import run_fit_flow

            run_fit_flow(method, params, data_dir, out_dir)
        else:
            from stages.fit import run_fit

            run_fit(params, data_dir, method, out_root=out_dir)


@main.command()
@click.option("--method", required=True, help="a method listed in params.yaml: fit.methods")
@params_option
@data_dir_option
@engine_option
def evaluate(method: str, params_path: Path, data_dir: Path, engine: str) -> None:
    """Evaluate one method's directions on held-out latents: metrics/<method>.json, curves, traversal grids."""
    with user_errors():
        params = load_params(params_path)
        if engine == "prefect":
            from pipeline.flows import run_evaluate_flow

            run_evaluate_flow(method, params, data_dir)
        else:
            from stages.chunked import run_stage
            from stages.evaluate import EvaluateStage

            run_stage(EvaluateStage(params, data_dir, method))


@main.command()
@params_option
@data_dir_option
def report(params_path: Path, data_dir: Path) -> None:
    """Write reports/report.html (self-contained) and reports/summary.md comparing every method."""
    with user_errors():
        from stages.report import REPORT_HTML, REPORT_MD, build_report

        params = load_params(params_path)
        build_report(params, data_dir, params.fit.methods)
        click.echo(f"wrote {REPORT_HTML} and {REPORT_MD}")


def preset_command(preset_path: Path, params_path: Path, dvc_args: tuple[str, ...]) -> list[str]:
    """``dvc exp run -S key=value ...`` for every key the preset changes (values as JSON, which DVC reads as YAML),
    after checking that ``params_path`` with the preset applied validates."""
    import json

    overrides = load_preset(preset_path, params_path)
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
    from stages.label import LABELS_STORE
    from stages.sample import LATENTS_STORE
    from stages.synthesize import IMAGES_STORE
    from pipeline.stores import ParquetChunkStore, ZarrChunkStore

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
