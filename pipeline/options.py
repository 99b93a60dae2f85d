"""The CLI's parameter types and option groups: a value is checked and converted while the command line is parsed,
so a malformed one is a usage error that names its option, and a command receives typed values (a list of alphas,
a layer range, the inversion settings as one object) instead of strings and loose arguments.

The groups build models of ``stages/`` (inversion and encoder settings), which import torch: they import them when
a command runs, never at import time, so that ``latentatlas --help`` stays fast.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from latentatlas.errors import LatentAtlasError

if TYPE_CHECKING:
    from latentatlas.params import Params
    from stages.photo.encoder import EncoderSettings
    from stages.photo.invert import InversionPlan, InversionSettings


class AlphaList(click.ParamType):
    """``-3,-1.5,0,1.5,3`` → [-3.0, -1.5, 0.0, 1.5, 3.0]: comma-separated finite numbers, at least one."""

    name = "alphas"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[float]:
        if isinstance(value, list):
            return value
        text = str(value)
        items = [item.strip() for item in text.split(",")]
        expected = f"expected comma-separated numbers (e.g. -3,-1.5,0,1.5,3), got {text!r}"
        if not any(items):
            self.fail(expected, param, ctx)
        values = []
        for position, item in enumerate(items, start=1):
            try:
                number = float(item)
            except ValueError:
                self.fail(f"{expected}: item {position} ({item!r}) is not a number", param, ctx)
            if not math.isfinite(number):
                self.fail(f"{expected}: item {position} ({item!r}) is not a finite number", param, ctx)
            values.append(number)
        return values


class LayerRange(click.ParamType):
    """``0,8`` → (0, 8): the W+ layers [start, stop) an edit moves, two integers with 0 <= start < stop."""

    name = "start,stop"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        text = str(value)
        expected = f"expected two integers start,stop (the W+ layers [start, stop), e.g. 0,8), got {text!r}"
        try:
            start, stop = (int(part.strip()) for part in text.split(","))
        except ValueError:
            self.fail(expected, param, ctx)
        if not 0 <= start < stop:
            self.fail(f"{expected}: need 0 <= start < stop", param, ctx)
        return start, stop


class NameList(click.ParamType):
    """``male,age`` → ["male", "age"]: comma-separated names, none empty or repeated; ``""`` → []."""

    name = "names"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        if isinstance(value, list):
            return value
        text = str(value)
        if not text.strip():
            return []
        names = [item.strip() for item in text.split(",")]
        if not all(names):
            self.fail(f"expected comma-separated attribute names, got {text!r}: an empty name", param, ctx)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            self.fail(f"{text!r}: {repeated} given more than once", param, ctx)
        return names


def option_group(name: str, build: Callable[..., Any], *options: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Add ``options`` (``click.option(...)`` decorators, in help order) to a command, which receives them as one
    argument ``name``: ``build(**their values)``. A :class:`LatentAtlasError` from ``build`` (a value the model
    refuses) is a usage error."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        def probe() -> None:
            """Only collects the options' parameter names."""

        for option in options:
            option(probe)
        keys = [parameter.name for parameter in probe.__click_params__]  # type: ignore[attr-defined]

        @functools.wraps(command)
        def grouped(*args: Any, **kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in keys}
            try:
                group = build(**values)
            except LatentAtlasError as error:
                raise click.UsageError(str(error)) from None
            return command(*args, **kwargs, **{name: group})

        for option in reversed(options):
            grouped = option(grouped)
        return grouped

    return decorate


# ------------------------------------------------------------------------------------------- inversion: invert, edit


@dataclass(frozen=True)
class InversionOptions:
    """The inversion options of ``invert`` and ``edit``: how a photo becomes a crop and a latent.

    Attributes:
        settings: the inversion settings (space, steps, learning rate, LPIPS trunk, init, device, batch size).
        encoder_path: the encoder file named by ``--encoder``; None: the default one, which may be absent.
        align: ``--align/--no-align``; None: on for the embedded face generator.
        face_index: the face to use when a photo has several.
    """

    settings: InversionSettings
    encoder_path: Path | None
    align: bool | None
    face_index: int | None

    def plan(self, params: Params) -> InversionPlan:
        """These options resolved against the generator ``params`` names (see
        :func:`stages.photo.invert.plan_inversion`)."""
        from stages.photo.invert import plan_inversion

        return plan_inversion(params, self.settings, self.encoder_path, self.align, self.face_index)


def _inversion_options(
    encoder_path: Path | None, align: bool | None, face_index: int | None, **settings: Any
) -> InversionOptions:
    from stages.photo.invert import inversion_settings

    return InversionOptions(inversion_settings(**settings), encoder_path, align, face_index)


