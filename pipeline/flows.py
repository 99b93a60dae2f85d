"""Prefect flows: one flow per stage, one task per chunk. Flows only orchestrate; the work is in ``stages/``.

Each flow opens its stage (locking the output store), submits a task for every pending chunk to the configured task
runner, shows a terminal progress bar and a Prefect progress artifact that advance as chunks complete, then marks
the store complete. Import this module only after :func:`pipeline.settings.apply_defaults` (it imports Prefect).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm import tqdm

from pipeline.params import Params, parse_params
from stages.chunked import ChunkedStage
from stages.spine import STAGES

if TYPE_CHECKING:
    from stages.fit import FitStage


@task(name="chunk", task_run_name="{stage_name}-chunk-{index:05d}", cache_policy=NO_CACHE, retries=0)
def run_chunk(stage: ChunkedStage, stage_name: str, index: int) -> int:
    stage.run_chunk(index)
    return index


def run_chunks(stage: ChunkedStage, show_progress: bool = True) -> None:
    """Submit one task per pending chunk, advancing a progress bar and a Prefect progress artifact as they finish."""
    total, pending = stage.n_chunks, stage.pending
    done = total - len(pending)
    artifact_id = create_progress_artifact(progress=100.0 * done / total, key=f"{stage.name}-progress",
                                           description=f"latentatlas {stage.name}: chunks complete")
    with tqdm(total=total, initial=done, desc=stage.name, unit="chunk", disable=not show_progress) as bar:
        futures = [run_chunk.submit(stage, stage.name, index) for index in pending]
        for future in as_completed(futures):
            future.result()  # re-raises a chunk's error; chunks already written stay valid for the resume
            done += 1
            bar.update(1)
            update_progress_artifact(artifact_id, progress=100.0 * done / total)
    stage.finish()


def _stage_flow(stage_name: str, params: dict, data_dir: str) -> None:
    with STAGES[stage_name](parse_params(params), Path(data_dir)) as stage:
        run_chunks(stage)


def _run_flow(flow_name: str, body: Callable[..., None], params: Params, *args: str) -> None:
    """Run ``body(*args[:1], params_as_json, *args[1:])`` as a Prefect flow named ``flow_name`` on the configured
    task runner (params travel as JSON: flow parameters must be serialisable for the Prefect API)."""
    workers = params.runtime.max_workers
    if not torch.cuda.is_available():
        # Chunk tasks run in threads; give each its share of the cores instead of letting them fight.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    prefect_flow = flow(name=flow_name, task_runner=ThreadPoolTaskRunner(max_workers=workers),
                        validate_parameters=False)(body)
    prefect_flow(args[0], params.model_dump(mode="json"), *args[1:])


def run_stage_flow(stage_name: str, params: Params, data_dir: Path) -> None:
    """Run stage ``stage_name`` as a Prefect flow named ``latentatlas-<stage>``."""
    _run_flow(f"latentatlas-{stage_name}", _stage_flow, params, stage_name, str(data_dir))


@task(name="fit", task_run_name="{method}-{unit_name}", cache_policy=NO_CACHE, retries=0)
def fit_unit(stage: "FitStage", method: str, unit_name: str, attributes: list[str]):
    """Fit one unit of a method (one attribute, or all of them for a joint method), reporting training progress."""
    artifact_id = None

    def report(step: int, total: int, metrics: dict[str, float]) -> None:
        nonlocal artifact_id
        fraction = 100.0 * step / max(total, 1)
        if artifact_id is None:
            artifact_id = create_progress_artifact(progress=fraction, key=f"fit-{method}-progress",
                                                   description=f"latentatlas fit {method}: training steps")
        else:
            update_progress_artifact(artifact_id, progress=fraction)
        shown = "  ".join(f"{key}={value:.4g}" for key, value in metrics.items())
        tqdm.write(f"fit {method} [{unit_name}] step {step}/{total}  {shown}")

    return stage.fit_unit(attributes, progress=report)


def _fit_flow(method: str, params: dict, data_dir: str, out_root: str) -> None:
    from pipeline.stores import store_lock
    from stages.fit import FitStage

    stage = FitStage(parse_params(params), Path(data_dir), method, out_root=Path(out_root))
    with store_lock(stage.out_dir):
        units = stage.units()
        futures = [fit_unit.submit(stage, method, "+".join(unit) if len(unit) < 4 else "all", unit)
                   for unit in units]
        parts = []
        for future in tqdm(futures, desc=f"fit {method}", unit="unit"):
            parts.append(future.result())  # in submission order: directions keep the attribute order
        stage.finish(parts)


def run_fit_flow(method: str, params: Params, data_dir: Path, out_root: Path) -> None:
    """Fit ``method`` as a Prefect flow named ``latentatlas-fit-<method>``, one task per independent unit."""
    _run_flow(f"latentatlas-fit-{method}", _fit_flow, params, method, str(data_dir), str(out_root))


def _evaluate_flow(method: str, params: dict, data_dir: str) -> None:
    from stages.evaluate import EvaluateStage

    with EvaluateStage(parse_params(params), Path(data_dir), method) as stage:
        run_chunks(stage)


def run_evaluate_flow(method: str, params: Params, data_dir: Path) -> None:
    """Evaluate ``method`` as a Prefect flow named ``latentatlas-evaluate-<method>``, one task per held-out chunk."""
    _run_flow(f"latentatlas-evaluate-{method}", _evaluate_flow, params, method, str(data_dir))
