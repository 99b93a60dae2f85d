"""Prefect flows: one flow per stage, one task per unit of work. Flows only orchestrate; the work is in ``stages/``.

Every stage runs the same way (:class:`stages.runtime.stage.Stage`): the flow opens it (locking and preparing its
output), submits a task for every pending unit (a chunk; a group of attributes for fit) to the task runner, shows a
terminal progress bar and a Prefect progress artifact that advance as units complete, then finishes the stage.
Import this module only after :func:`pipeline.settings.apply_defaults` (it imports Prefect).

Task runners (units that travel, i.e. chunks; fit's units always run on threads of the stage process, where the
latents they share are loaded):

- ``threads``: a ``ThreadPoolTaskRunner`` of ``max_workers`` threads in the stage process;
- ``dask``: a ``prefect_dask.DaskTaskRunner`` on a ``LocalCluster`` of ``max_workers`` single-threaded worker
  processes, or on the existing cluster at ``runtime.dask_address``;
- ``ray``: a ``prefect_ray.RayTaskRunner`` on a local Ray instance with ``max_workers`` CPUs, or on the cluster at
  ``runtime.ray_address``.

Whatever the runner, a task of a travelling stage receives a small :class:`pipeline.placement.StageSpec`, never the
stage: the stage process (the driver) holds the lock and prepares the store; each worker process attaches to it
(see ``pipeline/placement.py``). With threads the tasks find the driver's own stage in the process cache, so nothing
is built twice.

Torch runs :data:`stages.runtime.device.CPU_THREADS` intra-op threads per unit in flight, on every runner and for any
``max_workers``, as the local engine does: the bytes never depend on how a stage was run.

What a run logs: each unit task logs one line to its task run (samples, seconds, samples/s, device, peak GPU
memory on CUDA, host and pid), and the flow logs it again with the samples done so far, so the flow run's page in
the Prefect UI follows the run. These are INFO records: they go to the Prefect API, not the terminal (see
:mod:`pipeline.settings`), which shows the progress bar (and a long unit's progress lines: fit's training steps).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from tqdm import tqdm

from latentatlas.errors import LatentAtlasError
from latentatlas.locations import StorePath, location_string
from latentatlas.params import Params, RuntimeParams
from pipeline.catalog import build_stage, flow_name, stage_class
from pipeline.placement import StageSpec, UnitReport, run_unit_on, serving
from stages.runtime.device import pinned_threads
from stages.runtime.stage import Stage, UnitProgress


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
        return not (
            run_id is not None
            and str(run_id) in self.user_error_runs
            and record.getMessage().startswith("Finished in state Failed")
        )


def quiet_user_errors_on_console() -> None:
    """Put a :class:`UserErrorConsoleFilter` on this process's Prefect console handlers (once; idempotent).

    Called by the driver before a flow and by every unit task, so worker processes (Dask, Ray) get it too."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(existing, UserErrorConsoleFilter) for existing in handler.filters
        ):
            handler.addFilter(UserErrorConsoleFilter())


@task(name="unit", task_run_name="{stage_name}-{unit_slug}", cache_policy=NO_CACHE, retries=0)
def unit_task(target: StageSpec | Stage, stage_name: str, unit_slug: str, unit: int) -> UnitReport:
    """Run unit ``unit`` of ``target`` (a spec, in whichever process the task runner chose; or the driver's stage
    itself, in one of its threads), reporting a long unit's progress; log what it did to the task run (shown on its
    page in the UI)."""
    quiet_user_errors_on_console()
    report = run_unit_on(target, unit, progress=_unit_progress(stage_name, unit_slug))
    get_run_logger().info(_unit_line(stage_name, report))
    return report


