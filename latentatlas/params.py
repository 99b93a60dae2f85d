"""``params.yaml``, validated once into typed objects.

Every stage reads its section from a :class:`Params` built by :func:`load_params`; nothing downstream looks at raw
dicts. A bad file fails here with one line per problem, naming the key and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from latentatlas.errors import LatentAtlasError

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

#: ``method name → its params model``; raises LookupError for an unknown method. The stages layer provides it
#: (``stages.plugins.methods.method_params_model``): the core knows no method.
MethodModels = Callable[[str], type[BaseModel]]
METHOD_MODELS = "method_models"
#: ``(kind, name) → the params model of that generator or labeler plugin``, or None for a plugin that declares
#: none (its kwargs are then checked against its factory's signature when it is built); raises LookupError for a
#: name that is no plugin of that kind. The stages layer provides it (``stages.plugins.plugin_params_model``).
PluginModels = Callable[[str, str], type[BaseModel] | None]
#: Put in a validation error's context (``PydanticCustomError(..., {HIDE_INPUT: True})``) to keep the offending
#: value out of the message (a value that may be a secret pasted into the wrong key).
HIDE_INPUT = "hide_input"
#: The largest stored image side: 4096² RGB is 48 MiB per image, already more than a chunk should hold.
MAX_STORE_RESOLUTION = 4096


class ParamsError(LatentAtlasError, ValueError):
    """``params.yaml`` is missing, unreadable, or does not validate."""


class _Section(BaseModel):
    """Strict: no unknown keys, no coercion (``true`` is not 1, ``"5"`` is not 5), no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _path_text(value: Any) -> Any:
    """A path given as a ``pathlib.Path`` (from Python) becomes its string; anything else is left to the str check."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


#: A file or folder path in plugin kwargs: a string in params.yaml, a string or ``os.PathLike`` from Python.
PathStr = Annotated[str, BeforeValidator(_path_text), Field(min_length=1)]


def _tuple_as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


#: ``Annotated[list[float], AsList]``: a list field of plugin kwargs that also takes a tuple from Python (strict
#: models take only lists).
AsList = BeforeValidator(_tuple_as_list)


class PluginParams(BaseModel):
    """Base of the params models of generator and labeler plugins (their ``kwargs``), as strict as params.yaml's
    sections: no unknown keys, no coercion (``"5"`` is not 5, ``true`` is not 1; an int is a valid float), no NaN
    or infinity. Subclass it and declare the model with ``@plugin(kind, params=Model)``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _check_device(value: str) -> str:
    if not _DEVICE_PATTERN.match(value):
        raise ValueError(f"expected 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {value!r}")
    return value


class GeneratorParams(_Section):
    name: str = Field("dcgan-digiface", description="registered generator name or 'package.module:factory'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the factory")


class SampleParams(_Section):
    n_samples: PositiveInt = Field(20_000, description="number of latents z ~ N(0, I)")
    chunk_size: PositiveInt = Field(2_000, description="samples per chunk: the unit of work, storage and resume")
    seed: int = Field(0, ge=0, description="chunk i draws from numpy's PCG64 seeded with (seed, i)")


class SynthesizeParams(_Section):
    batch_size: PositiveInt = Field(256, description="images per generator forward pass")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:<k>")
    amp: bool = Field(True, description="fp16 autocast on CUDA (ignored on the CPU)")
    keep_images: bool = Field(True, description="store uint8 images; false: labels come straight from the generator")
    store_resolution: PositiveInt | None = Field(
        None, le=MAX_STORE_RESOLUTION, description="side of stored images; null = the generator's"
    )
    compile: bool = Field(
        False,
        description="run the generator through torch.compile (inductor): faster after a "
        "one-off compile; images within float tolerance of the eager path, "
        "so the store's fingerprint says compiled",
    )

    _device = field_validator("device")(_check_device)


class LabelerEntry(_Section):
    """One labeler of a composed suite: ``{name: torch-classifier, kwargs: {...}}`` (or just its name)."""

    name: str = Field(description="registered labeler name or 'package.module:factory'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for its factory")


