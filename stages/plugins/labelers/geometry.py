"""Face geometry from MTCNN's output network (ONet) run on the whole face crop: confidence, head pose, mouth width.

Full MTCNN detection (P-, R-, ONet over an image pyramid) is ~100× too slow for the pipeline; our images are already
centred face crops, so the frame itself stands in for the box that RNet would hand to ONet, and ONet alone gives
the face probability and five landmarks. Shapes for a batch of N:

    (N, 3, 48, 48) → Conv 3×3 (32) + PReLU → MaxPool 3/2 (ceil) → Conv 3×3 (64) + PReLU → MaxPool 3/2 (ceil)
      → Conv 3×3 (64) + PReLU → MaxPool 2/2 (ceil) → Conv 2×2 (128) + PReLU → (N, 128, 3, 3)
      → flatten in (W, H, C) order (the Caffe model was trained on transposed images) → Linear 1152→256 + PReLU
      → box regression (N, 4), landmarks (N, 10), face logits (N, 2)

The architecture and the (W, H, C) flattening are facenet_pytorch's ``ONet``; its module imports torchvision and
more, so the 40 lines are restated here and loaded from the same ``onet.pt`` state dict. Input normalisation as in
facenet_pytorch's ``detect_face``: bytes x ↦ (x − 127.5) · 0.0078125, i.e. images in [-1, 1] times 127.5/128; the
resize to 48×48 is its ``imresample`` (area interpolation). Landmarks come out as fractions of the box,
``(x1..x5, y1..y5)``: eye on the image's left, eye on the image's right, nose tip, mouth corner on the image's left,
mouth corner on the image's right (``detect_face`` maps them to pixels as ``box_w · x + box_x − 1``; with the whole
frame as the box that is ``W · x``).

Columns, in image coordinates (x to the right, y down), ``d`` = inter-ocular distance (eye centre to eye centre):

- ``face_confidence``: ONet's probability that the crop is a face (the pose columns mean little when it is low).
- ``yaw``: offset of the nose tip from the eye midpoint along the eye line, over d. Positive = the nose points to the
  image's right, i.e. the face is turned toward the image's right (the subject's left). ~0 for a frontal face.
- ``roll``: angle of the line from the image-left eye to the image-right eye, in degrees, positive when the
  image-right eye is lower (the head is rotated clockwise as seen in the image).
- ``pitch``: proxy from where the nose tip sits between the eye line (0) and the mouth-corner line (1), measured
  perpendicular to the eye line: ``FRONTAL_NOSE_POSITION − position``. Positive = nose tip closer to the eyes = head
  tilted up (chin up); negative = head tilted down. Centred by a constant measured on frontal DCGAN faces (see
  ``FRONTAL_NOSE_POSITION``), so it is a relative, not an angular, measure.
- ``mouth_width``: distance between the mouth corners over d (smiles widen it). Five landmarks have no upper or lower
  lip point, so how far the mouth is *open* cannot be measured from them.

A horizontal flip of the image mirrors the landmarks, so yaw and roll change sign and the others stay.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stages.plugins.labelers.base import TorchLabeler, run_in_chunks
from stages.runtime.weights import WEIGHTS, weights_path

GEOMETRY_ATTRIBUTES: tuple[str, ...] = ("face_confidence", "yaw", "roll", "pitch", "mouth_width")
#: Bumped whenever the preprocessing or a column's definition changes.
PREPROCESSING_VERSION = "onet-frame48-v1"
ONET_INPUT_SIZE = 48
#: detect_face: (byte − 127.5) · 0.0078125; for images in [-1, 1] (byte = 127.5 · (x + 1)) that is x · 127.5/128.
ONET_INPUT_SCALE = 127.5 * 0.0078125
#: Median nose-tip position between the eye line (0) and the mouth line (1) over the 390 of 1024 seeded
#: ``dcgan-digiface`` faces (torch.manual_seed(0), randn(1024, 100)) with |yaw| < 0.1 and face_confidence > 0.9:
#: the zero of the ``pitch`` column.
FRONTAL_NOSE_POSITION = 0.573
#: Inter-ocular distances below this fraction of the frame width are clamped (non-faces), to keep ratios finite.
MIN_EYE_DISTANCE = 1e-3


class ONet(nn.Module):
    """MTCNN's output network: (N, 3, 48, 48) normalised RGB → (box (N, 4), landmarks (N, 10), face logits (N, 2)).

    Parameter names match facenet_pytorch's ``ONet`` so that ``onet.pt`` loads strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)  # face / not-face logits (facenet_pytorch applies the softmax in forward)
        self.dense6_2 = nn.Linear(256, 4)  # box regression
        self.dense6_3 = nn.Linear(256, 10)  # landmarks: x1..x5, y1..y5 as fractions of the box

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).flatten(1)  # (N, W, H, C): the transposed order the dense weights expect
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x)


