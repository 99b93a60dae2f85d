"""The params models of generator and labeler plugins, for validating their kwargs when ``params.yaml`` is loaded
(``latentatlas.params.load_params(..., plugin_models=plugin_params_model)``)."""

from __future__ import annotations

import pydantic

from stages.plugins.generators.base import GENERATORS
from stages.plugins.labelers.base import LABELERS


def plugin_params_model(kind: str, name: str) -> type[pydantic.BaseModel] | None:
    """The params model that ``kind`` (``"generator"`` or ``"labeler"``) plugin ``name`` declares, or None when it
    declares none (its kwargs are checked against its factory's signature when it is built).

    Raises:
        RegistryError: (a LookupError) no such plugin: unknown, unimportable, or not declared one.
        ValueError: ``kind`` is neither.
    """
    registries = {"generator": GENERATORS, "labeler": LABELERS}
    if kind not in registries:
        raise ValueError(f"plugin kind {kind!r}: expected one of {sorted(registries)}")
    return registries[kind].params_model(name)
