"""What a user's weight file may cost the process that reads it: data, in bounded amounts, and nothing else.

Every loader of a user's weight file (NVlabs snapshot pickles; InterFaceGAN ``.pth`` and pytorch-pretrained-biggan
``pytorch_model.bin`` state dicts; torch-classifier checkpoints and state dicts; classifier-training init weights)
applies these checks, each before the work it guards:

1. :func:`check_pickle_shape` walks a pickle's opcodes *before any object is built*. It refuses a pickle with more
   than :data:`MAX_PICKLE_OPCODES` opcodes, objects nested deeper than :data:`MAX_PICKLE_DEPTH`, an object whose
   expansion (each shared reference counted at every use, as ``str``, ``hash`` or ``==`` visit it) exceeds
   :data:`MAX_PICKLE_OBJECTS`, a container changed after it was placed inside another object (the only way to make
   a cycle), and state set (BUILD) on anything but an object the pickle itself called into being (never on a
   global, a type or a function).
2. :func:`check_torch_container` checks a ``torch.save`` file before ``torch.load(weights_only=True)``: a zip's
   entries must be stored uncompressed and fit in the file (no zip bomb), and every pickle in it passes 1.
3. :func:`check_tensors_backed`, after loading: a tensor may claim no more elements than the file bytes behind it
   (a stride-0 or overlapping view cannot turn 4 bytes into 4 GiB), and tensors may not share those bytes.
4. Networks are built on PyTorch's ``meta`` device (:func:`build_on_meta`: shapes without memory), compared with
   the file's tensor names and shapes, and only then given memory (:func:`materialize`): building costs no more
   memory than the file's own tensors hold, whatever sizes its records or config claim.

Error messages quote file contents only through :func:`bounded_repr`, which stops after a fixed amount of work.
"""

from __future__ import annotations

import io
import math
import pickletools
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch
from torch import nn

from latentatlas.errors import LatentAtlasError

#: Most opcodes in one pickle (a 1024² StyleGAN2 snapshot with G, D, G_ema and augment_pipe has ~60 000).
MAX_PICKLE_OPCODES = 2_000_000
#: Deepest nesting of objects in a pickle (NVlabs snapshots: ~30; each sub-network adds ~4 levels).
MAX_PICKLE_DEPTH = 100
#: Most objects any one object of a pickle expands to, counting a shared object at each of its uses; also the most
#: objects a pickle may create (a 1024² StyleGAN2 snapshot: ~150 000).
MAX_PICKLE_OBJECTS = 2_000_000

#: Characters of file content quoted in an error message.
QUOTE_LENGTH = 120


class WeightFileError(LatentAtlasError, ValueError):
    """A weights file (a generator's, a classifier checkpoint, ...) that is unreadable, not the format expected, or
    refused as unsafe; its message names the file."""


_LEAF_OPCODES = frozenset(
    {
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "UNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "FLOAT",
        "BINFLOAT",
        "EMPTY_TUPLE",
    }
)
_CALL_OPCODES = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3}  # opcode → objects it pops (callable and arguments)


class _Refused(Exception):
    """A bound a pickle broke (turned into a WeightFileError naming the file)."""


class _Node:
    """An object of a pickle under analysis: what it is, how many objects it expands to, how deep it nests, and
    whether it has been placed inside another object."""

    __slots__ = ("depth", "kind", "size", "used")

    def __init__(self, kind: str, children: Iterable[_Node] = ()) -> None:
        self.kind = kind  # "leaf" (immutable value), "container" (list/dict/set), "global", "call" (built by a call)
        self.size, self.depth, self.used = 1, 0, False
        self.add(children)

    def add(self, children: Iterable[_Node]) -> None:
        for child in children:
            if child is self:
                raise _Refused("a container that contains itself (a cycle)")
            self.size += child.size
            self.depth = max(self.depth, child.depth + 1)
            child.used = True
        if self.depth > MAX_PICKLE_DEPTH:
            raise _Refused(f"objects nested deeper than MAX_PICKLE_DEPTH = {MAX_PICKLE_DEPTH}")
        if self.size > MAX_PICKLE_OBJECTS:
            raise _Refused(
                f"an object that expands to more than MAX_PICKLE_OBJECTS = {MAX_PICKLE_OBJECTS:,} objects "
                f"(shared references counted at each use)"
            )