def load_onet(path: Path) -> ONet:
    """ONet with facenet_pytorch's pretrained ``onet.pt`` state dict (all keys must match)."""
    net = ONet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


def onet_input(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [-1, 1] → (N, 3, 48, 48) ONet input: area resize of the whole frame, then normalised."""
    if images.shape[-2:] != (ONET_INPUT_SIZE, ONET_INPUT_SIZE):
        images = F.interpolate(images, size=(ONET_INPUT_SIZE, ONET_INPUT_SIZE), mode="area")
    return images * ONET_INPUT_SCALE


def landmarks_to_pixels(landmarks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 10) ONet landmarks (x1..x5, y1..y5, fractions of the frame) → (N, 5, 2) pixel (x, y) positions."""
    scale = landmarks.new_tensor([width, height])
    return torch.stack((landmarks[:, :5], landmarks[:, 5:]), dim=-1) * scale


def pose_from_landmarks(
    points: torch.Tensor, frontal_nose_position: float = FRONTAL_NOSE_POSITION, min_eye_distance: float = 0.0
) -> torch.Tensor:
    """(N, 5, 2) landmarks (eye L, eye R, nose, mouth L, mouth R; L/R = image side) → (N, 4) yaw, roll, pitch,
    mouth_width as defined in the module docstring.

    Args:
        points: landmark positions in pixels (x right, y down).
        frontal_nose_position: the zero of ``pitch`` (see ``FRONTAL_NOSE_POSITION``).
        min_eye_distance: lower clamp, in pixels, of the eye distance and of the eye-line-to-mouth-line distance
            used as denominators (only degenerate landmarks of non-faces reach it).
    """
    eye_left, eye_right, nose, mouth_left, mouth_right = points.unbind(dim=1)
    eye_vector = eye_right - eye_left
    eye_distance = eye_vector.norm(dim=1).clamp_min(max(min_eye_distance, 1e-12))
    along = eye_vector / eye_distance[:, None]  # unit vector along the eye line, image-right for an upright face
    down = torch.stack((-along[:, 1], along[:, 0]), dim=1)  # perpendicular, image-down for an upright face
    eye_mid = (eye_left + eye_right) / 2
    nose_offset = nose - eye_mid
    mouth_offset = (mouth_left + mouth_right) / 2 - eye_mid
    yaw = (nose_offset * along).sum(dim=1) / eye_distance
    roll = torch.rad2deg(torch.atan2(eye_vector[:, 1], eye_vector[:, 0]))
    mouth_depth = (mouth_offset * down).sum(dim=1)
    nose_position = (nose_offset * down).sum(dim=1) / mouth_depth.clamp_min(max(min_eye_distance, 1e-12))
    pitch = frontal_nose_position - nose_position
    mouth_width = (mouth_right - mouth_left).norm(dim=1) / eye_distance
    return torch.stack((yaw, roll, pitch, mouth_width), dim=1)


class GeometryLabeler(TorchLabeler):
    """Face confidence and pose from ONet on the whole frame: (N, 3, H, W) → (N, 5).

    Columns: ``face_confidence, yaw, roll, pitch, mouth_width`` (definitions and signs in the module docstring).
    """

    name = "geometry"
    attributes = GEOMETRY_ATTRIBUTES

    def __init__(self, net: ONet, weights_sha256: str) -> None:
        self.net = net.eval().to(memory_format=torch.channels_last)
        super().__init__(
            self.net,
            fingerprint=f"geometry:mtcnn-onet@{weights_sha256}:{PREPROCESSING_VERSION}"
            f":frontal_nose={FRONTAL_NOSE_POSITION}",
        )

    @torch.inference_mode()
    def landmarks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) RGB in [-1, 1] → (face probability (N,), landmarks (N, 5, 2) in pixels of the frame)."""
        images = self.check(images)
        _, landmarks, face_logits = run_in_chunks(
            self.net, onet_input(images).contiguous(memory_format=torch.channels_last)
        )
        height, width = images.shape[-2:]
        return torch.softmax(face_logits.float(), dim=1)[:, 1], landmarks_to_pixels(landmarks.float(), height, width)

    @torch.inference_mode()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [-1, 1] → (N, 5) float32: face_confidence, yaw, roll, pitch, mouth_width."""
        face_probability, points = self.landmarks(images)
        pose = pose_from_landmarks(points, min_eye_distance=MIN_EYE_DISTANCE * images.shape[-1])
        return torch.cat((face_probability[:, None], pose), dim=1)


def build_geometry_labeler() -> GeometryLabeler:
    """The geometry labeler with facenet_pytorch's pinned ONet weights (``mtcnn-onet``)."""
    return GeometryLabeler(load_onet(weights_path("mtcnn-onet")), WEIGHTS["mtcnn-onet"].sha256)
