"""`latentatlas repro` never orphans its Prefect server: SIGTERM stops DVC's stage and the server; after a SIGKILL,
the server left behind is found through its record in .prefect/ and stopped; a recorded pid that is not that server
is never signalled. The server's UI calls its own API whatever its port. ``make ui``'s server runs with telemetry
off.

Real processes: `python -m pipeline.cli repro` in a fresh DVC project whose one stage waits, a real Prefect server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.prefect_server import (
    SERVER_RECORD,
    ServerRecord,
    _start_ticks,
    free_port,
    read_server_record,
    stop_orphaned_server,
)
from tests.conftest import REPO_ROOT

WAITING_STAGE = """stages:
  wait:
    cmd: python -c "import os, time; open('stage.pid', 'w').write(str(os.getpid())); time.sleep(600)"
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def _start_repro(project: Path) -> tuple[subprocess.Popen, int, ServerRecord, int]:
    """``latentatlas repro`` in a fresh DVC project, once its stage runs: (process, port, server record, stage pid)."""
    project.mkdir()
    (project / "dvc.yaml").write_text(WAITING_STAGE)
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    env |= {
        "PYTHONPATH": str(REPO_ROOT),
        "DVC_SITE_CACHE_DIR": str(project / ".dvc-site"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=project, env=env, check=True)
    port = free_port()
    repro = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "repro", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: (project / "stage.pid").is_file() and (project / "stage.pid").read_text(), "the stage runs")
    record = read_server_record(project / ".prefect")
    assert record is not None and record.port == port and _alive(record.pid)
    return repro, port, record, int((project / "stage.pid").read_text())


@pytest.mark.slow
def test_sigterm_of_repro_stops_its_stage_and_its_server(tmp_path: Path) -> None:
    repro, port, record, stage_pid = _start_repro(tmp_path / "project")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as response:
        assert json.load(response)["api_url"] == f"http://127.0.0.1:{port}/api"  # the UI calls its own server
    repro.send_signal(signal.SIGTERM)
    assert repro.wait(120) == 128 + signal.SIGTERM
    assert not _alive(stage_pid) and not _alive(record.pid)
    assert not (tmp_path / "project" / ".prefect" / SERVER_RECORD).exists()


@pytest.mark.slow
def test_a_server_left_by_a_sigkilled_repro_is_found_and_stopped(tmp_path: Path) -> None:
    repro, port, record, stage_pid = _start_repro(tmp_path / "project")
    try:
        repro.kill()
        repro.wait()
        assert _alive(record.pid)  # the orphan: nothing could stop it
        assert stop_orphaned_server(tmp_path / "project" / ".prefect") == record
        assert not _alive(record.pid)
        assert read_server_record(tmp_path / "project" / ".prefect") is None
    finally:
        os.killpg(os.getpgid(stage_pid), signal.SIGKILL)  # DVC's process group, orphaned too


def test_a_recorded_pid_that_is_not_that_server_is_never_signalled(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        records = [
            ServerRecord(pid=os.getpid(), port=4200, start_ticks=0, home=str(tmp_path)),  # pid reused
            ServerRecord(pid=bystander.pid, port=4200, start_ticks=_start_ticks(bystander.pid), home=str(tmp_path)),
        ]  # the very process, but no prefect server
        for record in records:
            (tmp_path / SERVER_RECORD).write_text(json.dumps(vars(record)))
            assert stop_orphaned_server(tmp_path) is None
            assert not (tmp_path / SERVER_RECORD).exists()  # the stale record goes
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def _session_processes(session: int) -> dict[int, str]:
    """pid → command line of every live process in session ``session``."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[3]) == session:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
def test_make_ui_serves_its_ui_with_telemetry_off(tmp_path: Path) -> None:
    """The ``ui`` target of the Makefile, run as a user runs it (but on a free port, a fresh home, set-up assumed
    done): its server's environment turns analytics off (else it logs a telemetry error every few minutes
    offline), though the user's shell did not, and its UI calls its own API."""
    quiet = {"PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "PREFECT_API_URL", "PREFECT_HOME"}
    env = {name: value for name, value in os.environ.items() if name not in quiet}
    env |= {"PYTHONPATH": str(REPO_ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    port = free_port()
    make = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "ui",
            f"UI_PORT={port}",
            f"UI_HOME={tmp_path / 'home'}",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def server() -> int | None:
            return next(
                (
                    pid
                    for pid, command in _session_processes(make.pid).items()
                    if "prefect server start" in command and f"--port {port}" in command
                ),
                None,
            )

        _wait_for(lambda: server() is not None, "make ui starts prefect server start")
        environ = dict(
            item.split("=", 1)
            for item in Path(f"/proc/{server()}/environ").read_bytes().decode(errors="replace").split("\0")
            if "=" in item
        )
        assert environ.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false" and environ.get("DO_NOT_TRACK") == "1"
        assert environ.get("PREFECT_HOME") == str(tmp_path / "home")

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=5) as response:
                    return json.load(response)["api_url"] == f"http://127.0.0.1:{port}/api"
            except OSError:
                return False

        _wait_for(answers, "the UI answers and calls its own API")
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    _wait_for(lambda: not _session_processes(make.pid), "make ui's processes end", timeout_s=60)
