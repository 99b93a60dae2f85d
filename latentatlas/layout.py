"""Where every store and output lives: the one place that names them.

Stores live in the data dir (``--data-dir``, local or an object store); the fitted directions, evaluations,
metrics and reports live under the output root (``--out-root``, the working directory by default, as ``dvc.yaml``
expects). Every stage, the reader and the CLI take their paths from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: In the data dir: sample → ``latents.zarr``, synthesize → ``images.zarr``, label → ``labels/`` + contact sheet.
LATENTS_STORE = "latents.zarr"
IMAGES_STORE = "images.zarr"
LABELS_STORE = "labels"
CONTACT_SHEET = "contact_sheet.png"

#: Under the output root.
DIRECTIONS_DIR = "directions"
EVALUATIONS_DIR = "evaluations"
METRICS_DIR = "metrics"
GRIDS_DIR = "reports/grids"
REPORT_HTML = "reports/report.html"
REPORT_MD = "reports/summary.md"
REPRODUCTION_MD = "reports/REPRODUCTION.md"
RANKING_JSON = "reports/ranking.json"
RANKING_DETAILS_JSON = "reports/ranking.details.json"
REPRODUCTION_JSON = "reports/reproduction.json"
FIT_WORK_DIR = ".cache/fit"
#: ``latentatlas train-encoder`` (dvc.yaml's ``train-encoder`` stage): the image → latent encoder photo inversion
#: starts from, and its per-epoch checkpoints (a folder per training fingerprint).
ENCODER_DIR = "models/encoder"
ENCODER_WORK_DIR = ".cache/encoder"
#: Lock files of outputs that DVC tracks live here, never inside the outputs themselves.
LOCKS_DIR = ".cache/locks"


@dataclass(frozen=True)
class OutputLayout:
    """The output paths of fit, evaluate and report under one root (``Path(".")``: the repository, as ``dvc.yaml``
    has them). ``OutputLayout(root).directions("interfacegan")`` → ``root/directions/interfacegan``."""

    root: Path = Path(".")

    def directions_root(self) -> Path:
        return self.root / DIRECTIONS_DIR

    def directions(self, method: str) -> Path:
        return self.root / DIRECTIONS_DIR / method

    def evaluations_root(self) -> Path:
        return self.root / EVALUATIONS_DIR

    def metrics_root(self) -> Path:
        return self.root / METRICS_DIR

    def grids_root(self) -> Path:
        return self.root / GRIDS_DIR

    def traversal_grid(self, method: str, attribute: str) -> Path:
        """The evaluate stage's traversal grid of ``method``'s ``attribute`` direction (the report reads it)."""
        return self.grids_root() / method / f"{attribute}.png"

    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    def report_markdown(self) -> Path:
        return self.root / REPORT_MD

    def reproduction_markdown(self) -> Path:
        return self.root / REPRODUCTION_MD

    def ranking_metrics(self) -> Path:
        """``reports/ranking.json``: the headline (a DVC metric): each method's rank group per attribute and the
        best group."""
        return self.root / RANKING_JSON

    def ranking_details(self) -> Path:
        """``reports/ranking.details.json``: mean ranks, their intervals, pairwise comparisons (not a DVC metric)."""
        return self.root / RANKING_DETAILS_JSON

    def reproduction_json(self) -> Path:
        """``reports/reproduction.json``: every reproduced claim with its rule, our value, its interval, the verdict."""
        return self.root / REPRODUCTION_JSON

    def metrics(self, method: str) -> Path:
        """``metrics/<method>.json``: the method's headline numbers with their intervals."""
        return self.root / METRICS_DIR / f"{method}.json"

    def metric_details(self, method: str) -> Path:
        """``metrics/<method>.details.json``: every evaluation number the report reads (not a DVC metric)."""
        return self.root / METRICS_DIR / f"{method}.details.json"

    def metric_samples(self, method: str) -> Path:
        """``metrics/<method>.samples.parquet``: what the evaluation measured per held-out sample, α and edit."""
        return self.root / METRICS_DIR / f"{method}.samples.parquet"

    def metric_ppl_terms(self, method: str) -> Path:
        """``metrics/<method>.ppl.parquet``: the per-sample terms of each evaluated direction's PPL."""
        return self.root / METRICS_DIR / f"{method}.ppl.parquet"

    def metric_curves(self, method: str) -> Path:
        """``metrics/<method>.curves.json``: mean target score per α with its interval (DVC plots)."""
        return self.root / METRICS_DIR / f"{method}.curves.json"

    def fit_work_root(self) -> Path:
        return self.root / FIT_WORK_DIR

    def locks_root(self) -> Path:
        return self.root / LOCKS_DIR
