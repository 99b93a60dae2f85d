"""What the explorer shows, as a value and as the URL query that restores it.

A state is the start image, the position of every moved slider, the attributes held fixed (conditional editing),
the W+ layers W directions move, the truncation ψ, and the compare mode's attribute and strength. Its URL query
(the page's permalink, and the query of every render and export request)::

    ?start=seed:42                     or sample:<sample id> | photo:<32 hex digits of an inverted upload>
    &e=interfacegan/happy:1.5          one per moved slider: <direction set>/<direction name>:<α>
    &e=sefa/c003:-2
    &keep=male&keep=age                held attributes (each slider's direction is made orthogonal to theirs)
    &layers=0,4                        W+ layers [start, stop) that W directions move (default: all)
    &psi=0.7                           truncation towards the mean w (default 1: none)
    &mode=compare&cmp=happy&calpha=2   compare mode: one attribute, every method, one shared α

Every value is checked here (numbers finite and in range, ids of the right form); names are checked against the
run by :class:`stages.explore.engine.ExploreEngine`, which never uses them as paths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from latentatlas.errors import LatentAtlasError

#: |α| of one slider at most (in latent units: a unit direction moved 10 standard deviations is far off the prior).
ALPHA_LIMIT = 10.0
#: Truncation ψ range (1: none; 0: the mean w; above 1 extrapolates).
PSI_RANGE = (-1.0, 2.0)
#: Moved sliders in one state at most (bounds the work of one request).
MAX_EDITS = 256
#: Held attributes at most.
MAX_KEEP = 64
SEED_MAX = 2**32 - 1
PHOTO_ID = re.compile(r"^[0-9a-f]{32}$")
START_KINDS = ("seed", "sample", "photo")
MODES = ("sliders", "compare")
#: Query keys of a state; requests may carry others of their own (an export's slider, steps, ...).
STATE_KEYS = frozenset({"start", "e", "keep", "layers", "psi", "mode", "cmp", "calpha"})


class ExploreInputError(LatentAtlasError, ValueError):
    """A request the explorer cannot serve: a malformed or out-of-range value, or a name the run does not have."""


@dataclass(frozen=True)
class Start:
    """The start image: a seeded z (``seed``), a stored sample (``sample``) or an inverted upload (``photo``)."""

    kind: str = "seed"
    key: int | str = 0

    def __post_init__(self) -> None:
        if self.kind not in START_KINDS:
            raise ExploreInputError(f"start {self.kind!r}: expected one of {', '.join(START_KINDS)}")
        if self.kind == "photo":
            if not isinstance(self.key, str) or not PHOTO_ID.match(self.key):
                raise ExploreInputError(f"start photo:{self.key}: a photo id is 32 lowercase hex digits")
        elif not isinstance(self.key, int) or isinstance(self.key, bool) or not 0 <= self.key <= SEED_MAX:
            raise ExploreInputError(f"start {self.kind}:{self.key}: expected an integer in 0..{SEED_MAX}")

    def text(self) -> str:
        return f"{self.kind}:{self.key}"

    @classmethod
    def parse(cls, text: str) -> Start:
        kind, separator, key = text.partition(":")
        if not separator:
            raise ExploreInputError(f"start {text!r}: expected seed:<n>, sample:<id> or photo:<id>")
        if kind == "photo":
            return cls("photo", key)
        try:
            number = int(key)
        except ValueError:
            raise ExploreInputError(f"start {text!r}: {key!r} is not an integer") from None
        return cls(kind, number)


@dataclass(frozen=True)
class ExploreState:
    """One view of the explorer (see the module docstring).

    Attributes:
        start: the start image.
        edits: (slider id, α) per moved slider, in the order they apply; no slider twice, no α = 0.
        keep: attributes held fixed.
        layers: W+ layers [start, stop) that W directions move; None: all (the w itself moves).
        psi: truncation towards the mean w (generators with W only).
        mode: ``sliders`` or ``compare``.
        compare: the compared attribute (compare mode).
        compare_alpha: the compare mode's shared α.
    """

    start: Start = field(default_factory=Start)
    edits: tuple[tuple[str, float], ...] = ()
    keep: tuple[str, ...] = ()
    layers: tuple[int, int] | None = None
    psi: float = 1.0
    mode: str = "sliders"
    compare: str | None = None
    compare_alpha: float = 0.0

    def __post_init__(self) -> None:
        ids = [slider for slider, _ in self.edits]
        repeated = sorted({slider for slider in ids if ids.count(slider) > 1})
        if repeated:
            raise ExploreInputError(f"e: slider {repeated[0]!r} given more than once")
        if len(self.edits) > MAX_EDITS:
            raise ExploreInputError(f"e: {len(self.edits)} moved sliders; at most {MAX_EDITS}")
        for slider, alpha in self.edits:
            _check_alpha(alpha, f"e {slider}")
        if len(set(self.keep)) != len(self.keep):
            raise ExploreInputError(f"keep: an attribute given more than once ({list(self.keep)})")
        if len(self.keep) > MAX_KEEP:
            raise ExploreInputError(f"keep: {len(self.keep)} attributes; at most {MAX_KEEP}")
        if self.layers is not None and not 0 <= self.layers[0] < self.layers[1]:
            raise ExploreInputError(f"layers {self.layers[0]},{self.layers[1]}: need 0 <= start < stop")
        if not (math.isfinite(self.psi) and PSI_RANGE[0] <= self.psi <= PSI_RANGE[1]):
            raise ExploreInputError(f"psi {self.psi}: expected a number in [{PSI_RANGE[0]:g}, {PSI_RANGE[1]:g}]")
        if self.mode not in MODES:
            raise ExploreInputError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        _check_alpha(self.compare_alpha, "calpha")

    @property
    def moved(self) -> dict[str, float]:
        """Slider id → α of every slider away from 0."""
        return {slider: alpha for slider, alpha in self.edits if alpha != 0.0}

    def render_key(self) -> str:
        """What decides the image, canonically (slider order of vector edits kept: gradient paths do not commute)."""
        edits = ";".join(f"{slider}:{alpha!r}" for slider, alpha in self.edits if alpha != 0.0)
        layers = f"{self.layers[0]},{self.layers[1]}" if self.layers is not None else "all"
        return f"{self.start.text()}|{edits}|{','.join(sorted(self.keep))}|{layers}|{self.psi!r}"

    def with_edits(self, edits: Iterable[tuple[str, float]]) -> ExploreState:
        """This state with other slider positions (same start, held attributes, layers and ψ)."""
        return ExploreState(
            self.start, tuple(edits), self.keep, self.layers, self.psi, self.mode, self.compare, self.compare_alpha
        )


def _check_alpha(alpha: float, where: str) -> None:
    if not (isinstance(alpha, float) and math.isfinite(alpha) and abs(alpha) <= ALPHA_LIMIT):
        raise ExploreInputError(f"{where}: α {alpha} is not a number in [-{ALPHA_LIMIT:g}, {ALPHA_LIMIT:g}]")


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ExploreInputError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ExploreInputError(f"{where}: {text!r} is not a finite number")
    return value


def _single(values: dict[str, list[str]], key: str) -> str | None:
    found = values.get(key, [])
    if len(found) > 1:
        raise ExploreInputError(f"{key}: given {len(found)} times; give it once")
    return found[0] if found else None


def parse_edit(text: str) -> tuple[str, float]:
    """``"interfacegan/happy:1.5"`` → ("interfacegan/happy", 1.5)."""
    slider, separator, alpha = text.rpartition(":")
    if not separator or "/" not in slider or slider.startswith("/") or slider.endswith("/"):
        raise ExploreInputError(f"e {text!r}: expected <direction set>/<direction>:<α>, e.g. interfacegan/happy:1.5")
    return slider, _number(alpha, f"e {text!r}")


def parse_query(pairs: Iterable[tuple[str, str]], extra: Iterable[str] = ()) -> ExploreState:
    """The state a URL query holds (``pairs`` as from ``parse_qsl``); keys in ``extra`` are the request's own.

    Raises:
        ExploreInputError: an unknown key, a repeated single key, or a malformed or out-of-range value (naming it).
    """
    allowed = STATE_KEYS | set(extra)
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        if key not in allowed:
            raise ExploreInputError(f"unknown query key {key!r}; a state has {', '.join(sorted(STATE_KEYS))}")
        values.setdefault(key, []).append(value)
    start_text = _single(values, "start")
    start = Start.parse(start_text) if start_text is not None else Start()
    edits = tuple(parse_edit(text) for text in values.get("e", []))
    keep = tuple(name for text in values.get("keep", []) for name in [text.strip()] if name)
    layers_text = _single(values, "layers")
    layers = None
    if layers_text is not None and layers_text not in ("", "all"):
        parts = layers_text.split(",")
        try:
            first, last = (int(part) for part in parts)
        except ValueError:
            raise ExploreInputError(f"layers {layers_text!r}: expected two integers start,stop (e.g. 0,4)") from None
        layers = (first, last)
    psi_text = _single(values, "psi")
    mode = _single(values, "mode") or "sliders"
    compare = _single(values, "cmp") or None
    calpha_text = _single(values, "calpha")
    return ExploreState(
        start=start,
        edits=edits,
        keep=keep,
        layers=layers,
        psi=_number(psi_text, "psi") if psi_text is not None else 1.0,
        mode=mode,
        compare=compare,
        compare_alpha=_number(calpha_text, "calpha") if calpha_text is not None else 0.0,
    )


def to_query(state: ExploreState) -> str:
    """The URL query of ``state`` (:func:`parse_query` reads it back to an equal state); defaults are left out."""
    pairs: list[tuple[str, str]] = [("start", state.start.text())]
    pairs += [
        ("e", f"{slider}:{alpha:g}" if float(f"{alpha:g}") == alpha else f"{slider}:{alpha!r}")
        for slider, alpha in state.edits
    ]
    pairs += [("keep", name) for name in state.keep]
    if state.layers is not None:
        pairs.append(("layers", f"{state.layers[0]},{state.layers[1]}"))
    if state.psi != 1.0:
        pairs.append(("psi", repr(state.psi)))
    if state.mode != "sliders":
        pairs.append(("mode", state.mode))
    if state.compare is not None:
        pairs.append(("cmp", state.compare))
    if state.compare_alpha != 0.0:
        pairs.append(("calpha", repr(state.compare_alpha)))
    return urlencode(pairs)
