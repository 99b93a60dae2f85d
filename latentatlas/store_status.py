"""The state of every store of a data dir, as ``latentatlas status`` and ``latentatlas verify`` print it.

One line per store (its state, chunks done, N, fingerprint), then what is wrong with it and what to rerun:

    latents.zarr   complete   2/2 chunks  N=300  fingerprint=3c73…
    images.zarr    stale      3/3 chunks  N=300  fingerprint=5db5…
        computed from latents.zarr 0301…, which has been rebuilt since (now 3c73…: other params or chunking)
        → rerun `latentatlas synthesize` to rebuild it
    labels         stale      3/3 chunks  N=300  fingerprint=1223…
        computed from images.zarr, which is stale itself
        → rerun `latentatlas synthesize`, then `latentatlas label` (or `dvc repro`)

A store is *stale* when an input it was computed from has been rebuilt since (or is stale itself); *damaged* when
chunks do not match their records or were computed from other input chunks; *unreadable* when it cannot be opened
(foreign, or a store of ours that lost its metadata); *missing* when it is gone but stores computed from it are
there. These need a rerun; *incomplete* and *absent* stores only need the run to go on.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentatlas.layout import IMAGES_STORE, LABELS_STORE, LATENTS_STORE
from latentatlas.locations import StorePath, store_path
from latentatlas.stores import PRODUCING_STAGE, PRODUCING_STAGE_BY_NAME, StoreReport, check_data_dir, inspect_store

#: The stores of a data dir, upstream first.
DATA_DIR_STORES = (LATENTS_STORE, IMAGES_STORE, LABELS_STORE)
#: States that need a rerun to repair (``incomplete`` and ``absent`` only need the run to go on).
NEEDS_REPAIR = frozenset({"damaged", "stale", "unreadable", "missing"})
_SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class StoreStatus:
    """One store's report, with what its inputs' states mean for it.

    Attributes:
        stale_via: the inputs that are stale themselves (so this store is stale too), upstream first.
        needed_by: the stores computed from this one (what makes an absent store *missing*).
        rerun: the stages to rerun, in order, to repair it (empty: nothing to repair).
    """

    name: str
    report: StoreReport
    stale_via: tuple[str, ...] = ()
    needed_by: tuple[str, ...] = ()
    rerun: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        if self.stale_via and self.report.store is not None:
            return "stale"
        if self.report.state == "absent" and self.needed_by:
            return "missing"
        return self.report.state

    def lines(self) -> list[str]:
        """What ``status`` prints for this store: its line, then one indented line per finding."""
        report = self.report
        if report.store is None:
            lines = [f"{self.name:14s} {report.error}"]
            if self.needed_by:
                lines.append(
                    f"    {' and '.join(self.needed_by)} {'was' if len(self.needed_by) == 1 else 'were'} "
                    f"computed from it"
                )
        else:
            info = report.store.info
            lines = [
                f"{self.name:14s} {self.state:10s} {report.done}/{info.n_chunks} chunks  N={info.n_samples}  "
                f"fingerprint={info.fingerprint}"
            ]
            lines += [f"    {reason}" for reason in report.stale]
            lines += [f"    computed from {name}, which is stale itself" for name in self.stale_via]
            lines += [f"    {note}" for note in report.unchecked]
            bad = report.bad
            lines += [f"    {problem}" for problem in bad[:_SHOWN_PROBLEMS]]
            if len(bad) > _SHOWN_PROBLEMS:
                lines.append(f"    … and {len(bad) - _SHOWN_PROBLEMS} more")
        if self.rerun:
            stages = ", then ".join(f"`latentatlas {stage}`" for stage in self.rerun)
            if len(self.rerun) > 1:
                lines.append(f"    → rerun {stages} (or `dvc repro`)")
            elif self.state == "damaged":
                lines.append(f"    → rerun {stages} to recompute them")
            else:
                lines.append(f"    → rerun {stages} to rebuild it")
        return lines


@dataclass(frozen=True)
class DataDirStatus:
    """Every store of a data dir, upstream first."""

    data_dir: StorePath
    stores: tuple[StoreStatus, ...]

    def lines(self) -> list[str]:
        return [line for store in self.stores for line in store.lines()]

    @property
    def needing_repair(self) -> list[StoreStatus]:
        """The stores that are damaged, stale or unreadable."""
        return [store for store in self.stores if store.state in NEEDS_REPAIR]

    @property
    def all_complete(self) -> bool:
        """Whether every store is complete and sound (what ``verify`` requires)."""
        return all(store.state == "complete" for store in self.stores)

    def repair_message(self) -> str:
        """The closing line of ``status`` when some store needs repair."""
        states = sorted({store.state for store in self.needing_repair})
        count = len(self.needing_repair)
        return (
            f"{self.data_dir}: {count} {'store needs' if count == 1 else 'stores need'} repair "
            f"({', '.join(states)}: see above); rerun the stages named (or `dvc repro`)"
        )


def data_dir_status(data_dir: StorePath, deep: bool = True) -> DataDirStatus:
    """Inspect every store of ``data_dir`` (``deep``: compare checksums, reading every chunk; else sizes only).

    Raises:
        StoreError: ``data_dir`` is a file (not a folder), in one line.
    """
    data_dir = store_path(data_dir)
    check_data_dir(data_dir)
    reports = {name: inspect_store(data_dir / name, deep=deep) for name in DATA_DIR_STORES}
    statuses: dict[str, StoreStatus] = {}
    for name, report in reports.items():
        needed_by = tuple(other for other, other_report in reports.items() if name in other_report.inputs)
        stale_via = tuple(
            input_name
            for input_name in report.inputs
            if input_name in statuses and statuses[input_name].state == "stale"
        )
        own_stage = _stage_of(name, report)
        rerun: tuple[str, ...] = ()
        if stale_via:
            rerun = (*statuses[stale_via[0]].rerun, own_stage)
        elif (report.state in NEEDS_REPAIR and report.store is not None) or (report.state == "absent" and needed_by):
            rerun = (own_stage,)
        statuses[name] = StoreStatus(name, report, stale_via, needed_by, tuple(dict.fromkeys(rerun)))
    return DataDirStatus(data_dir, tuple(statuses.values()))


def _stage_of(name: str, report: StoreReport) -> str:
    kind = report.store.info.kind if report.store is not None else None
    return PRODUCING_STAGE.get(kind or "") or PRODUCING_STAGE_BY_NAME[name]
