"""Small name → factory registries for the plugins named in ``params.yaml`` (generators, labelers, methods).

A name in ``params.yaml`` is one of:

- a built-in, registered by its module with ``@REGISTRY.register("name")``. The registry knows each built-in's
  module by name and imports it on first use, so a base module never imports its implementations back;
- a plugin an installed package declares under the entry-point group ``latentatlas.<kind>s`` (e.g.
  ``[project.entry-points."latentatlas.generators"] my-gan = "mypkg.gans:build_my_gan"``);
- an import path ``package.module:factory`` to a factory marked with :func:`plugin`.

**Params.** A plugin may declare a pydantic model of its kwargs (``@plugin("labeler", params=MyParams)``,
``@REGISTRY.register("name", params=MyParams)``): its kwargs are then validated by that model — when ``params.yaml``
is loaded (:func:`latentatlas.params.parse_params` with ``plugin_models``) and again by :meth:`Registry.build` — and
the factory is called with the validated model. A plugin without a model has its kwargs checked against its
factory's signature.

**Trust model.** A params file chooses code to run. The registry only ever *calls* a factory that was itself declared
a plugin of that kind (registered, declared as an entry point, or decorated with :func:`plugin`); the mark is read
from the object's own ``__dict__``, so an unmarked subclass or an instance of a marked class is not a plugin. An
import path to anything else (``subprocess:getoutput``) is refused before it is called. Importing the named module
still runs its top-level code: only use params files, presets and ``dvc exp run -S`` overrides from people you trust,
as you would their Python code.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import pydantic

from latentatlas.errors import LatentAtlasError
from latentatlas.params import validate_plugin_kwargs

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

PLUGIN_MARK = "__latentatlas_plugin__"
PARAMS_MARK = "__latentatlas_params__"


class RegistryError(LatentAtlasError, LookupError):
    """A plugin name that is neither registered nor an importable, declared ``module:factory`` path."""


def own_attribute(thing: object, attribute: str) -> Any:
    """``thing``'s own ``attribute``, read from its own ``__dict__`` (None if absent): never one inherited from its
    class or a base class, nor one a ``__getattr__`` makes up."""
    try:
        own = object.__getattribute__(thing, "__dict__")
    except AttributeError:
        return None
    return own.get(attribute) if isinstance(own, Mapping) else None


def declared_kinds(factory: object) -> frozenset[str]:
    """The plugin kinds ``factory`` itself was declared (by :func:`plugin` or a registry); empty for anything else."""
    kinds = own_attribute(factory, PLUGIN_MARK)
    return kinds if isinstance(kinds, frozenset) else frozenset()


def declared_params_model(factory: object) -> type[pydantic.BaseModel] | None:
    """The params model ``factory`` itself declared with :func:`plugin` (None: its kwargs are checked against its
    signature)."""
    model = own_attribute(factory, PARAMS_MARK)
    return model if isinstance(model, type) and issubclass(model, pydantic.BaseModel) else None


def plugin(kind: str, params: type[pydantic.BaseModel] | None = None) -> Callable[[F], F]:
    """Declare a factory a latentatlas plugin of ``kind`` (``"generator"``, ``"labeler"`` or ``"method"``), so that
    ``params.yaml`` may name it by import path::

        @plugin("generator")
        def build_my_gan(path: str) -> MyGenerator: ...

    With ``params`` (a pydantic model of its kwargs, e.g. a :class:`latentatlas.params.PluginParams`), the kwargs are
    validated by the model when the params file is loaded, and the factory is called with the validated model::

        @plugin("generator", params=MyGANParams)
        def build_my_gan(params: MyGANParams) -> MyGenerator: ...
    """
    if params is not None and not (isinstance(params, type) and issubclass(params, pydantic.BaseModel)):
        raise TypeError(f"plugin({kind!r}, params=...): expected a pydantic model class, got {params!r}")

    def mark(factory: F) -> F:
        setattr(factory, PLUGIN_MARK, declared_kinds(factory) | {kind})
        if params is not None:
            setattr(factory, PARAMS_MARK, params)
        return factory

    return mark


class Registry(Generic[T]):
    """Maps plugin names to factories returning objects of one protocol.

    Args:
        kind: what the plugins are (``"generator"``), used in messages, markers and the entry-point group.
        builtins: built-in name → the module that registers it (imported on first use of the name).
    """

    def __init__(self, kind: str, builtins: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.builtins = dict(builtins or {})
        self.entry_point_group = f"latentatlas.{kind}s"
        self._factories: dict[str, Callable[..., T]] = {}

    def register(
        self, name: str, params: type[pydantic.BaseModel] | None = None
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register a built-in factory as ``name`` (with ``params``: its kwargs' model, see :func:`plugin`)."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = plugin(self.kind, params)(factory)
            return factory

        return decorator

    def names(self) -> list[str]:
        """Built-in and registered names (entry-point plugins are listed by :meth:`entry_point_names`)."""
        return sorted(set(self.builtins) | set(self._factories))

    def entry_point_names(self) -> list[str]:
        return sorted(point.name for point in importlib.metadata.entry_points(group=self.entry_point_group))

    def factory(self, name: str) -> Callable[..., T]:
        """The factory for ``name``: a built-in, an entry point, or a declared ``package.module:factory``.

        Raises:
            RegistryError: unknown name, unimportable module, or an attribute that is not a declared plugin.
        """
        if name in self._factories:
            return self._factories[name]
        if name in self.builtins:
            importlib.import_module(self.builtins[name])
            if name not in self._factories:
                raise RuntimeError(f"{self.builtins[name]} was expected to register {self.kind} {name!r} and did not")
            return self._factories[name]
        points = [
            point for point in importlib.metadata.entry_points(group=self.entry_point_group) if point.name == name
        ]
        if points:
            return self._callable(name, points[0].load())
        if ":" not in name:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; expected one of {self.names()}"
                f"{' or ' + str(self.entry_point_names()) if self.entry_point_names() else ''}, or an "
                f"import path 'package.module:factory' to a factory marked @plugin({self.kind!r})"
            )
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise RegistryError(f"{self.kind} {name!r}: cannot import module {module_name!r} ({error})") from None
        factory = getattr(module, attribute, None)
        if factory is None:
            raise RegistryError(f"{self.kind} {name!r}: module {module_name!r} has no attribute {attribute!r}")
        if self.kind not in declared_kinds(factory):
            raise RegistryError(
                f"{self.kind} {name!r}: refused, {module_name}.{attribute} is not declared a "
                f"latentatlas {self.kind} plugin; mark the factory with "
                f"@latentatlas.registry.plugin({self.kind!r}) or declare it as an entry point in "
                f"the group {self.entry_point_group!r} (a params file may only name plugins)"
            )
        return self._callable(name, factory)

    def _callable(self, name: str, factory: Any) -> Callable[..., T]:
        if not callable(factory):
            raise RegistryError(f"{self.kind} {name!r}: {factory!r} is not callable")
        return factory

    def params_model(self, name: str) -> type[pydantic.BaseModel] | None:
        """The params model plugin ``name`` declares, or None (its kwargs are checked against its signature).

        Raises:
            RegistryError: unknown name (see :meth:`factory`).
        """
        return declared_params_model(self.factory(name))

    def build(self, name: str, /, **kwargs: Any) -> T:
        """The plugin ``name`` built from ``kwargs``: ``factory(params)`` with the kwargs validated by the params
        model it declares, else ``factory(**kwargs)`` after checking the kwargs fit the factory's signature.

        Raises:
            RegistryError: unknown name (see :meth:`factory`), or kwargs the factory does not take.
            ParamsError: kwargs its params model refuses (``<kind> '<name>': kwargs.<key>: ...``).
        """
        factory = self.factory(name)
        model = declared_params_model(factory)
        if model is not None:
            plugin_name = f"{self.kind} {name!r}"
            return factory(validate_plugin_kwargs(model, kwargs, plugin_name, source=plugin_name, where="kwargs"))
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # a builtin without a signature: let the call speak
            return factory(**kwargs)
        try:
            signature.bind(**kwargs)
        except TypeError as error:
            raise RegistryError(
                f"{self.kind} {name!r}: kwargs {sorted(kwargs)} do not fit its factory "
                f"{getattr(factory, '__qualname__', factory)}{signature} ({error})"
            ) from None
        return factory(**kwargs)
