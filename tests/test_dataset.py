"""Reading the labeled latent dataset: our API, and the README's recipes for pandas, DuckDB, xarray and torch."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from latentatlas import dataset
from latentatlas.stores import StoreError
from stages.latent.streams import sample_latents_z
from tests.conftest import make_params, run_spine


def test_open_joins_latents_and_labels_by_sample_id(tiny_run) -> None:
    data = dataset.open(tiny_run)
    assert data.n_samples == 300 and data.spaces == ["z"] and data.has_images
    assert data.attributes == ["red", "green", "blue", "brightness"]
    latents_z, scores = data.arrays(["brightness", "red"])
    assert latents_z.shape == (300, 100) and scores.shape == (300, 2)
    np.testing.assert_array_equal(latents_z[200:], sample_latents_z(7, 2, 100, 100))
    frame = data.labels_frame()
    assert list(frame.index[:3]) == [0, 1, 2] and frame.index.name == "sample_id"
    np.testing.assert_array_equal(frame["red"].to_numpy(), scores[:, 1])
    with pytest.raises(KeyError, match="not in the labels"):
        data.arrays(["smile"])
    with pytest.raises(KeyError, match="latent space 'w' not stored"):
        data.latents("w")


def test_pandas_and_duckdb_read_the_labels_folder_as_one_table(tiny_run) -> None:
    frame = pd.read_parquet(tiny_run / "labels")
    assert len(frame) == 300 and sorted(frame["sample_id"]) == list(range(300))
    import duckdb

    with duckdb.connect() as connection:
        count, mean_red = connection.execute(
            f"SELECT count(*), avg(red) FROM read_parquet('{tiny_run}/labels/*.parquet')"
        ).fetchall()[0]
    assert count == 300
    assert mean_red == pytest.approx(frame["red"].mean(), rel=1e-5)


def test_xarray_opens_the_zarr_stores_with_named_dimensions(tiny_run) -> None:
    import xarray as xr

    latents = xr.open_zarr(tiny_run / "latents.zarr", consolidated=False)
    assert latents["z"].dims == ("sample", "z_dim") and latents["z"].shape == (300, 100)
    images = xr.open_zarr(tiny_run / "images.zarr", consolidated=False)
    assert images["images"].dims == ("sample", "y", "x", "rgb")
    np.testing.assert_array_equal(latents["z"][5].values, dataset.open(tiny_run).latents()[5])


def test_torch_dataset_items_match_the_stores(tiny_run) -> None:
    data = dataset.open(tiny_run)
    torch_data = data.torch_dataset(["red", "brightness"], images=True)
    assert len(torch_data) == 300
    item = torch_data[150]
    latents_z, scores = data.arrays(["red", "brightness"])
    assert item["sample_id"] == 150
    np.testing.assert_array_equal(item["z"].numpy(), latents_z[150])
    np.testing.assert_array_equal(item["labels"].numpy(), scores[150])
    assert item["image"].shape == (3, 64, 64)
    assert torch.isclose(item["image"][0].mean(), torch.tensor(float(scores[150, 0])), atol=1e-5)
    batch = next(iter(torch.utils.data.DataLoader(torch_data, batch_size=32)))
    assert batch["z"].shape == (32, 100) and batch["labels"].shape == (32, 2)
    with pytest.raises(IndexError):
        torch_data[300]


def test_open_refuses_incomplete_or_mismatched_stores(tmp_path, tiny_run) -> None:
    with pytest.raises(StoreError, match="no store here"):
        dataset.open(tmp_path)
    mixed = tmp_path / "mixed"
    run_spine(make_params(sample={"seed": 8}), mixed)
    shutil.rmtree(mixed / "labels")
    shutil.copytree(tiny_run / "labels", mixed / "labels")
    with pytest.raises(StoreError, match="computed from other images"):
        dataset.open(mixed)


def test_torch_dataset_checks_sample_ids(tmp_path, tiny_run) -> None:
    """Two label parts swapped: item 150 must not silently get another sample's labels."""
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_run, swapped)
    first, second = swapped / "labels" / "part-00000.parquet", swapped / "labels" / "part-00001.parquet"
    first.rename(tmp_path / "part"), second.rename(first), (tmp_path / "part").rename(second)
    torch_data = dataset.open(swapped).torch_dataset(["red"])
    with pytest.raises(StoreError, match=r"labels"):
        torch_data[150]
