"""Start a local Prefect server for the duration of a ``with`` block (benchmarks, tests, scripted runs).

Stage processes pointed at it (``PREFECT_API_URL``) skip the ephemeral server each would otherwise start
(12–20 s per process on 2 cores), and the runs stay visible in its UI while it is up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from latentatlas.errors import LatentAtlasError


class PrefectServerError(LatentAtlasError, RuntimeError):
    """The server did not answer its health check in time."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def local_prefect_server(home: Path, port: int | None = None, ui: bool = False,
                         timeout_s: float = 90.0) -> Iterator[str]:
    """Run ``prefect server start`` on 127.0.0.1 with its database under ``home``; yield its API URL."""
    port = port or free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "true" if ui else "false"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    raise PrefectServerError(f"prefect server exited with status {server.returncode}") from None
                if time.monotonic() > deadline:
                    raise PrefectServerError(f"prefect server did not answer on port {port} "
                                             f"within {timeout_s:.0f} s") from None
                time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
