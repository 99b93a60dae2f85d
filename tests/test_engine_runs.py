"""How a stage is run never changes what it writes, a user error under Prefect is one line, and the Prefect UI gets
each run's log lines.

Real Prefect flows against a real local Prefect server (started once for the module).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO_ROOT, make_params, tree_digest

pytestmark = pytest.mark.slow

STORES = ("latents.zarr", "images.zarr", "labels")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipeline.prefect_server import local_prefect_server

    with (
        local_prefect_server(tmp_path_factory.mktemp("prefect-server-home")) as url,
        temporary_settings(updates={PREFECT_API_URL: url}),
    ):
        yield url


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """This thread runs ``count`` torch intra-op threads in the block (tests run with 1, see conftest)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _digest(data_dir: Path) -> dict[str, str]:
    digests = {f"{store}/{name}": value for store in STORES for name, value in tree_digest(data_dir / store).items()}
    digests["contact_sheet.png"] = tree_digest(data_dir)["contact_sheet.png"]
    return digests


def test_bytes_do_not_depend_on_engine_or_worker_count(tmp_path: Path, prefect_api: str) -> None:
    """sample → synthesize → label with the real ``faces`` labelers (their scores move by ~2e-5 with torch's thread
    count): the local engine in a process with torch's 2-core default, and Prefect flows with 1 and 2 workers."""
    from pipeline import engine

    faces = {
        "sample": {"n_samples": 256, "chunk_size": 64, "seed": 5},
        "label": {"labeler": "faces", "batch_size": 64, "contact_sheet_samples": 4},
    }
    digests = {}
    for engine_name, max_workers in (("local", 1), ("prefect", 1), ("prefect", 2)):
        params = make_params(**faces, runtime={"max_workers": max_workers})
        data_dir = tmp_path / f"{engine_name}-{max_workers}"
        with torch_threads(2):  # what a stage process starts with on a 2-core machine
            for stage in ("sample", "synthesize", "label"):
                engine.run(stage, params, data_dir, engine_name)
            assert torch.get_num_threads() == 2  # the engines put the process's count back
        digests[engine_name, max_workers] = _digest(data_dir)
    assert digests["prefect", 1] == digests["local", 1]
    assert digests["prefect", 2] == digests["local", 1]


def _write_params(path: Path, **sections: dict) -> Path:
    path.write_text(yaml.safe_dump(make_params(**sections).model_dump(mode="json")))
    return path