class LabelParams(_Section):
    labeler: str = Field("faces", description="registered labeler (suite) name or 'package.module:factory'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the labeler factory")
    labelers: list[str | LabelerEntry] | None = Field(
        None,
        min_length=1,
        description="several labelers composed into one suite, columns concatenated in this "
        "order (instead of labeler/kwargs); clashing attribute names are an error",
    )
    batch_size: PositiveInt = Field(256, description="images per labeler forward pass")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:<k>")
    contact_sheet_samples: int = Field(32, ge=0, le=256, description="first samples drawn on the contact sheet")

    _device = field_validator("device")(_check_device)

    @model_validator(mode="after")
    def _one_way_to_name_labelers(self) -> LabelParams:
        if self.labelers is not None and {"labeler", "kwargs"} & self.model_fields_set:
            raise ValueError("give either labeler (+ kwargs) or labelers (a list), not both")
        return self

    def entries(self) -> list[LabelerEntry]:
        """The labelers to run, in column order (one entry for a plain ``labeler``)."""
        if self.labelers is None:
            return [LabelerEntry(name=self.labeler, kwargs=self.kwargs)]
        return [LabelerEntry(name=entry) if isinstance(entry, str) else entry for entry in self.labelers]


_CLUSTER_ADDRESS = {
    "dask": re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://\S+$"),
    "ray": re.compile(r"^(auto|ray://\S+|[\w.-]+:\d+)$"),
}
_RUNNER_PACKAGES = {
    "dask": ("prefect_dask", "pip install -e . (prefect-dask is a dependency)"),
    "ray": ("prefect_ray", "pip install -e '.[ray]' (prefect-ray and ray are an optional extra)"),
}


class RuntimeParams(_Section):
    """How to run, not what to compute: changing these never changes a store's contents.

    ``task_runner`` picks where chunk tasks run: ``threads`` (in the stage process), ``dask`` (worker processes of
    a Dask cluster: a ``LocalCluster`` of ``max_workers`` single-threaded processes, or the cluster at
    ``dask_address``) or ``ray`` (a local Ray instance with ``max_workers`` CPUs, or the cluster at
    ``ray_address``). Fit units always run on threads.
    """

    task_runner: Literal["threads", "dask", "ray"] = Field(
        "threads", description="Prefect task runner for the chunk tasks: threads | dask | ray"
    )
    max_workers: PositiveInt = Field(2, description="chunk tasks in flight at once (local threads or processes)")
    dask_address: str | None = Field(
        None,
        description="null: a LocalCluster of max_workers processes; or the "
        "scheduler of an existing cluster, tcp://host:8786",
    )
    ray_address: str | None = Field(
        None,
        description="null: a local Ray instance with max_workers CPUs; or an "
        "existing cluster: auto, host:6379 or ray://host:10001",
    )

    @model_validator(mode="after")
    def _check_runner(self) -> RuntimeParams:
        import importlib.util

        for runner, address in (("dask", self.dask_address), ("ray", self.ray_address)):
            if address is not None and not _CLUSTER_ADDRESS[runner].match(address):
                raise ValueError(
                    f"{runner}_address: expected "
                    f"{'tcp://host:port' if runner == 'dask' else 'auto, host:port or ray://host:port'}"
                    f" (or null for a local cluster), got {address!r}"
                )
        if self.task_runner in _RUNNER_PACKAGES:
            module, install = _RUNNER_PACKAGES[self.task_runner]
            if importlib.util.find_spec(module) is None:
                raise ValueError(
                    f"task_runner: {self.task_runner!r} needs the {module} package, which is not installed: {install}"
                )
        return self


_ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class FitParams(_Section):
    """Direction fitting: one DVC job per method in ``methods``, each with its own ``params.<method>`` section, and
    one per named variant in ``variants`` (a method run again with other params: ``{name: {method: <method>, ...its
    params}}``). Methods and variants are the *entries* that are fitted, evaluated and ranked side by side."""

    methods: list[str] = Field(
        default_factory=lambda: ["interfacegan"],
        min_length=1,
        description="methods to run, each a DVC job writing directions/<method>/",
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named variants of a method with other params, each its own DVC job "
        "writing directions/<name>/: {name: {method: <method>, <its params>}}; "
        "keep the key ({} for none): dvc.yaml iterates it",
    )
    attributes: list[str] | None = Field(
        None, min_length=1, description="attributes to fit (null: every labeled attribute)"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:<k>")
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method params, validated by each method's model"
    )

    _device = field_validator("device")(_check_device)

    _method_params: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @property
    def entries(self) -> list[str]:
        """Every fitted directions set by name: the methods, then the variants (file order)."""
        return [*self.methods, *self.variants]

    def base_method(self, entry: str) -> str:
        """The registered method that fits ``entry``: a variant's ``method``, else ``entry`` itself (a method, or
        the name of an imported directions set)."""
        variant = self.variants.get(entry)
        return variant["method"] if variant is not None else entry

    def entry_section(self, entry: str) -> dict[str, Any]:
        """The raw params of ``entry``: ``params.<method>``, or the variant's section without its ``method`` key."""
        if entry in self.variants:
            return {key: value for key, value in self.variants[entry].items() if key != "method"}
        return self.params.get(entry, {})

    @model_validator(mode="after")
    def _check_methods(self, info: ValidationInfo) -> FitParams:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: listed twice: {sorted({m for m in self.methods if self.methods.count(m) > 1})}")
        method_models: MethodModels | None = (info.context or {}).get(METHOD_MODELS)
        models: dict[str, type[BaseModel]] = {}
        for method in self.methods:
            if method_models is not None:
                try:
                    models[method] = method_models(method)
                except LookupError as error:
                    raise ValueError(f"methods: {error}") from None
            if method not in self.params:
                raise ValueError(
                    f"params.{method}: missing; every method in fit.methods needs a params section "
                    f"(use {{}} for its defaults): DVC tracks it to rerun only that method"
                )
        for name, section in self.variants.items():
            self._check_variant(name, section, method_models, models)
        for entry, model in models.items():
            where = f"variants.{entry}" if entry in self.variants else f"params.{entry}"
            try:
                self._method_params[entry] = model.model_validate(self.entry_section(entry))
            except pydantic.ValidationError as error:
                problems = "; ".join(f"{where}.{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors())
                raise ValueError(problems) from None
        return self

    def _check_variant(
        self, name: str, section: dict[str, Any], method_models: MethodModels | None, models: dict[str, type[BaseModel]]
    ) -> None:
        """A variant's name is a new folder name (not a method's) and its section names a registered method."""
        if not _ENTRY_NAME.match(name):
            raise ValueError(
                f"variants.{name}: a variant's name becomes directions/<name>/ and a DVC stage name: use "
                f"letters, digits, '_', '.' and '-' (not first)"
            )
        if name in self.methods:
            raise ValueError(f"variants.{name}: also listed in fit.methods; give the variant its own name")
        method = section.get("method")
        if not isinstance(method, str):
            raise ValueError(
                f"variants.{name}.method: missing; name the method this variant runs "
                f"({{method: ortho-linear, lam: 0.0}})"
            )
        if method in self.variants:
            raise ValueError(f"variants.{name}.method: {method!r} is another variant; name a method")
        if method_models is None:
            return
        try:
            method_models(name)
        except LookupError:
            pass
        else:
            raise ValueError(f"variants.{name}: {name!r} is a registered method's name; give the variant its own")
        try:
            models[name] = method_models(method)
        except LookupError as error:
            raise ValueError(f"variants.{name}.method: {error}") from None

    def method_params(self, method: str, model: type[BaseModel] | None = None) -> BaseModel:
        """The validated params object of entry ``method`` (``fit.params.<method>``, or variant ``method``'s
        section), typed by its method's own model.

        Params parsed with ``method_models`` (the CLI's) hold it already; otherwise ``model`` validates the section
        now (a library caller fitting one method).

        Raises:
            ParamsError: the section does not validate, or was not validated and no ``model`` is given.
        """
        if method in self._method_params:
            return self._method_params[method]
        where = f"fit.variants.{method}" if method in self.variants else f"fit.params.{method}"
        if model is None:
            raise ParamsError(
                f"{where}: not validated; parse the params with method_models= "
                f"(stages.plugins.methods.method_params_model) or pass the method's params model"
            )
        try:
            return model.model_validate(self.entry_section(method))
        except pydantic.ValidationError as error:
            raise ParamsError(
                "; ".join(f"{where}.{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors())
            ) from None


class EvalParams(_Section):
    """Evaluation of every method's directions on held-out latents (never used for fitting)."""

    n_samples: PositiveInt = Field(128, description="held-out z per direction")
    chunk_size: PositiveInt = Field(64, description="held-out samples per chunk (unit of work and resume)")
    seed: int = Field(1, ge=0, description="seed of the held-out stream (disjoint from the fit stream)")
    alphas: list[float] = Field(
        default_factory=lambda: [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0],
        min_length=3,
        description="edit strengths; must include 0 (the original)",
    )
    attributes: list[str] | None = Field(
        None, min_length=1, description="attributes to evaluate (null: fit.attributes)"
    )
    condition_on: list[str] = Field(
        default_factory=list, description="also evaluate conditional editing holding these directions fixed"
    )
    layers: list[int] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="W+ layers [start, stop) that edits of W directions move (null: every layer, a plain W edit)",
    )
    ppl_samples: PositiveInt = Field(32, description="(z, t) samples per direction for the perceptual path length")
    lpips_net: Literal["alex", "vgg"] = Field("alex", description="LPIPS backbone")
    grid_samples: int = Field(4, ge=1, le=16, description="rows of each traversal grid PNG")
    batch_size: PositiveInt = Field(256, description="images per generator / labeler pass")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:<k>")
    bootstrap_resamples: int = Field(
        10000,
        ge=1000,
        le=200000,
        description="bootstrap resamples of the held-out samples behind every 95 % "
        "interval and paired comparison (seeded from eval.seed); the "
        "comparisons' p-values are no finer than 2 / resamples",
    )

    _device = field_validator("device")(_check_device)

    @field_validator("layers")
    @classmethod
    def _layer_range(cls, layers: list[int] | None) -> list[int] | None:
        if layers is not None and not 0 <= layers[0] < layers[1]:
            raise ValueError(f"expected [start, stop] with 0 <= start < stop, got {list(layers)}")
        return layers

    @field_validator("alphas")
    @classmethod
    def _has_zero(cls, alphas: list[float]) -> list[float]:
        if 0.0 not in alphas:
            raise ValueError(f"must include 0 (the unedited original), got {alphas}")
        if sorted(alphas) != alphas or len(set(alphas)) != len(alphas):
            raise ValueError(f"must be strictly increasing, got {alphas}")
        return alphas


class ReportParams(_Section):
    """The report stage: how directions are ranked and which attribute the reproduction tables centre on."""

    min_fit_r2: float = Field(
        0.1,
        ge=-1.0,
        le=1.0,
        description="a direction whose own fit explains less of its attribute's held-out "
        "variance (R², where the method reports one) ranks after every direction "
        "that fits, marked",
    )
    reference_attribute: str | None = Field(
        None,
        description="attribute whose edit the reproduction's "
        "orthogonality tables follow (the paper's 'Young'); "
        "null: the first evaluated attribute",
    )


class Params(_Section):
    generator: GeneratorParams = GeneratorParams()
    sample: SampleParams = SampleParams()
    synthesize: SynthesizeParams = SynthesizeParams()
    label: LabelParams = LabelParams()
    fit: FitParams = Field(default_factory=lambda: {"params": {"interfacegan": {}}}, validate_default=True)
    eval: EvalParams = EvalParams()
    report: ReportParams = ReportParams()
    runtime: RuntimeParams = RuntimeParams()


def format_validation_error(
    source: str,
    error: pydantic.ValidationError,
    unknown_key: str = "unknown key (check the spelling; see params.yaml in the repository for every key)",
    prefix: str = "",
) -> str:
    """One line per problem of a pydantic validation error: ``<source>: <dotted.key>: <what was expected> (got …)``.

    Args:
        prefix: the dotted key of what was validated, put before each problem's key (``label.kwargs``).
    """
    lines = []
    for problem in error.errors():
        parts = ([prefix] if prefix else []) + [str(part) for part in problem["loc"]]
        key = ".".join(parts) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = unknown_key
        elif (
            "input" in problem
            and not isinstance(problem["input"], dict)
            and not (problem.get("ctx") or {}).get(HIDE_INPUT)
        ):
            message += f" (got {problem['input']!r})"
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def validate_plugin_kwargs(
    model: type[BaseModel], kwargs: dict[str, Any], plugin: str, source: str, where: str
) -> BaseModel:
    """The kwargs of ``plugin`` (``"labeler 'http'"``) validated by its params ``model``.

    Raises:
        ParamsError: one line per problem, ``<source>: <where>.<key>: <what was expected>``.
    """
    try:
        return model.model_validate(kwargs)
    except pydantic.ValidationError as error:
        takes = ", ".join(sorted(model.model_fields)) or "no kwargs"
        raise ParamsError(
            format_validation_error(source, error, unknown_key=f"unknown key; {plugin} takes {takes}", prefix=where)
        ) from None


def plugin_kwargs_problems(params: Params, source: str, plugin_models: PluginModels) -> list[str]:
    """Every generator and labeler plugin's kwargs (``generator.kwargs``, ``label.kwargs``, each entry of
    ``label.labelers``) validated by the params model the plugin declares: one line per problem, empty when all
    validate. A name that is no plugin (unknown, unimportable, undeclared) is left to the stage that builds it, and
    a plugin without a model is checked against its factory's signature then."""
    label = params.label
    entries: list[tuple[str, str, str, dict[str, Any]]] = [
        ("generator.kwargs", "generator", params.generator.name, params.generator.kwargs)
    ]
    if label.labelers is None:
        entries.append(("label.kwargs", "labeler", label.labeler, label.kwargs))
    else:
        entries += [
            (f"label.labelers.{index}.kwargs", "labeler", entry.name, entry.kwargs)
            for index, entry in enumerate(label.entries())
        ]
    problems: list[str] = []
    for where, kind, name, kwargs in entries:
        try:
            model = plugin_models(kind, name)
        except LookupError:
            continue
        if model is None:
            continue
        try:
            validate_plugin_kwargs(model, kwargs, f"{kind} {name!r}", source, where)
        except ParamsError as error:
            problems.append(str(error))
    return problems


def parse_params(
    raw: dict[str, Any],
    source: str = "params",
    method_models: MethodModels | None = None,
    plugin_models: PluginModels | None = None,
) -> Params:
    """Validate a params mapping (as read from YAML) into :class:`Params`.

    Args:
        method_models: how to find each method's params model (``stages.plugins.methods.method_params_model``). With it,
            every ``fit.params.<method>`` of ``fit.methods`` is validated now and typed
            (``params.fit.method_params(name)``); without it, only their presence is checked (enough for a
            stage that fits nothing).
        plugin_models: how to find a generator's or labeler's params model (``stages.plugins.plugin_params_model``).
            With it, ``generator.kwargs``, ``label.kwargs`` and the kwargs of every ``label.labelers`` entry are
            validated now (:func:`plugin_kwargs_problems`); without it, when the plugin is built.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw, context={METHOD_MODELS: method_models} if method_models else None)
    except pydantic.ValidationError as error:
        raise ParamsError(format_validation_error(source, error)) from None
    if plugin_models is not None:
        problems = plugin_kwargs_problems(params, source, plugin_models)
        if problems:
            raise ParamsError("\n".join(problems))
    return params


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (line {seen[key] + 1} and line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ParamsError(f"{path}: {what} not found")
    try:
        loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if loaded is None:
        raise ParamsError(
            f"{path}: the {what} is empty; expected a mapping of sections (see params.yaml in the repository)"
        )
    return loaded


def load_params(
    path: str | Path, method_models: MethodModels | None = None, plugin_models: PluginModels | None = None
) -> Params:
    """Read and validate ``params.yaml`` (``method_models``, ``plugin_models``: see :func:`parse_params`).

    Raises:
        ParamsError: the file is missing, is not YAML, or a key has the wrong type or value.
    """
    path = Path(path)
    return parse_params(
        _read_yaml(path, "params file"), source=str(path), method_models=method_models, plugin_models=plugin_models
    )


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    raw = _read_yaml(path, "file")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return raw


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: mappings merge key by key, anything else (lists included) replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and value:
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten_overrides(overrides: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys and leaf values of a nested override mapping, in file order:
    ``{"sample": {"n_samples": 5}}`` → ``[("sample.n_samples", 5)]``. An empty mapping is a leaf."""
    pairs: list[tuple[str, Any]] = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs.extend(flatten_overrides(value, prefix=f"{dotted}."))
        else:
            pairs.append((dotted, value))
    return pairs


def load_preset(
    preset_path: str | Path,
    params_path: str | Path = "params.yaml",
    method_models: MethodModels | None = None,
    plugin_models: PluginModels | None = None,
) -> list[tuple[str, Any]]:
    """Read a preset (a partial params file: only the keys it changes, e.g. ``params/interfacegan-500k.yaml``),
    check that ``params_path`` with the preset applied validates, and return its dotted overrides.

    Raises:
        ParamsError: either file is missing or not YAML, or the merged params do not validate (the message names
            the preset and the key).
    """
    preset_path, params_path = Path(preset_path), Path(params_path)
    overrides = _read_yaml_mapping(preset_path)
    if not overrides:
        raise ParamsError(f"{preset_path}: the preset changes no key (expected sections such as 'sample:')")
    merged = merge_overrides(_read_yaml_mapping(params_path), overrides)
    parse_params(
        merged, source=f"{params_path} + {preset_path}", method_models=method_models, plugin_models=plugin_models
    )
    return flatten_overrides(overrides)
