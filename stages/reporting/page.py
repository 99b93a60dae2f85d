"""The report page's HTML pieces: tables whose integers print as integers, folded blocks, and the style sheet (one
self-contained page: no script, no font, no URL)."""

from __future__ import annotations

import html
import math
import numbers

import pandas as pd

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1240px;margin:auto;padding:0 1em 2em;color:#222;line-height:1.35}
h1{font-size:1.5em;margin:.5em 0 .2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}h2#comparison{margin-top:.4em}
h3{margin:1em 0 .3em}
h3 small{font-weight:normal;color:#555;font-size:.8em}
p.lead{margin:.2em 0;font-size:14px;color:#444}nav{font-size:14px;margin:.3em 0 .6em}nav a{margin-right:1em}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
img{max-width:100%;margin:6px 0}.warning{color:#a40}.note{color:#555;font-size:13px;margin:.2em 0}
details{margin:.4em 0}summary{cursor:pointer;color:#245;font-size:14px}
.figures{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.scroll{overflow-x:auto}table.ranking td{white-space:nowrap}table.claims td,table.claims th{text-align:left}
table.compare{border:none}table.compare td,table.compare th{border:none;padding:0 8px 0 0;vertical-align:top}
table.compare tbody th{text-align:left;font-weight:normal;white-space:nowrap;font-size:13px;padding-top:14px;
width:190px}
table.compare img.strip{max-width:none;margin:0;display:block}
.method{font-weight:bold;font-size:14px}.meta{color:#555}
.group{display:inline-block;padding:0 5px;border-radius:3px;background:#ddd;font-size:12px}
.group.g1{background:#bfe3c0}.group.g2{background:#f3e2a9}.group.g3{background:#f4c9a8}.group.g4{background:#eee}
.faces{display:flex}.faces .who{font-size:12px;color:#555;text-align:center}
.alphas{display:flex}.alphas span{display:inline-block;text-align:center;font-size:12px;color:#555}
.alphas span.zero{font-weight:bold;color:#222}
"""


def format_cell(value: object, digits: int = 3) -> str:
    """A table cell: integers as integers (counts, steps), other numbers with ``digits`` decimals (never −0.000),
    booleans as yes / no, missing numbers as –, anything else as its text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            return "–"
        text = f"{value:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"
    return str(value)


def table_html(frame: pd.DataFrame, digits: int = 3, classes: str | None = None) -> str:
    """``frame`` as an HTML table, every cell through :func:`format_cell` (an integer column keeps its integers
    even where pandas stored it as float beside a missing value: build ``frame`` with ``dtype=object`` to keep
    them). Wrapped to scroll sideways where it is wider than the page."""
    formatted = frame.astype(object).map(lambda value: format_cell(value, digits))
    return f"<div class='scroll'>{formatted.to_html(classes=classes, escape=True)}</div>"


def folded(summary: str, body: str) -> str:
    """``body`` in a closed ``<details>`` block whose title is ``summary`` (plain text)."""
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"
