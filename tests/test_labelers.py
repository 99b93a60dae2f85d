"""The ``faces`` labeler suite: real pretrained weights, ported correctly, plausible on DCGAN faces.

Everything runs on the CPU with the pinned weights packages installed (``make setup``); about 30 s in all.
"""

from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from stages.plugins.generators import build_generator
from stages.plugins.labelers import LabelerSuite, build_labeler
from stages.plugins.labelers import expression as expression_module
from stages.plugins.labelers.age_gender import (
    AGE_GENDER_ATTRIBUTES,
    CHIP_PADDING,
    DLIB_TEMPLATE_5,
    MEAN_EYE_CENTRES,
    build_age_gender_labeler,
    dlib_chip_square,
    fold_affine_into_conv,
)
from stages.plugins.labelers.expression import (
    EXPRESSIONS,
    KerasLayer,
    fer_grayscale_input,
    load_mini_xception,
    read_keras_graph,
)
from stages.plugins.labelers.geometry import GEOMETRY_ATTRIBUTES, load_onet, onet_input
from stages.runtime.weights import WEIGHTS, weights_path

EXPECTED_COLUMNS = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
    "age",
    "male",
    "face_confidence",
    "yaw",
    "roll",
    "pitch",
    "mouth_width",
)


@pytest.fixture(scope="module")
def suite() -> LabelerSuite:
    return build_labeler("faces")


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """64 DCGAN faces from seeded latents, (64, 3, 64, 64) in [-1, 1]."""
    generator = build_generator("dcgan-digiface")
    latents = torch.randn(64, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return generator.synthesize(latents).clamp(-1, 1)


@pytest.fixture(scope="module")
def scores(suite: LabelerSuite, faces: torch.Tensor) -> dict[str, torch.Tensor]:
    table = suite.score(faces)
    return {name: table[:, index] for index, name in enumerate(suite.attributes)}


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack((a, b)))[0, 1])


# ------------------------------------------------------------------------------------------------ suite contract


def test_suite_columns_are_the_concatenation(suite: LabelerSuite) -> None:
    assert isinstance(suite, LabelerSuite)
    assert [labeler.name for labeler in suite.labelers] == ["expression", "age_gender", "geometry"]
    assert suite.attributes == EXPRESSIONS + AGE_GENDER_ATTRIBUTES + GEOMETRY_ATTRIBUTES == EXPECTED_COLUMNS
    assert suite.attributes == tuple(a for labeler in suite.labelers for a in labeler.attributes)


def test_fingerprint_names_every_weights_file_and_preprocessing(suite: LabelerSuite) -> None:
    for name in ("fer-mini-xception", "age-v1", "gender-v1", "mtcnn-onet"):
        assert WEIGHTS[name].sha256 in suite.fingerprint
    for tag in ("fer-gray64-v1", "dlib-chip-fixed-v1", "onet-frame48-v1"):
        assert tag in suite.fingerprint
    assert build_labeler("faces").fingerprint == suite.fingerprint  # deterministic


def test_scores_shape_dtype_and_finite(suite: LabelerSuite, faces: torch.Tensor) -> None:
    table = suite.score(faces[:4])
    assert table.shape == (4, len(EXPECTED_COLUMNS)) and table.dtype == torch.float32
    assert torch.isfinite(table).all()
    assert suite.to(torch.device("cpu")) is suite


def test_batch_invariance(suite: LabelerSuite, faces: torch.Tensor) -> None:
    alone = suite.score(faces[:8])
    in_batch = suite.score(faces)[:8]
    torch.testing.assert_close(alone, in_batch, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(2, 1, 64, 64), r"\(N, 3, H, W\)"),
        (torch.zeros(3, 64, 64), r"\(N, 3, H, W\)"),
        (torch.zeros(0, 3, 64, 64), "at least one image"),
        (torch.zeros(2, 3, 8, 8), "at least 16"),
        (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "floating-point"),
        (torch.full((2, 3, 64, 64), 200.0), r"in \[-1, 1\]"),
        (torch.full((2, 3, 64, 64), float("nan")), r"in \[-1, 1\]"),
        (torch.zeros(2, 3, 64, 64, device="meta"), "are on meta"),
        (np.zeros((2, 3, 64, 64), dtype=np.float32), "torch.Tensor"),
    ],
)
def test_bad_input_is_refused(suite: LabelerSuite, bad, message: str) -> None:
    for labeler in suite.labelers:
        with pytest.raises(ValueError, match=message):
            labeler.score(bad)


