"""Chunk tasks on worker processes: a Dask cluster writes the same bytes as threads; workers attach to the store the
driver prepared (never lock, prepare or wipe it) and refuse one whose fingerprint is not the driver's.

The end-to-end test runs real Prefect flows in this process against a real local Prefect server (started once for
the module) and real 2-worker Dask clusters: the one the runner starts per flow (``dask_address: null``) for
``sample``, then one the test starts and shares across flows (``dask_address: tcp://…``) for ``synthesize`` and
``label``, so both ways of finding a cluster are covered within the time budget. The same for a local Ray instance
when the optional ``ray`` extra is installed: CI installs it (``.ci/run``), and on CI the Ray test fails without it.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import pytest

from latentatlas.params import RuntimeParams
from latentatlas.stores import StoreError, ZarrChunkStore
from pipeline.placement import StageSpec, _on_cuda_device, run_unit_on, serving, worker_rank
from stages.runtime.chunked import ChunkedStage, StageAttachError, run_stage
from stages.sample import SampleStage
from tests.conftest import make_params, on_ci, tree_digest

STORES = ("latents.zarr", "images.zarr", "labels")


def _digest(data_dir: Path) -> dict[str, str]:
    digests = {f"{store}/{name}": value for store in STORES for name, value in tree_digest(data_dir / store).items()}
    digests["contact_sheet.png"] = tree_digest(data_dir)["contact_sheet.png"]
    return digests


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipeline.prefect_server import local_prefect_server

    with (
        local_prefect_server(tmp_path_factory.mktemp("prefect-server-home")) as url,
        temporary_settings(updates={PREFECT_API_URL: url}),
    ):
        yield url


SIZES = {"sample": {"n_samples": 400, "chunk_size": 100, "seed": 3}}


@pytest.fixture(scope="module")
def threads_run(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> dict[str, str]:
    """The reference: the spine on the threads runner (the digest of its stores)."""
    from pipeline.flows import run_stage_flow

    data_dir = tmp_path_factory.mktemp("threads") / "data"
    params = make_params(**SIZES, runtime={"task_runner": "threads", "max_workers": 2})
    for stage in ("sample", "synthesize", "label"):
        run = run_stage_flow(stage, params, data_dir)
        assert {report.pid for report in run.reports} == {os.getpid()}  # the driver's own threads…
        assert all(report.build_s == 0.0 for report in run.reports)  # …using the driver's stage: nothing rebuilt
    return _digest(data_dir)


def _check_worker_reports(runs: list) -> None:
    for run in runs:
        assert [report.index for report in run.reports] == [0, 1, 2, 3]  # each chunk written once
        pids = {report.pid for report in run.reports}
        assert os.getpid() not in pids and 1 <= len(pids) <= 2, run  # worker processes, never the driver
        # A worker process builds its stage once, at its first chunk of the stage, never per chunk.
        assert sum(report.build_s > 0 for report in run.reports) == len(pids), run


@pytest.mark.slow
def test_dask_workers_write_the_same_bytes_as_threads(tmp_path: Path, threads_run: dict[str, str]) -> None:
    from distributed import LocalCluster

    from pipeline.flows import run_stage_flow

    before = dict(os.environ)
    runs = [
        run_stage_flow(
            "sample", make_params(**SIZES, runtime={"task_runner": "dask", "max_workers": 2}), tmp_path / "dask"
        )
    ]
    assert dict(os.environ) == before  # the flow's own cluster leaves this process's environment as it was
    saved_environ = dict(os.environ)  # Dask's nannies set OMP_NUM_THREADS=1, ... in this process: put it back
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            shared = make_params(**SIZES, runtime={"task_runner": "dask", "dask_address": cluster.scheduler_address})
            runs += [run_stage_flow(stage, shared, tmp_path / "dask") for stage in ("synthesize", "label")]
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
    assert _digest(tmp_path / "dask") == threads_run
    _check_worker_reports(runs)


@pytest.mark.slow
def test_ray_workers_write_the_same_bytes_as_threads(tmp_path: Path, threads_run: dict[str, str]) -> None:
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        if on_ci():
            pytest.fail("runtime.task_runner: ray must be tested on CI: .ci/run installs the extra latentatlas[ray]")
        pytest.skip("runtime.task_runner: ray needs the optional extra latentatlas[ray]")
    import logging

    import ray

    from pipeline.flows import run_stage_flow

    params = make_params(**SIZES, runtime={"task_runner": "ray", "max_workers": 2})
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)  # shared by the three flows
    try:
        runs = [run_stage_flow(stage, params, tmp_path / "ray") for stage in ("sample", "synthesize", "label")]
    finally:
        ray.shutdown()
    assert _digest(tmp_path / "ray") == threads_run
    _check_worker_reports(runs)


def test_runner_refuses_a_remote_cluster_without_a_prefect_server() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipeline.flows import DistributedSetupError, prefect_api_for_workers

    remote = RuntimeParams(task_runner="dask", dask_address="tcp://10.0.0.1:8786")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(DistributedSetupError, match="prefect server start.*PREFECT_API_URL"):
            with prefect_api_for_workers(remote):
                pass


@pytest.fixture
def s3_server(monkeypatch):
    """A local S3 (moto) with one bucket; AWS_* set in this process's environment, which Dask workers inherit."""
    pytest.importorskip("s3fs", reason="S3 stores need the s3fs backend (pip install -e '.[dev]' or '.[s3]')")
    moto_server = pytest.importorskip("moto.server", reason="the local S3 needs moto (pip install -e '.[dev]')")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }.items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("latentatlas-runs")
    try:
        yield "s3://latentatlas-runs"
    finally:  # the cached filesystems stay: their finalizers close their sessions at exit
        server.stop()