def check_pickle_shape(stream: BinaryIO, source: str, what: str = "pickle", persistent_ids: bool = False) -> None:
    """Walk one pickle from ``stream``'s position to its STOP opcode (leaving the stream after it) and refuse it,
    before anything is unpickled, if it breaks a bound (see the module docstring).

    Args:
        stream: the pickle's bytes, positioned at its first opcode.
        source: the file (and part of it), for the message.
        what: what the file should be, for the message (``"NVlabs snapshot pickle"``).
        persistent_ids: allow PERSID / BINPERSID (``torch.save`` files; an NVlabs snapshot has none).

    Raises:
        WeightFileError: one line naming ``source`` and the bound, or saying the pickle is unreadable.
    """
    stack: list[_Node] = []
    marks: list[list[_Node]] = []
    memo: dict[int, _Node] = {}
    created = 0

    def new(kind: str, children: Iterable[_Node] = ()) -> None:
        nonlocal created
        created += 1
        if created > MAX_PICKLE_OBJECTS:
            raise _Refused(f"more than MAX_PICKLE_OBJECTS = {MAX_PICKLE_OBJECTS:,} objects")
        stack.append(_Node(kind, children))

    def pop_mark() -> list[_Node]:
        nonlocal stack
        items, stack = stack, marks.pop()
        return items

    def change(target: _Node, children: list[_Node], what: str) -> None:
        if target.kind not in ("container", "call"):
            raise _Refused(f"{what} on a {'global' if target.kind == 'global' else 'value'} it did not create")
        if target.used:
            raise _Refused(
                f"{what} on an object already placed inside another one (a cycle, or an object that changes after use)"
            )
        target.add(children)

    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(stream), start=1):
            if count > MAX_PICKLE_OPCODES:
                raise _Refused(f"more than MAX_PICKLE_OPCODES = {MAX_PICKLE_OPCODES:,} opcodes")
            name = opcode.name
            if name in _LEAF_OPCODES:
                new("leaf")
            elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
                new("container")
            elif name == "GLOBAL":
                new("global")
            elif name == "STACK_GLOBAL":
                if len(stack) < 2:
                    raise IndexError("stack underflow")
                del stack[-2:]
                new("global")
            elif name in ("PROTO", "FRAME"):
                continue
            elif name == "STOP":
                break
            elif name == "MARK":
                marks.append(stack)
                stack = []
            elif name == "POP":
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name in ("TUPLE", "FROZENSET"):
                new("leaf", pop_mark())
            elif name in ("LIST", "DICT"):
                new("container", pop_mark())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                size = int(name[-1])
                if len(stack) < size:
                    raise IndexError("stack underflow")
                items = stack[-size:]
                del stack[-size:]
                new("leaf", items)
            elif name == "APPEND":
                value = stack.pop()
                change(stack[-1], [value], name)
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                items = pop_mark()
                change(stack[-1], items, name)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                change(stack[-1], [key, value], name)
            elif name == "BUILD":
                state = stack.pop()
                if stack[-1].kind != "call":
                    raise _Refused(
                        "BUILD (setting the state) of a global, type, function or value the pickle did "
                        "not create by a call"
                    )
                change(stack[-1], [state], name)
            elif name in _CALL_OPCODES:
                size = _CALL_OPCODES[name]
                if len(stack) < size:
                    raise IndexError("stack underflow")
                items = stack[-size:]
                del stack[-size:]
                new("call", items)
            elif name in ("OBJ", "INST"):
                new("call", pop_mark())
            elif name == "BINPERSID" and persistent_ids:
                new("call", [stack.pop()])
            elif name == "PERSID" and persistent_ids:
                new("call")
            else:
                raise ValueError(f"the opcode {name}, which a {what} does not use")
        else:
            raise EOFError("no STOP opcode")
    except _Refused as refusal:
        raise WeightFileError(
            f"{source}: refused: the pickle has {refusal}; a weight file holds only bounded data"
        ) from None
    except (ValueError, IndexError, KeyError, EOFError) as error:  # genops: bad opcode or argument; bad stack or memo
        raise WeightFileError(
            f"{source}: not a readable {what} (truncated or corrupt? "
            f"{type(error).__name__}: {bounded_text(str(error))})"
        ) from None


