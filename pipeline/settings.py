"""Process-level defaults applied by the CLI before Prefect is imported: quiet, offline, patient start-up.

Each is a ``setdefault``: a value the user exported wins.

Logging: Prefect's loggers pass INFO (``PREFECT_LOGGING_LEVEL``), so each flow and task run's log lines (the chunk
lines of :mod:`pipeline.flows`: images/s, device, GPU memory, samples done) reach the Prefect API and show on the
run's page in the UI; the terminal's handler shows warnings and errors only
(``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``: Prefect's logging.yml reads ``PREFECT_LOGGING_<path>_<key>``), next
to the progress bars.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "DVC_NO_ANALYTICS": "1",
}


def with_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` with every :data:`DEFAULTS` entry it does not set (the environment of a process this
    project starts: ``latentatlas repro``'s Prefect server, ``make ui``)."""
    return {**DEFAULTS, **environ}


def apply_defaults() -> None:
    """Set every :data:`DEFAULTS` entry the environment does not set already."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
