"""Read NVlabs StyleGAN2-ADA / StyleGAN3 training-snapshot pickles as data, without running any code from the file.

An NVlabs snapshot (``network-snapshot-*.pkl``, or a released ``ffhq.pkl``) is a plain pickle of a dict
``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs", ...}``. Each network was pickled by NVlabs'
``torch_utils.persistence``: it is rebuilt by calling ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
where ``meta = {"type": "class", "version", "module_src", "class_name", "state"}``; ``module_src`` is the Python
source of the network's module (NVIDIA's code, which the official loader *executes*), ``state`` the module's
``__dict__``: ``_parameters``, ``_buffers``, ``_modules`` (sub-networks, themselves persistent objects),
``_init_kwargs`` (the constructor arguments) and plain attributes.

:class:`SnapshotUnpickler` resolves only the globals needed to rebuild tensors, numpy arrays and plain containers;
the reconstruction function becomes :func:`_record_persistent_object`, which keeps ``class_name`` and ``state`` in a
:class:`RecordedModule` and drops ``module_src`` unread; ``dnnlib.util.EasyDict`` becomes a plain ``dict``; the
legacy-``torch.save`` storages inside are read with ``torch.load(..., weights_only=True)``. Any other global is
refused with a :class:`~stages.plugins.generators.base.GeneratorFileError` that names it and the file.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.plugins.generators.base import GeneratorFileError

#: Positional order of the constructor arguments of NVlabs' ``Generator`` (both repositories), for ``_init_args``.
GENERATOR_POSITIONAL_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                             "synthesis_kwargs")


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

    def children(self) -> dict[str, "RecordedModule"]:
        """Sub-networks by attribute name (``None`` entries dropped)."""
        return {name: child for name, child in dict(self.state.get("_modules") or {}).items()
                if isinstance(child, RecordedModule)}

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
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str) \
            or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("a persistent object whose record is not {'type': 'class', 'class_name', "
                                     "'state'}")
    return RecordedModule(class_name=meta["class_name"], state=meta["state"])


def _load_storage_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: a legacy ``torch.save`` blob, read with ``weights_only``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _allowed_globals() -> dict[str, Any]:
    """``module.name`` → what it resolves to: tensor and array rebuilding, plain containers, and the stand-ins."""
    multiarray = np._core.multiarray
    allowed: dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        "torch.storage._load_from_bytes": _load_storage_bytes,
        "numpy.dtype": np.dtype,
        "numpy.ndarray": np.ndarray,
        "torch_utils.persistence._reconstruct_persistent_obj": _record_persistent_object,
        "dnnlib.util.EasyDict": dict,
    }
    for package in ("numpy.core.multiarray", "numpy._core.multiarray"):  # written under numpy 1.x / 2.x
        allowed[f"{package}._reconstruct"] = multiarray._reconstruct
        allowed[f"{package}.scalar"] = multiarray.scalar
    return allowed


class SnapshotUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that rebuilds only tensors, arrays, plain containers and :class:`RecordedModule`.

    Args:
        file: the open binary stream.
        source: the file's name, for error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key not in self.allowed:
            raise GeneratorFileError(f"{self.source}: refused to load the global {key}: an NVlabs snapshot pickle "
                                     f"holds only tensors, arrays and NVlabs network records (this file would run "
                                     f"other code)")
        return self.allowed[key]

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"persistent id {pid!r}: not an NVlabs snapshot pickle (a torch.save file?)")


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

    Raises:
        GeneratorFileError: missing file, truncated or corrupt pickle, a global outside the allow-list, or a pickle
            without a recorded ``G_ema`` generator.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        problem = "is not a file" if path.exists() else "no such file"
        raise GeneratorFileError(f"{path}: {problem} (expected an NVlabs StyleGAN2-ADA/StyleGAN3 snapshot .pkl)")
    data = path.read_bytes()
    try:
        snapshot = SnapshotUnpickler(io.BytesIO(data), str(path)).load()
    except GeneratorFileError:
        raise
    except Exception as error:  # a corrupt file can fail anywhere inside pickle: each failure means "not readable"
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise GeneratorFileError(f"{path}: not a readable NVlabs snapshot pickle (truncated or corrupt? {reason})"
                                 ) from None
    if not isinstance(snapshot, dict) or "G_ema" not in snapshot:
        found = sorted(map(str, snapshot)) if isinstance(snapshot, dict) else type(snapshot).__name__
        raise GeneratorFileError(f"{path}: expected an NVlabs snapshot pickle, a dict with key 'G_ema'; found {found}")
    generator = snapshot["G_ema"]
    if not isinstance(generator, RecordedModule) or generator.class_name != "Generator":
        found = generator.class_name if isinstance(generator, RecordedModule) else type(generator).__name__
        raise GeneratorFileError(f"{path}: 'G_ema' is {found}, expected an NVlabs Generator network record")
    return NVlabsSnapshot(path=path, sha256=hashlib.sha256(data).hexdigest(), generator=generator,
                          kwargs=generator.init_kwargs(), tensors=generator.tensors())