def test_other_resolutions_give_the_same_labels(
    suite: LabelerSuite, faces: torch.Tensor, scores: dict[str, torch.Tensor]
) -> None:
    upscaled = suite.score(F.interpolate(faces, size=128, mode="bilinear", align_corners=False))
    column = {name: upscaled[:, index] for index, name in enumerate(suite.attributes)}
    confident = scores["face_confidence"] > 0.9
    assert correlation(scores["yaw"][confident], column["yaw"][confident]) > 0.95
    assert correlation(scores["age"], column["age"]) > 0.9
    expressions = torch.stack([scores[name] for name in EXPRESSIONS], 1).argmax(1)
    assert (upscaled[:, :7].argmax(1) == expressions).float().mean() > 0.8


# ---------------------------------------------------------------------------------------- plausibility on faces


def test_faces_are_found(scores: dict[str, torch.Tensor]) -> None:
    confidence = scores["face_confidence"]
    assert ((confidence >= 0) & (confidence <= 1)).all()
    assert (confidence > 0.9).float().mean() >= 0.8


def test_expression_probabilities(scores: dict[str, torch.Tensor]) -> None:
    probabilities = torch.stack([scores[name] for name in EXPRESSIONS], dim=1)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    torch.testing.assert_close(probabilities.sum(1), torch.ones(len(probabilities)), rtol=0, atol=1e-5)
    assert len(probabilities.argmax(1).unique()) >= 3  # not all the same class
    # Two independent networks agree on smiles: happier faces have wider mouths (measured r ≈ 0.53).
    confident = scores["face_confidence"] > 0.9
    assert correlation(scores["happy"][confident], scores["mouth_width"][confident]) > 0.25


def test_age_and_gender_plausible(scores: dict[str, torch.Tensor]) -> None:
    age, male = scores["age"], scores["male"]
    assert ((age >= 0.25) & (age <= 80)).all()
    assert 15 < float(age.median()) < 50 and float(age.std()) > 3
    assert ((male >= 0) & (male <= 1)).all()
    assert (male > 0.5).sum() >= 5 and (male < 0.5).sum() >= 5  # both classes present


def test_landmark_layout_is_upright(suite: LabelerSuite, faces: torch.Tensor) -> None:
    """Catches a transposed input or swapped x/y outputs: eyes left/right of each other, above nose, above mouth."""
    geometry = suite.labelers[2]
    confidence, points = geometry.landmarks(faces)
    mean = points[confidence > 0.9].mean(0)  # (5, 2) pixels: eye L, eye R, nose, mouth L, mouth R
    assert mean[0, 0] < mean[2, 0] < mean[1, 0] and mean[3, 0] < mean[2, 0] < mean[4, 0]
    assert max(mean[0, 1], mean[1, 1]) < mean[2, 1] < min(mean[3, 1], mean[4, 1])


def test_horizontal_flip_changes_the_sign_of_yaw(
    suite: LabelerSuite, faces: torch.Tensor, scores: dict[str, torch.Tensor]
) -> None:
    flipped = suite.score(faces.flip(-1))
    yaw_flipped = flipped[:, suite.attributes.index("yaw")]
    confident = scores["face_confidence"] > 0.9
    yaw, yaw_flipped = scores["yaw"][confident], yaw_flipped[confident]
    turned = yaw.abs() > 0.15
    assert turned.sum() >= 5
    assert (torch.sign(yaw_flipped[turned]) == -torch.sign(yaw[turned])).all()
    assert float((yaw + yaw_flipped).abs().median()) < 0.05  # the value, not only the sign (measured 0.05 mean)
    assert correlation(yaw, -yaw_flipped) > 0.9


@pytest.mark.parametrize("degrees", [10.0, -10.0])
def test_rotating_the_image_changes_roll_by_the_angle(
    suite: LabelerSuite, faces: torch.Tensor, scores: dict[str, torch.Tensor], degrees: float
) -> None:
    """Content rotated by +θ in image coordinates (y down, so clockwise on screen) lowers the image-right eye."""
    angle = math.radians(degrees)
    # grid_sample reads the input at R(−θ)·p for each output point p.
    theta = torch.tensor([[math.cos(angle), math.sin(angle), 0.0], [-math.sin(angle), math.cos(angle), 0.0]])
    grid = F.affine_grid(theta.expand(len(faces), 2, 3), list(faces.shape), align_corners=False)
    rotated = F.grid_sample(faces, grid, padding_mode="border", align_corners=False)
    roll = suite.labelers[2].score(rotated)[:, GEOMETRY_ATTRIBUTES.index("roll")]
    change = (roll - scores["roll"])[scores["face_confidence"] > 0.9]
    assert abs(float(change.median()) - degrees) < 3.0


