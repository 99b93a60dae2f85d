"""Shared fixtures: quiet offline environment, tiny params, tiny finished runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from latentatlas.params import Params, parse_params

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shared fixtures (tiny generator files, LPIPS reference images), beside the clone. Tests that read them skip
#: when it is absent, except on CI, where they must run.
SHARED_DIR = REPO_ROOT.parent / "shared"
COLOR_LABELER = "tests.plugins:build_color_labeler"


def on_ci() -> bool:
    """Whether this is a CI run (``CI`` set to anything but empty, 0 or false; CI runs ``.ci/run`` with CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    if on_ci() and not SHARED_DIR.is_dir():
        raise pytest.UsageError(
            f"CI is set but the shared fixtures are missing: expected {SHARED_DIR} (shared/ "
            f"beside the clone); on CI the tests that read them must run, not skip"
        )
    from pipeline.settings import apply_defaults

    apply_defaults()
    # One intra-op thread: small torch fits run ~10× slower when 2 threads fight for 2 shared cores, and results
    # are then independent of the machine's core count.
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("PREFECT_HOME", str(Path(config.rootpath) / ".pytest_cache" / "prefect-home"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # worker processes would race to make it


def make_params(**sections: dict) -> Params:
    """Params with the given sections merged over a tiny default (N = 300, chunks of 100, colour labeler), every
    method's section validated by its own model, as the CLI loads them."""
    raw: dict = {
        "sample": {"n_samples": 300, "chunk_size": 100, "seed": 7},
        "synthesize": {"batch_size": 64, "device": "cpu"},
        "label": {"labeler": COLOR_LABELER, "batch_size": 64, "device": "cpu", "contact_sheet_samples": 8},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    from stages.plugins.methods import method_params_model

    return parse_params(raw, method_models=method_params_model)


@pytest.fixture
def tiny_params() -> Params:
    return make_params()


def run_spine(params: Params, data_dir: Path) -> None:
    """sample → synthesize → label in this process, without Prefect."""
    from stages.label import LabelStage
    from stages.runtime.chunked import run_stage
    from stages.sample import SampleStage
    from stages.synthesize import SynthesizeStage

    for stage_cls in (SampleStage, SynthesizeStage, LabelStage):
        run_stage(stage_cls(params, data_dir))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run (real face DCGAN, colour labeler) shared by read-only tests."""
    data_dir = tmp_path_factory.mktemp("tiny-run")
    run_spine(make_params(), data_dir)
    return data_dir


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (lock files excluded), by relative path."""
    import hashlib

    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


def run_toy_spine(params: Params, data_dir: Path, world) -> None:
    """sample → synthesize → label with the planted toy generator and labeler (tests/toy.py) injected."""
    from stages.label import LabelStage
    from stages.runtime.chunked import run_stage
    from stages.sample import SampleStage
    from stages.synthesize import SynthesizeStage

    run_stage(SampleStage(params, data_dir, generator=world.generator))
    run_stage(SynthesizeStage(params, data_dir, generator=world.generator))
    run_stage(LabelStage(params, data_dir, labeler=world.labeler))