def _unit_progress(stage_name: str, unit_slug: str) -> UnitProgress:
    """A long unit's progress (fit's training steps): a terminal line per report and a Prefect progress artifact."""
    artifact_id = None

    def report(step: int, total: int, metrics: dict[str, float]) -> None:
        nonlocal artifact_id
        fraction = 100.0 * step / max(total, 1)
        if artifact_id is None:
            key = re.sub(r"[^a-z0-9-]+", "-", f"{stage_name}-{unit_slug}-progress".lower())
            artifact_id = create_progress_artifact(
                progress=fraction, key=key, description=f"latentatlas {stage_name} {unit_slug}: steps"
            )
        else:
            update_progress_artifact(artifact_id, progress=fraction)
        shown = "  ".join(f"{key}={value:.4g}" for key, value in metrics.items())
        tqdm.write(f"{stage_name} [{unit_slug}] step {step}/{total}  {shown}")

    return report


def _unit_line(stage_name: str, report: UnitReport) -> str:
    """One line on a finished unit: what a user watching the run wants to see."""
    size_noun = report.size_noun
    rate = report.size / report.compute_s if report.compute_s > 0 else float("inf")
    gpu = f", peak GPU memory {report.gpu_peak_bytes / 2**20:.0f} MiB" if report.gpu_peak_bytes is not None else ""
    build = f" (+{report.build_s:.1f} s building the stage)" if report.build_s > 0 else ""
    return (
        f"{stage_name} {report.name}: {report.size} {size_noun} in {report.compute_s:.2f} s "
        f"({rate:.1f} {size_noun}/s) on {report.device}{gpu}{build}; host {report.host}, pid {report.pid}"
    )


@dataclass(frozen=True)
class UnitRun:
    """What one flow's unit phase did: wall seconds from the first submission to the last completion, and each
    unit's report (where it ran, build and compute seconds)."""

    stage: str
    wall_s: float
    reports: tuple[UnitReport, ...]


def unit_runtime(runtime: RuntimeParams, units_travel: bool) -> RuntimeParams:
    """Where a stage's unit tasks run: ``runtime`` as configured for a stage whose units travel; this process's
    threads (``max_workers`` of them) for one whose units do not (fit)."""
    if units_travel:
        return runtime
    return runtime.model_copy(update={"task_runner": "threads", "dask_address": None, "ray_address": None})


def run_units(stage: Stage, show_progress: bool = True) -> UnitRun:
    """Submit one task per pending unit, advancing a progress bar and a Prefect progress artifact as they finish,
    then finish the stage.

    The tasks go to the flow's task runner (see :func:`unit_task_runner`); for a stage whose units travel each
    receives the stage's spec, not the stage; the others' tasks run in this process's threads and receive the stage
    itself. Returns what the unit phase did (for benchmarks and logs).
    """
    runtime = unit_runtime(stage.params.runtime, stage.units_travel)
    logger = get_run_logger()
    total, pending = stage.n_units, stage.pending
    done = total - len(pending)
    sizes = [stage.unit_size(unit) for unit in range(total)]
    total_size = sum(sizes)
    size_done = total_size - sum(sizes[unit] for unit in pending)
    units, measure = f"{stage.unit_noun}s", stage.size_noun
    artifact_id = create_progress_artifact(
        progress=100.0 * done / max(total, 1),
        key=f"{stage.name}-progress",
        description=f"latentatlas {stage.name}: {units} complete",
    )
    logger.info(
        f"{stage.name}: {len(pending)} of {total} {units} to run ({size_done}/{total_size} {measure} "
        f"done) on {runtime.task_runner}, {runtime.max_workers} at once; output {stage.output}"
    )
    reports = []
    target = serving(stage) if stage.units_travel else contextlib.nullcontext(stage)
    with (
        target as task_target,
        _placement(runtime),
        tqdm(total=total, initial=done, desc=stage.name, unit=stage.unit_noun, disable=not show_progress) as bar,
    ):
        start = time.perf_counter()
        futures = [
            unit_task.submit(task_target, stage.name, stage.unit_name(unit).replace(" ", "-"), unit) for unit in pending
        ]
        for future in as_completed(futures):
            report = future.result()  # re-raises a unit's error; units already written stay valid
            reports.append(report)
            done += 1
            size_done += report.size
            bar.update(1)
            update_progress_artifact(artifact_id, progress=100.0 * done / total)
            logger.info(
                f"{_unit_line(stage.name, report)}; {size_done}/{total_size} {measure} done ({done}/{total} {units})"
            )
        wall_s = time.perf_counter() - start
    stage.finish()
    logger.info(f"{stage.name}: {stage.output} complete, {total_size} {measure}; {units} took {wall_s:.1f} s")
    return UnitRun(stage.name, wall_s, tuple(sorted(reports, key=lambda report: report.index)))


