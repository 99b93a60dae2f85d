"""End to end: `dvc repro` runs the Prefect flows; a second repro does nothing; a params change reruns only its
stage; a SIGKILLed run resumes at chunk granularity to bit-identical stores.

These run real subprocesses against a real local Prefect server (started once for the module: an ephemeral server
per stage process would cost ~15 s each).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import zarr

from pipeline.prefect_server import local_prefect_server
from tests.conftest import COLOR_LABELER, REPO_ROOT, tree_digest

pytestmark = pytest.mark.slow

SMALL_PARAMS = {
    "sample": {"n_samples": 1600, "chunk_size": 200, "seed": 1},
    "synthesize": {"batch_size": 100, "device": "cpu"},
    "label": {"labeler": COLOR_LABELER, "batch_size": 100, "device": "cpu", "contact_sheet_samples": 8},
    "fit": {
        "methods": ["interfacegan"],
        "attributes": ["red", "brightness"],
        "params": {"interfacegan": {"ratio": 0.1}},
        "variants": {},
    },  # {}: DVC's foreach defines no variant job
    "eval": {
        "n_samples": 16,
        "chunk_size": 8,
        "alphas": [-1.0, 0.0, 1.0],
        "attributes": ["red"],
        "condition_on": [],
        "ppl_samples": 4,
        "grid_samples": 2,
    },
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
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "DVC_SITE_CACHE_DIR": str(root / ".dvc-site"),
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=root, env=env, check=True)
    shutil.copy(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")  # the shipped settings (cache links)
    return root, env


def _repro(root: Path, env: dict, *targets: str) -> str:
    """``dvc repro [targets]`` (a target runs it and what it depends on, not what follows it)."""
    result = subprocess.run(["dvc", "repro", *targets], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _digest(data_dir: Path) -> dict[str, str]:
    return {
        f"{store}/{name}": digest
        for store in STORES
        for name, digest in (
            tree_digest(data_dir / store).items()
            if (data_dir / store).is_dir()
            else {"": tree_digest(data_dir)[store]}.items()
        )
    }


def test_repro_twice_and_params_change_reruns_only_that_stage(tmp_path, prefect_api) -> None:
    """A second repro does nothing; a label change reruns label and what follows, never sample or synthesize; a
    variant (fit.variants: a method run again with other params) is fitted, evaluated and ranked like a method, and
    changing its params reruns only its fit, its evaluation and the report."""
    variant = {"interfacegan-wide": {"method": "interfacegan", "ratio": 0.3}}
    params = {**SMALL_PARAMS, "fit": {**SMALL_PARAMS["fit"], "variants": variant}}
    root, env = _workspace(tmp_path / "project", params, prefect_api)
    first = _repro(root, env)
    for stage in (
        "sample",
        "synthesize",
        "label",
        "fit@interfacegan",
        "evaluate@interfacegan",
        "fit-variant@interfacegan-wide",
        "evaluate-variant@interfacegan-wide",
        "report",
    ):
        assert f"Running stage '{stage}'" in first
    assert "interfacegan" in (root / "reports" / "report.html").read_text()
    status = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "status"], cwd=root, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert status.count("complete   8/8 chunks") == 3
    directions = json.loads((root / "directions" / "interfacegan-wide" / "directions.json").read_text())
    assert directions["meta"]["base_method"] == "interfacegan" and directions["meta"]["params"]["ratio"] == 0.3
    ranking = json.loads((root / "reports" / "ranking.json").read_text())
    assert set(ranking["red"]) == {"interfacegan", "interfacegan-wide"}
    assert "Reproduction" in (root / "reports" / "REPRODUCTION.md").read_text()
    before = _digest(root / "data")

    second = _repro(root, env)
    assert "Running stage" not in second

    changed = {
        **params,
        "fit": {**params["fit"], "variants": {"interfacegan-wide": {"method": "interfacegan", "ratio": 0.2}}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(_full_params(changed)))
    third = _repro(root, env)
    ran = sorted(line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage"))
    assert ran == ["evaluate-variant@interfacegan-wide", "fit-variant@interfacegan-wide", "report"], ran

    changed = {**changed, "label": {**SMALL_PARAMS["label"], "batch_size": 50}}
    (root / "params.yaml").write_text(yaml.safe_dump(_full_params(changed)))
    fourth = _repro(root, env, "label")
    assert "Running stage 'label'" in fourth
    assert "Running stage 'sample'" not in fourth and "Running stage 'synthesize'" not in fourth
    after = _digest(root / "data")
    assert {k: v for k, v in after.items() if not k.startswith("labels")} == {
        k: v for k, v in before.items() if not k.startswith("labels")
    }


def _chunk_files(store: Path) -> dict[Path, int]:
    """Finished chunk files → mtime: written (not a ``.partial`` / ``.tmp`` temp file of a write in progress) and
    recorded (``images/_records/NNNNN.json`` beside them; a chunk killed between its write and its record is
    rightly recomputed)."""
    chunks, records = store / "images" / "c", store / "images" / "_records"
    if not chunks.is_dir():
        return {}
    return {
        path: path.stat().st_mtime_ns
        for path in chunks.rglob("*")
        if path.is_file()
        and not path.name.endswith((".partial", ".tmp"))
        and not path.name.startswith(".")
        and (records / f"{int(path.relative_to(chunks).parts[0]):05d}.json").is_file()
    }


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, prefect_api) -> None:
    """SIGKILL of `dvc repro label` mid-synthesize, then resume: finished chunks kept, stores bit-identical to an
    uninterrupted run (the stages after label do not take part: they only read the stores compared here)."""
    reference, reference_env = _workspace(tmp_path / "reference", SMALL_PARAMS, prefect_api)
    _repro(reference, reference_env, "label")

    root, env = _workspace(tmp_path / "killed", SMALL_PARAMS, prefect_api)
    run = subprocess.Popen(
        ["dvc", "repro", "label"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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

    resumed = _repro(root, env, "label")
    assert "Running stage 'sample'" not in resumed  # finished before the kill, recorded in dvc.lock
    for path, mtime in survivors.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    assert _digest(root / "data") == _digest(reference / "data")


def _cache_files(root: Path) -> list[Path]:
    return sorted(path for path in (root / ".dvc" / "cache" / "files" / "md5").rglob("*") if path.is_file())


def _assert_cache_intact(root: Path) -> int:
    """Every file in DVC's cache still holds the bytes its name (their md5) says; returns how many there are."""
    files = _cache_files(root)
    for path in files:
        expected = path.parent.name + path.name.removesuffix(".dir")
        assert hashlib.md5(path.read_bytes()).hexdigest() == expected, f"{path} was modified in the cache"
    return len(files)


