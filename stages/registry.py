"""Small name → factory registries for the plugins named in ``params.yaml`` (generators, labelers, methods).

A name is either registered here (``@GENERATORS.register("dcgan-digiface")``) or an import path
``package.module:factory`` to a user's own factory with the same protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """A plugin name that is neither registered nor an importable ``module:factory`` path."""


class Registry(Generic[T]):
    """Maps plugin names to factories returning objects of one protocol."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def factory(self, name: str) -> Callable[..., T]:
        """The factory for ``name``: a registered name or ``package.module:attribute``."""
        if name in self._factories:
            return self._factories[name]
        if ":" not in name:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; expected one of {self.names()} or an import path 'package.module:factory'"
            )
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise RegistryError(f"{self.kind} {name!r}: cannot import module {module_name!r} ({error})") from error
        factory = getattr(module, attribute, None)
        if not callable(factory):
            raise RegistryError(f"{self.kind} {name!r}: module {module_name!r} has no callable {attribute!r}")
        return factory

    def build(self, name: str, **kwargs: Any) -> T:
        return self.factory(name)(**kwargs)