def _stage_flow(stage_name: str, params: Params, data_dir: str, options: dict[str, Any]) -> UnitRun:
    with build_stage(stage_name, params, data_dir, **options) as stage:
        return run_units(stage)


def _placement(runtime: RuntimeParams) -> contextlib.AbstractContextManager[Any]:
    """Where unit tasks may run. Ray with CUDA devices here: each task asks for one GPU, so Ray runs one task per
    device and sets ``CUDA_VISIBLE_DEVICES`` for it (Dask and threads: by worker rank, see
    :func:`pipeline.placement.cuda_slot`)."""
    if runtime.task_runner == "ray" and torch.cuda.is_available():
        from prefect_ray.context import remote_options

        return remote_options(num_gpus=1)
    return contextlib.nullcontext()


def _remote_address(runtime: RuntimeParams) -> str | None:
    return {"dask": runtime.dask_address, "ray": runtime.ray_address}.get(runtime.task_runner)


def unit_task_runner(runtime: RuntimeParams) -> TaskRunner:
    """The Prefect task runner for unit tasks that ``runtime`` asks for."""
    if runtime.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if runtime.dask_address:
            return DaskTaskRunner(address=runtime.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": runtime.max_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    if runtime.task_runner == "ray":
        from prefect_ray import RayTaskRunner

        if runtime.ray_address:
            return RayTaskRunner(address=runtime.ray_address)
        return RayTaskRunner(
            init_kwargs={"num_cpus": runtime.max_workers, "include_dashboard": False, "logging_level": logging.WARNING}
        )
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
            f"export PREFECT_API_URL=http://<this host>:4200/api"
        )
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
    environ = {
        **dask.config.get("distributed.nanny.pre-spawn-environ", default={}),
        "DASK_LOGGING__DISTRIBUTED": "warning",
    }
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


def run_stage_flow(stage_name: str, params: Params, data_dir: StorePath, **options: Any) -> UnitRun:
    """Run stage ``stage_name`` of the catalog (built with ``options``) as a Prefect flow named
    ``latentatlas-<stage>`` (``latentatlas-<stage>-<method>`` for a method's fit or evaluation), one task per
    pending unit; return what its unit phase did.

    The units run on ``runtime.task_runner`` when they travel, else on ``max_workers`` threads of this process
    (:func:`unit_runtime`). The validated params object goes to the flow as it is (Prefect records it as JSON for the
    UI). Torch runs :data:`stages.runtime.device.CPU_THREADS` intra-op threads in this thread and in the runner's
    threads (they start from its count); unit tasks pin it themselves in worker processes. A user error is reported
    once, by the caller: :class:`UserErrorConsoleFilter` keeps Prefect's traceback of it off the terminal.
    """
    runtime = unit_runtime(params.runtime, stage_class(stage_name).units_travel)
    quiet_user_errors_on_console()
    prefect_flow = flow(
        name=flow_name(stage_name, **options), task_runner=unit_task_runner(runtime), validate_parameters=False
    )(_stage_flow)
    with pinned_threads(), prefect_api_for_workers(runtime), _contained_dask(runtime):
        return prefect_flow(stage_name, params, location_string(data_dir), options)