def test_linked_cache_is_never_modified_by_resume_wipe_or_checkout(tmp_path, prefect_api) -> None:
    """The shipped cache.type links stores into DVC's cache (the disk holds them once); resuming a damaged store,
    wiping a stale one and `dvc checkout` leave every cached file as it was."""
    root, env = _workspace(tmp_path / "project", SMALL_PARAMS, prefect_api)

    def repro(*targets: str) -> str:
        return _repro(root, env, *targets)

    repro("synthesize")
    assert _assert_cache_intact(root) > 16
    chunk = next(path for path in (root / "data" / "images.zarr" / "images" / "c").rglob("*") if path.is_file())
    assert chunk.stat().st_nlink == 2, "the store is copied into the cache, not linked: the disk holds it twice"

    chunk.unlink()  # resume: the stage recomputes the missing chunk as a new file
    repro("synthesize")
    assert chunk.is_file()
    count = _assert_cache_intact(root)

    changed = {**SMALL_PARAMS, "sample": {**SMALL_PARAMS["sample"], "seed": 2}}  # stale stores: wiped and rebuilt
    (root / "params.yaml").write_text(yaml.safe_dump(_full_params(changed)))
    repro("synthesize")
    assert _assert_cache_intact(root) > count

    chunk = next(path for path in (root / "data" / "images.zarr" / "images" / "c").rglob("*") if path.is_file())
    chunk.unlink()
    result = subprocess.run(
        ["dvc", "checkout", "--force", "synthesize"], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert chunk.is_file() and chunk.stat().st_nlink == 2  # restored as a link to the cached bytes
    _assert_cache_intact(root)
    status = subprocess.run(["dvc", "status", "synthesize"], cwd=root, env=env, capture_output=True, text=True)
    assert "changed outs" not in status.stdout, status.stdout


STYLEGAN2_FIXTURE = (
    REPO_ROOT.parent / "shared" / "fixtures" / "generators" / "stylegan2-ada" / "network-snapshot-000000.pkl"
)


@pytest.mark.skipif(not STYLEGAN2_FIXTURE.is_file(), reason=f"fixture {STYLEGAN2_FIXTURE} is not here")
def test_whole_dag_on_a_stylegan2_pickle_fits_in_w_and_edits_w_plus_layers(tmp_path, prefect_api) -> None:
    """`dvc repro` on the NVlabs StyleGAN2-ADA fixture: latents stored in z and w, InterFaceGAN fitted in W, edits
    evaluated in W+ layers [0, 4), and the report says where the edits were made."""
    params = {
        **SMALL_PARAMS,
        "generator": {"name": "stylegan2", "kwargs": {"path": str(STYLEGAN2_FIXTURE), "truncation_psi": 0.7}},
        "sample": {"n_samples": 400, "chunk_size": 100, "seed": 1},
        "fit": {
            "methods": ["interfacegan"],
            "attributes": ["red", "brightness"],
            "variants": {},
            "params": {"interfacegan": {"ratio": 0.1, "space": "w"}},
        },
        "eval": {**SMALL_PARAMS["eval"], "layers": [0, 4]},
    }
    root, env = _workspace(tmp_path / "project", params, prefect_api)
    output = _repro(root, env)
    for stage in ("sample", "synthesize", "label", "fit@interfacegan", "evaluate@interfacegan", "report"):
        assert f"Running stage '{stage}'" in output
    latents = zarr.open_group(str(root / "data" / "latents.zarr"), mode="r")
    assert latents["z"].shape == (400, 64) and latents["w"].shape == (400, 64)
    images = zarr.open_group(str(root / "data" / "images.zarr"), mode="r")["images"]
    assert images.shape == (400, 32, 32, 3)
    directions = json.loads((root / "directions" / "interfacegan" / "directions.json").read_text())
    assert directions["space"] == "w" and directions["names"] == ["red", "brightness"]
    metrics = json.loads((root / "metrics" / "interfacegan.details.json").read_text())
    assert metrics["space"] == "w" and metrics["layers"] == [0, 4]
    assert metrics["directions"]["red"]["slope"] > 0  # the W boundary, applied to 4 of 8 layers, still moves red
    assert "interfacegan: w+ layers [0, 4)" in (root / "reports" / "summary.md").read_text()
    assert "Running stage" not in _repro(root, env)