# ------------------------------------------------------------------------------------------ port correctness


def _tf_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _patches(x: np.ndarray, kernel: int, stride: int, padding: str, fill: float = 0.0) -> np.ndarray:
    """NHWC → (N, H', W', k·k, C) windows, TensorFlow padding."""
    if padding == "same":
        (top, bottom), (left, right) = _tf_same(x.shape[1], kernel, stride), _tf_same(x.shape[2], kernel, stride)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    rows, cols = (x.shape[1] - kernel) // stride + 1, (x.shape[2] - kernel) // stride + 1
    windows = [
        x[:, i : i + stride * (rows - 1) + 1 : stride, j : j + stride * (cols - 1) + 1 : stride, :]
        for i in range(kernel)
        for j in range(kernel)
    ]
    return np.stack(windows, axis=3)


def keras_reference(file: h5py.File, gray_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """A plain float64 numpy reading of the Keras graph in the file: every layer's output by name (NHWC)."""
    layers = read_keras_graph(file)
    weights_group = file["model_weights"]

    def weights(name: str) -> dict[str, np.ndarray]:
        group = weights_group[name]
        return {
            n.decode().rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[n.decode()], np.float64)
            for n in group.attrs["weight_names"]
        }

    outputs: dict[str, np.ndarray] = {}
    for name, layer in layers.items():
        config, inputs = layer.config, [outputs[source] for source in layer.inputs]
        kind = layer.class_name
        if kind == "InputLayer":
            out = gray_nhwc.astype(np.float64)
        elif kind == "Conv2D":
            w = weights(name)
            kh, kw, c_in, c_out = w["kernel"].shape
            cols = _patches(inputs[0], kh, config["strides"][0], config["padding"])
            out = cols.reshape(*cols.shape[:3], -1) @ w["kernel"].reshape(kh * kw * c_in, c_out)
            out = out + w["bias"] if config["use_bias"] else out
        elif kind == "SeparableConv2D":
            w = weights(name)
            kh, kw, c_in, _ = w["depthwise_kernel"].shape
            cols = _patches(inputs[0], kh, config["strides"][0], config["padding"])
            depthwise = np.einsum("nhwkc,kc->nhwc", cols, w["depthwise_kernel"].reshape(kh * kw, c_in))
            out = depthwise @ w["pointwise_kernel"].reshape(c_in, -1)
        elif kind == "BatchNormalization":
            w = weights(name)
            out = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + config["epsilon"]) * w["gamma"] + w[
                "beta"
            ]
        elif kind == "Activation" and config["activation"] == "relu":
            out = np.maximum(inputs[0], 0)
        elif kind == "Activation" and config["activation"] == "softmax":
            e = np.exp(inputs[0] - inputs[0].max(-1, keepdims=True))
            out = e / e.sum(-1, keepdims=True)
        elif kind == "MaxPooling2D":
            out = _patches(
                inputs[0], config["pool_size"][0], config["strides"][0], config["padding"], fill=-np.inf
            ).max(axis=3)
        elif kind == "Add":
            out = inputs[0] + inputs[1]
        elif kind == "GlobalAveragePooling2D":
            out = inputs[0].mean(axis=(1, 2))
        else:
            raise ValueError(
                f"the numpy reference has no rule for Keras layer {kind} "
                f"{config.get('activation', '')}: extend it before trusting the comparison"
            )
        outputs[name] = out
    return outputs


@pytest.fixture(scope="module")
def gray_faces(faces: torch.Tensor) -> torch.Tensor:
    return fer_grayscale_input(faces[:6])


@pytest.fixture(scope="module")
def reference_outputs(gray_faces: torch.Tensor) -> dict[str, np.ndarray]:
    with h5py.File(weights_path("fer-mini-xception"), "r") as file:
        return keras_reference(file, gray_faces.permute(0, 2, 3, 1).numpy())


