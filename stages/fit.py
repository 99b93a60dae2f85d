"""Stage 4, fit: one method's directions from the labeled latent store → ``directions/<method>/``.

A *variant* (``fit.variants.<name>: {method: <method>, ...params}``) is fitted by its method with its own params
into ``directions/<name>/``, exactly like a method listed in ``fit.methods``.

Loads only what fitting needs: the (N, D) latents of each stored space and the label columns of the attributes,
never images. A method whose attributes are independent (``MethodSpec.separable``) is fitted as one unit of work
per attribute (the flow runs them as parallel Prefect tasks) and the results are concatenated; the others are one
unit. Long-running methods checkpoint into ``work_dir``, a folder keyed by the fingerprint of everything that
produced the fit, so a killed run resumes and a changed one starts clean.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from latentatlas import dataset
from latentatlas.layout import OutputLayout
from latentatlas.params import Params
from latentatlas.stores import fingerprint_of, store_lock
from stages.runtime.device import resolve_device
from stages.plugins.generators import generator_for
from stages.plugins.labelers import labeler_for
from stages.plugins.labelers.scoring import score_frame
from stages.latent.directions import DirectionSet, concatenate_direction_sets
from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec

class FitStage:
    """Fitting one method: ``units()`` lists the independent pieces, ``fit_unit`` runs one, ``finish`` saves."""

    def __init__(self, params: Params, data_dir: Path, method: str, layout: OutputLayout = OutputLayout(),
                 generator: Any = None, labeler: Any = None) -> None:
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
            raise MethodInputError(f"fit.attributes: {unknown} are not labeled attributes; the labels have "
                                   f"{self.data.attributes}")
        self.device = resolve_device(params.fit.device)
        self.layout = layout
        self.out_dir = layout.directions(method)
        self.input_fingerprint = self.data.labels_store.info.fingerprint
        self.fingerprint = fingerprint_of({"method": method, "base_method": self.base_method, "params": self.method_params.model_dump(mode="json"),
                                           "attributes": self.attributes, "input": self.input_fingerprint,
                                           "device_type": self.device.type})
        self.work_dir = layout.fit_work_root() / f"{method}-{self.fingerprint}"
        self._generator, self._labeler = generator, labeler
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

    def units(self) -> list[list[str]]:
        """Groups of attributes fitted together: one per attribute for separable methods, else one group."""
        return [[name] for name in self.attributes] if self.spec.separable else [self.attributes]

    def context(self, attributes: list[str], progress=None) -> FitContext:
        needs_generator = self.spec.needs_generator
        return FitContext(latents=self.latents, labels=self.labels[attributes], attributes=attributes,
                          generator=self.generator if needs_generator else None,
                          score_images=self.score_images if needs_generator else None, device=self.device,
                          work_dir=self.work_dir, input_fingerprint=self.input_fingerprint,
                          progress=progress or (lambda step, total, metrics: None))

    def fit_unit(self, attributes: list[str], progress=None) -> DirectionSet:
        return self.spec.fit(self.context(attributes, progress), self.method_params)

    def finish(self, parts: list[DirectionSet]) -> DirectionSet:
        """Concatenate the units' results (in attribute order), record provenance, save atomically."""
        directions = parts[0] if len(parts) == 1 else (self.spec.combine or concatenate_direction_sets)(parts)
        directions.method = self.method  # e.g. "ortho-linear-noreg", a variant of "ortho-linear" (fit.variants)
        directions.meta = {**directions.meta, "method": self.method, "base_method": self.base_method,
                           "fingerprint": self.fingerprint,
                           "input_fingerprint": self.input_fingerprint, "attributes": self.attributes,
                           "params": self.method_params.model_dump(mode="json")}
        directions.save(self.out_dir)
        return directions


def run_fit(params: Params, data_dir: Path, method: str, layout: OutputLayout = OutputLayout(),
            **plugins: Any) -> DirectionSet:
    """Fit ``method`` in this process, unit after unit (no Prefect): for tests and scripting."""
    stage = FitStage(params, data_dir, method, layout=layout, **plugins)
    with stage.lock():
        return stage.finish([stage.fit_unit(unit) for unit in stage.units()])
