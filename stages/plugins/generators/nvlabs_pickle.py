"""Read NVlabs StyleGAN2-ADA / StyleGAN3 training-snapshot pickles as data, without running any code from the file.

An NVlabs snapshot (``network-snapshot-*.pkl``, or a released ``ffhq.pkl``) is a plain pickle of a dict
``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs", ...}``. Each network was pickled by NVlabs'
``torch_utils.persistence``: it is rebuilt by calling ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
where ``meta = {"type": "class", "version", "module_src", "class_name", "state"}``; ``module_src`` is the Python
source of the network's module (NVIDIA's code, which the official loader *executes*), ``state`` the module's
``__dict__``: ``_parameters``, ``_buffers``, ``_modules`` (sub-networks, themselves persistent objects),
``_init_kwargs`` (the constructor arguments) and plain attributes.

:class:`SnapshotUnpickler` resolves only the globals needed to rebuild tensors, numpy arrays and plain containers,
each to a stand-in that checks its arguments; the reconstruction function becomes :func:`_record_persistent_object`,
which keeps ``class_name`` and ``state`` in a :class:`RecordedModule` and drops ``module_src`` unread;
``dnnlib.util.EasyDict`` becomes a plain ``dict``; the legacy-``torch.save`` storages inside are read with
``torch.load(..., weights_only=True)``. Any other global is refused with a
:class:`~stages.plugins.generators.base.GeneratorFileError` that names it and the file. Nothing the file does reaches
past the objects it creates: BUILD (``__setstate__``) applies only to arrays and dtypes the unpickler made, never to a
global, a type or a function, and the pickle's size, depth and sharing are bounded before it is unpickled
(:mod:`stages.runtime.weight_files`).
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from stages.plugins.generators.base import GeneratorFileError
from stages.runtime.weight_files import (
    bounded_repr,
    bounded_text,
    check_pickle_shape,
    check_tensors_backed,
    check_torch_container,
    unbacked_bytes,
)

#: Positional order of the constructor arguments of NVlabs' ``Generator`` (both repositories), for ``_init_args``.
GENERATOR_POSITIONAL_ARGS = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "mapping_kwargs",
    "synthesis_kwargs",
)


@dataclass
class RecordedModule:
    """A network as the pickle recorded it: the class name and the module's ``__dict__`` (never its code).

    Attributes:
        class_name: e.g. ``"Generator"``, ``"SynthesisLayer"``.
        state: the recorded ``__dict__``: ``_parameters`` / ``_buffers`` (name → tensor or None), ``_modules``
            (name → RecordedModule or None), ``_init_kwargs`` (top-level networks) and plain attributes.
    """

    class_name: str
    state: dict[str, Any]

    def children(self) -> dict[str, RecordedModule]:
        """Sub-networks by attribute name (``None`` entries dropped)."""
        return {
            name: child
            for name, child in dict(self.state.get("_modules") or {}).items()
            if isinstance(child, RecordedModule)
        }

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer of this network and its sub-networks, by dotted name (as ``state_dict``),
        detached CPU tensors as stored; ``None`` entries (e.g. an identity filter) are dropped."""
        found: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, value in dict(self.state.get(group) or {}).items():
                if isinstance(value, torch.Tensor):
                    found[f"{prefix}{name}"] = value.detach()
        for name, child in self.children().items():
            found.update(child.tensors(f"{prefix}{name}."))
        return found

    def init_kwargs(self) -> dict[str, Any]:
        """The recorded constructor arguments (positional ones named by :data:`GENERATOR_POSITIONAL_ARGS`)."""
        kwargs = dict(self.state.get("_init_kwargs") or {})
        for name, value in zip(GENERATOR_POSITIONAL_ARGS, tuple(self.state.get("_init_args") or ())):
            kwargs.setdefault(name, value)
        return kwargs


