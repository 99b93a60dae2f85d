"""Every direction set of a run as sliders: fitted methods, variants and imported sets alike.

A slider is one direction of one set, moving latents by α along it (:class:`stages.latent.editing.DirectionEdit`:
the unit vector, or the per-sample gradient path of a nonlinear model the set carries). Sliders are grouped by the
attribute they move:

- a supervised direction is named after its attribute (``interfacegan/happy``);
- an unsupervised component (``sefa/c003``) moves the attribute its set's stats name for it (the automatic naming of
  :mod:`stages.plugins.methods.naming`), signed so that +α increases that attribute; components named after
  nothing are grouped under :data:`UNNAMED`.

A set that cannot edit this generator's latents (another space or dimension, fitted for another generator) is left
out, with the reason, and shown as such on the page.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latentatlas.locations import StorePath
from stages.latent.directions import INDEX_FILE, DirectionsError, DirectionSet
from stages.latent.editing import DirectionEdit
from stages.latent.fields import load_model
from stages.photo.edit import DirectionsMismatchError, check_directions
from stages.plugins.generators import Generator

#: The group of components whose set names no attribute for them.
UNNAMED = "unnamed components"
_COMPONENT = re.compile(r"^c\d+$")


@dataclass(frozen=True)
class Slider:
    """One direction of one set.

    Attributes:
        id: ``<set>/<name>``, the slider's name in states and URLs.
        set_name: the directions folder's name (a method, a variant, or an imported set).
        name: the direction's name in its set.
        method: the set's method.
        attribute: the attribute +α increases, or None (an unnamed component).
        component: whether it is an unsupervised component (named after an attribute by the fit, not fitted on it).
        correlation: a component's naming correlation with its attribute (as oriented here), else None.
        space: ``z`` or ``w``.
        edit: how it moves latents (vector sign-aligned with ``attribute``).
    """

    id: str
    set_name: str
    name: str
    method: str
    attribute: str | None
    component: bool
    correlation: float | None
    space: str
    edit: DirectionEdit = field(repr=False, compare=False)

    @property
    def group(self) -> str:
        return self.attribute if self.attribute is not None else UNNAMED

    @property
    def label(self) -> str:
        """What the page shows beside it: the set, and for a component its name and what it was named after."""
        if not self.component:
            return self.set_name
        if self.attribute is None:
            return f"{self.set_name} {self.name}"
        return f"{self.set_name} {self.name} r{self.correlation:+.2f}"

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "set": self.set_name,
            "name": self.name,
            "method": self.method,
            "attribute": self.attribute,
            "group": self.group,
            "component": self.component,
            "correlation": self.correlation,
            "space": self.space,
            "kind": self.edit.kind,
            "label": self.label,
        }


@dataclass
class Catalog:
    """The run's sliders (sets in name order, directions in set order), and the sets left out with why."""

    sliders: list[Slider]
    sets: dict[str, DirectionSet]
    skipped: dict[str, str]
    notes: dict[str, list[str]]
    by_id: dict[str, Slider] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {slider.id: slider for slider in self.sliders}

    def groups(self) -> dict[str, list[Slider]]:
        """Attribute → its sliders: attributes some set fitted a direction for first, then those only components
        were named after, each in order of first appearance; :data:`UNNAMED` last."""
        grouped: dict[str, list[Slider]] = {}
        for slider in self.sliders:
            grouped.setdefault(slider.group, []).append(slider)
        fitted = list(dict.fromkeys(slider.group for slider in self.sliders if not slider.component))
        named = [name for name in grouped if name != UNNAMED and name not in fitted]
        return {name: grouped[name] for name in [*fitted, *named, *([UNNAMED] if UNNAMED in grouped else [])]}

    def for_attribute(self, attribute: str) -> list[Slider]:
        """Per set, the one slider that moves ``attribute`` (a component: the one with the largest |correlation|,
        as :func:`stages.latent.directions.select_directions` picks it)."""
        best: dict[str, Slider] = {}
        for slider in self.sliders:
            if slider.attribute != attribute:
                continue
            current = best.get(slider.set_name)
            if (
                current is None
                or (not slider.component and current.component)
                or (
                    slider.component
                    and current.component
                    and abs(slider.correlation or 0.0) > abs(current.correlation or 0.0)
                )
            ):
                best[slider.set_name] = slider
        return list(best.values())


def _slider(directions: DirectionSet, set_name: str, index: int) -> Slider:
    name = directions.names[index]
    stats = directions.stats.get(name, {})
    named = stats.get("attribute")
    component = bool(_COMPONENT.match(name))
    vector = directions.vectors[index].astype(np.float64)
    correlation = None
    if component:
        attribute = named if isinstance(named, str) and named else None
        correlation = float(stats.get("correlation", 0.0)) if attribute is not None else None
        if correlation is not None and correlation < 0:
            vector, correlation = -vector, -correlation
    else:
        attribute = named if isinstance(named, str) and named else name
    models = directions.meta.get("models", {})
    field_model = load_model(directions, name) if name in models else None
    edit = DirectionEdit(attribute or name, name, vector, field_model)
    return Slider(
        f"{set_name}/{name}",
        set_name,
        name,
        directions.method,
        attribute,
        component,
        correlation,
        directions.space,
        edit,
    )


def open_catalog(directions_root: Path, generator: Generator, data_dir: str | StorePath) -> Catalog:
    """The sliders of every complete directions folder under ``directions_root`` that can edit ``generator``.

    Sets that cannot (unreadable, another space or dimension, fitted for another generator) go to ``skipped`` with
    the reason; the warnings of sets whose generator cannot be traced go to ``notes``.
    """
    sliders: list[Slider] = []
    sets: dict[str, DirectionSet] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    folders = (
        sorted(path for path in Path(directions_root).iterdir() if path.is_dir() and (path / INDEX_FILE).is_file())
        if Path(directions_root).is_dir()
        else []
    )
    for folder in folders:
        set_name = folder.name
        try:
            directions = DirectionSet.load(folder)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                check_directions(directions, str(folder), generator, data_dir)
            if directions.space not in ("z", "w"):
                raise DirectionsMismatchError(f"{folder}: directions in space {directions.space!r} (edits need z or w)")
            made = [_slider(directions, set_name, index) for index in range(len(directions.names))]
        except (DirectionsError, DirectionsMismatchError, KeyError) as error:
            skipped[set_name] = str(error).strip("'\"")
            continue
        sets[set_name] = directions
        sliders += made
        if caught:
            notes[set_name] = [str(warning.message) for warning in caught]
    return Catalog(sliders, sets, skipped, notes)
