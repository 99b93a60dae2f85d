"""The stages by the names ``dvc.yaml`` and the CLI use for them, and how each is opened on its stores."""

from __future__ import annotations

from collections.abc import Callable

from latentatlas.layout import OutputLayout
from latentatlas.locations import StorePath
from latentatlas.params import Params
from stages.runtime.chunked import ChunkedStage
from stages.evaluate import EvaluateStage
from stages.label import LabelStage
from stages.sample import SampleStage
from stages.synthesize import SynthesizeStage

#: The chunked stages of the spine, by the name ``dvc.yaml`` and the CLI use for them.
SPINE_STAGES: dict[str, Callable[[Params, StorePath], ChunkedStage]] = {
    "sample": SampleStage,
    "synthesize": SynthesizeStage,
    "label": LabelStage,
}
STAGE_NAMES = (*SPINE_STAGES, "fit", "evaluate")


def build_stage(stage_name: str, params: Params, data_dir: StorePath, method: str | None = None,
                layout: OutputLayout = OutputLayout()) -> ChunkedStage:
    """The chunked stage ``stage_name`` (a spine stage, or ``evaluate`` of ``method``), opened on its stores."""
    if stage_name == "evaluate":
        if method is None:
            raise ValueError("the evaluate stage needs a method")
        return EvaluateStage(params, data_dir, method, layout=layout)
    return SPINE_STAGES[stage_name](params, data_dir)
