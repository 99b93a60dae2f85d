"""Prefect flows: one flow per stage, one task per chunk. Flows only orchestrate; the work is in ``stages/``.

Each flow opens its stage (locking and preparing the output store), submits a task for every pending chunk to the
task runner ``runtime.task_runner`` names, shows a terminal progress bar and a Prefect progress artifact that
advance as chunks complete, then marks the store complete. Import this module only after
:func:`pipeline.settings.apply_defaults` (it imports Prefect).

Task runners (chunk tasks; fit units always run on threads):

- ``threads``: a ``ThreadPoolTaskRunner`` of ``max_workers`` threads in the stage process;
- ``dask``: a ``prefect_dask.DaskTaskRunner`` on a ``LocalCluster`` of ``max_workers`` single-threaded worker
  processes, or on the existing cluster at ``runtime.dask_address``;
- ``ray``: a ``prefect_ray.RayTaskRunner`` on a local Ray instance with ``max_workers`` CPUs, or on the cluster at
  ``runtime.ray_address``.

Whatever the runner, a task receives a small :class:`pipeline.placement.StageSpec`, never the stage: the stage
process (the driver) holds the lock and prepares the store; each worker process attaches to it (see
``pipeline/placement.py``).
With threads the tasks find the driver's own stage in the process cache, so nothing is built twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from tqdm import tqdm

from latentatlas.errors import LatentAtlasError
from latentatlas.layout import OutputLayout
from latentatlas.locations import StorePath, location_string
from latentatlas.params import Params, RuntimeParams
from pipeline.catalog import build_stage
from pipeline.placement import ChunkReport, StageSpec, run_chunk_from_spec, serving
from stages.chunked import ChunkedStage
from stages.fit import FitStage


class DistributedSetupError(LatentAtlasError, ValueError):
    """The configured task runner cannot run here as configured (e.g. no Prefect API its workers can reach)."""


@task(name="chunk", task_run_name="{stage_name}-chunk-{index:05d}", cache_policy=NO_CACHE, retries=0)
def run_chunk(spec: StageSpec, stage_name: str, index: int, torch_threads: int | None = None) -> ChunkReport:
    """Write chunk ``index`` of the stage ``spec`` describes, in whichever process the task runner chose."""
    return run_chunk_from_spec(spec, index, torch_threads)


@dataclass(frozen=True)
class ChunkRun:
    """What one flow's chunk phase did: wall seconds from the first submission to the last completion, and each
    chunk's report (where it ran, build and compute seconds)."""

    stage: str
    wall_s: float
    reports: tuple[ChunkReport, ...]


def run_chunks(stage: ChunkedStage, show_progress: bool = True) -> ChunkRun:
    """Submit one task per pending chunk, advancing a progress bar and a Prefect progress artifact as they finish.

    The tasks go to the flow's task runner (see :func:`chunk_task_runner`); each receives the stage's spec, not the
    stage. Returns what the chunk phase did (for benchmarks and logs).
    """
    runtime = stage.params.runtime
    torch_threads = _worker_threads(runtime)
    total, pending = stage.n_chunks, stage.pending
    done = total - len(pending)
    artifact_id = create_progress_artifact(progress=100.0 * done / total, key=f"{stage.name}-progress",
                                           description=f"latentatlas {stage.name}: chunks complete")
    reports = []
    with serving(stage) as spec, _placement(runtime), \
            tqdm(total=total, initial=done, desc=stage.name, unit="chunk", disable=not show_progress) as bar:
        start = time.perf_counter()
        futures = [run_chunk.submit(spec, stage.name, index, torch_threads) for index in pending]
        for future in as_completed(futures):
            reports.append(future.result())  # re-raises a chunk's error; chunks already written stay valid
            done += 1
            bar.update(1)
            update_progress_artifact(artifact_id, progress=100.0 * done / total)
        wall_s = time.perf_counter() - start
    stage.finish()
    return ChunkRun(stage.name, wall_s, tuple(sorted(reports, key=lambda report: report.index)))


def _stage_flow(stage_name: str, params: Params, data_dir: str, method: str | None, out_root: str) -> ChunkRun:
    with build_stage(stage_name, params, data_dir, method, OutputLayout(Path(out_root))) as stage:
        return run_chunks(stage)