def _object_digest(url: str) -> dict[str, str]:
    """sha256 of every object under ``url``, by key relative to it (as :func:`_digest` for a local data dir)."""
    import hashlib

    from latentatlas.locations import store_path

    root = store_path(url)
    prefix = root.path.rstrip("/") + "/"
    return {key[len(prefix) :]: hashlib.sha256(root.fs.cat_file(key)).hexdigest() for key in root.fs.find(root.path)}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*object stores have no locks")
def test_dask_workers_write_an_s3_store_byte_identical_to_threads(s3_server: str, threads_run: dict[str, str]) -> None:
    """Stores in S3 (a local moto server): the driver prepares each store there, two Dask worker processes write
    its chunks (each chunk one PUT), and every object equals the file a threads run wrote to a local disk."""
    from pipeline.flows import run_stage_flow

    url = f"{s3_server}/run"
    saved_environ = dict(os.environ)
    try:
        params = make_params(**SIZES, runtime={"task_runner": "dask", "max_workers": 2})
        runs = [run_stage_flow(stage, params, url) for stage in ("sample", "synthesize", "label")]
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
    assert _object_digest(url) == threads_run
    _check_worker_reports(runs)


# -- the spec path, in this process ---------------------------------------------------------------------------------


def _attach_stage(spec: StageSpec) -> ChunkedStage:
    return spec.build()


def test_worker_attach_writes_into_the_driver_store_without_locking_it(tmp_path: Path, tiny_params) -> None:
    reference = tmp_path / "reference"
    run_stage(SampleStage(tiny_params, reference))
    with SampleStage(tiny_params, tmp_path / "run") as driver:  # the driver holds the lock…
        spec = StageSpec.of(driver)
        assert len(pickle.dumps(spec)) < 16_000 and spec == StageSpec(**{**vars(spec), "params": None})
        worker = _attach_stage(spec)  # …and a worker attaches anyway, without preparing
        assert worker.attached and worker.store.info.fingerprint == spec.fingerprint
        for index in driver.pending:
            worker.run_chunk(index)
        with pytest.raises(StageAttachError, match="driver finishes"):
            worker.finish()
        driver.finish()
    assert tree_digest(tmp_path / "run") == tree_digest(reference)


def test_worker_attach_refuses_a_store_whose_fingerprint_changed(tmp_path: Path, tiny_params) -> None:
    with SampleStage(tiny_params, tmp_path) as driver:
        spec = StageSpec.of(driver)
    worker = _attach_stage(spec)
    with pytest.warns(UserWarning, match="wiping it and rebuilding"):
        run_stage(SampleStage(make_params(sample={"seed": 8}), tmp_path))  # another run rebuilt the store
    rebuilt = tree_digest(tmp_path)
    with pytest.raises(StageAttachError, match=f"the driver prepared {spec.fingerprint}: the store was replaced"):
        spec.check(worker.store)  # what every chunk task checks before writing
    with pytest.raises(StageAttachError, match="the store was replaced"):
        _attach_stage(spec)  # a fresh worker process
    with pytest.raises(StageAttachError, match="is the driver.s .*, but this worker computes .* differ"):
        # the store on disk now is the driver's (same fingerprint), but this worker's params describe another one
        on_disk = ZarrChunkStore.open(tmp_path / "latents.zarr").info.fingerprint
        _attach_stage(StageSpec(**{**vars(spec), "fingerprint": on_disk}))
    assert tree_digest(tmp_path) == rebuilt  # workers never wipe


def test_worker_attach_needs_the_data_dir_and_a_rebuildable_stage(tmp_path: Path, tiny_params) -> None:
    from stages.plugins.generators import build_generator

    with SampleStage(tiny_params, tmp_path / "data") as driver:
        spec = StageSpec.of(driver)
    with pytest.raises(StageAttachError, match="every worker sees"):
        _attach_stage(StageSpec(**{**vars(spec), "data_dir": str(tmp_path / "elsewhere")}))
    with SampleStage(tiny_params, tmp_path / "injected", generator=build_generator("dcgan-digiface")) as injected:
        with pytest.raises(ValueError, match="injected models"):
            StageSpec.of(injected)
    assert issubclass(StageAttachError, StoreError)  # the CLI reports it as one line


def test_chunk_tasks_in_the_driver_use_its_own_stage(tmp_path: Path, tiny_params) -> None:
    with SampleStage(tiny_params, tmp_path) as driver, serving(driver) as spec:
        report = run_unit_on(spec, 0)
        assert report.build_s == 0.0 and report.pid == os.getpid() and driver.store.chunk_done(0)
        assert (report.name, report.size, report.size_noun) == ("chunk 00000", 100, "samples")
        with pytest.raises(StageAttachError, match="already serves"):
            with serving(driver):
                pass


def test_one_worker_per_cuda_device_by_rank() -> None:
    params = make_params(synthesize={"device": "auto"}, label={"device": "cpu"})
    moved = _on_cuda_device(params, 3)
    assert (moved.synthesize.device, moved.label.device, moved.eval.device) == ("cuda:3", "cpu", "cuda:3")
    ranks = {}

    def record(key: str) -> None:
        ranks[key] = worker_rank()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda key: (record(key), threading.Event().wait(0.05)), ["a", "b"]))
    assert set(ranks.values()) <= {0, 1} and None not in ranks.values()
    assert worker_rank() is None  # the main thread has no rank
