"""Signals and process groups: how ``latentatlas repro`` runs DVC so that nothing outlives it.

DVC runs in its own process group; SIGINT, SIGTERM and SIGHUP sent to ``repro`` go to that whole group (DVC and the
stage it runs), ``repro`` waits for the group to end, and only then releases what it holds (the Prefect server for
the run). A second signal SIGKILLs the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

#: The signals that end ``repro`` in order (DVC's process group first, then the Prefect server).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_exit() -> Iterator[None]:
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