def _threads_per_worker(runtime: RuntimeParams) -> int:
    """Torch intra-op threads for one of ``max_workers`` local workers: its share of this machine's cores."""
    return max(1, (os.cpu_count() or 1) // runtime.max_workers)


def _worker_threads(runtime: RuntimeParams) -> int | None:
    """Torch threads for chunk-task worker processes: a share of this machine's cores on a local cluster; None
    (leave them as they are) on threads (the driver's, set by :func:`_run_flow`) and on remote clusters."""
    if runtime.task_runner == "threads" or _remote_address(runtime):
        return None
    return _threads_per_worker(runtime)


def _placement(runtime: RuntimeParams) -> contextlib.AbstractContextManager[Any]:
    """Where chunk tasks may run. Ray with CUDA devices here: each task asks for one GPU, so Ray runs one task per
    device and sets ``CUDA_VISIBLE_DEVICES`` for it (Dask and threads: by worker rank, see
    :func:`pipeline.placement.cuda_slot`)."""
    if runtime.task_runner == "ray" and torch.cuda.is_available():
        from prefect_ray.context import remote_options

        return remote_options(num_gpus=1)
    return contextlib.nullcontext()


def _remote_address(runtime: RuntimeParams) -> str | None:
    return {"dask": runtime.dask_address, "ray": runtime.ray_address}.get(runtime.task_runner)


def chunk_task_runner(runtime: RuntimeParams) -> TaskRunner:
    """The Prefect task runner for chunk tasks that ``runtime`` asks for."""
    if runtime.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if runtime.dask_address:
            return DaskTaskRunner(address=runtime.dask_address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": runtime.max_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    if runtime.task_runner == "ray":
        from prefect_ray import RayTaskRunner

        if runtime.ray_address:
            return RayTaskRunner(address=runtime.ray_address)
        return RayTaskRunner(init_kwargs={"num_cpus": runtime.max_workers, "include_dashboard": False,
                                          "logging_level": logging.WARNING})
    return ThreadPoolTaskRunner(max_workers=runtime.max_workers)


@contextlib.contextmanager
def prefect_api_for_workers(runtime: RuntimeParams) -> Iterator[None]:
    """Make sure the runner's worker processes report to the driver's Prefect API.

    Without ``PREFECT_API_URL`` Prefect runs in ephemeral mode, and every Dask/Ray worker process would start its
    own temporary server (24–38 s each). For a local cluster, this starts the driver's temporary server itself
    (what ephemeral mode does anyway, at the same cost) and hands its URL to the workers through the task context;
    a remote cluster cannot reach it, so there a real server is required.

    Raises:
        DistributedSetupError: a remote cluster and no ``PREFECT_API_URL``.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if runtime.task_runner == "threads" or PREFECT_API_URL.value():
        yield
        return
    if _remote_address(runtime):
        raise DistributedSetupError(
            f"runtime.task_runner: {runtime.task_runner} on the cluster at {_remote_address(runtime)} needs a real "
            f"Prefect server its workers can reach: run `prefect server start --host 0.0.0.0` (or `make ui`) and "
            f"export PREFECT_API_URL=http://<this host>:4200/api")
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process-wide ephemeral server; stopped at exit
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


@contextlib.contextmanager
def _contained_dask(runtime: RuntimeParams) -> Iterator[None]:
    """Keep a local Dask cluster quiet and its side effects on this process contained.

    Its scheduler, nannies and workers log every start and stop at INFO: show their warnings only (worker processes
    read ``DASK_LOGGING__DISTRIBUTED`` when they start, through Dask's ``distributed.nanny.pre-spawn-environ``).
    Dask's nannies write that pre-spawn environment (``OMP_NUM_THREADS=1``, ``PYTHONHASHSEED``, ...) into this
    process's ``os.environ``: it is put back as it was afterwards, so later subprocesses do not inherit it.
    """
    if runtime.task_runner != "dask":
        yield
        return
    import dask

    logger = logging.getLogger("distributed")
    level = logger.level
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", default={}),
               "DASK_LOGGING__DISTRIBUTED": "warning"}
    saved = dict(os.environ)
    logger.setLevel(logging.WARNING)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            yield
    finally:
        logger.setLevel(level)
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


def _run_flow(flow_name: str, body: Callable[..., Any], params: Params, *args: Any, chunked: bool = True) -> Any:
    """Run ``body(*args[:1], params, *args[1:])`` as a Prefect flow named ``flow_name``; return its result.

    The validated params object goes to the body as it is (Prefect records it as JSON for the UI). ``chunked``
    flows run their tasks on ``runtime.task_runner``; the others (fit) on threads.
    """
    runtime = params.runtime
    if not torch.cuda.is_available():
        # The driver's own threads (and thread-runner tasks) get their share of the cores instead of fighting.
        torch.set_num_threads(_threads_per_worker(runtime))
    runner = chunk_task_runner(runtime) if chunked else ThreadPoolTaskRunner(max_workers=runtime.max_workers)
    prefect_flow = flow(name=flow_name, task_runner=runner, validate_parameters=False)(body)
    runtime = runtime if chunked else RuntimeParams()
    with prefect_api_for_workers(runtime), _contained_dask(runtime):
        return prefect_flow(args[0], params, *args[1:])


def run_stage_flow(stage_name: str, params: Params, data_dir: StorePath, method: str | None = None,
                   layout: OutputLayout = OutputLayout()) -> ChunkRun:
    """Run chunked stage ``stage_name`` as a Prefect flow named ``latentatlas-<stage>`` (``latentatlas-evaluate-
    <method>`` for an evaluation)."""
    flow_name = f"latentatlas-{stage_name}" + (f"-{method}" if method else "")
    return _run_flow(flow_name, _stage_flow, params, stage_name, location_string(data_dir), method,
                     str(Path(layout.root).resolve()))


@task(name="fit", task_run_name="{method}-{unit_name}", cache_policy=NO_CACHE, retries=0)
def fit_unit(stage: FitStage, method: str, unit_name: str, attributes: list[str]):
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


def _fit_flow(method: str, params: Params, data_dir: str, out_root: str) -> None:
    stage = FitStage(params, data_dir, method, layout=OutputLayout(Path(out_root)))
    with stage.lock():
        units = stage.units()
        futures = [fit_unit.submit(stage, method, "+".join(unit) if len(unit) < 4 else "all", unit)
                   for unit in units]
        parts = []
        for future in tqdm(futures, desc=f"fit {method}", unit="unit"):
            parts.append(future.result())  # in submission order: directions keep the attribute order
        stage.finish(parts)


def run_fit_flow(method: str, params: Params, data_dir: StorePath, layout: OutputLayout = OutputLayout()) -> None:
    """Fit ``method`` as a Prefect flow named ``latentatlas-fit-<method>``, one task per independent unit (on
    threads, whatever ``runtime.task_runner`` says: units share the loaded data)."""
    _run_flow(f"latentatlas-fit-{method}", _fit_flow, params, method, location_string(data_dir),
              str(Path(layout.root).resolve()), chunked=False)
