"""Unsupervised direction discovery: deformators, the centroid loss, resumable training on the real face DCGAN,
the path length, and the ``voynov`` / ``centroid`` methods end to end (tiny K and batches: CPU, ~1 minute)."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch

from stages.latent.directions import DirectionSet
from stages.latent.metrics import perceptual_path_length
from stages.plugins.generators import build_generator
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError
from stages.plugins.methods.centroid import CentroidParams, fit_centroid
from stages.plugins.methods.naming import NamingParams
from stages.plugins.methods.unsupervised.deformator import DeformatorConfigError, build_deformator, direction_vectors
from stages.plugins.methods.unsupervised.metrics import reconstructor_accuracy
from stages.plugins.methods.unsupervised.training import (
    Objective,
    UnsupervisedParams,
    centroid_loss,
    resolve_n_directions,
    sample_magnitudes,
    train_deformator,
)
from stages.plugins.methods.voynov import VoynovParams, fit_voynov

CPU = torch.device("cpu")
VOYNOV = Objective(name="voynov", two_shifts=False, lambda_shift=0.25)


@pytest.fixture(scope="module")
def face_gan():
    return build_generator("dcgan-digiface")


# ---------------------------------------------------------------------------------------------------- deformators


def test_orthonormal_deformator_columns_are_orthonormal() -> None:
    deformator = build_deformator("orthonormal", n_directions=12, latent_dim=30, seed=3)
    with torch.no_grad():  # move far from the near-identity init, as training would
        deformator.log_rotation_half.normal_(0.0, 1.0)
    columns = deformator.direction_matrix().double()
    assert columns.shape == (30, 12)
    assert torch.allclose(columns.T @ columns, torch.eye(12, dtype=torch.float64), atol=1e-5)
    assert (columns - torch.eye(30, 12, dtype=torch.float64)).abs().max() > 0.1  # not just the identity
    # forward is the linear map of those columns: A(e_k ε) = ε q_k
    shift = deformator.shift(torch.tensor([4, 7]), torch.tensor([2.0, -3.0]))
    assert torch.allclose(shift.double(), torch.stack([2.0 * columns[:, 4], -3.0 * columns[:, 7]]), atol=1e-5)


def test_linear_deformator_shifts_by_exactly_epsilon_along_unit_columns() -> None:
    deformator = build_deformator("linear", n_directions=5, latent_dim=9, seed=1)
    with torch.no_grad():
        deformator.weight.mul_(torch.linspace(0.2, 7.0, 5))  # inflating a column must not lengthen its shift
    shift = deformator.shift(torch.tensor([0, 4, 4]), torch.tensor([3.0, -2.0, 0.5]))
    np.testing.assert_allclose(shift.norm(dim=1).detach().numpy(), [3.0, 2.0, 0.5], rtol=1e-5)
    weight = deformator.weight.detach()
    np.testing.assert_allclose(
        shift[1].detach().numpy(), (-2.0 * weight[:, 4] / weight[:, 4].norm()).numpy(), atol=1e-6
    )
    summary = direction_vectors(deformator, 0.5, 6.0)
    np.testing.assert_allclose(summary.gain.numpy(), 1.0, rtol=1e-6)


def test_linear_types_cap_the_number_of_directions() -> None:
    for deformator_type in ("linear", "orthonormal"):
        with pytest.raises(DeformatorConfigError, match="at most latent_dim = 100"):
            build_deformator(deformator_type, n_directions=101, latent_dim=100)
        with pytest.raises(DeformatorConfigError, match="at most latent_dim = 100"):
            resolve_n_directions(128, deformator_type, 100)
        assert resolve_n_directions(None, deformator_type, 100) == 100  # the papers' 128, capped (and logged)
    assert resolve_n_directions(None, "fc", 100) == 128
    assert build_deformator("fc", 128, 100).shift(torch.tensor([127]), torch.tensor([1.0])).shape == (1, 100)
    with pytest.raises(DeformatorConfigError, match="unknown deformator type"):
        build_deformator("spline", 4, 10)  # type: ignore[arg-type]


def test_fc_deformator_is_zero_at_zero_and_direction_is_the_mean_unit_shift() -> None:
    deformator = build_deformator("fc", n_directions=3, latent_dim=5, seed=0)
    with torch.no_grad():
        assert deformator.shift(torch.tensor([0, 1, 2]), torch.zeros(3)).abs().max() == 0
        summary = direction_vectors(deformator, epsilon_min=0.5, epsilon_max=6.0, n_magnitudes=4)
        magnitudes = torch.tensor([-6.0, -0.5, 0.5, 6.0])
        k = 1
        per_unit = deformator.shift(torch.full((4,), k), magnitudes) / magnitudes[:, None]
        expected = per_unit.mean(0) / per_unit.mean(0).norm()
    assert torch.allclose(summary.vectors[k], expected, atol=1e-6)
    assert torch.allclose(summary.vectors.norm(dim=1), torch.ones(3), atol=1e-6)
    assert 0 < float(summary.straightness[k]) <= 1
    assert float(summary.gain[k]) == pytest.approx(float(per_unit.norm(dim=1).mean()), rel=1e-6)


def test_magnitudes_follow_voynovs_scheme() -> None:
    magnitudes = sample_magnitudes(20000, 0.5, 6.0, torch.Generator().manual_seed(0))
    assert magnitudes.abs().min() == 0.5 and magnitudes.abs().max() <= 6.0
    assert abs(float((magnitudes > 0).float().mean()) - 0.5) < 0.02
    assert abs(float((magnitudes.abs() == 0.5).float().mean()) - 0.5 / 6.0) < 0.01  # |ε| < 0.5 raised to 0.5


# ------------------------------------------------------------------------------------------------- centroid loss


def test_centroid_loss_equals_a_hand_computed_value() -> None:
    # direction 0 has two codes, (3, 4) at ε = +2 and (0, -2) at ε = -1 (sign-aligned: (0, 2)); centroid (3, 6).
    # cos((3, 4), (3, 6)) = 33 / (5·√45);  cos((0, 2), (3, 6)) = 12 / (2·√45); directions 1 and 2 are singletons.
    shifts = torch.tensor([[3.0, 4.0], [0.0, -2.0], [1.0, 1.0], [5.0, 0.0]])
    indices = torch.tensor([0, 0, 1, 2])
    magnitudes = torch.tensor([2.0, -1.0, 1.0, 1.0])
    expected = ((1 - 33 / (5 * math.sqrt(45))) + (1 - 12 / (2 * math.sqrt(45))) + 0 + 0) / 4
    value = centroid_loss(shifts, indices, magnitudes, n_directions=3)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.030425, abs=1e-6)
    # a linear deformator's codes (ε·a_k) are already on their centroid's line, whatever the signs of ε
    column = torch.tensor([0.6, -0.8])
    linear_codes = torch.tensor([2.0, -1.0, 5.0])[:, None] * column
    assert (
        centroid_loss(linear_codes, torch.zeros(3, dtype=torch.long), torch.tensor([2.0, -1.0, 5.0]), 1).abs().item()
        < 1e-6
    )
    # it has gradients for the deformator to follow
    leaf = shifts.clone().requires_grad_(True)
    centroid_loss(leaf, indices, magnitudes, 3).backward()
    assert leaf.grad[:2].abs().sum() > 1e-3 and leaf.grad[2:].abs().max() < 1e-6  # singletons: cos ≡ 1


# ------------------------------------------------------------------------------------------------------- training


def test_training_on_the_face_gan_lowers_losses_and_raises_rca(face_gan) -> None:
    # lr 10× the paper's and the fc deformator (which can grow its shifts fast) so that 200 CPU steps show learning
    params = UnsupervisedParams(
        n_directions=8, deformator_type="fc", steps=200, batch_size=8, lr=1e-3, log_every=40, seed=0
    )
    reports: list[tuple[int, dict[str, float]]] = []
    result = train_deformator(face_gan, params, VOYNOV, 8, CPU, None, lambda s, t, m: reports.append((s, m)))
    assert [step for step, _ in reports] == [40, 80, 120, 160, 200]
    first, last = reports[0][1], reports[-1][1]
    assert set(first) >= {"loss_cls", "loss_shift", "loss", "accuracy", "steps_per_s"}
    assert last["loss_cls"] < 0.6 * first["loss_cls"], (first, last)
    assert last["loss_shift"] < 0.9 * first["loss_shift"], (first, last)
    accuracy = reconstructor_accuracy(
        face_gan,
        result.deformator,
        result.reconstructor,
        n_batches=4,
        batch_size=32,
        epsilon_min=0.5,
        epsilon_max=6.0,
        seed=99,
        device=CPU,
    )
    assert accuracy["rca"] > 0.6, accuracy  # chance is 1/8; seeds 0, 1, 2 gave 0.77, 1.0, 0.94
    assert accuracy["n_pairs"] == 128
    assert all(p.requires_grad for p in face_gan.net.parameters())  # frozen only while training
    assert not face_gan.net.training


def test_resume_after_a_kill_continues_from_the_checkpoint_bit_for_bit(
    face_gan, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = UnsupervisedParams(
        n_directions=4,
        deformator_type="orthonormal",
        steps=20,
        batch_size=4,
        lr=1e-3,
        checkpoint_every=10,
        log_every=5,
        seed=5,
    )

    class Killed(Exception):
        pass

    def kill_at_15(step: int, total: int, metrics: dict[str, float]) -> None:
        if step == 15:
            raise Killed  # after the step-10 checkpoint, before the step-20 one

    with pytest.raises(Killed):
        train_deformator(face_gan, params, VOYNOV, 4, CPU, tmp_path / "killed", kill_at_15)
    checkpoint = torch.load(tmp_path / "killed" / "voynov-checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 10

    seen: list[int] = []
    with caplog.at_level(logging.INFO, logger="stages.plugins.methods.unsupervised.training"):
        resumed = train_deformator(
            face_gan, params, VOYNOV, 4, CPU, tmp_path / "killed", lambda s, t, m: seen.append(s)
        )
    assert resumed.resumed_from == 10 and seen == [15, 20]
    assert "resuming" in caplog.text
    assert [entry["step"] for entry in resumed.history] == [5, 10, 15, 20]

    straight = train_deformator(face_gan, params, VOYNOV, 4, CPU, tmp_path / "straight")
    assert straight.resumed_from == 0
    for left, right in ((resumed.deformator, straight.deformator), (resumed.reconstructor, straight.reconstructor)):
        for (name, a), (_, b) in zip(left.state_dict().items(), right.state_dict().items()):
            assert torch.equal(a, b), name
    final = torch.load(tmp_path / "killed" / "voynov-checkpoint.pt", weights_only=True)
    reference = torch.load(tmp_path / "straight" / "voynov-checkpoint.pt", weights_only=True)
    assert final["step"] == reference["step"] == 20
    for index, state in reference["optimizer"]["state"].items():
        assert torch.equal(final["optimizer"]["state"][index]["exp_avg_sq"], state["exp_avg_sq"])
    assert torch.equal(final["rng_state"], reference["rng_state"])

    # other training params: the checkpoint is ignored, loudly, and training starts over
    caplog.clear()
    changed = params.model_copy(update={"lr": 2e-3, "steps": 1})
    with caplog.at_level(logging.WARNING, logger="stages.plugins.methods.unsupervised.training"):
        fresh = train_deformator(face_gan, changed, VOYNOV, 4, CPU, tmp_path / "killed")
    assert fresh.resumed_from == 0 and "starting fresh" in caplog.text


# --------------------------------------------------------------------------------------------------- path length


class LinearImageGenerator:
    """images = (z @ W) viewed as (N, 3, 4, 4): with the squared-L2 'distance' its PPL along n is ‖Wᵀn‖² exactly."""

    z_dim = 6
    latent_spaces = ("z",)

    def __init__(self) -> None:
        self.weight = torch.randn(6, 48, generator=torch.Generator().manual_seed(1))

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        return (latents @ self.weight).view(-1, 3, 4, 4)

    def map(self, latents_z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}


class SquaredL2(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b) ** 2).flatten(1).sum(1)


def test_path_length_matches_its_closed_form_on_a_linear_generator() -> None:
    generator = LinearImageGenerator()
    directions = torch.randn(3, 6, generator=torch.Generator().manual_seed(2)) * 4.0  # normalised inside
    ppl = perceptual_path_length(
        generator, directions, SquaredL2(), n_samples=10, delta=1e-2, batch_size=4, min_size=0, device="cpu"
    )
    unit = directions / directions.norm(dim=1, keepdim=True)
    expected = ((unit @ generator.weight) ** 2).sum(1).double().numpy()
    np.testing.assert_allclose(ppl, expected, rtol=1e-3)


def test_path_length_with_lpips_on_the_face_gan_is_stable_in_delta(face_gan) -> None:
    from stages.latent.perceptual import build_lpips

    metric = build_lpips("alex")
    axes = torch.eye(100)[:2]
    coarse = perceptual_path_length(face_gan, axes, metric, n_samples=6, delta=1e-3, reject_outliers=False)
    fine = perceptual_path_length(face_gan, axes, metric, n_samples=6, delta=1e-4, reject_outliers=False)
    assert np.all(fine > 0)
    np.testing.assert_allclose(fine, coarse, rtol=0.05)  # d ∝ δ²: the δ² normalisation holds at δ = 1e-4


# ------------------------------------------------------------------------------------------------------- methods


def _score_colour(images: torch.Tensor) -> pd.DataFrame:
    """A stand-in labeler: mean brightness and redness of (N, 3, H, W) images in [-1, 1]."""
    images = images.detach().float().cpu()
    return pd.DataFrame(
        {
            "brightness": images.mean(dim=(1, 2, 3)).numpy(),
            "redness": (images[:, 0] - images[:, 2]).mean(dim=(1, 2)).numpy(),
        }
    )


def _context(generator, tmp_path: Path) -> FitContext:
    return FitContext(
        latents={},
        labels=pd.DataFrame(),
        attributes=["brightness", "redness"],
        generator=generator,
        score_images=_score_colour,
        device=CPU,
        work_dir=tmp_path,
        input_fingerprint="store-abc",
    )


TINY = dict(
    n_directions=4,
    steps=6,
    batch_size=4,
    log_every=3,
    checkpoint_every=6,
    lr=1e-3,
    eval_batches=1,
    ppl_samples=4,
    ppl_net="alex",
    naming=NamingParams(n_samples=6, alpha=3.0),
)


def test_voynov_fit_returns_named_oriented_directions(face_gan, tmp_path: Path) -> None:
    assert {"voynov", "centroid"} <= set(METHODS.names())
    spec = METHODS.build("voynov")
    assert spec.params_model is VoynovParams and not spec.supervised and spec.needs_generator
    assert METHODS.build("centroid").needs_generator and not METHODS.build("centroid").separable
    params = VoynovParams(**TINY)
    directions = fit_voynov(_context(face_gan, tmp_path), params)

    assert directions.method == "voynov" and directions.space == "z"
    assert directions.names == ["c000", "c001", "c002", "c003"] and directions.vectors.shape == (4, 100)
    gram = directions.vectors.astype(np.float64) @ directions.vectors.T.astype(np.float64)
    np.testing.assert_allclose(gram, np.eye(4), atol=1e-5)  # orthonormal deformator → orthonormal directions
    # each vector is ± the normalised deformator column, the sign flipped so its attribute increases along it
    saved = torch.load(io.BytesIO(directions.extras["deformator.pt"]), weights_only=True)
    deformator = build_deformator(saved["type"], saved["n_directions"], saved["latent_dim"])
    deformator.load_state_dict(saved["state_dict"])
    columns = deformator.direction_matrix().detach().T.numpy()
    for k, name in enumerate(directions.names):
        stats = directions.stats[name]
        sign = -1.0 if stats["flipped"] else 1.0
        np.testing.assert_allclose(directions.vectors[k], sign * columns[k] / np.linalg.norm(columns[k]), atol=1e-5)
        assert stats["attribute"] in ("brightness", "redness") and stats["naming_source"] == "edit"
        assert stats["correlation"] >= 0
        assert stats["correlation"] == pytest.approx(max(abs(r) for r in stats["correlations"].values()), abs=1e-6)
        assert math.isfinite(stats["ppl"]) and stats["ppl"] > 0 and stats["deformator_index"] == k
    meta = directions.meta
    assert 0.0 <= meta["rca"] <= 1.0 and meta["rca_chance"] == 0.25 and meta["steps"] == 6
    assert meta["input_fingerprint"] == "store-abc" and VoynovParams(**meta["params"]) == params
    assert [entry["step"] for entry in meta["training_curve"]] == [3.0, 6.0]
    assert set(meta["final_losses"]) >= {"loss_cls", "loss_shift"}
    directions.save(tmp_path / "out")
    assert DirectionSet.load(tmp_path / "out").extras.keys() == {"deformator.pt"}

    # a finished run is resumed at its end: no training step is repeated
    again = fit_voynov(_context(face_gan, tmp_path), params)
    assert again.meta["resumed_from"] == 6
    np.testing.assert_array_equal(again.vectors, directions.vectors)


def test_centroid_fit_trains_two_shifts_with_the_centroid_loss(face_gan, tmp_path: Path) -> None:
    params = CentroidParams(**TINY)
    assert (params.deformator_type, params.lambda_shift, params.gamma_centroid) == ("fc", 0.5, 0.25)
    directions = fit_centroid(_context(face_gan, tmp_path), params)
    assert directions.method == "centroid" and directions.vectors.shape == (4, 100)
    np.testing.assert_allclose(np.linalg.norm(directions.vectors, axis=1), 1.0, atol=1e-5)
    meta = directions.meta
    assert meta["objective"] == {"name": "centroid", "two_shifts": True, "lambda_shift": 0.5, "gamma_centroid": 0.25}
    assert "loss_centroid" in meta["final_losses"] and 0 <= meta["final_losses"]["loss_centroid"] <= 2
    for name in directions.names:
        assert 0 < directions.stats[name]["straightness"] <= 1 and directions.stats[name]["gain"] > 0
    assert (tmp_path / "centroid-checkpoint.pt").is_file()


def test_params_and_inputs_are_checked(face_gan, tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError):
        VoynovParams(gamma_centroid=0.25)  # centroid-only field
    with pytest.raises(pydantic.ValidationError):
        VoynovParams(epsilon_min=7.0)  # above epsilon_max
    with pytest.raises(MethodInputError, match="at most latent_dim = 100"):
        fit_voynov(_context(face_gan, tmp_path), VoynovParams(n_directions=128, deformator_type="linear"))
    with pytest.raises(MethodInputError, match="needs the generator"):
        fit_centroid(_context(None, tmp_path), CentroidParams())
