"""The one shape every stage has, whatever its work: units of work, resume, records.

A stage is used as a context manager (its locks are held inside it)::

    with stage:
        for unit in stage.pending:     # the units not done yet: a rerun lists only what a killed run left
            stage.run_unit(unit)       # compute one unit and persist its result; units are independent
        stage.finish()                 # combine the units' results into the stage's outputs

A unit is an index in ``range(stage.n_units)``: a chunk of samples for the chunked stages
(:class:`stages.runtime.chunked.ChunkedStage`: sample, synthesize, label, evaluate, invert, reconstruct), a group of
attributes fitted together for fit (:class:`stages.fit.FitStage`). Each unit's result is persisted by ``run_unit``
with a record of what it was computed from (a chunk's checksum and upstream chunks; a fit unit's folder under its
fingerprint-keyed work dir), and ``pending`` lists the units whose result is missing or no longer matches its
record, so a killed run resumes at unit granularity and a changed one starts clean.

``units_travel`` says where units may run: in other processes (a worker rebuilds the stage from a small
:class:`pipeline.placement.StageSpec` and attaches to the stores the driver prepared), or only in threads of the
process that holds the stage (fit: its units share the latents it loaded). The orchestration (``pipeline/engine.py``:
this loop in the process, or a Prefect flow with one task per unit) needs nothing else from a stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, ClassVar, Protocol

from latentatlas.params import Params

#: ``progress(step, total, metrics)``: how far a long unit is (fit's training steps); short units never call it.
UnitProgress = Callable[[int, int, dict[str, float]], None]


class Stage(Protocol):
    """What the engine needs from a stage (see the module docstring).

    Attributes:
        name: the stage's name in logs and progress bars (``sample``, ``fit``, ...).
        params: the run's params (``params.runtime``: how its units are run).
        units_travel: units may run in other processes (rebuilt from a spec), not only in this one's threads.
        unit_noun, size_noun: what a unit is (``chunk``, ``unit``) and what :meth:`unit_size` counts
            (``samples``, ``attributes``), for progress lines.
    """

    name: str
    params: Params
    units_travel: ClassVar[bool]
    unit_noun: ClassVar[str]
    size_noun: ClassVar[str]

    def __enter__(self) -> Any: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None: ...

    @property
    def n_units(self) -> int:
        """How many units the stage has in all."""

    @property
    def pending(self) -> list[int]:
        """The units to run: not done, or no longer matching their records (sorted)."""

    @property
    def output(self) -> Any:
        """Where the stage's results go (a store, a folder), for logs."""

    def unit_name(self, unit: int) -> str:
        """A short name of ``unit`` for logs and task names (``chunk 00003``, ``interfacegan happy``)."""

    def unit_size(self, unit: int) -> int:
        """How much ``unit`` holds, in :attr:`size_noun` (samples of a chunk, attributes of a fit unit)."""

    def run_unit(self, unit: int, progress: UnitProgress | None = None) -> None:
        """Compute ``unit`` and persist its result (idempotent: rerunning a unit writes the same bytes)."""

    def finish(self) -> Any:
        """Combine the units' results into the stage's outputs, once every unit is done."""


def run_stage(stage: Stage, track: Callable[[Stage, list[int]], Iterable[int]] | None = None) -> Any:
    """Run ``stage`` in this process: its pending units in order, then ``finish``; return what ``finish`` returns.

    The local engine, tests and scripts run stages with it. ``track(stage, pending)`` wraps the pending units (a
    progress bar).
    """
    with stage:
        pending = stage.pending
        for unit in track(stage, pending) if track is not None else pending:
            stage.run_unit(unit)
        return stage.finish()
