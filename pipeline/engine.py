"""Running one stage as the CLI asks: as a Prefect flow (one task per unit of work, visible in the UI) or as a plain
loop in this process (``--engine local``: no Prefect, for debugging and scripting).

One path for every stage (:data:`pipeline.catalog.STAGES`: the DAG's, fit included, and the photo commands'
``invert`` and ``reconstruct``): build it from the catalog, run its pending units, finish
(:class:`stages.runtime.stage.Stage`). Both engines write the same bytes: every engine and task runner runs torch
with :data:`stages.runtime.device.CPU_THREADS` intra-op threads per unit in flight (and for a stage's finishing step),
whatever ``runtime.max_workers`` and the machine's cores.

The commands that do not run here, and why:

- ``train-encoder`` and ``train-labeler`` train one network epoch after epoch: epoch e needs epoch e−1's weights,
  so there are no independent units for a task runner to spread, and each resumes after its last finished epoch
  from its own checkpoint. A one-task flow would add Prefect's start-up and nothing else.
- ``report`` is one step of a few seconds over finished outputs (metrics, directions), written atomically: no unit
  to resume or to spread.
- ``edit`` inverts one photo (one unit of the invert stage, run by the same stage loop,
  :func:`stages.runtime.stage.run_stage`, and reused on a rerun), then edits and scores it in memory and prints the
  scores: an interactive command, not a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from tqdm import tqdm

from latentatlas.locations import StorePath
from latentatlas.params import Params
from pipeline.catalog import build_stage, stage_class
from stages.runtime.device import pinned_threads
from stages.runtime.stage import Stage, run_stage

Engine = Literal["prefect", "local"]


def run(stage_name: str, params: Params, data_dir: StorePath, engine: Engine = "prefect", **options: Any) -> None:
    """Run stage ``stage_name`` of the catalog (built with ``options``: ``method`` and ``layout`` for fit and
    evaluate, see :mod:`pipeline.catalog`) to the end."""
    stage_class(stage_name)  # an unknown name fails here, before any flow starts
    with pinned_threads():  # this thread, and the task runner's threads it starts (they start from its count)
        if engine == "prefect":
            from pipeline import flows  # imports Prefect: only when a flow runs

            flows.run_stage_flow(stage_name, params, data_dir, **options)
        else:
            run_stage(build_stage(stage_name, params, data_dir, **options), track=progress_bar)


def progress_bar(stage: Stage, pending: list[int]) -> Iterable[int]:
    """``pending`` with a terminal progress bar over all the stage's units (shown on a terminal only)."""
    done = stage.n_units - len(pending)
    return tqdm(pending, total=stage.n_units, initial=done, desc=stage.name, unit=stage.unit_noun, disable=None)
