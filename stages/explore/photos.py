"""Photos dropped onto the explorer: checked, aligned, inverted — a job with progress that can be cancelled.

**Checks** (:func:`check_upload`, before anything is decoded): at most ``max_bytes``; one of the allowed formats as
Pillow reads the file's own header (the name and declared type are ignored); at most ``max_pixels`` pixels and at
least :data:`stages.photo.align.PHOTO_MIN_SIDE` a side, read from the header, so a decompression bomb (a small file
that decodes to gigapixels) is refused without being decoded.

**Inversion** as ``latentatlas edit`` does it (:mod:`stages.photo.align`, :mod:`stages.photo.invert`): the face is
found and aligned onto the generator's canonical crop (face generators; others are centre-cropped), then the latent
is optimised for a few steps from the run's encoder (``models/encoder/encoder.pt``) when it has one, else from the
mean w / a seeded random z, which the page says. The result is saved as ``<out root>/.cache/explore/<photo id>.npz``
(the id is a digest of the photo's bytes and every setting that changes the result), so a permalink that starts
from the photo works after a restart, and the same photo is inverted once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from latentatlas.atomic import atomic_write_bytes
from latentatlas.errors import LatentAtlasError
from stages.explore.state import PHOTO_ID, ExploreInputError
from stages.photo.align import PHOTO_MIN_SIDE, AlignmentSettings, FaceDetector, load_photo, prepare_photo
from stages.photo.encoder import EncoderError, TrainedEncoder, load_encoder
from stages.photo.invert import InversionSettings, Inverter, choose_init, photo_seed
from stages.plugins.generators import Generator
from stages.plugins.generators.synthesis import uint8_to_images
from stages.runtime.device import CPU_THREADS

logger = logging.getLogger(__name__)

#: Pillow format names accepted, with the suffix the upload is kept under while it is read.
ALLOWED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


class UploadError(ExploreInputError):
    """An upload refused: too many bytes or pixels (``status`` 413), not an allowed type (415), unreadable (400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be: bytes, pixels (width × height), and Pillow formats."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = tuple(ALLOWED_FORMATS)

    def __post_init__(self) -> None:
        if self.max_pixels > Image.MAX_IMAGE_PIXELS:
            raise ValueError(f"max_pixels {self.max_pixels} is above Pillow's own bomb limit {Image.MAX_IMAGE_PIXELS}")

    def to_json(self) -> dict:
        return {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels, "formats": list(self.formats)}


def check_upload(data: bytes, limits: UploadLimits) -> str:
    """Refuse an upload that is too big, not an allowed image type, or a decompression bomb; nothing is decoded.

    Returns:
        The Pillow format name (``JPEG``, ``PNG``, ...).

    Raises:
        UploadError: with ``status`` 413 (bytes or pixels), 415 (type) or 400 (empty, unreadable header, too small).
    """
    if not data:
        raise UploadError("the upload is empty: drop a photo (JPEG, PNG, WebP or BMP)")
    if len(data) > limits.max_bytes:
        raise UploadError(f"the photo is {len(data) / 2**20:.1f} MiB; at most {limits.max_bytes / 2**20:.0f} MiB", 413)
    try:
        with Image.open(io.BytesIO(data)) as opened:  # reads the header only
            image_format, (width, height) = opened.format, opened.size
    except Image.DecompressionBombError as error:
        raise UploadError(f"refused undecoded: a decompression bomb ({error})", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UploadError(
            f"not an image Pillow can read ({type(error).__name__}); send a JPEG, PNG, WebP or BMP photo", 415
        ) from None
    if image_format not in limits.formats:
        raise UploadError(f"{image_format} images are not accepted; send one of {', '.join(limits.formats)}", 415)
    if width * height > limits.max_pixels:
        raise UploadError(
            f"the photo is {width}×{height} = {width * height / 1e6:.1f} megapixels; at most "
            f"{limits.max_pixels / 1e6:.0f} (larger images are refused undecoded: decompression "
            f"bombs)",
            413,
        )
    if min(width, height) < PHOTO_MIN_SIDE:
        raise UploadError(
            f"the photo is {width}×{height} pixels: too small to invert (at least {PHOTO_MIN_SIDE} px a side)"
        )
    return str(image_format)


@dataclass(frozen=True)
class InvertedPhoto:
    """A saved inversion: ``latent`` (z_dim,) in z or (num_ws, w_dim) in w+, the ``aligned`` (R, R, 3) uint8 crop
    it was fitted to, and the reconstruction's LPIPS and PSNR."""

    photo_id: str
    space: str
    latent: np.ndarray
    aligned: np.ndarray
    lpips: float
    psnr: float


class _Cancelled(Exception):
    """Raised from the optimisation's step hook when the job is cancelled."""


@dataclass
class PhotoJob:
    """One upload's way to a latent. ``state``: queued → aligning → inverting → done | failed | cancelled."""

    id: str
    photo_id: str
    steps: int
    state: str = "queued"
    step: int = 0
    message: str = ""
    started: float = field(default_factory=time.time)
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "photo": self.photo_id if self.state == "done" else None,
            "state": self.state,
            "step": self.step,
            "steps": self.steps,
            "message": self.message,
            "seconds": round(time.time() - self.started, 1),
        }


class PhotoInversions:
    """Uploaded photos → inverted latents, one job at a time (a new upload cancels the running one).

    Args:
        generator: the run's generator (shared with the renderer; inversion differentiates through it).
        space: the space photos are inverted into (``z``, or ``w+`` when the run has W directions).
        settings: the inversion settings (``init`` encoder falls back to mean / random without an encoder).
        alignment: how photos become crops.
        encoder_path: the run's encoder file (absent: the fallback start, and :attr:`note` says so).
        cache_dir: where inversions are saved (``<out root>/.cache/explore``).
        limits: what an upload may be.
    """

    def __init__(
        self,
        generator: Generator,
        space: str,
        settings: InversionSettings,
        alignment: AlignmentSettings,
        encoder_path: Path | None,
        cache_dir: Path,
        limits: UploadLimits = UploadLimits(),
    ) -> None:
        self.generator = generator
        self.space = space
        self.alignment = alignment
        self.cache_dir = Path(cache_dir)
        self.limits = limits
        settings = settings.model_copy(update={"space": space})
        settings, chosen_path, note = choose_init(settings, encoder_path, space, encoder_named=False)
        self.encoder: TrainedEncoder | None = None
        if chosen_path is not None:
            try:
                self.encoder = load_encoder(chosen_path, generator.fingerprint, "cpu")
            except EncoderError as error:
                settings = settings.model_copy(update={"init": "mean" if space != "z" else "random"})
                note = f"{error}; starting from {'the mean w' if space != 'z' else 'a random z'} instead"
        self.settings = settings
        #: What the page says about the start of inversions (None: the run's encoder is used).
        self.note: str | None = note
        self._jobs: dict[str, PhotoJob] = {}
        self._lock = threading.Lock()
        self._inverter: Inverter | None = None
        self._detector: FaceDetector | None = None

    # ------------------------------------------------------------------------------------------------ jobs

    def photo_id(self, data: bytes) -> str:
        """32 hex digits naming the inversion of ``data`` with these settings, generator and encoder."""
        recipe = json.dumps(
            {
                "generator": self.generator.fingerprint,
                "space": self.space,
                "settings": self.settings.model_dump(mode="json", exclude={"device", "batch_size"}),
                "alignment": self.alignment.fingerprint_inputs(),
                "encoder": self.encoder.sha256 if self.encoder is not None else None,
            },
            sort_keys=True,
        )
        return hashlib.sha256(hashlib.sha256(data).digest() + recipe.encode()).hexdigest()[:32]

    def submit(self, data: bytes) -> PhotoJob:
        """Check ``data`` (:func:`check_upload`) and start inverting it in a thread; a running job is cancelled.

        Raises:
            UploadError: the upload is refused (nothing is started).
        """
        image_format = check_upload(data, self.limits)
        photo_id = self.photo_id(data)
        job = PhotoJob(uuid.uuid4().hex, photo_id, self.settings.steps)
        with self._lock:
            for other in self._jobs.values():
                if not other.finished:
                    other.cancel_requested.set()
            self._jobs = {key: value for key, value in self._jobs.items() if not value.finished}
            self._jobs[job.id] = job
        if self.path(photo_id).is_file():
            job.state, job.step, job.message = "done", job.steps, "inverted before: reused"
            return job
        job.thread = threading.Thread(
            target=self._run, args=(job, data, image_format), daemon=True, name=f"explore-invert-{job.id[:8]}"
        )
        job.thread.start()
        return job

    def job(self, job_id: str) -> PhotoJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ExploreInputError(f"no photo job {job_id!r} (finished jobs are forgotten when a new photo arrives)")
        return job

    def cancel(self, job_id: str) -> PhotoJob:
        job = self.job(job_id)
        job.cancel_requested.set()
        return job

    def _check_cancel(self, job: PhotoJob) -> None:
        if job.cancel_requested.is_set():
            raise _Cancelled()

    def _run(self, job: PhotoJob, data: bytes, image_format: str) -> None:
        upload = self.cache_dir / f"{job.photo_id}.upload{ALLOWED_FORMATS[image_format]}"
        torch.set_num_threads(CPU_THREADS)  # a new thread: see stages.explore.engine.pin_this_thread
        try:
            job.state = "aligning"
            atomic_write_bytes(upload, data)
            photo = load_photo(upload)
            self._check_cancel(job)
            detector = self.detector() if self.alignment.align else None
            resolution = int(self.generator.resolution)
            aligned = prepare_photo(photo, resolution, self.alignment, detector, "the uploaded photo")
            self._check_cancel(job)
            job.state = "inverting"
            inverter = self.inverter()
            targets = uint8_to_images(aligned.pixels[None], inverter.device)
            start = inverter.initial(targets, self.encoder, [photo_seed(job.photo_id)])

            def on_step(done: int, total: int) -> None:
                job.step = done
                self._check_cancel(job)

            result = inverter.invert(targets, start, on_step=on_step)
            buffer = io.BytesIO()
            np.savez(
                buffer,
                latent=result.latents[0].numpy().astype(np.float32),
                space=np.array(self.space),
                aligned=aligned.pixels,
                lpips=np.float32(result.lpips[0]),
                psnr=np.float32(result.psnr[0]),
            )
            atomic_write_bytes(self.path(job.photo_id), buffer.getvalue())
            job.state = "done"
            job.message = (
                f"inverted in {result.seconds:.1f} s ({job.steps} steps"
                f"{', from the encoder' if self.encoder is not None else ''}): reconstruction "
                f"PSNR {float(result.psnr[0]):.1f} dB"
            )
        except _Cancelled:
            job.state, job.message = "cancelled", "cancelled"
        except LatentAtlasError as error:
            job.state, job.message = "failed", str(error)
        except Exception as error:  # a bug: the page gets one line, the server's log the traceback
            logger.exception("photo job %s failed", job.id)
            job.state, job.message = "failed", f"internal error ({type(error).__name__}); see the server's log"
        finally:
            upload.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------------ models

    def detector(self) -> FaceDetector:
        with self._lock:
            if self._detector is None:
                self._detector = FaceDetector(torch.device("cpu"))
            return self._detector

    def inverter(self) -> Inverter:
        with self._lock:
            if self._inverter is None:
                self._inverter = Inverter(self.generator, self.settings)
            return self._inverter

    # ------------------------------------------------------------------------------------------------ results

    def path(self, photo_id: str) -> Path:
        if not PHOTO_ID.match(photo_id):
            raise ExploreInputError(f"photo {photo_id!r}: a photo id is 32 lowercase hex digits")
        return self.cache_dir / f"{photo_id}.npz"

    def load(self, photo_id: str) -> InvertedPhoto:
        """The saved inversion of ``photo_id``.

        Raises:
            ExploreInputError: no such inversion in this run, or one that does not fit the generator.
        """
        path = self.path(photo_id)
        if not path.is_file():
            raise ExploreInputError(f"photo {photo_id}: no inversion of it in this run; drop the photo again")
        with np.load(path, allow_pickle=False) as saved:
            inverted = InvertedPhoto(
                photo_id,
                str(saved["space"]),
                np.asarray(saved["latent"], dtype=np.float32),
                np.asarray(saved["aligned"], dtype=np.uint8),
                float(saved["lpips"]),
                float(saved["psnr"]),
            )
        expected = (
            (int(self.generator.z_dim),)
            if inverted.space == "z"
            else (int(self.generator.num_ws), int(self.generator.w_dim))
            if inverted.space == "w+"
            else None
        )
        if expected is None or inverted.latent.shape != expected:
            raise ExploreInputError(
                f"photo {photo_id}: its saved latent ({inverted.space}, {inverted.latent.shape}) "
                f"does not fit this generator; drop the photo again"
            )
        return inverted