def test_mini_xception_matches_numpy_keras_reference(
    suite: LabelerSuite, gray_faces: torch.Tensor, reference_outputs: dict[str, np.ndarray]
) -> None:
    unfused = load_mini_xception(weights_path("fer-mini-xception"))
    fused = suite.labelers[0].net  # what the labeler runs: BatchNorms folded, channels-last
    with torch.inference_mode():
        for net in (unfused, fused):
            logits = net(gray_faces.contiguous(memory_format=torch.channels_last)).double().numpy()
            np.testing.assert_allclose(logits, reference_outputs["global_average_pooling2d_1"], atol=2e-5)
            np.testing.assert_allclose(
                torch.softmax(torch.from_numpy(logits), 1).numpy(), reference_outputs["predictions"], atol=1e-5
            )


def test_reference_detects_symmetric_pool_padding(
    gray_faces: torch.Tensor, reference_outputs: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: torch's symmetric pool padding (the usual porting slip) is visibly different."""
    monkeypatch.setattr(
        expression_module, "max_pool_same", lambda x, kernel=3, stride=2: F.max_pool2d(x, kernel, stride, padding=1)
    )
    with torch.inference_mode():
        logits = load_mini_xception(weights_path("fer-mini-xception"))(gray_faces).double().numpy()
    assert np.abs(logits - reference_outputs["global_average_pooling2d_1"]).max() > 1e-2


def test_first_separable_block_matches_naive_numpy(gray_faces: torch.Tensor) -> None:
    """One SeparableConv2D + BatchNorm(ε = 1e-3), written out with loops over the kernel from the raw HDF5 arrays."""
    net = load_mini_xception(weights_path("fer-mini-xception"))
    with torch.inference_mode():
        stem = F.relu(net.stem_norm2(net.stem_conv2(F.relu(net.stem_norm1(net.stem_conv1(gray_faces[:2]))))))
        block = net.blocks[0]
        actual = block.norm1(block.separable1(stem)).permute(0, 2, 3, 1).double().numpy()
    with h5py.File(weights_path("fer-mini-xception"), "r") as file:
        group = file["model_weights/separable_conv2d_1/separable_conv2d_1_1"]
        depthwise = np.asarray(group["depthwise_kernel:0"], np.float64)  # (3, 3, 8, 1)
        pointwise = np.asarray(group["pointwise_kernel:0"], np.float64)  # (1, 1, 8, 16)
        norm = {
            k: np.asarray(v, np.float64)
            for k, v in file["model_weights/batch_normalization_4/batch_normalization_4_1"].items()
        }
    x = stem.permute(0, 2, 3, 1).double().numpy()  # NHWC, (2, 60, 60, 8)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # "same", 3×3, stride 1
    height, width = x.shape[1:3]
    depth = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            depth += padded[:, i : i + height, j : j + width, :] * depthwise[i, j, :, 0]
    point = np.einsum("nhwc,co->nhwo", depth, pointwise[0, 0])
    expected = (point - norm["moving_mean:0"]) / np.sqrt(norm["moving_variance:0"] + 1e-3) * norm["gamma:0"] + norm[
        "beta:0"
    ]
    np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.parametrize("mutation", ["pool_padding", "missing_weight", "extra_layer"])
def test_loader_refuses_a_different_keras_file(tmp_path, mutation: str) -> None:
    path = tmp_path / "emotion_model.hdf5"
    shutil.copy(weights_path("fer-mini-xception"), path)
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        if mutation == "pool_padding":
            next(layer for layer in config["config"]["layers"] if layer["class_name"] == "MaxPooling2D")["config"][
                "padding"
            ] = "valid"
        elif mutation == "missing_weight":
            del file["model_weights/batch_normalization_7/batch_normalization_7_1/moving_variance:0"]
        else:
            config["config"]["layers"].append(
                {"class_name": "Dropout", "name": "dropout_1", "config": {}, "inbound_nodes": [[["add_4", 0, 0, {}]]]}
            )
        file.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ValueError):
        load_mini_xception(path)


def test_keras_graph_reader() -> None:
    with h5py.File(weights_path("fer-mini-xception"), "r") as file:
        layers = read_keras_graph(file)
    assert len(layers) == 46 and isinstance(layers["add_1"], KerasLayer)
    assert set(layers["add_1"].inputs) == {"max_pooling2d_1", "batch_normalization_3"}


