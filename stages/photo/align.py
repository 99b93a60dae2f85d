"""Real photos in: read them (any mode, EXIF-rotated), find the face, and warp it onto a generator's canonical crop.

**Reading.** :func:`load_photo` returns (H, W, 3) uint8 RGB whatever the file holds: grayscale and palette images are
converted, an alpha channel is composited over white, 16-bit images are scaled down, and the EXIF orientation is
applied. An unreadable file or one smaller than :data:`PHOTO_MIN_SIDE` a side is a :class:`PhotoError`.

**Detection.** :class:`FaceDetector` runs facenet-pytorch's full MTCNN (P-Net over an image pyramid, R-Net, O-Net,
non-maximum suppression) and returns every face with its box, probability and five landmarks (eye on the image's
left, eye on the image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right), the
largest face first. Its three state dicts ship inside ``facenet-pytorch==2.6.0`` and are sha256-checked here before
the package loads them from the same files (:data:`MTCNN_WEIGHTS`); nothing is downloaded.

**Alignment** (as FFHQ's alignment does, with a least-squares fit instead of its hand-made quad): the similarity
transform (rotation, uniform scale, translation; Umeyama 1991) that maps the photo's two eyes and two mouth corners
onto the generator's canonical positions of them (:class:`CanonicalFace`), applied with bilinear sampling,
supersampled and box-filtered when it shrinks the photo (no aliasing), mirroring the photo at its borders. The nose
is left out of the fit: its position moves with the head's yaw and pitch. Canonical faces:

- ``dcgan-digiface`` (the embedded 64×64 DCGAN): where its own faces' landmarks are, measured with the same
  detector (:data:`DCGAN_DIGIFACE_FACE`, reproduced by :func:`measure_canonical_face`).
- any other face generator: FFHQ's (:data:`FFHQ_FACE`), the five-point template of FFHQ-aligned faces that
  facexlib/GFPGAN warp faces onto, as fractions of the crop (StyleGAN's FFHQ models were trained on such crops).

Without alignment (not a face model, or ``--no-align``) the largest centred square of the photo is resized to the
generator's resolution with the same antialiased sampling.

Coordinates: continuous pixel coordinates, x to the right, y down, (0, 0) the top-left corner of the top-left
pixel; canonical positions are fractions of the crop side in the same convention.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from latentatlas.errors import LatentAtlasError
from stages.runtime.weights import WEIGHTS, weights_path

#: Photos smaller than this (pixels, the shorter side) carry too little of a face to invert.
PHOTO_MIN_SIDE = 32
#: Supersampling per output pixel is capped at this factor; a photo that would need more is box-reduced first.
MAX_SUPERSAMPLING = 8

#: MTCNN's three networks inside facenet-pytorch, pinned in :data:`stages.runtime.weights.WEIGHTS`.
MTCNN_WEIGHTS: tuple[str, ...] = ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet")

LANDMARK_NAMES: tuple[str, ...] = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
#: Rows of the five landmarks the similarity transform is fitted to: both eyes and both mouth corners.
FIT_LANDMARKS: tuple[int, ...] = (0, 1, 3, 4)


class PhotoError(LatentAtlasError, ValueError):
    """A photo that cannot be read, or is too small to invert."""


class FaceDetectionError(LatentAtlasError, ValueError):
    """No face, several faces without ``--face-index``, or a face index that does not exist."""


@dataclass(frozen=True)
class CanonicalFace:
    """Where a generator's faces have their landmarks.

    Attributes:
        name: what the template is (``dcgan-digiface``, ``ffhq``).
        points: (5, 2) float (x, y) of :data:`LANDMARK_NAMES` as fractions of the crop side.
        source: how the points were obtained (measured, or whose template).
    """

    name: str
    points: tuple[tuple[float, float], ...]
    source: str

    def array(self, size: int) -> np.ndarray:
        """(5, 2) float64 positions in pixels of a ``size``×``size`` crop."""
        return np.asarray(self.points, dtype=np.float64) * size


#: facexlib's ``face_template`` for 512-px FFHQ-aligned crops (GFPGAN / CodeFormer warp faces onto it), / 512.
FFHQ_FACE = CanonicalFace(
    "ffhq",
    (
        (192.98138 / 512, 239.94708 / 512),
        (318.90277 / 512, 240.1936 / 512),
        (256.63416 / 512, 314.01935 / 512),
        (201.26117 / 512, 371.41043 / 512),
        (313.08905 / 512, 371.15118 / 512),
    ),
    "facexlib's 5-point face_template of FFHQ-aligned 512-px crops, divided by 512",
)

#: Median landmarks of ``dcgan-digiface`` faces: ``measure_canonical_face(build_generator("dcgan-digiface"),
#: FaceDetector("cpu"), n_images=512, seed=0)`` — 512 faces from ``torch.Generator().manual_seed(0)`` normals,
#: upscaled bilinearly to 160 px (MTCNN's smallest face is 20 px), the 481 with exactly one face of probability
#: ≥ 0.95 kept, the per-coordinate median taken and divided by 160.
DCGAN_DIGIFACE_FACE = CanonicalFace(
    "dcgan-digiface",
    ((0.349193, 0.487093), (0.665859, 0.480919), (0.503625, 0.689064), (0.372858, 0.85623), (0.645134, 0.851375)),
    "measure_canonical_face(dcgan-digiface, n_images=512, seed=0, upscale=160): median MTCNN landmarks of the "
    "481 of 512 generated faces with one face of probability >= 0.95",
)

#: Canonical faces of the generators known to be face models (alignment on by default for them).
CANONICAL_FACES: dict[str, CanonicalFace] = {"dcgan-digiface": DCGAN_DIGIFACE_FACE}


def is_face_generator(generator_name: str) -> bool:
    """Whether photos for ``generator_name`` are aligned by default (the embedded face DCGAN)."""
    return generator_name in CANONICAL_FACES


def canonical_face_for(generator_name: str) -> CanonicalFace:
    """The canonical face of ``generator_name``: its measured one, else FFHQ's."""
    return CANONICAL_FACES.get(generator_name, FFHQ_FACE)