def bounded_text(text: str, limit: int = QUOTE_LENGTH) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text[: 4 * limit].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded_repr(value: Any, limit: int = QUOTE_LENGTH) -> str:
    """A one-line repr of a value read from a file, that visits at most ~``limit`` objects: shared references,
    huge integers and long strings cannot make quoting it slow."""
    parts: list[str] = []
    budget = [limit]

    def emit(text: str) -> None:
        parts.append(text)
        budget[0] -= max(len(text), 1)
        if budget[0] <= 0:
            raise StopIteration

    def visit(item: Any) -> None:
        if isinstance(item, (str, bytes)):
            emit(repr(item[:limit]) + ("…" if len(item) > limit else ""))
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            emit(repr(item))
        elif isinstance(item, int):
            emit(repr(item) if item.bit_length() <= 64 else f"<int of {item.bit_length()} bits>")
        elif isinstance(item, np.generic) and not isinstance(item, np.void):
            emit(repr(item.item()) if item.dtype.kind in "biuf" else f"<{type(item).__name__}>")
        elif isinstance(item, torch.Tensor):
            emit(f"tensor{tuple(item.shape)}")
        elif isinstance(item, np.ndarray):
            emit(f"array{item.shape}")
        elif isinstance(item, (tuple, list, set, frozenset, dict)):
            opening, closing = {tuple: "()", list: "[]", dict: "{}"}.get(type(item), "{}")
            emit(opening)
            for index, element in enumerate(item.items() if isinstance(item, dict) else item):
                if index:
                    emit(", ")
                if isinstance(item, dict):
                    visit(element[0])
                    emit(": ")
                    visit(element[1])
                else:
                    visit(element)
            emit(closing)
        else:
            emit(f"<{type(item).__name__}>")

    try:
        visit(value)
    except StopIteration:
        return bounded_text("".join(parts), limit - 1) + "…"
    return bounded_text("".join(parts), limit)


# --------------------------------------------------------------------------------------------- torch.save files


def check_torch_container(stream: BinaryIO, size: int, source: str) -> None:
    """Check a ``torch.save`` file (an open stream of ``size`` bytes) before ``torch.load(weights_only=True)``.

    Zip format (told apart as ``torch.load`` does, by its first four bytes): no entry compressed, the records that
    PyTorch's own zip reader lists no larger than the file in all, and their ``data.pkl`` passes
    :func:`check_pickle_shape`. Legacy format (before PyTorch 1.6): its five pickles pass it (the storages' bytes
    follow them; ``torch.load`` checks each storage's size against them before reading any).

    Raises:
        WeightFileError: a broken bound or an unreadable container, in one line naming ``source``.
    """
    start = stream.tell()
    is_zip = stream.read(4) == b"PK\x03\x04"
    stream.seek(start)
    if is_zip:
        _check_zip(stream, size, source)
        return
    for part in range(5):
        check_pickle_shape(
            stream,
            f"{source} (pickle {part + 1} of a legacy torch.save file)",
            what="torch.save file",
            persistent_ids=True,
        )


def _check_zip(stream: BinaryIO, size: int, source: str) -> None:
    try:
        compressed = [
            entry.filename for entry in zipfile.ZipFile(stream).infolist() if entry.compress_type != zipfile.ZIP_STORED
        ]
        stream.seek(0)
        reader = torch._C.PyTorchFileReader(stream)  # the reader torch.load uses: the records it will see
        records = reader.get_all_records()
        claimed = sum(reader.get_record_size(name) for name in records)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
        raise WeightFileError(f"{source}: not a readable zip file ({bounded_text(str(error))})") from None
    if compressed:
        raise WeightFileError(
            f"{source}: refused: the zip entry {bounded_repr(compressed[0])} is compressed "
            f"(torch.save stores entries uncompressed; a compressed one can expand far beyond "
            f"the file's size)"
        )
    if claimed > size:
        raise WeightFileError(
            f"{source}: refused: its zip records hold {claimed:,} bytes uncompressed, more than the file's {size:,}"
        )
    if "data.pkl" not in records:
        raise WeightFileError(f"{source}: not a torch.save zip file (no data.pkl record)")
    check_pickle_shape(
        io.BytesIO(reader.get_record("data.pkl")), f"{source} (data.pkl)", what="torch.save file", persistent_ids=True
    )


