"""Verdicts on the papers' claims by rules fixed in advance, with effect sizes.

A claim's relation is a :class:`Rule` on one measured quantity (a ratio of ours with and without the paper's
ingredient, an accuracy, a difference): the direction the quantity must go (``below`` / ``above``), the *minimum
effect* the claim needs (e.g. "at least halves": a ratio ≤ 0.5) and the value that means *no effect* (a ratio of 1).
Given our estimate and its 95 % interval [low, high]:

- **yes**: the estimate reaches the minimum effect and the interval excludes no effect;
- **no**: the whole interval falls short of the minimum effect (the effect, if any, is smaller than claimed);
- **inconclusive**: neither; the interval is too wide to tell (or the quantity has no interval);
- **n/a**: not measurable on this run (the claim says what it needs).

A rule whose minimum effect *is* its no-effect value is a bar (non-inferiority, agreement within a tolerance): yes
when the whole interval clears the bar, no when the whole interval misses it.

A claim measured on several parts (attributes, latent spaces, the two sides of conditional editing) holds when
every part does: yes if all parts say yes, no if any says no, inconclusive otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stages.reporting.statistics import Estimate

VERDICTS = ("yes", "no", "inconclusive", "n/a")


@dataclass(frozen=True)
class Rule:
    """The relation a claim needs, fixed before any run (see the module docstring).

    Attributes:
        quantity: what is measured, in words (``"mean |cos| with the penalty / without"``).
        direction: ``"below"``: the claim needs the quantity small; ``"above"``: large.
        minimum: the minimum effect, on the quantity's scale.
        no_effect: the quantity's value when the claim's ingredient does nothing.
        reason: why this minimum (what the paper reports).
    """

    quantity: str
    direction: Literal["below", "above"]
    minimum: float
    no_effect: float
    reason: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("below", "above"):
            raise ValueError(f"direction must be 'below' or 'above', got {self.direction!r}")
        if (self.minimum > self.no_effect) if self.direction == "below" else (self.minimum < self.no_effect):
            raise ValueError(
                f"{self.quantity}: a minimum effect {self.minimum} on the wrong side of no effect {self.no_effect}"
            )

    def _beyond(self, value: float, bar: float, strictly: bool = False) -> bool:
        if self.direction == "below":
            return value < bar if strictly else value <= bar
        return value > bar if strictly else value >= bar

    def judge(self, estimate: Estimate) -> str:
        """``yes`` / ``no`` / ``inconclusive`` for an estimate with its interval (see the module docstring)."""
        if not np.isfinite(estimate.value):
            return "inconclusive"
        if not (np.isfinite(estimate.low) and np.isfinite(estimate.high)):
            return "inconclusive"
        nearest, farthest = (
            (estimate.low, estimate.high) if self.direction == "below" else (estimate.high, estimate.low)
        )
        if self._beyond(estimate.value, self.minimum) and self._beyond(farthest, self.no_effect, strictly=True):
            return "yes"
        if not self._beyond(nearest, self.minimum):
            return "no"
        return "inconclusive"

    @property
    def text(self) -> str:
        """The rule in words: ``mean |cos| … ≤ 0.5, interval below 1``."""
        sign, side = ("≤", "below") if self.direction == "below" else ("≥", "above")
        if self.minimum == self.no_effect:
            return f"{self.quantity}: the whole interval {side} {self.minimum:g}"
        return f"{self.quantity} {sign} {self.minimum:g}, its interval {side} {self.no_effect:g} (no effect)"

    def to_json(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "direction": self.direction,
            "minimum_effect": self.minimum,
            "no_effect": self.no_effect,
            "text": self.text,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Part:
    """One measured part of a claim: a label (``"Z"``, ``"age"``), our estimate and the rule it is judged by."""

    label: str
    estimate: Estimate
    rule: Rule

    @property
    def verdict(self) -> str:
        return self.rule.judge(self.estimate)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, **self.estimate.to_json(), "rule": self.rule.text, "verdict": self.verdict}


def combine(verdicts: list[str]) -> str:
    """One verdict from the parts' (see the module docstring); ``n/a`` when nothing was measured."""
    if not verdicts:
        return "n/a"
    if all(verdict == "yes" for verdict in verdicts):
        return "yes"
    return "no" if "no" in verdicts else "inconclusive"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, measured on this run.

    Attributes:
        id: stable identifier (``pham-van-collateral``).
        paper: the paper, cited by title and authors.
        text: the claim in words.
        paper_value: what the paper reports, in words.
        rules: the rules the parts are judged by (fixed in advance).
        parts: our measurements (empty: not measured).
        ours: our measurement in words.
        interval: how the intervals were obtained.
        note: why the relation may differ here (another GAN, labelers, scale) or what a missing measurement needs.
    """

    id: str
    paper: str
    text: str
    paper_value: str
    rules: tuple[Rule, ...]
    parts: tuple[Part, ...] = ()
    ours: str = "not measured"
    interval: str = ""
    note: str = ""

    @property
    def verdict(self) -> str:
        return combine([part.verdict for part in self.parts])

    @property
    def rule_text(self) -> str:
        return "; ".join(dict.fromkeys(rule.text for rule in self.rules))

    @property
    def estimates_text(self) -> str:
        """Our estimates with their intervals in one line: every part when there are at most three, else how many
        parts got each verdict."""
        if not self.parts:
            return "not measured"
        if len(self.parts) <= 3:
            return "; ".join(f"{part.label}: {part.estimate.format(2)}" for part in self.parts)
        counts = {verdict: sum(part.verdict == verdict for part in self.parts) for verdict in VERDICTS}
        return f"{len(self.parts)} parts: " + ", ".join(f"{n} {verdict}" for verdict, n in counts.items() if n)

    def to_json(self) -> dict[str, Any]:
        """``reports/reproduction.json``'s record: id, paper, the paper's value, ours with intervals, the rule and
        the verdict."""
        return {
            "id": self.id,
            "paper": self.paper,
            "claim": self.text,
            "paper_value": self.paper_value,
            "ours": [part.to_json() for part in self.parts],
            "ours_text": self.ours,
            "rule": [rule.to_json() for rule in self.rules],
            "interval_method": self.interval,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass(frozen=True)
class Measurement:
    """What a claim's measurement returns: its parts, our measurement in words, how the intervals were obtained and
    a note."""

    parts: tuple[Part, ...]
    ours: str
    interval: str
    note: str = ""


@dataclass(frozen=True)
class Missing:
    """A claim (or a whole paper) this run cannot measure, and what it needs."""

    needs: str


@dataclass
class PaperSection:
    """A paper's reproduction: a summary of the method, tables (title → DataFrame) and claims."""

    paper: str
    summary: str
    tables: list[tuple[str, Any]] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