# ---------------------------------------------------------------------------------------------------- reading


def load_photo(path: Path, min_side: int = PHOTO_MIN_SIDE) -> np.ndarray:
    """The photo at ``path`` as (H, W, 3) uint8 RGB, upright (EXIF orientation applied).

    Grayscale, palette, CMYK and 16-bit images are converted; an alpha channel is composited over white.

    Raises:
        PhotoError: the file is missing or not a readable image, or its shorter side is below ``min_side``.
    """
    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise PhotoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PhotoError(f"{path}: is a folder, expected an image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise PhotoError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
    width, height = image.size
    if min(width, height) < min_side:
        raise PhotoError(f"{path}: {width}×{height} pixels is too small to invert (at least {min_side} px a side)")
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode → (H, W, 3) uint8 RGB (alpha over white, 16-bit and float scaled to 8 bits)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = (
            65535.0
            if image.mode.startswith("I;16") or values.max() > 255
            else (1.0 if image.mode == "F" and values.max() <= 1.0 else 255.0)
        )
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class DetectedFace:
    """One face MTCNN found.

    Attributes:
        box: (x0, y0, x1, y1) in photo pixels.
        probability: MTCNN's face probability.
        points: (5, 2) float64 (x, y) landmarks (:data:`LANDMARK_NAMES`) in photo pixels.
    """

    box: tuple[float, float, float, float]
    probability: float
    points: np.ndarray

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def verified_mtcnn_weights() -> dict[str, Path]:
    """The paths of MTCNN's P-, R- and O-Net state dicts inside facenet-pytorch, each sha256-checked.

    Raises:
        WeightsError: facenet-pytorch is not installed, a file is missing, or its hash differs.
    """
    return {name: weights_path(name) for name in MTCNN_WEIGHTS}


class FaceDetector:
    """facenet-pytorch's full MTCNN on ``device``: (H, W, 3) uint8 photos → every face, largest first.

    Args:
        device: where the three networks run.
        min_face_size: smallest face side searched for, in pixels (MTCNN's pyramid starts there).
        thresholds: P-, R-, O-Net face probability thresholds (MTCNN's defaults).
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    ) -> None:
        verified_mtcnn_weights()  # the package loads these very files
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from facenet_pytorch import MTCNN  # imports torchvision: only when a face is to be found

        self.device = torch.device(device)
        self.mtcnn = MTCNN(
            keep_all=True,
            device=self.device,
            min_face_size=min_face_size,
            thresholds=list(thresholds),
            post_process=False,
            select_largest=True,
        )
        hashes = ":".join(WEIGHTS[name].sha256[:12] for name in MTCNN_WEIGHTS)
        self.fingerprint = f"mtcnn@{hashes}:min={min_face_size}:t={list(thresholds)}"

    def detect(self, photo: np.ndarray) -> list[DetectedFace]:
        """(H, W, 3) uint8 RGB → the faces found (empty when none), largest box first."""
        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise PhotoError(f"face detection expects an (H, W, 3) uint8 photo, got {photo.shape} {photo.dtype}")
        with torch.inference_mode():
            boxes, probabilities, points = self.mtcnn.detect(Image.fromarray(photo), landmarks=True)
        if boxes is None:
            return []
        faces = [
            DetectedFace(
                tuple(float(v) for v in np.asarray(box, dtype=np.float64)),
                float(probability),
                np.asarray(landmarks, dtype=np.float64).reshape(5, 2),
            )
            for box, probability, landmarks in zip(boxes, probabilities, points)
        ]
        return sorted(faces, key=lambda face: -face.area)


def select_face(faces: Sequence[DetectedFace], where: str, face_index: int | None = None) -> DetectedFace:
    """The one face to align: the only one, or ``faces[face_index]`` (largest first).

    Raises:
        FaceDetectionError: no face; several and no ``face_index``; an index outside the faces found.
    """
    if not faces:
        raise FaceDetectionError(
            f"{where}: no face found (MTCNN); use --no-align to invert the whole photo (centre-cropped)"
        )
    if face_index is not None:
        if not 0 <= face_index < len(faces):
            raise FaceDetectionError(
                f"{where}: --face-index {face_index}, but {len(faces)} face(s) were found "
                f"(indices 0..{len(faces) - 1}, largest first)"
            )
        return faces[face_index]
    if len(faces) > 1:
        boxes = "; ".join(
            f"{i}: {int(f.box[2] - f.box[0])}×{int(f.box[3] - f.box[1])} px at ({int(f.box[0])}, {int(f.box[1])})"
            for i, f in enumerate(faces[:5])
        )
        raise FaceDetectionError(
            f"{where}: {len(faces)} faces found ({boxes}); choose one with --face-index (0 = the largest)"
        )
    return faces[0]


# ---------------------------------------------------------------------------------------------------- geometry


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The (2, 3) matrix M of the similarity (rotation, uniform scale, translation, no reflection) that maps
    ``source`` (K, 2) points closest to ``target`` (K, 2) in least squares: ``target ≈ M @ [x, y, 1]``
    (Umeyama 1991).

    Raises:
        FaceDetectionError: the source points coincide (no scale can be fitted).
    """
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = float((source_centred**2).sum() / len(source))
    if source_variance < 1e-12:
        raise FaceDetectionError("the face landmarks coincide: no alignment can be fitted")
    covariance = target_centred.T @ source_centred / len(source)
    left, singular, right_t = np.linalg.svd(covariance)
    signs = np.eye(2)
    if np.linalg.det(left) * np.linalg.det(right_t) < 0:
        signs[1, 1] = -1.0
    rotation = left @ signs @ right_t
    scale = float(np.trace(np.diag(singular) @ signs) / source_variance)
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The (2, 3) inverse of the (2, 3) affine ``matrix``."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K, 2) points through the (2, 3) affine ``matrix``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_to_crop(photo: np.ndarray, crop_to_photo: np.ndarray, size: int) -> np.ndarray:
    """Sample the ``size``×``size`` crop whose pixel coordinates map to the photo's by ``crop_to_photo`` (2, 3).

    Bilinear sampling at ``s``×``s`` points per crop pixel (``s`` = the transform's scale, rounded up, at most
    :data:`MAX_SUPERSAMPLING`; a larger scale box-reduces the photo first), averaged: an antialiased resample.
    Outside the photo, it is mirrored at its borders.

    Args:
        photo: (H, W, 3) uint8 RGB.
        crop_to_photo: (2, 3) affine map from crop pixel coordinates to photo pixel coordinates.
        size: side of the crop.

    Returns:
        (size, size, 3) uint8 RGB.
    """
    matrix = np.asarray(crop_to_photo, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    reduce = max(1, int(math.floor(scale / MAX_SUPERSAMPLING)))
    if reduce > 1:  # box-filter the photo first: each reduced pixel is the mean of reduce×reduce photo pixels
        height, width = photo.shape[:2]
        photo = np.asarray(Image.fromarray(photo).reduce(reduce))
        matrix = np.diag([photo.shape[1] / width, photo.shape[0] / height]) @ matrix
        scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    supersampling = int(min(MAX_SUPERSAMPLING, max(1, math.ceil(scale - 1e-6))))
    fine = size * supersampling
    centres = (torch.arange(fine, dtype=torch.float64) + 0.5) / supersampling  # crop coordinates of sample points
    grid_y, grid_x = torch.meshgrid(centres, centres, indexing="ij")
    matrix_t = torch.as_tensor(matrix)
    photo_x = matrix_t[0, 0] * grid_x + matrix_t[0, 1] * grid_y + matrix_t[0, 2]
    photo_y = matrix_t[1, 0] * grid_x + matrix_t[1, 1] * grid_y + matrix_t[1, 2]
    height, width = photo.shape[:2]
    grid = torch.stack([photo_x / width * 2 - 1, photo_y / height * 2 - 1], dim=-1)[None].float()
    source = torch.from_numpy(np.array(photo, dtype=np.uint8)).permute(2, 0, 1)[None].float()
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if supersampling > 1:
        sampled = F.avg_pool2d(sampled, supersampling)
    return sampled[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def centre_crop_transform(height: int, width: int, size: int) -> np.ndarray:
    """(2, 3) crop → photo map of the largest centred square of an (height, width) photo, resized to ``size``."""
    side = min(height, width)
    scale = side / size
    return np.array([[scale, 0.0, (width - side) / 2], [0.0, scale, (height - side) / 2]])


def alignment_transform(points: np.ndarray, canonical: CanonicalFace, size: int) -> np.ndarray:
    """(2, 3) crop → photo map that puts the photo's eyes and mouth corners (``points`` (5, 2), photo pixels) on
    ``canonical``'s in a ``size``-px crop (least squares over :data:`FIT_LANDMARKS`)."""
    rows = list(FIT_LANDMARKS)
    photo_to_crop = similarity_transform(np.asarray(points)[rows], canonical.array(size)[rows])
    return invert_affine(photo_to_crop)


@dataclass(frozen=True)
class AlignedPhoto:
    """A photo ready for inversion.

    Attributes:
        pixels: (size, size, 3) uint8 RGB crop at the generator's resolution.
        crop_to_photo: (2, 3) affine map from crop pixel coordinates to the photo's (to paste results back).
        face: the face it was aligned on (None without alignment).
    """

    pixels: np.ndarray
    crop_to_photo: np.ndarray
    face: DetectedFace | None


@dataclass(frozen=True)
class AlignmentSettings:
    """How photos become crops: ``align`` faces onto ``canonical`` (else centre-crop), picking ``face_index``."""

    align: bool
    canonical: CanonicalFace
    face_index: int | None = None

    def fingerprint_inputs(self) -> dict:
        return {
            "align": self.align,
            "canonical": self.canonical.name if self.align else None,
            "canonical_points": list(self.canonical.points) if self.align else None,
            "face_index": self.face_index if self.align else None,
        }


def prepare_photo(
    photo: np.ndarray, size: int, settings: AlignmentSettings, detector: FaceDetector | None, where: str
) -> AlignedPhoto:
    """(H, W, 3) uint8 photo → its ``size``-px crop: the aligned face, or the centred square.

    Raises:
        FaceDetectionError: (aligning) no face, several without a face index, a bad index.
    """
    if not settings.align:
        matrix = centre_crop_transform(photo.shape[0], photo.shape[1], size)
        return AlignedPhoto(warp_to_crop(photo, matrix, size), matrix, None)
    if detector is None:
        raise ValueError("prepare_photo: aligning needs a FaceDetector")
    face = select_face(detector.detect(photo), where, settings.face_index)
    matrix = alignment_transform(face.points, settings.canonical, size)
    return AlignedPhoto(warp_to_crop(photo, matrix, size), matrix, face)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of the file at ``path`` (the identity of a photo in a store's fingerprint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def measure_canonical_face(
    generator,
    detector: FaceDetector,
    n_images: int = 512,
    seed: int = 0,
    upscale: int = 160,
    min_probability: float = 0.95,
) -> tuple[CanonicalFace, int]:
    """Measure where ``generator``'s faces have their landmarks (how :data:`DCGAN_DIGIFACE_FACE` was made).

    ``n_images`` faces from z ~ N(0, I) (``torch.Generator().manual_seed(seed)``), upscaled bilinearly to
    ``upscale`` px, are run through ``detector``; those with exactly one face of probability ≥
    ``min_probability`` give their landmarks, and the per-coordinate median, over ``upscale``, is the template.

    Returns:
        The canonical face and how many images it was measured on.
    """
    rng = torch.Generator().manual_seed(seed)
    latents_z = torch.randn(n_images, generator.z_dim, generator=rng)
    collected = []
    with torch.inference_mode():
        for start in range(0, n_images, 64):
            images = generator.synthesize(latents_z[start : start + 64], "z").float().clamp(-1, 1)
            images = F.interpolate(images, size=(upscale, upscale), mode="bilinear", align_corners=False)
            pixels = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for photo in pixels:
                faces = detector.detect(photo)
                if len(faces) == 1 and faces[0].probability >= min_probability:
                    collected.append(faces[0].points / upscale)
    if not collected:
        raise FaceDetectionError(f"generator {generator.name!r}: no face found in {n_images} images")
    median = np.median(np.stack(collected), axis=0)
    points = tuple((round(float(x), 6), round(float(y), 6)) for x, y in median)
    return (
        CanonicalFace(
            generator.name,
            points,
            f"measure_canonical_face(n_images={n_images}, seed={seed}, upscale={upscale}) on {len(collected)} faces",
        ),
        len(collected),
    )
