"""``latentatlas repro``: ``dvc repro`` (or a preset's ``dvc exp run``) with a Prefect server that lives exactly as
long as the run (signals and process groups: :mod:`pipeline.signals`; the server: :mod:`pipeline.prefect_server`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from latentatlas.params import load_preset
from pipeline.prefect_server import (
    PrefectServerError,
    free_port,
    local_prefect_server,
    port_is_free,
    stop_orphaned_server,
)
from pipeline.signals import run_until_signalled, signals_exit


def preset_command(preset_path: Path, params_path: Path, dvc_args: tuple[str, ...]) -> list[str]:
    """``dvc exp run -S key=value ...`` for every key the preset changes (values as JSON, which DVC reads as YAML),
    after checking that ``params_path`` with the preset applied validates.

    Raises:
        ParamsError: the preset, or params with it applied, does not validate.
    """
    from stages.plugins.methods import method_params_model  # every fit method: imported only for a preset
    from stages.plugins.params import plugin_params_model

    overrides = load_preset(
        preset_path, params_path, method_models=method_params_model, plugin_models=plugin_params_model
    )
    set_args = [arg for key, value in overrides for arg in ("-S", f"{key}={json.dumps(value)}")]
    return ["dvc", "exp", "run", *set_args, *dvc_args]


def run_repro(port: int, preset_path: Path | None, dvc_args: tuple[str, ...], say: Callable[[str], None]) -> int:
    """Run ``dvc repro DVC_ARGS`` (with ``preset_path``: the preset as a DVC experiment) until it ends or this
    process is signalled; return its exit status.

    With ``$PREFECT_API_URL`` set, stages report there; else a Prefect server (and UI) is started for the run on
    ``port`` (another free port when it is taken), after stopping one a SIGKILLed run left in ``.prefect/``.

    Raises:
        ParamsError: a bad preset (nothing is run).
        PrefectServerError: the server did not start.
    """
    with signals_exit():
        if preset_path is None:
            command = ["dvc", "repro", *dvc_args]
        else:
            command = preset_command(preset_path, Path("params.yaml"), dvc_args)
            say("running: " + " ".join(command))
        if os.environ.get("PREFECT_API_URL"):
            return run_until_signalled(command, dict(os.environ))
        home = Path(".prefect").resolve()
        orphan = stop_orphaned_server(home)
        if orphan is not None:
            say(f"stopped the Prefect server a killed run left on port {orphan.port} (pid {orphan.pid})")
        if not port_is_free(port):
            port = free_port()
        try:
            with local_prefect_server(home, port=port, ui=True) as api_url:
                say(f"Prefect UI: {api_url.removesuffix('/api')}  (runs stay in .prefect/ for `make ui`)")
                return run_until_signalled(command, {**os.environ, "PREFECT_API_URL": api_url})
        except PrefectServerError as error:
            raise PrefectServerError(f"{error}; run plain `dvc repro` to use ephemeral Prefect servers") from None
