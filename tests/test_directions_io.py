"""Published directions in and out: InterFaceGAN boundaries, GANSpace components, SeFa eigenvectors."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from stages.latent.directions import DirectionsError, DirectionSet
from stages.latent.interchange import export_interfacegan, import_directions, interfacegan_name


def _unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_interfacegan_file_names() -> None:
    from pathlib import Path

    assert interfacegan_name(Path("pggan_celebahq_age_boundary.npy"), None) == ("age", "z", [])
    assert interfacegan_name(Path("stylegan_ffhq_smile_w_boundary.npy"), None) == ("smile", "w", [])
    assert interfacegan_name(Path("pggan_celebahq_age_c_gender_eyeglasses_boundary.npy"), None) == (
        "age",
        "z",
        ["gender", "eyeglasses"],
    )
    assert interfacegan_name(Path("mygan_age_boundary.npy"), "mygan") == ("age", "z", [])
    assert interfacegan_name(Path("stylegan2_ffhq_w/boundary_Mouth_Slightly_Open.npy"), None) == (
        "mouth_slightly_open",
        "w",
        [],
    )
    with pytest.raises(DirectionsError, match="not an InterFaceGAN boundary name"):
        interfacegan_name(Path("age.npy"), None)


def test_interfacegan_round_trip(tmp_path) -> None:
    """Boundaries written as InterFaceGAN writes them come in with the right names, space and vectors, and go back
    out byte for byte."""
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 3, 16)
    published = tmp_path / "published"
    published.mkdir()
    for attribute, vector in zip(["age", "smile", "gender"], vectors):
        np.save(published / f"stylegan_ffhq_{attribute}_w_boundary.npy", vector[None, :])
    files = sorted(published.iterdir())
    imported = import_directions("interfacegan", files, "interfacegan-published")
    assert imported.space == "w" and imported.names == ["age", "gender", "smile"]
    np.testing.assert_array_equal(imported["smile"], vectors[1])
    assert imported.meta["imported"] and imported.meta["fingerprint"].startswith("imported-interfacegan-")

    out = tmp_path / "out"
    written = export_interfacegan(imported, out, "stylegan_ffhq")
    assert sorted(p.name for p in written) == sorted(p.name for p in files)
    for path in written:
        assert path.read_bytes() == (published / path.name).read_bytes()

    mixed = published / "stylegan_ffhq_pose_boundary.npy"
    np.save(mixed, vectors[0][None, :])
    with pytest.raises(DirectionsError, match="both Z and W"):
        import_directions("interfacegan", sorted(published.iterdir()), "mixed")
    bad = published / "stylegan_ffhq_age_c_gender_boundary.npy"
    np.save(bad, np.ones((2, 16)))
    with pytest.raises(DirectionsError, match=r"expected a \(1, D\) boundary, got shape \(2, 16\)"):
        import_directions("interfacegan", [bad], "bad")


def test_ganspace_and_sefa_files(tmp_path) -> None:
    rng = np.random.default_rng(1)
    components = _unit(rng, 5, 12) * 3.0  # GANSpace normalises; we do too
    ganspace_file = tmp_path / "stylegan2-ffhq_style_ipca_c5_n1000_w.npz"
    np.savez_compressed(
        ganspace_file,
        lat_comp=components[:, None, :],
        lat_stdev=np.arange(5, dtype=np.float32),
        var_ratio=np.linspace(0.5, 0.1, 5, dtype=np.float32),
        act_comp=np.zeros((5, 3)),
    )
    ganspace = import_directions("ganspace", [ganspace_file], "ganspace-published", n_components=3)
    assert ganspace.space == "w" and ganspace.names == ["c000", "c001", "c002"]
    np.testing.assert_allclose(ganspace.vectors, components[:3] / 3.0, atol=1e-6)
    assert ganspace.stats["c001"] == {"var_ratio": pytest.approx(0.4), "lat_stdev": 1.0}

    sefa_file = tmp_path / "sefa.npz"
    np.savez(sefa_file, boundaries=components, eigen_values=np.array([9.0, 4, 2, 1, 0.5]))
    sefa = import_directions("sefa", [sefa_file], "sefa-published")
    assert sefa.space == "z" and len(sefa.names) == 5 and sefa.stats["c000"]["eigen_value"] == 9.0

    with pytest.raises(DirectionsError, match="not a GANSpace components file"):
        import_directions("ganspace", [sefa_file], "wrong")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DirectionsError, match=r"broken\.npz: not a readable \.npz"):
        import_directions("ganspace", [tmp_path / "broken.npz"], "broken")


def test_cli_import_then_export(tmp_path) -> None:
    rng = np.random.default_rng(2)
    for attribute, vector in zip(["age", "smile"], _unit(rng, 2, 8)):
        np.save(tmp_path / f"pggan_celebahq_{attribute}_boundary.npy", vector[None, :])
    files = [str(p) for p in sorted(tmp_path.glob("*.npy"))]
    result = CliRunner().invoke(
        main,
        [
            "directions",
            "import",
            "--format",
            "interfacegan",
            "--name",
            "published",
            "--out-root",
            str(tmp_path / "out"),
            *files,
        ],
    )
    assert result.exit_code == 0, result.output
    loaded = DirectionSet.load(tmp_path / "out" / "directions" / "published")
    assert loaded.names == ["age", "smile"] and loaded.space == "z"
    result = CliRunner().invoke(
        main,
        [
            "directions",
            "export",
            "--method",
            "published",
            "--model",
            "pggan_celebahq",
            "--to",
            str(tmp_path / "back"),
            "--out-root",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == [
        "pggan_celebahq_age_boundary.npy",
        "pggan_celebahq_smile_boundary.npy",
    ]
    missing = CliRunner().invoke(
        main, ["directions", "import", "--format", "sefa", "--name", "x", str(tmp_path / "absent.npy")]
    )
    assert missing.exit_code == 1 and "absent.npy: no such file" in missing.output
