"""End to end: `dvc repro` runs the Prefect flows; a second repro does nothing; a params change reruns only its
stage; a SIGKILLed run resumes at chunk granularity to bit-identical stores.

These run real subprocesses against a real local Prefect server (started once for the module: an ephemeral server
per stage process would cost ~15 s each).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.prefect_server import local_prefect_server
from tests.conftest import COLOR_LABELER, REPO_ROOT, tree_digest

pytestmark = pytest.mark.slow

SMALL_PARAMS = {
    "sample": {"n_samples": 1600, "chunk_size": 200, "seed": 1},
    "synthesize": {"batch_size": 100, "device": "cpu"},
    "label": {"labeler": COLOR_LABELER, "batch_size": 100, "device": "cpu", "contact_sheet_samples": 8},
    "fit": {"methods": ["interfacegan"], "attributes": ["red", "brightness"],
            "params": {"interfacegan": {"ratio": 0.1}}},
    "eval": {"n_samples": 16, "chunk_size": 8, "alphas": [-1.0, 0.0, 1.0], "attributes": ["red"], "condition_on": [],
             "ppl_samples": 4, "grid_samples": 2},
    "runtime": {"max_workers": 2},
}
STORES = ("latents.zarr", "images.zarr", "labels", "contact_sheet.png")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> str:
    with local_prefect_server(tmp_path_factory.mktemp("prefect-server-home")) as url:
        yield url


def _full_params(overrides: dict) -> dict:
    """The repository's params.yaml with ``overrides`` merged per section (DVC needs every tracked section)."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section] = {**params.get(section, {}), **values}
    return params


def _workspace(root: Path, params: dict, prefect_api: str) -> tuple[Path, dict]:
    """A fresh git + DVC project holding this repository's pipeline and ``params`` (merged over the defaults)."""
    root.mkdir(parents=True)
    for name in ("latentatlas", "pipeline", "stages", "tests"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(_full_params(params)))
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "DVC_SITE_CACHE_DIR": str(root / ".dvc-site"),
           "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(command, cwd=root, env=env, check=True)
    return root, env


def _repro(root: Path, env: dict) -> str:
    result = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _digest(data_dir: Path) -> dict[str, str]:
    return {f"{store}/{name}": digest for store in STORES
            for name, digest in (tree_digest(data_dir / store).items() if (data_dir / store).is_dir()
                                 else {"": tree_digest(data_dir)[store]}.items())}


def test_repro_twice_and_params_change_reruns_only_that_stage(tmp_path, prefect_api) -> None:
    root, env = _workspace(tmp_path / "project", SMALL_PARAMS, prefect_api)
    first = _repro(root, env)
    for stage in ("sample", "synthesize", "label", "fit@interfacegan", "evaluate@interfacegan", "report"):
        assert f"Running stage '{stage}'" in first
    assert "interfacegan" in (root / "reports" / "report.html").read_text()
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status"], cwd=root, env=env,
                            capture_output=True, text=True, check=True).stdout
    assert status.count("complete   8/8 chunks") == 3
    before = _digest(root / "data")

    second = _repro(root, env)
    assert "Running stage" not in second

    changed = {**SMALL_PARAMS, "label": {**SMALL_PARAMS["label"], "batch_size": 50}}
    (root / "params.yaml").write_text(yaml.safe_dump(_full_params(changed)))
    third = _repro(root, env)
    assert "Running stage 'label'" in third
    assert "Running stage 'sample'" not in third and "Running stage 'synthesize'" not in third
    after = _digest(root / "data")
    assert {k: v for k, v in after.items() if not k.startswith("labels")} == \
           {k: v for k, v in before.items() if not k.startswith("labels")}


def _chunk_files(store: Path) -> dict[Path, int]:
    """Finished chunk files (not Zarr's ``<key>.<uuid>.partial`` temp files of a write in progress) → mtime."""
    chunks = store / "images" / "c"
    return {path: path.stat().st_mtime_ns for path in chunks.rglob("*")
            if path.is_file() and not path.name.endswith(".partial")} if chunks.is_dir() else {}


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, prefect_api) -> None:
    reference, reference_env = _workspace(tmp_path / "reference", SMALL_PARAMS, prefect_api)
    _repro(reference, reference_env)

    root, env = _workspace(tmp_path / "killed", SMALL_PARAMS, prefect_api)
    run = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    images = root / "data" / "images.zarr"
    deadline = time.monotonic() + 300
    while len(_chunk_files(images)) < 3:
        assert run.poll() is None, "dvc repro finished before it could be killed"
        assert time.monotonic() < deadline, "synthesize never started"
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)  # the whole process group: dvc, the stage, its threads
    run.wait()

    survivors = _chunk_files(images)
    assert 3 <= len(survivors) < 8
    meta = (images / "zarr.json").read_text()
    assert '"complete": false' in meta  # the killed store does not claim to be complete

    resumed = _repro(root, env)
    assert "Running stage 'sample'" not in resumed  # finished before the kill, recorded in dvc.lock
    for path, mtime in survivors.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    assert _digest(root / "data") == _digest(reference / "data")
