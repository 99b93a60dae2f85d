"""What the explorer exports: the image, a strip of α steps, an animated traversal, the latent.

The strip is the one ``latentatlas edit`` draws (:func:`stages.photo.edit.render_strip`: each step captioned with
its scores of the slider's attribute and the held ones). The traversal is encoded by Pillow's GIF or WebP writer
(ping-pong from −span to +span and back, looping). Images are exported at the generator's resolution, or enlarged
``scale`` times with nearest-neighbour sampling (every pixel stays the generator's).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image, features

from stages.explore.engine import ExploreEngine, Rendered
from stages.explore.state import ALPHA_LIMIT, ExploreInputError, ExploreState
from stages.photo.edit import render_strip

STRIP_STEPS = (2, 25)
TRAVERSAL_FRAMES = (4, 120)
MAX_SCALE = 8
#: Traversal frame time (ms) and the smallest side frames are enlarged to (nearest neighbour) so they are visible.
FRAME_MS = 60
TRAVERSAL_MIN_SIDE = 256


def _check_range(value: float, low: float, high: float, name: str) -> None:
    if not low <= value <= high:
        raise ExploreInputError(f"{name} {value:g}: expected a value in [{low:g}, {high:g}]")


def enlarge(pixels: np.ndarray, scale: int) -> Image.Image:
    """(H, W, 3) uint8 → a PIL image ``scale`` times larger (nearest neighbour)."""
    _check_range(scale, 1, MAX_SCALE, "scale")
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return image if scale == 1 else image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def png_bytes(pixels: np.ndarray, scale: int = 1) -> bytes:
    """(H, W, 3) uint8 → PNG bytes (fast compression: an interactive render's budget is milliseconds)."""
    buffer = io.BytesIO()
    enlarge(pixels, scale).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def latent_npy(rendered: Rendered) -> bytes:
    """The latent a render was synthesised from, as ``.npy`` bytes: (1, D) float32 in z or w, (1, L, D) in w+."""
    buffer = io.BytesIO()
    np.save(buffer, rendered.latent.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def along(state: ExploreState, slider_id: str, alphas: list[float]) -> list[ExploreState]:
    """``state`` with ``slider_id`` at each of ``alphas`` (the other sliders where they are)."""
    edits = list(state.edits)
    position = next((index for index, (other, _) in enumerate(edits) if other == slider_id), len(edits))
    rest = [edit for edit in edits if edit[0] != slider_id]
    return [state.with_edits(rest[:position] + [(slider_id, float(alpha))] + rest[position:]) for alpha in alphas]


def strip_png(engine: ExploreEngine, state: ExploreState, slider_id: str, steps: int = 7, span: float = 3.0) -> bytes:
    """A row of ``steps`` images with the slider from −span to +span, captioned with their scores."""
    _check_range(steps, *STRIP_STEPS, "steps")
    _check_range(span, 0.1, ALPHA_LIMIT, "span")
    slider = engine.slider(slider_id)
    alphas = [float(alpha) for alpha in np.linspace(-span, span, steps)]
    rendered = engine.render_many(along(state, slider_id, alphas))
    pixels = np.stack([item.pixels for item in rendered])
    scores = pd.DataFrame(engine.score_pixels(pixels), columns=engine.attributes)
    shown = [name for name in [slider.attribute, *state.keep] if name in engine.attributes]
    shown = list(dict.fromkeys(shown)) or engine.attributes[:3]
    header = (
        f"{slider.id} ({slider.space})"
        + (f", keeping {', '.join(state.keep)}" if state.keep else "")
        + (f", start {state.start.text()}")
    )
    titles = [f"alpha {alpha:+.2f}" for alpha in alphas]
    buffer = io.BytesIO()
    render_strip(pixels, titles, scores, shown, header).save(buffer, format="PNG")
    return buffer.getvalue()


def traversal_formats() -> list[str]:
    """Animated formats this Pillow writes: gif always, webp when built with libwebp."""
    return ["gif"] + (["webp"] if features.check("webp") else [])


def traversal(
    engine: ExploreEngine,
    state: ExploreState,
    slider_id: str,
    frames: int = 24,
    span: float = 3.0,
    image_format: str = "gif",
) -> bytes:
    """An animation of the slider going −span → +span → −span (``frames`` frames, looping), as GIF or WebP bytes."""
    _check_range(frames, *TRAVERSAL_FRAMES, "frames")
    _check_range(span, 0.1, ALPHA_LIMIT, "span")
    if image_format not in traversal_formats():
        raise ExploreInputError(f"format {image_format!r}: this server writes {', '.join(traversal_formats())}")
    engine.slider(slider_id)
    half = frames // 2 + 1
    forward = [float(alpha) for alpha in np.linspace(-span, span, half)]
    alphas = (forward + forward[-2:0:-1])[:frames]
    rendered = engine.render_many(along(state, slider_id, alphas))
    side = int(rendered[0].pixels.shape[0])
    scale = max(1, min(MAX_SCALE, -(-TRAVERSAL_MIN_SIDE // side)))
    images = [enlarge(item.pixels, scale) for item in rendered]
    buffer = io.BytesIO()
    options = {"lossless": True} if image_format == "webp" else {"optimize": False}
    images[0].save(
        buffer,
        format=image_format.upper(),
        save_all=True,
        append_images=images[1:],
        duration=FRAME_MS,
        loop=0,
        **options,
    )
    return buffer.getvalue()
