"""Stage 4, fit: one method's directions from the labeled latent store → ``directions/<method>/``.

A *variant* (``fit.variants.<name>: {method: <method>, ...params}``) is fitted by its method with its own params
into ``directions/<name>/``, exactly like a method listed in ``fit.methods``.

Loads only what fitting needs: the (N, D) latents of each stored space and the label columns of the attributes,
never images. :class:`FitStage` is a :class:`stages.runtime.stage.Stage` like the chunked ones: a method whose
attributes are independent (``MethodSpec.separable``) is fitted as one unit of work per attribute (the flow runs
them as parallel Prefect tasks, on threads: they share the loaded latents), the others as one unit. Each unit's
directions are saved atomically to ``<work_dir>/units/<unit>-<hash of its attributes>/`` as it finishes, and
``finish`` joins them in attribute order into ``directions/<method>/`` (then deletes the unit results: they exist to
resume a killed fit, not to skip a finished one that is run again). ``work_dir`` is a folder keyed by the
fingerprint of everything that produced the fit (method, params, attributes, input store, device type), so a killed
run resumes at unit granularity (and long-running methods from their own checkpoints there) and a changed one
starts clean.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from latentatlas import dataset
from latentatlas.layout import OutputLayout
from latentatlas.params import Params
from latentatlas.stores import fingerprint_of, store_lock
from stages.latent.directions import INDEX_FILE, DirectionSet, concatenate_direction_sets
from stages.plugins.generators import generator_for
from stages.plugins.labelers import labeler_for
from stages.plugins.labelers.scoring import score_frame
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec
from stages.runtime.device import resolve_device
from stages.runtime.stage import UnitProgress, run_stage


class FitStage:
    """Fitting one method, as a stage (:class:`stages.runtime.stage.Stage`): unit ``u`` fits the attributes
    ``attribute_groups()[u]`` and saves them under the work dir; ``finish`` joins the units into the method's
    directions. Used as a context manager, which holds the lock on the method's output folder.
    """

    name = "fit"
    #: Units share the latents and labels loaded here: they run in this process's threads, never elsewhere.
    units_travel: ClassVar[bool] = False
    unit_noun: ClassVar[str] = "unit"
    size_noun: ClassVar[str] = "attributes"

    def __init__(
        self,
        params: Params,
        data_dir: Path,
        method: str,
        layout: OutputLayout = OutputLayout(),
        generator: Any = None,
        labeler: Any = None,
    ) -> None:
        self.method = method  # the entry's name: a method, or a variant of one (fit.variants)
        self.params = params
        self.base_method = params.fit.base_method(method)
        self.spec: MethodSpec = METHODS.build(self.base_method)
        self.method_params = params.fit.method_params(method, self.spec.params_model)
        # Read-locked while the latents and labels are loaded: no upstream run rewrites them meanwhile.
        self.data = dataset.open(data_dir, read_lock=True)
        self.attributes = list(params.fit.attributes or self.data.attributes)
        unknown = [name for name in self.attributes if name not in self.data.attributes]
        if unknown:
            raise MethodInputError(
                f"fit.attributes: {unknown} are not labeled attributes; the labels have {self.data.attributes}"
            )
        self.device = resolve_device(params.fit.device)
        self.layout = layout
        self.out_dir = layout.directions(method)
        self.input_fingerprint = self.data.labels_store.info.fingerprint
        self.fingerprint = fingerprint_of(
            {
                "method": method,
                "base_method": self.base_method,
                "params": self.method_params.model_dump(mode="json"),
                "attributes": self.attributes,
                "input": self.input_fingerprint,
                "device_type": self.device.type,
            }
        )
        self.work_dir = layout.fit_work_root() / f"{method}-{self.fingerprint}"
        self.units_dir = self.work_dir / "units"
        self._generator, self._labeler = generator, labeler
        self._exit_stack = contextlib.ExitStack()
        self._locked = False
        latents = {}
        scores = None
        try:
            for space in self.data.spaces:
                latents[space], scores = self.data.arrays(self.attributes, space=space)
        finally:
            self.data.close()  # everything is loaded: release the read locks
        self.latents: dict[str, np.ndarray] = latents
        self.labels = pd.DataFrame(scores, columns=self.attributes)

    @functools.cached_property
    def generator(self):
        return generator_for(self.params.generator, self._generator).to(self.device)

    @functools.cached_property
    def labeler(self):
        return labeler_for(self.params.label, self._labeler).to(self.device)

    def score_images(self, images: torch.Tensor) -> pd.DataFrame:
        """(N, 3, H, W) images in [-1, 1] → DataFrame of every attribute the labeler gives (for naming)."""
        return score_frame(self.labeler, images, self.params.label.batch_size, self.device)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the lock on this method's output folder. The lock file lives in the layout's lock folder, never
        inside ``directions/`` (which DVC hashes as the report's input)."""
        return store_lock(self.out_dir, lock_dir=self.layout.locks_root())

    def __enter__(self) -> FitStage:
        self._exit_stack.enter_context(self.lock())
        self._locked = True
        self._exit_stack.callback(setattr, self, "_locked", False)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._exit_stack.close()

    def attribute_groups(self) -> list[list[str]]:
        """Groups of attributes fitted together, one per unit: one per attribute for separable methods, else one
        group."""
        return [[name] for name in self.attributes] if self.spec.separable else [self.attributes]

    # -- the Stage protocol (stages/runtime/stage.py): a unit is a group of attributes

    @property
    def n_units(self) -> int:
        return len(self.attribute_groups())

    @property
    def output(self) -> Path:
        return self.out_dir

    def unit_dir(self, unit: int) -> Path:
        """Where unit ``unit``'s directions are kept until ``finish``: named by its index and its attributes."""
        group = self.attribute_groups()[unit]
        return self.units_dir / f"{unit:03d}-{fingerprint_of({'attributes': group})[:12]}"

    @property
    def pending(self) -> list[int]:
        """Units without a complete saved result (``directions.json`` is written last)."""
        return [unit for unit in range(self.n_units) if not (self.unit_dir(unit) / INDEX_FILE).is_file()]

    def unit_name(self, unit: int) -> str:
        group = self.attribute_groups()[unit]
        return f"{self.method} {'+'.join(group) if len(group) < 4 else 'all'}"

    def unit_size(self, unit: int) -> int:
        return len(self.attribute_groups()[unit])

    def run_unit(self, unit: int, progress: UnitProgress | None = None) -> None:
        """Fit unit ``unit`` and save its directions atomically under the work dir."""
        self._require_lock("run_unit")
        self.fit_unit(self.attribute_groups()[unit], progress=progress).save(self.unit_dir(unit))

    def unit_result(self, unit: int) -> DirectionSet:
        """Unit ``unit``'s saved directions, as :meth:`fit_unit` returned them (``save`` adds the list of extra
        files to ``meta``; it is taken out again)."""
        directions = DirectionSet.load(self.unit_dir(unit))
        if directions.extras:
            directions.meta.pop("extra_files", None)
        return directions

    def _require_lock(self, what: str) -> None:
        if not self._locked:
            raise RuntimeError(f"FitStage.{what} writes results: use it inside `with stage:` (the output lock)")

    def context(self, attributes: list[str], progress=None) -> FitContext:
        needs_generator = self.spec.needs_generator
        return FitContext(
            latents=self.latents,
            labels=self.labels[attributes],
            attributes=attributes,
            generator=self.generator if needs_generator else None,
            score_images=self.score_images if needs_generator else None,
            device=self.device,
            work_dir=self.work_dir,
            input_fingerprint=self.input_fingerprint,
            progress=progress or (lambda step, total, metrics: None),
        )

    def fit_unit(self, attributes: list[str], progress=None) -> DirectionSet:
        """The directions of ``attributes`` (one unit's group), computed in memory (nothing saved)."""
        return self.spec.fit(self.context(attributes, progress), self.method_params)

    def finish(self) -> DirectionSet:
        """Join the saved units (in attribute order) into ``directions/<method>/`` (:meth:`combine`), then delete
        the unit results (and the work dir, unless the method keeps checkpoints there).

        Raises:
            RuntimeError: (a bug) a unit is not done yet.
        """
        self._require_lock("finish")
        missing = self.pending
        if missing:
            raise RuntimeError(f"fit {self.method}: units {missing} are not done; run them before finish")
        directions = self.combine([self.unit_result(unit) for unit in range(self.n_units)])
        shutil.rmtree(self.units_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.work_dir.rmdir()  # when empty: a method's own checkpoints stay
        return directions

    def combine(self, parts: list[DirectionSet]) -> DirectionSet:
        """Concatenate the units' results (in attribute order), record provenance, save atomically."""
        directions = parts[0] if len(parts) == 1 else (self.spec.combine or concatenate_direction_sets)(parts)
        directions.method = self.method  # e.g. "ortho-linear-noreg", a variant of "ortho-linear" (fit.variants)
        directions.meta = {
            **directions.meta,
            "method": self.method,
            "base_method": self.base_method,
            "fingerprint": self.fingerprint,
            "input_fingerprint": self.input_fingerprint,
            "attributes": self.attributes,
            "params": self.method_params.model_dump(mode="json"),
        }
        directions.save(self.out_dir)
        return directions


def run_fit(
    params: Params, data_dir: Path, method: str, layout: OutputLayout = OutputLayout(), **plugins: Any
) -> DirectionSet:
    """Fit ``method`` in this process, unit after unit (no Prefect): for tests and scripting."""
    return run_stage(FitStage(params, data_dir, method, layout=layout, **plugins))
