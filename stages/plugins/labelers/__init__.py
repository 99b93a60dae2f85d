"""Image labelers behind one small protocol (:mod:`stages.plugins.labelers.base`), one file per network."""

from stages.plugins.labelers.base import LABELERS, Labeler, LabelerError, LabelerSuite, build_labeler, labeler_for

__all__ = ["LABELERS", "Labeler", "LabelerError", "LabelerSuite", "build_labeler", "labeler_for"]
