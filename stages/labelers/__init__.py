"""Image labelers behind one small protocol, found by name in ``params.yaml: label.labeler``.

A labeler scores a batch of images on named attributes; a suite (e.g. ``faces``) is itself a labeler that
concatenates the columns of several. Images always arrive as (N, 3, H, W) float tensors in [-1, 1], RGB, on the
labeler's device; each labeler resizes/crops to what its network needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from stages.registry import Registry


@runtime_checkable
class Labeler(Protocol):
    """What the pipeline needs of a labeler.

    Attributes:
        name: registry name, stored in the label files' metadata.
        attributes: names of the (A,) columns that ``score`` returns, in order.
        fingerprint: changes whenever its scores would (weights hashes, preprocessing version).
    """

    name: str
    attributes: tuple[str, ...]
    fingerprint: str

    def to(self, device: torch.device) -> "Labeler": ...

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [-1, 1] → (N, A) float32 scores, columns in ``attributes`` order."""
        ...


class LabelerSuite:
    """Several labelers run on the same batch, their columns concatenated (attribute names must not clash)."""

    def __init__(self, name: str, labelers: Sequence[Labeler]) -> None:
        attributes = [attribute for labeler in labelers for attribute in labeler.attributes]
        clashes = sorted({a for a in attributes if attributes.count(a) > 1})
        if clashes:
            raise ValueError(f"labeler suite {name!r}: attribute names {clashes} come from more than one labeler")
        self.name = name
        self.labelers = list(labelers)
        self.attributes = tuple(attributes)
        self.fingerprint = f"{name}[" + ";".join(labeler.fingerprint for labeler in self.labelers) + "]"

    def to(self, device: torch.device) -> "LabelerSuite":
        for labeler in self.labelers:
            labeler.to(device)
        return self

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([labeler.score(images).float() for labeler in self.labelers], dim=1)


LABELERS: Registry[Labeler] = Registry("labeler")


def build_labeler(name: str, **kwargs) -> Labeler:
    """Build the labeler registered (or importable) as ``name``, checking it meets the protocol."""
    labeler = LABELERS.build(name, **kwargs)
    missing = [attr for attr in ("attributes", "fingerprint", "score", "to") if not hasattr(labeler, attr)]
    if missing:
        raise TypeError(f"labeler {name!r} does not meet the Labeler protocol: missing {missing}")
    return labeler


from stages.labelers import faces  # noqa: E402,F401  (registers the built-in labelers)
