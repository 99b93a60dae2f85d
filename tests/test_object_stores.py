"""Stores in an object store (``--data-dir s3://…``, here ``memory://``, fsspec's in-process object store): the
same contents as a local run, resume and rebuild by fingerprint, crash leftovers recognised, and clear errors.
Across processes (Dask workers writing to S3 on a local moto server): tests/test_distributed.py."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from latentatlas import dataset
from latentatlas.layout import LATENTS_STORE, OutputLayout
from latentatlas.locations import LocationError, is_remote, store_path
from latentatlas.stores import PARTIAL_MARKER, StoreError, ZarrChunkStore
from pipeline.cli import main
from stages.runtime.chunked import run_stage
from stages.sample import SampleStage
from tests.conftest import make_params, run_spine

pytestmark = pytest.mark.filterwarnings("ignore:.*object stores have no locks")


@pytest.fixture
def memory_dir():
    """A fresh prefix in fsspec's memory filesystem, removed afterwards."""
    location = store_path(f"memory://latentatlas-tests/{uuid.uuid4().hex}")
    yield location
    if location.exists():
        location.fs.rm(location.path, recursive=True)


def test_store_path_kinds(tmp_path) -> None:
    assert store_path("data") == Path("data") and type(store_path("data")) is type(Path("data"))
    assert store_path(f"file://{tmp_path}") == tmp_path
    remote = store_path("memory://bucket/run")
    assert is_remote(remote) and str(remote / "latents.zarr").endswith("bucket/run/latents.zarr")
    with pytest.raises(LocationError, match=r"ftp://host/run: stores cannot live on ftp://"):
        store_path("ftp://host/run")


def test_spine_in_an_object_store_matches_a_local_run(tmp_path, tiny_run, memory_dir) -> None:
    run_spine(make_params(), memory_dir)
    local, remote = dataset.open(tiny_run), dataset.open(str(memory_dir))  # the reader takes the URL string
    latents_local, scores_local = local.arrays()
    latents_remote, scores_remote = remote.arrays()
    np.testing.assert_array_equal(latents_remote, latents_local)
    np.testing.assert_array_equal(scores_remote, scores_local)
    np.testing.assert_array_equal(remote.images()[:], local.images()[:])
    assert remote.labels_frame().equals(local.labels_frame())
    assert (memory_dir / "contact_sheet.png").read_bytes() == (tiny_run / "contact_sheet.png").read_bytes()
    # Every object is a finished one: no temp names, no marker left behind.
    keys = memory_dir.fs.find(memory_dir.path)
    assert not [key for key in keys if key.endswith((".tmp", ".partial", PARTIAL_MARKER))], keys


def test_object_store_resume_and_rebuild(memory_dir) -> None:
    params = make_params()
    with SampleStage(params, memory_dir) as stage:  # killed after one chunk
        stage.run_chunk(0)
    first_chunk = ZarrChunkStore.open(memory_dir / LATENTS_STORE).read_chunk("z", 0)
    with SampleStage(params, memory_dir) as stage:
        assert stage.pending == [1, 2]  # resumed: the finished chunk is kept
    run_stage(SampleStage(params, memory_dir))
    store = ZarrChunkStore.open(memory_dir / LATENTS_STORE, require_complete=True)
    np.testing.assert_array_equal(store.read_chunk("z", 0), first_chunk)
    with pytest.warns(UserWarning, match="produced by other inputs"):
        with SampleStage(make_params(sample={"seed": 8}), memory_dir) as stage:
            assert stage.pending == [0, 1, 2]  # other params: wiped and rebuilt


def test_half_made_store_is_ours_and_rebuilt(memory_dir) -> None:
    """A crash while creating or wiping a store in an object store leaves its marker: the store is refused for
    reading, and the stage rebuilds it (a half store there has no rename to hide it)."""
    params = make_params()
    run_stage(SampleStage(params, memory_dir))
    path = memory_dir / LATENTS_STORE
    (path / PARTIAL_MARKER).write_bytes(b"creating\n")
    path.fs.rm((path / "zarr.json").path)  # the crash came before the group's metadata was written
    with pytest.raises(StoreError, match="stopped while creating or wiping"):
        ZarrChunkStore.open(path)
    with pytest.warns(UserWarning, match="rebuilding it"):
        run_stage(SampleStage(params, memory_dir))
    assert ZarrChunkStore.open(path, require_complete=True).pending_chunks() == []
    assert not (path / PARTIAL_MARKER).exists()


def test_data_dir_url_errors_are_one_line(tmp_path) -> None:
    result = CliRunner().invoke(main, ["sample", "--data-dir", "ftp://host/run"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --data-dir ftp://host/run: stores cannot live on ftp:// (a chunk written there could be seen half "
        "written); use a local path, a shared filesystem, or an object store: abfs://, abfss://, az://, gcs://, "
        "gs://, memory://, s3://, s3a://"
    ]
    if importlib.util.find_spec("gcsfs") is None:
        result = CliRunner().invoke(main, ["sample", "--data-dir", "gs://bucket/run"])
        assert result.exit_code == 1
        assert "gs://bucket/run: gs:// needs the fsspec backend 'gcsfs': pip install gcsfs" in result.output


def test_fit_and_evaluate_read_the_labeled_latents_from_a_url(tmp_path, memory_dir, monkeypatch) -> None:
    """fit and evaluate given an object-store data dir give what they give on a local copy of the same run."""
    import json

    import pandas as pd
    import xarray as xr

    from stages.evaluate import EvaluateStage
    from stages.fit import run_fit
    from stages.latent.perceptual import build_lpips
    from tests.conftest import run_toy_spine
    from tests.toy import make_world

    monkeypatch.chdir(tmp_path)  # fit's work dir (.cache/fit) is relative
    world = make_world(z_dim=16)
    params = make_params(
        sample={"n_samples": 200, "chunk_size": 100},
        fit={
            "methods": ["interfacegan"],
            "attributes": ["smile", "glasses"],
            "params": {"interfacegan": {"ratio": 0.2}},
        },
        eval={
            "n_samples": 8,
            "chunk_size": 8,
            "alphas": [-1.0, 0.0, 1.0],
            "attributes": ["smile"],
            "condition_on": [],
            "ppl_samples": 2,
            "grid_samples": 1,
            "device": "cpu",
        },
    )
    lpips = build_lpips("alex")
    metrics = {}
    for name, data_dir in (("local", tmp_path / "data"), ("remote", memory_dir)):
        run_toy_spine(params, data_dir, world)
        layout = OutputLayout(tmp_path / name)
        directions = run_fit(params, data_dir, "interfacegan", layout=layout)
        run_stage(
            EvaluateStage(
                params,
                data_dir,
                "interfacegan",
                layout=layout,
                generator=world.generator,
                labeler=world.labeler,
                lpips=lpips,
            )
        )
        metrics[name] = (directions.vectors, json.loads((tmp_path / name / "metrics/interfacegan.json").read_text()))
    np.testing.assert_array_equal(metrics["remote"][0], metrics["local"][0])
    assert metrics["remote"][1] == metrics["local"][1]
    # Users' own tools read the URL as they read the local folder.
    pd.testing.assert_frame_equal(pd.read_parquet(f"{memory_dir}/labels"), pd.read_parquet(tmp_path / "data/labels"))
    remote_z = xr.open_zarr(f"{memory_dir}/latents.zarr", consolidated=False)["z"].values
    np.testing.assert_array_equal(
        remote_z, xr.open_zarr(tmp_path / "data/latents.zarr", consolidated=False)["z"].values
    )
