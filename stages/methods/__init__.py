"""Direction-finding methods behind one protocol (:mod:`stages.methods.base`), one file per method."""

from stages.methods.base import METHODS, FitContext, MethodInputError, MethodSpec, method_params_model

__all__ = ["METHODS", "FitContext", "MethodInputError", "MethodSpec", "method_params_model"]