def _record_persistent_object(meta: Any) -> RecordedModule:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: keep the data, never the code."""
    if (
        not isinstance(meta, dict)
        or meta.get("type") != "class"
        or not isinstance(meta.get("class_name"), str)
        or not isinstance(meta.get("state"), dict)
    ):
        raise pickle.UnpicklingError("a persistent object whose record is not {'type': 'class', 'class_name', 'state'}")
    return RecordedModule(class_name=meta["class_name"], state=meta["state"])


#: Classes a snapshot may instantiate with NEWOBJ (``dnnlib.util.EasyDict`` is read as ``dict``).
_NEWOBJ_CLASSES = (dict, collections.OrderedDict, set, frozenset)


class SnapshotUnpickler(pickle._Unpickler):
    """An unpickler that rebuilds only tensors, arrays, plain containers and :class:`RecordedModule`, and changes
    nothing outside the objects it creates.

    Globals resolve through an allow-list to stand-ins that check their arguments (a tensor backed by its storage,
    arrays and dtypes always new, never of Python objects). REDUCE may call only those stand-ins; NEWOBJ may create
    only plain containers; BUILD (``__setstate__``) applies only to the arrays and dtypes this unpickler created,
    never to a global, a type or a function. It is the pure-Python unpickler, whose opcodes these checks replace;
    :func:`~stages.runtime.weight_files.check_pickle_shape` bounds the pickle before it runs.

    Args:
        file: the open binary stream.
        source: the file's name, for error messages.
    """

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.allowed = self._allowed_globals()
        self.callables = {id(value): value for key, value in self.allowed.items() if key != "numpy.ndarray"}
        self.settable: dict[int, Any] = {}  # id → array or dtype this unpickler created (kept alive: ids stay unique)

    def _allowed_globals(self) -> dict[str, Any]:
        """``module.name`` → what it resolves to: checked stand-ins for rebuilding tensors and arrays, plain
        containers, and the NVlabs record stand-ins."""
        allowed: dict[str, Any] = {
            "collections.OrderedDict": collections.OrderedDict,
            "builtins.set": set,
            "builtins.frozenset": frozenset,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor,
            "torch._utils._rebuild_parameter": self._rebuild_parameter,
            "torch.storage._load_from_bytes": self._load_storage_bytes,
            "numpy.dtype": self._new_dtype,
            "numpy.ndarray": np.ndarray,
            "torch_utils.persistence._reconstruct_persistent_obj": _record_persistent_object,
            "dnnlib.util.EasyDict": dict,
        }
        for package in ("numpy.core.multiarray", "numpy._core.multiarray"):  # written under numpy 1.x / 2.x
            allowed[f"{package}._reconstruct"] = self._new_array
            allowed[f"{package}.scalar"] = self._scalar
        return allowed

    def _refuse(self, what: str) -> GeneratorFileError:
        return GeneratorFileError(f"{self.source}: refused: {what}; a weight file may only hand over data")

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key not in self.allowed:
            raise GeneratorFileError(
                f"{self.source}: refused to load the global {bounded_text(key)}: an NVlabs "
                f"snapshot pickle holds only tensors, arrays and NVlabs network records (this "
                f"file would run other code)"
            )
        return self.allowed[key]

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a persistent id: not an NVlabs snapshot pickle (a torch.save file?)")

    # ------------------------------------------------------------------------------------------ stand-ins

    def _load_storage_bytes(self, data: Any) -> torch.TypedStorage:
        """Stand-in for ``torch.storage._load_from_bytes``: a legacy ``torch.save`` blob of one storage, checked
        (:func:`~stages.runtime.weight_files.check_torch_container`) and read with ``weights_only``."""
        if not isinstance(data, bytes):
            raise self._refuse(f"a tensor storage recorded as {type(data).__name__}, not bytes")
        where = f"{self.source} (a tensor's storage)"
        check_torch_container(io.BytesIO(data), len(data), where)
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(storage, torch.TypedStorage):  # its bytes are read from the blob: no larger than it
            raise self._refuse(f"a tensor storage blob that holds {type(storage).__name__}, not a storage")
        return storage

    def _rebuild_tensor(
        self,
        storage: Any,
        storage_offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any,
        backward_hooks: Any,
        metadata: Any = None,
    ) -> torch.Tensor:
        """Stand-in for ``torch._utils._rebuild_tensor_v2``: a view of ``storage`` that its bytes back, without
        hooks or metadata."""
        integers = (
            isinstance(storage_offset, int)
            and storage_offset >= 0
            and all(
                isinstance(values, tuple) and len(values) <= 64 and all(isinstance(v, int) and v >= 0 for v in values)
                for values in (size, stride)
            )
            and len(size) == len(stride)
        )
        if not isinstance(storage, torch.TypedStorage) or not integers or not isinstance(requires_grad, bool):
            raise self._refuse("a tensor record that is not (storage, offset, sizes, strides, requires_grad, ...)")
        if backward_hooks or metadata:
            raise self._refuse("a tensor with backward hooks or metadata")
        tensor = torch._utils._rebuild_tensor(storage, storage_offset, size, stride)
        if unbacked_bytes(tensor):
            raise self._refuse(
                f"a tensor of shape {tuple(size)} claims more elements than its storage's "
                f"{tensor.untyped_storage().nbytes():,} bytes (a stride-0 or overlapping view)"
            )
        return tensor

    def _rebuild_parameter(self, data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
        """Stand-in for ``torch._utils._rebuild_parameter``: the parameter's tensor (a record needs only values)."""
        if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool) or backward_hooks:
            raise self._refuse("a parameter record that is not (tensor, requires_grad, no hooks)")
        return data

    def _new_dtype(self, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
        """Stand-in for ``numpy.dtype``: always a new dtype object (so that setting its state cannot change a
        shared one), never one of Python objects."""
        if not isinstance(spec, str) or align not in (False, True) or copy not in (False, True):
            raise self._refuse("a numpy dtype record that is not (type code, align, copy)")
        dtype = np.dtype(spec, align=bool(align), copy=True)
        if dtype.hasobject or dtype.itemsize == 0:
            raise self._refuse(f"the numpy dtype {bounded_text(spec)} (of Python objects, or empty)")
        self.settable[id(dtype)] = dtype
        return dtype

    def _new_array(self, subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        """Stand-in for numpy's ``_reconstruct``: the empty ndarray whose state the pickle sets next."""
        if subtype is not np.ndarray or shape != (0,) or not isinstance(typecode, bytes):
            raise self._refuse("an array record that is not numpy's (ndarray, (0,), type code)")
        array = np._core.multiarray._reconstruct(np.ndarray, (0,), typecode)
        self.settable[id(array)] = array
        return array

    def _scalar(self, dtype: Any, data: Any) -> np.generic:
        """Stand-in for numpy's ``scalar``: a number from its bytes."""
        if (
            not isinstance(dtype, np.dtype)
            or dtype.hasobject
            or not isinstance(data, bytes)
            or len(data) != dtype.itemsize
        ):
            raise self._refuse("a numpy scalar record that is not (dtype, its bytes)")
        return np._core.multiarray.scalar(dtype, data)

    # -------------------------------------------------------------------------------------- checked opcodes

    def load_reduce(self) -> None:
        function = self.stack[-2] if len(self.stack) >= 2 else None
        if self.callables.get(id(function)) is not function:
            raise self._refuse(
                f"a call of {bounded_repr(function)}, which is not one of the allowed rebuilding functions"
            )
        pickle._Unpickler.load_reduce(self)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _check_new_object(self, cls: Any) -> None:
        if not any(cls is allowed for allowed in _NEWOBJ_CLASSES):
            raise self._refuse(f"creating an object of {bounded_repr(cls)} (only plain containers)")

    def load_newobj(self) -> None:
        self._check_new_object(self.stack[-2] if len(self.stack) >= 2 else None)
        pickle._Unpickler.load_newobj(self)

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        self._check_new_object(self.stack[-3] if len(self.stack) >= 3 else None)
        pickle._Unpickler.load_newobj_ex(self)

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_obj_or_inst(self) -> None:
        raise self._refuse("the protocol-0/1 object opcodes OBJ / INST")

    dispatch[pickle.OBJ[0]] = load_obj_or_inst
    dispatch[pickle.INST[0]] = load_obj_or_inst

    def load_build(self) -> None:
        if len(self.stack) < 2:
            raise pickle.UnpicklingError("BUILD without an object")
        state, target = self.stack[-1], self.stack[-2]
        if self.settable.get(id(target)) is not target:
            raise self._refuse(
                f"BUILD (setting the state) of {bounded_repr(target)}: state may be set only on the "
                f"arrays and dtypes the file creates, never on a global, a type or a function"
            )
        if isinstance(target, np.ndarray):
            valid = (
                isinstance(state, tuple)
                and len(state) == 5
                and isinstance(state[1], tuple)
                and all(isinstance(n, int) and n >= 0 for n in state[1])
                and isinstance(state[2], np.dtype)
                and not state[2].hasobject
                and isinstance(state[4], bytes)
                and len(state[4]) == math.prod(state[1]) * state[2].itemsize
            )
            if not valid:
                raise self._refuse("an array state that is not (version, shape, dtype, order, its bytes)")
        pickle._Unpickler.load_build(self)
        if isinstance(target, np.dtype) and (target.hasobject or target.itemsize == 0):
            raise self._refuse("a numpy dtype state of Python objects")

    dispatch[pickle.BUILD[0]] = load_build


@dataclass
class NVlabsSnapshot:
    """The generator part of a snapshot.

    Attributes:
        path: the file.
        sha256: hex digest of its bytes.
        generator: ``G_ema`` as recorded (the exponential moving average of the generator's weights: the one
            NVlabs' ``generate.py`` uses; ``G`` is the raw training network).
        kwargs: ``G_ema``'s constructor arguments.
        tensors: its parameters and buffers by dotted name (``mapping.fc0.weight``, ``mapping.w_avg``, ...).
    """

    path: Path
    sha256: str
    generator: RecordedModule
    kwargs: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def read_nvlabs_snapshot(path: str | Path) -> NVlabsSnapshot:
    """Read ``G_ema`` of an NVlabs snapshot pickle at ``path`` (``~`` expanded) as data.

    The pickle is bounded (:func:`~stages.runtime.weight_files.check_pickle_shape`) before it is unpickled, by
    :class:`SnapshotUnpickler`; G_ema's record must be a tree of network records whose tensors the file's bytes
    back (:func:`~stages.runtime.weight_files.check_tensors_backed`).

    Raises:
        GeneratorFileError: missing file, truncated or corrupt pickle, a global outside the allow-list, a broken
            bound, or a pickle without a well-formed ``G_ema`` generator record.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        problem = "is not a file" if path.exists() else "no such file"
        raise GeneratorFileError(f"{path}: {problem} (expected an NVlabs StyleGAN2-ADA/StyleGAN3 snapshot .pkl)")
    data = path.read_bytes()
    check_pickle_shape(io.BytesIO(data), str(path), what="NVlabs snapshot pickle")
    try:
        snapshot = SnapshotUnpickler(io.BytesIO(data), str(path)).load()
    except GeneratorFileError:
        raise
    except Exception as error:  # a corrupt file can fail anywhere inside pickle: each failure means "not readable"
        raise GeneratorFileError(
            f"{path}: not a readable NVlabs snapshot pickle (truncated or corrupt? "
            f"{type(error).__name__}: {bounded_text(str(error), 200)})"
        ) from None
    if not isinstance(snapshot, dict) or "G_ema" not in snapshot:
        found = (
            "["
            + ", ".join(sorted(bounded_repr(key, 40) for key in list(snapshot)[:8]))
            + (", ...]" if len(snapshot) > 8 else "]")
            if isinstance(snapshot, dict)
            else type(snapshot).__name__
        )
        raise GeneratorFileError(f"{path}: expected an NVlabs snapshot pickle, a dict with key 'G_ema'; found {found}")
    generator = snapshot["G_ema"]
    if not isinstance(generator, RecordedModule) or generator.class_name != "Generator":
        found = (
            bounded_text(generator.class_name) if isinstance(generator, RecordedModule) else type(generator).__name__
        )
        raise GeneratorFileError(f"{path}: 'G_ema' is {found}, expected an NVlabs Generator network record")
    _check_record_tree(generator, str(path))
    tensors = generator.tensors()
    check_tensors_backed(tensors, f"{path} (G_ema)")
    return NVlabsSnapshot(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        generator=generator,
        kwargs=generator.init_kwargs(),
        tensors=tensors,
    )


def _check_record_tree(generator: RecordedModule, source: str) -> None:
    """Require G_ema's record to hold what :class:`RecordedModule`'s accessors read: ``_parameters`` / ``_buffers``
    mapping names to tensors (or None), ``_modules`` mapping names to records (or None), ``_init_kwargs`` a mapping
    of names, ``_init_args`` a tuple or list.

    Raises:
        GeneratorFileError: the first part that is not, named by its dotted path.
    """
    pending = [(generator, "G_ema")]
    while pending:
        record, where = pending.pop()
        state = record.state
        for group, kind in (("_parameters", torch.Tensor), ("_buffers", torch.Tensor), ("_modules", RecordedModule)):
            entries = state.get(group)
            if entries is not None and not (
                isinstance(entries, dict)
                and all(
                    isinstance(name, str) and (value is None or isinstance(value, kind))
                    for name, value in entries.items()
                )
            ):
                raise GeneratorFileError(
                    f"{source}: {where}.{group} is {bounded_repr(entries, 60)}, expected a "
                    f"mapping of names to {kind.__name__} or None"
                )
        init_kwargs, init_args = state.get("_init_kwargs"), state.get("_init_args")
        if init_kwargs is not None and not (
            isinstance(init_kwargs, dict) and all(isinstance(name, str) for name in init_kwargs)
        ):
            raise GeneratorFileError(
                f"{source}: {where}._init_kwargs is {bounded_repr(init_kwargs, 60)}, expected "
                f"a mapping of argument names"
            )
        if init_args is not None and not isinstance(init_args, (tuple, list)):
            raise GeneratorFileError(f"{source}: {where}._init_args is {bounded_repr(init_args, 60)}, expected a tuple")
        pending.extend((child, f"{where}.{name}") for name, child in record.children().items())
