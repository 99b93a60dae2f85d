"""Start a local Prefect server for the duration of a ``with`` block (``latentatlas repro``, benchmarks, tests), or
in the foreground for ``make ui`` (``python -m pipeline.prefect_server --home .prefect --port 4200``).

Stage processes pointed at it (``PREFECT_API_URL``) skip the ephemeral server each would otherwise start
(12–20 s per process on 2 cores), and the runs stay visible in its UI while it is up. Its UI calls its own API,
whatever the port (``PREFECT_UI_API_URL``).

**No orphans.** The server runs in its own session (a Ctrl-C in the terminal reaches whoever started it, who stops
it in order). While it runs, ``<home>/latentatlas-server.json`` records its pid, port and process start time; the
``with`` block removes the record when it stops the server. A process that was SIGKILLed cannot stop its server, so
the next :func:`local_prefect_server` on the same home (or :func:`stop_orphaned_server`) finds the record, checks
that the process is still that very server (same start time, a ``prefect server start`` command line on that port,
started for this home) and stops it. A pid that now belongs to another process is never signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

from latentatlas.atomic import atomic_write_json
from latentatlas.errors import LatentAtlasError
from pipeline.settings import with_defaults

#: The record of the running server, under its ``PREFECT_HOME``.
SERVER_RECORD = "latentatlas-server.json"


class PrefectServerError(LatentAtlasError, RuntimeError):
    """The server did not answer its health check in time, or exited at start-up."""


@dataclass(frozen=True)
class ServerRecord:
    """A running server as recorded in ``<home>/latentatlas-server.json``.

    Attributes:
        pid: the ``prefect server start`` process (also its process group: it leads its own session).
        port: the port it serves its API (and UI) on, on 127.0.0.1.
        start_ticks: its start time in clock ticks since boot (``/proc/<pid>/stat`` field 22): with the pid, it
            names that process and no later one that reuses the pid.
        home: the ``PREFECT_HOME`` it was started with.
    """

    pid: int
    port: int
    start_ticks: int
    home: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``port`` of 127.0.0.1 now (a server for the run can take it)."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # fields after "(comm)" start at field 3; starttime is 22


def _is_recorded_server(record: ServerRecord) -> bool:
    """Whether ``record.pid`` is still the server the record describes (not a later process with its pid)."""
    if _start_ticks(record.pid) != record.start_ticks:
        return False
    try:
        argv = Path(f"/proc/{record.pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        environ = Path(f"/proc/{record.pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    command = " ".join(argv)
    return (
        "prefect server start" in command
        and f"--port {record.port}" in command
        and f"PREFECT_HOME={record.home}" in environ
    )


def read_server_record(home: Path) -> ServerRecord | None:
    """The server recorded under ``home``, or None (no record, or one this code cannot read: it is ignored)."""
    try:
        return ServerRecord(**json.loads((Path(home) / SERVER_RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _stop_process_group(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL it if still there after ``timeout_s``; wait until gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _start_ticks(pid) is not None and not _is_zombie(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.1)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


def stop_orphaned_server(home: Path) -> ServerRecord | None:
    """Stop the server a killed run left running for ``home`` (see the module's docstring); return its record.

    Returns None when there was none: no record, or a record whose process has gone or is no longer that server
    (the stale record is removed then, and no process is signalled).
    """
    record = read_server_record(home)
    if record is None:
        return None
    orphan = _is_recorded_server(record)
    if orphan:
        _stop_process_group(record.pid)
    (Path(home) / SERVER_RECORD).unlink(missing_ok=True)
    return record if orphan else None


def _send_pending_logs() -> None:
    """Send the log records this process queued for the Prefect API while its server still runs (a process that
    ran flows against it, e.g. a test session; Prefect would retry against a stopped server at exit)."""
    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()


def server_environment(home: Path, port: int, ui: bool) -> dict[str, str]:
    """The environment of a server on 127.0.0.1:``port`` with its database under ``home``: quiet and offline (this
    process's environment with :data:`pipeline.settings.DEFAULTS`: no telemetry), and a UI that calls this server's
    API (Prefect's UI otherwise calls ``PREFECT_API_URL`` or port 4200)."""
    api_url = f"http://127.0.0.1:{port}/api"
    return {
        **with_defaults(os.environ),
        "PREFECT_HOME": str(home),
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_API_URL": api_url,
    }


@contextlib.contextmanager
def local_prefect_server(
    home: Path, port: int | None = None, ui: bool = False, timeout_s: float = 90.0
) -> Iterator[str]:
    """Run ``prefect server start`` on 127.0.0.1 with its database under ``home``; yield its API URL.

    First stops a server a killed run left for the same ``home`` (:func:`stop_orphaned_server`). The server is
    stopped when the block exits, however it exits (a caller that wants SIGTERM to end the block turns it into an
    exception, as ``latentatlas repro`` does).

    Raises:
        PrefectServerError: the server exited at start-up or did not answer within ``timeout_s``.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    stop_orphaned_server(home)
    port = port or free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_environment(home, port, ui),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        start_ticks = _start_ticks(server.pid)
        if start_ticks is not None:
            record = ServerRecord(pid=server.pid, port=port, start_ticks=start_ticks, home=str(home))
            atomic_write_json(home / SERVER_RECORD, asdict(record))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    raise PrefectServerError(f"prefect server exited with status {server.returncode}") from None
                if time.monotonic() > deadline:
                    raise PrefectServerError(
                        f"prefect server did not answer on port {port} within {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        _send_pending_logs()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        (home / SERVER_RECORD).unlink(missing_ok=True)


def serve_ui(home: Path, port: int) -> NoReturn:
    """``make ui``: become ``prefect server start`` on 127.0.0.1:``port``, UI included, with its database under
    ``home`` and the environment of :func:`server_environment` (telemetry off); it runs until Ctrl-C.

    First stops a server a killed ``latentatlas repro`` left for the same ``home`` (:func:`stop_orphaned_server`).
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    stop_orphaned_server(home)
    os.execve(
        sys.executable,
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_environment(home, port, ui=True),
    )


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.prefect_server",
        description="Run a Prefect server with its UI in the foreground (make ui).",
    )
    parser.add_argument("--home", type=Path, required=True, help="PREFECT_HOME: where its database lives")
    parser.add_argument("--port", type=int, default=4200, help="port on 127.0.0.1 (default 4200)")
    arguments = parser.parse_args(argv)
    serve_ui(arguments.home, arguments.port)


if __name__ == "__main__":
    main()