def test_onet_matches_facenet_pytorch() -> None:
    mtcnn = pytest.importorskip("facenet_pytorch.models.mtcnn")
    reference = mtcnn.ONet(pretrained=False)
    reference.load_state_dict(torch.load(weights_path("mtcnn-onet"), weights_only=True))
    ours = load_onet(weights_path("mtcnn-onet"))
    images = onet_input(torch.rand(4, 3, 64, 64) * 2 - 1)
    with torch.inference_mode():
        (box, points, logits), (box_ref, points_ref, probability_ref) = ours(images), reference.eval()(images)
    torch.testing.assert_close(points, points_ref)
    torch.testing.assert_close(box, box_ref)
    torch.testing.assert_close(torch.softmax(logits, 1), probability_ref)


def test_folding_the_affine_layers_changes_nothing(suite: LabelerSuite, faces: torch.Tensor) -> None:
    for name, muls_left in (("age-v1", 0), ("gender-v1", 2)):  # gender keeps the two Muls that follow pools
        graph = onnx.load(str(weights_path(name))).graph
        folded = fold_affine_into_conv(onnx.load(str(weights_path(name)))).graph
        convs = sum(node.op_type == "Conv" for node in graph.node)
        assert sum(node.op_type == "Mul" for node in folded.node) == muls_left
        assert len(folded.node) == len(graph.node) - 2 * convs  # one Mul and one Add per convolution
    folded = suite.labelers[1].score(faces[:16])
    unfolded = build_age_gender_labeler(fold=False).score(faces[:16])
    torch.testing.assert_close(folded[:, 0], unfolded[:, 0], rtol=0, atol=2e-3)  # years
    torch.testing.assert_close(folded[:, 1], unfolded[:, 1], rtol=0, atol=1e-5)
    assert "folded=True" in suite.labelers[1].fingerprint


def test_chip_square_is_dlibs_for_the_eyes_of_dcgan_faces(suite: LabelerSuite, faces: torch.Tensor) -> None:
    corner, x_side, y_side = (np.array(v) for v in dlib_chip_square(MEAN_EYE_CENTRES))
    template = np.array(DLIB_TEMPLATE_5)
    for chip_eye, image_eye in zip(
        ((template[2] + template[3]) / 2, (template[0] + template[1]) / 2), MEAN_EYE_CENTRES
    ):
        unit = (CHIP_PADDING + chip_eye) / (1 + 2 * CHIP_PADDING)
        np.testing.assert_allclose(corner + unit[0] * x_side + unit[1] * y_side, image_eye, atol=1e-9)
    # The constants still describe this generator's faces.
    confidence, points = suite.labelers[2].landmarks(faces)
    eyes = (points[confidence > 0.9, :2] / faces.shape[-1]).mean(0)
    np.testing.assert_allclose(eyes.numpy(), np.array(MEAN_EYE_CENTRES), atol=0.02)


def test_pose_formulas_and_signs_on_hand_made_landmarks() -> None:
    from stages.plugins.labelers.geometry import FRONTAL_NOSE_POSITION, pose_from_landmarks

    # eye L, eye R, nose, mouth L, mouth R in pixels (x right, y down); eyes 20 px apart, mouth line 24 px below.
    frontal = torch.tensor(
        [[20.0, 30.0], [40.0, 30.0], [30.0, 30 + 24 * FRONTAL_NOSE_POSITION], [22.0, 54.0], [38.0, 54.0]]
    )
    turned_right = frontal.clone()
    turned_right[2, 0] += 4.0  # nose tip toward the image's right
    chin_up = frontal.clone()
    chin_up[2, 1] -= 6.0  # nose tip nearer the eye line
    centre = frontal.mean(0)
    angle = math.radians(15.0)  # +15° in image coordinates: the image-right eye goes down
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    rolled = (frontal - centre) @ rotation.T + centre
    yaw, roll, pitch, mouth_width = pose_from_landmarks(torch.stack((frontal, turned_right, chin_up, rolled))).T
    torch.testing.assert_close(yaw, torch.tensor([0.0, 0.2, 0.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(roll, torch.tensor([0.0, 0.0, 0.0, 15.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(pitch, torch.tensor([0.0, 0.0, 0.25, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(mouth_width, torch.full((4,), 0.8), atol=1e-5, rtol=0)
