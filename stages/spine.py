"""The chunked stages of the spine, by the name ``dvc.yaml`` and the CLI use for them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.params import Params
from stages.chunked import ChunkedStage
from stages.label import LabelStage
from stages.sample import SampleStage
from stages.synthesize import SynthesizeStage

STAGES: dict[str, Callable[[Params, Path], ChunkedStage]] = {
    "sample": SampleStage,
    "synthesize": SynthesizeStage,
    "label": LabelStage,
}