def inversion_options(batch_size: bool = False) -> Callable[[Any], Any]:
    """The options shared by ``invert`` and ``edit`` as one :class:`InversionOptions` argument ``inversion``;
    ``batch_size``: with ``--batch-size`` (invert; edit optimises one photo)."""
    batch = [click.option("--batch-size", type=click.IntRange(min=1), default=8, help="photos optimised together")]
    return option_group(
        "inversion",
        _inversion_options,
        *(batch if batch_size else []),
        click.option(
            "--space",
            type=click.Choice(["z", "w", "w+"]),
            default=None,
            help="latent space of the inversion [default: w+ for style-based generators, else z; edit: "
            "the directions' space (W directions: w+)]",
        ),
        click.option("--steps", type=click.IntRange(min=0), default=100, help="optimisation steps per photo"),
        click.option(
            "--lr",
            "learning_rate",
            type=click.FloatRange(min=0, min_open=True),
            default=0.1,
            help="Adam's peak step, in standard deviations of the latent",
        ),
        click.option("--lpips-net", type=click.Choice(["vgg", "alex"]), default="vgg", help="LPIPS trunk of the loss"),
        click.option(
            "--init",
            type=click.Choice(["encoder", "mean", "random"]),
            default="encoder",
            help="start: the trained encoder's guess (falls back to mean w / random z when the default "
            "encoder file is absent), the mean w, or a random latent",
        ),
        click.option(
            "--encoder",
            "encoder_path",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="encoder file [default: models/encoder/encoder.pt]",
        ),
        click.option(
            "--align/--no-align",
            default=None,
            help="detect the face (MTCNN) and align it to the generator's canonical crop [default: on for "
            "the embedded face generator]; --no-align centre-crops the photo",
        ),
        click.option(
            "--face-index",
            type=click.IntRange(min=0),
            default=None,
            help="the face to use when a photo has several (0 = the largest)",
        ),
        click.option("--device", default="auto", help="auto | cpu | cuda | cuda:<k>"),
    )


@dataclass(frozen=True)
class EditOptions:
    """What ``edit`` does to the inverted photo: move it along ``attribute`` of the set at ``directions_path`` by
    each of ``alphas``, holding ``keep`` fixed, in W+ ``layers`` (None: all); results go to ``out_dir`` (None:
    ``edits/<photo>``)."""

    directions_path: Path
    attribute: str
    alphas: list[float]
    keep: list[str]
    layers: tuple[int, int] | None
    out_dir: Path | None


def _edit_options(keep: list[str] | None, **values: Any) -> EditOptions:
    return EditOptions(keep=keep or [], **values)


edit_options = functools.partial(
    option_group,
    "edit",
    _edit_options,
    click.option(
        "--directions",
        "directions_path",
        type=click.Path(path_type=Path, file_okay=False),
        required=True,
        help="a directions set: directions/<method>",
    ),
    click.option("--attribute", required=True, help="the direction to move along (e.g. happy)"),
    click.option("--alphas", type=AlphaList(), default="-3,-1.5,0,1.5,3", help="comma-separated edit strengths"),
    click.option(
        "--keep", type=NameList(), default=None, help="comma-separated attributes to hold fixed (conditional editing)"
    ),
    click.option(
        "--layers", type=LayerRange(), default=None, help="W+ only: move layers start,stop (e.g. 0,8) [default: all]"
    ),
    click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="folder for latents.zarr, the strip (PNG) and the scores (CSV, JSON) [default: edits/<photo>]",
    ),
)


# --------------------------------------------------------------------------------------------------- train-encoder


def _encoder_settings(**values: Any) -> EncoderSettings:
    from stages.photo.encoder import encoder_settings

    return encoder_settings(**values)


encoder_options = functools.partial(
    option_group,
    "settings",
    _encoder_settings,
    click.option("--epochs", type=click.IntRange(min=1), default=3),
    click.option("--batch-size", type=click.IntRange(min=1), default=64),
    click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=2e-3),
    click.option("--width", type=click.IntRange(min=1), default=32, help="channels of the first conv"),
    click.option(
        "--input-size", type=click.IntRange(min=8), default=32, help="side images are resized to (power of 2)"
    ),
    click.option("--val-samples", type=click.IntRange(min=1), default=500, help="held-out samples (the last ones)"),
    click.option("--max-train-samples", type=click.IntRange(min=1), default=None),
    click.option("--seed", type=click.IntRange(min=0), default=0),
    click.option("--device", default="auto", help="auto | cpu | cuda | cuda:<k>"),
)
