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

Torch runs :data:`stages.runtime.device.CPU_THREADS` intra-op threads per chunk in flight, on every runner and for any
``max_workers``, as the local engine does: the bytes never depend on how a stage was run.

What a run logs: each chunk task logs one line to its task run (samples, seconds, images/s, device, peak GPU
memory on CUDA, host and pid), and the flow logs it again with the samples done so far, so the flow run's page in
the Prefect UI follows the run. These are INFO records: they go to the Prefect API, not the terminal (see
:mod:`pipeline.settings`), which shows the progress bar.
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
from prefect import flow, get_run_logger, task
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
from stages.runtime.chunked import ChunkedStage
from stages.runtime.device import pinned_threads
from stages.fit import FitStage


class DistributedSetupError(LatentAtlasError, ValueError):
    """The configured task runner cannot run here as configured (e.g. no Prefect API its workers can reach)."""


class UserErrorConsoleFilter(logging.Filter):
    """Keeps Prefect's report of a user error off the terminal; the command prints it as one line instead.

    A user error (a :class:`LatentAtlasError`) raised in a task or flow makes Prefect log, at ERROR, "Task run
    failed with exception" or "Encountered exception during execution" with its traceback, then "Finished in state
    Failed(...)" for that run. This filter drops the records whose exception is a user error, and the "Finished in
    state Failed" record of a run it dropped one for. Everything else passes: a bug keeps its traceback, and the
    Prefect API (the UI) still gets every record (the filter sits on the console handler only).
    """

    def __init__(self) -> None:
        super().__init__()
        self.user_error_runs: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, LatentAtlasError):
            if run_id is not None:
                self.user_error_runs.add(str(run_id))
            return False
        return not (run_id is not None and str(run_id) in self.user_error_runs
                    and record.getMessage().startswith("Finished in state Failed"))


def quiet_user_errors_on_console() -> None:
    """Put a :class:`UserErrorConsoleFilter` on this process's Prefect console handlers (once; idempotent).

    Called by the driver before a flow and by every chunk task, so worker processes (Dask, Ray) get it too."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and \
                not any(isinstance(existing, UserErrorConsoleFilter) for existing in handler.filters):
            handler.addFilter(UserErrorConsoleFilter())


@task(name="chunk", task_run_name="{stage_name}-chunk-{index:05d}", cache_policy=NO_CACHE, retries=0)
def run_chunk(spec: StageSpec, stage_name: str, index: int) -> ChunkReport:
    """Write chunk ``index`` of the stage ``spec`` describes, in whichever process the task runner chose; log what
    it did to the task run (shown on its page in the UI)."""
    quiet_user_errors_on_console()
    report = run_chunk_from_spec(spec, index)
    get_run_logger().info(_chunk_line(stage_name, report))
    return report


def _chunk_line(stage_name: str, report: ChunkReport) -> str:
    """One line on a written chunk: what a user watching the run wants to see."""
    rate = report.samples / report.compute_s if report.compute_s > 0 else float("inf")
    unit = "images" if stage_name in ("synthesize", "label") else "samples"
    gpu = f", peak GPU memory {report.gpu_peak_bytes / 2**20:.0f} MiB" if report.gpu_peak_bytes is not None else ""
    build = f" (+{report.build_s:.1f} s building the stage)" if report.build_s > 0 else ""
    return (f"{stage_name} chunk {report.index:05d}: {report.samples} samples in {report.compute_s:.2f} s "
            f"({rate:.1f} {unit}/s) on {report.device}{gpu}{build}; host {report.host}, pid {report.pid}")


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
    logger = get_run_logger()
    total, pending = stage.n_chunks, stage.pending
    done = total - len(pending)
    n_samples = stage.store.info.n_samples
    samples_done = n_samples - sum(stage.chunk_length(index) for index in pending)
    artifact_id = create_progress_artifact(progress=100.0 * done / total, key=f"{stage.name}-progress",
                                           description=f"latentatlas {stage.name}: chunks complete")
    logger.info(f"{stage.name}: {len(pending)} of {total} chunks to write ({samples_done}/{n_samples} samples "
                f"done) on {runtime.task_runner}, {runtime.max_workers} at once; store {stage.store.path}")
    reports = []
    with serving(stage) as spec, _placement(runtime), \
            tqdm(total=total, initial=done, desc=stage.name, unit="chunk", disable=not show_progress) as bar:
        start = time.perf_counter()
        futures = [run_chunk.submit(spec, stage.name, index) for index in pending]
        for future in as_completed(futures):
            report = future.result()  # re-raises a chunk's error; chunks already written stay valid
            reports.append(report)
            done += 1
            samples_done += report.samples
            bar.update(1)
            update_progress_artifact(artifact_id, progress=100.0 * done / total)
            logger.info(f"{_chunk_line(stage.name, report)}; {samples_done}/{n_samples} samples done "
                        f"({done}/{total} chunks)")
        wall_s = time.perf_counter() - start
    stage.finish()
    logger.info(f"{stage.name}: store complete, {n_samples} samples; chunks took {wall_s:.1f} s")
    return ChunkRun(stage.name, wall_s, tuple(sorted(reports, key=lambda report: report.index)))


def _stage_flow(stage_name: str, params: Params, data_dir: str, method: str | None, out_root: str) -> ChunkRun:
    with build_stage(stage_name, params, data_dir, method, OutputLayout(Path(out_root))) as stage:
        return run_chunks(stage)


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
    flows run their tasks on ``runtime.task_runner``; the others (fit) on threads. Torch runs
    :data:`stages.runtime.device.CPU_THREADS` intra-op threads in this thread and in the runner's threads (they start from
    its count); chunk tasks pin it themselves in worker processes. A user error is reported once, by the caller:
    :class:`UserErrorConsoleFilter` keeps Prefect's traceback of it off the terminal.
    """
    runtime = params.runtime
    quiet_user_errors_on_console()
    runner = chunk_task_runner(runtime) if chunked else ThreadPoolTaskRunner(max_workers=runtime.max_workers)
    prefect_flow = flow(name=flow_name, task_runner=runner, validate_parameters=False)(body)
    runtime = runtime if chunked else RuntimeParams()
    with pinned_threads(), prefect_api_for_workers(runtime), _contained_dask(runtime):
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
