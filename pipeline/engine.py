"""Running one stage as the CLI asks: as a Prefect flow (one task per chunk, visible in the UI) or as a plain loop in
this process (``--engine local``: no Prefect, for debugging and scripting). Both write the same bytes: every
engine and task runner runs torch with :data:`stages.runtime.device.CPU_THREADS` intra-op threads per chunk in flight (and
for the whole of fit and of a stage's finishing step), whatever ``runtime.max_workers`` and the machine's cores.
"""

from __future__ import annotations

from typing import Literal

from latentatlas.layout import OutputLayout
from latentatlas.locations import StorePath
from latentatlas.params import Params
from pipeline.catalog import STAGE_NAMES, build_stage
from stages.runtime.chunked import run_stage
from stages.runtime.device import pinned_threads

Engine = Literal["prefect", "local"]


def run(stage_name: str, params: Params, data_dir: StorePath, engine: Engine = "prefect", method: str | None = None,
        layout: OutputLayout = OutputLayout()) -> None:
    """Run ``stage_name`` (``sample``, ``synthesize``, ``label``, ``fit`` or ``evaluate`` of ``method``) to the end."""
    if stage_name not in STAGE_NAMES:
        raise ValueError(f"unknown stage {stage_name!r}; expected one of {STAGE_NAMES}")
    with pinned_threads():  # this thread, and the task runner's threads it starts (they start from its count)
        if engine == "prefect":
            from pipeline import flows  # imports Prefect: only when a flow runs

            if stage_name == "fit":
                flows.run_fit_flow(method, params, data_dir, layout)
            else:
                flows.run_stage_flow(stage_name, params, data_dir, method=method, layout=layout)
        elif stage_name == "fit":
            from stages.fit import run_fit

            run_fit(params, data_dir, method, layout=layout)
        else:
            run_stage(build_stage(stage_name, params, data_dir, method, layout))