# ---------------------------------------------------------------------------------------------------- tensors


def unbacked_bytes(tensor: torch.Tensor) -> int:
    """Bytes ``tensor`` claims beyond those of its storage from its offset on (0 for a tensor its storage backs)."""
    claimed = tensor.numel() * tensor.element_size()
    available = tensor.untyped_storage().nbytes() - tensor.storage_offset() * tensor.element_size()
    return max(claimed - available, 0)


def check_tensors_backed(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Every tensor of a file claims no more elements than the bytes of its storage (from its offset on), and no
    two tensors share bytes: materialising them costs at most the bytes the file stores.

    Raises:
        WeightFileError: the first tensor (by name) that breaks this, in one line.
    """
    claimed_total = 0
    storages: dict[tuple[int, int], int] = {}
    for name, tensor in tensors.items():
        claimed = tensor.numel() * tensor.element_size()
        if unbacked_bytes(tensor):
            raise WeightFileError(
                f"{source}: refused: tensor {bounded_text(name)} claims shape {tuple(tensor.shape)} ({claimed:,} "
                f"bytes) but its storage holds {tensor.untyped_storage().nbytes():,} bytes (a stride-0 or "
                f"overlapping view): a tensor may claim no more elements than the file stores for it"
            )
        storage = tensor.untyped_storage()
        storages[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        claimed_total += claimed
    if claimed_total > sum(storages.values()):
        raise WeightFileError(
            f"{source}: refused: its tensors claim {claimed_total:,} bytes but share "
            f"{sum(storages.values()):,} bytes of storage: each stored byte may back one tensor"
        )


M = TypeVar("M", bound=nn.Module)


def build_on_meta(factory: Callable[[], M]) -> M:
    """``factory()`` with every parameter and buffer on PyTorch's ``meta`` device: the network's names and shapes,
    no memory (whatever sizes the file's records claim), to compare with the file's tensors before
    :func:`materialize`."""
    with torch.device("meta"):
        return factory()


def materialize(net: M, state: Mapping[str, torch.Tensor]) -> M:
    """Give ``net`` (from :func:`build_on_meta`, its names and shapes already checked against ``state``) the tensors
    of ``state`` as its parameters and buffers (converted to the network's dtypes, contiguous; no second copy of the
    weights). Non-persistent buffers get zeros (their owners recompute them).

    Raises:
        RuntimeError: a parameter or buffer left without memory (a bug: the caller did not check the names).
    """
    expected = net.state_dict()
    net.load_state_dict(
        {name: state[name].to(dtype=expected[name].dtype).contiguous() for name in expected}, strict=True, assign=True
    )
    for module in net.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype)
    left = [name for name, tensor in [*net.named_parameters(), *net.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"materialize: {left[:3]} got no memory")
    return net


def finite_number(value: Any) -> bool:
    """A real, finite int or float (not a bool), as a recorded size or setting must be."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def _named_tensors(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside ``value`` (nested mappings, lists and tuples), by a dotted path."""
    if isinstance(value, torch.Tensor):
        return {prefix or "<root>": value}
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return {}
    found: dict[str, torch.Tensor] = {}
    for key, item in items:
        found |= _named_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    return found


def checked_torch_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` of a user's file, with the checks of this module around it: the
    container before (:func:`check_torch_container`), every tensor it holds after (:func:`check_tensors_backed`).

    Raises:
        WeightFileError: a refused or unreadable file, in one line naming ``path``.
    """
    with path.open("rb") as handle:
        check_torch_container(handle, path.stat().st_size, str(path))
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        raise WeightFileError(
            f"{path}: cannot be read with torch.load(weights_only=True): {bounded_text(' '.join(str(error).split()))}"
        ) from None
    check_tensors_backed(_named_tensors(loaded), str(path))
    return loaded