def _label_command(params_path: Path, data_dir: Path, prefect_api: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO_ROOT)}
    for name in ("PREFECT_LOGGING_LEVEL", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"):
        env.pop(name, None)  # the CLI's own defaults, not the test session's
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "label", "--params", str(params_path), "--data-dir", str(data_dir)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_user_error_in_a_chunk_task_is_one_line_and_a_bug_keeps_its_traceback(
    tmp_path: Path, prefect_api: str
) -> None:
    from pipeline import engine

    sizes = {"sample": {"n_samples": 128, "chunk_size": 64}}
    data_dir = tmp_path / "data"
    for stage in ("sample", "synthesize"):
        engine.run(stage, make_params(**sizes), data_dir, "local")

    faulty = {"labeler": "tests.plugins:build_faulty_labeler", "kwargs": {"fault": "nan"}}
    user_error = _label_command(_write_params(tmp_path / "nan.yaml", **sizes, label=faulty), data_dir, prefect_api)
    assert user_error.returncode == 1, user_error.stderr
    lines = [
        line
        for line in user_error.stderr.replace("\r", "\n").splitlines()
        if line.strip() and not line.startswith("label:")
    ]  # the progress bar
    assert lines == [
        "Error: labeler 'color-stats' returned non-finite scores for ['blue', 'brightness', 'green', 'red']"
    ], user_error.stderr
    assert user_error.stdout == ""

    faulty["kwargs"] = {"fault": "bug"}
    bug = _label_command(_write_params(tmp_path / "bug.yaml", **sizes, label=faulty), data_dir, prefect_api)
    assert bug.returncode == 1
    assert "Traceback (most recent call last)" in bug.stderr
    assert bug.stderr.rstrip().endswith("RuntimeError: faulty labeler: a bug inside score()"), bug.stderr


def test_chunk_lines_reach_the_flow_run_page_not_the_terminal(
    tmp_path: Path, prefect_api: str, capfd: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogHandler

    from pipeline.flows import run_stage_flow

    run_stage_flow("sample", make_params(sample={"n_samples": 200, "chunk_size": 100}), tmp_path / "data")
    APILogHandler().flush()  # blocks until the queued records are sent
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["latentatlas-sample"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    messages = [log.message for log in logs]
    for index in (0, 1):
        line = next(
            message
            for message in messages
            if message.startswith(f"sample chunk {index:05d}: 100 samples") and "samples done" in message
        )
        assert " on cpu" in line and "samples/s" in line
    assert any("200/200 samples done (2/2 chunks)" in message for message in messages), messages
    assert (
        sum(log.task_run_id is not None and message.startswith("sample chunk") for log, message in zip(logs, messages))
        == 2
    )  # each task run's own line too
    assert "samples done" not in capfd.readouterr().err  # INFO goes to the API, not the terminal


FIT = {
    "methods": ["interfacegan"],
    "attributes": ["red", "green", "blue"],
    "device": "cpu",
    "params": {"interfacegan": {"ratio": 0.1}},
}


def test_fit_runs_through_the_same_flow_one_task_per_unit_and_resumes(
    tiny_run: Path, tmp_path: Path, prefect_api: str
) -> None:
    """fit is a stage like the others: its flow runs one task per attribute (in this process's threads, whatever
    ``runtime.task_runner`` says), skips the units a killed run finished, and writes the local engine's bytes."""
    from latentatlas.layout import OutputLayout
    from pipeline import engine
    from pipeline.flows import run_stage_flow
    from stages.fit import FitStage

    params = make_params(fit=FIT, runtime={"task_runner": "dask", "max_workers": 2})
    local = OutputLayout(tmp_path / "local")
    engine.run("fit", params, tiny_run, "local", method="interfacegan", layout=local)

    flowed = OutputLayout(tmp_path / "prefect")
    with FitStage(params, tiny_run, "interfacegan", layout=flowed) as killed:
        killed.run_unit(1)  # a run killed after fitting "green"
    run = run_stage_flow("fit", params, tiny_run, method="interfacegan", layout=flowed)
    assert [(report.index, report.name, report.size) for report in run.reports] == [
        (0, "interfacegan red", 1),
        (2, "interfacegan blue", 1),
    ]
    assert {report.pid for report in run.reports} == {os.getpid()}  # threads of the stage process, not Dask
    assert tree_digest(flowed.directions("interfacegan")) == tree_digest(local.directions("interfacegan"))


def test_invert_runs_through_the_same_flow_as_the_spine(tmp_path: Path, prefect_api: str) -> None:
    """The photo command's stage is in the catalog like the spine's: its options (photos, settings, alignment) pass
    through a Prefect flow, one task per chunk, and it writes the local engine's bytes."""
    import numpy as np
    from PIL import Image

    from latentatlas.layout import LATENTS_STORE
    from pipeline import engine
    from pipeline.flows import run_stage_flow
    from stages.photo.align import DCGAN_DIGIFACE_FACE, AlignmentSettings
    from stages.photo.invert import inversion_settings

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(photos / f"p{index}.png")
    params = make_params()
    options = {
        "photos": (photos,),
        "settings": inversion_settings(steps=2, lpips_weight=0.0, init="random", device="cpu"),
        "alignment": AlignmentSettings(False, DCGAN_DIGIFACE_FACE),
        "encoder_path": None,
        "chunk_size": 2,
    }
    engine.run("invert", params, tmp_path / "local", "local", **options)
    run = run_stage_flow("invert", params, tmp_path / "prefect", **options)
    assert [(report.index, report.size) for report in run.reports] == [(0, 2), (1, 1)]
    assert tree_digest(tmp_path / "prefect" / LATENTS_STORE) == tree_digest(tmp_path / "local" / LATENTS_STORE)
