"""The stages the engine runs, by the names ``dvc.yaml`` and the CLI use for them, and how each is opened.

Every stage is built the same way, ``cls(params, data_dir, **options)`` (its options: the method and output layout
of ``fit`` and ``evaluate``; the photos and inversion settings of ``invert``), which is also how a worker process
rebuilds a stage from a :class:`pipeline.placement.StageSpec`. The engine needs nothing else: no stage is special.
"""

from __future__ import annotations

from typing import Any

from latentatlas.locations import StorePath
from latentatlas.params import Params
from stages.evaluate import EvaluateStage
from stages.fit import FitStage
from stages.label import LabelStage
from stages.photo.invert import InvertStage, ReconstructStage
from stages.runtime.stage import Stage
from stages.sample import SampleStage
from stages.synthesize import SynthesizeStage

#: Each stage class by its name: the DAG's stages, then the photo commands' (``invert`` writes the inverted latents,
#: ``reconstruct`` their images).
STAGES: dict[str, type[Stage]] = {
    "sample": SampleStage,
    "synthesize": SynthesizeStage,
    "label": LabelStage,
    "fit": FitStage,
    "evaluate": EvaluateStage,
    "invert": InvertStage,
    "reconstruct": ReconstructStage,
}
STAGE_NAMES = tuple(STAGES)


def stage_class(stage_name: str) -> type[Stage]:
    """The class of stage ``stage_name``.

    Raises:
        ValueError: (a bug: the CLI names only known stages) no stage has that name.
    """
    try:
        return STAGES[stage_name]
    except KeyError:
        raise ValueError(f"unknown stage {stage_name!r}; expected one of {STAGE_NAMES}") from None


def build_stage(stage_name: str, params: Params, data_dir: StorePath, **options: Any) -> Stage:
    """Stage ``stage_name`` opened on its stores (not entered: use it in a ``with``)."""
    return stage_class(stage_name)(params, data_dir, **options)


def flow_name(stage_name: str, **options: Any) -> str:
    """The Prefect flow's name: ``latentatlas-<stage>``, ``latentatlas-<stage>-<method>`` for a method's stage."""
    method = options.get("method")
    return f"latentatlas-{stage_name}" + (f"-{method}" if method else "")
