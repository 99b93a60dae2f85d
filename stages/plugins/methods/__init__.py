"""Direction-finding methods behind one protocol (:mod:`stages.plugins.methods.base`), one file per method."""

from stages.plugins.methods.base import METHODS, FitContext, MethodInputError, MethodSpec, method_params_model

__all__ = ["METHODS", "FitContext", "MethodInputError", "MethodSpec", "method_params_model"]
