"""Reading a generator's PyTorch weights file safely, and explaining in one line why one does not fit.

Used by the loaders of third-party formats (InterFaceGAN PGGAN / StyleGAN ``.pth``, pytorch-pretrained-biggan
``pytorch_model.bin``). Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only,
never arbitrary pickled code. Both the legacy (pre-PyTorch-1.6) and the zip serialization load this way, within the
bounds of :mod:`stages.runtime.weight_files` (checked pickles, no compressed zip entries, tensors backed by the
file's bytes); networks are built on the meta device and get memory once the file's names and shapes fit them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from stages.plugins.generators.base import GeneratorFileError
from stages.runtime.weight_files import bounded_repr, check_tensors_backed, check_torch_container
from stages.runtime.weights import sha256_of

#: Longest excerpt of an underlying error message quoted in a GeneratorFileError.
_MAX_QUOTED = 160


def one_line(error: BaseException) -> str:
    """``error``'s message collapsed to one line and shortened, for quoting inside a GeneratorFileError."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 1] + "…"


def existing_file(path: str | Path, expected: str) -> Path:
    """``path`` with ``~`` expanded, checked to be a file.

    Raises:
        GeneratorFileError: nothing (or a folder) at ``path``; the message says what file was ``expected``.
    """
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        state = "is a folder" if resolved.is_dir() else "does not exist"
        raise GeneratorFileError(f"{resolved}: {state}; expected {expected}")
    return resolved


def load_state_dict(path: Path, expected: str) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` mapping saved at ``path`` (on the CPU), read without unpickling code and within the
    bounds of :mod:`stages.runtime.weight_files`: the container and its pickles are checked before
    ``torch.load``, and every tensor must be backed by the file's bytes after it.

    Raises:
        GeneratorFileError: the file is truncated, not a PyTorch file, breaks a bound, holds objects other than
            tensors, or is not a flat mapping of names to tensors; the message names the file and what was
            ``expected``.
    """
    try:
        with path.open("rb") as handle:
            check_torch_container(handle, path.stat().st_size, str(path))
    except GeneratorFileError as error:
        raise GeneratorFileError(f"{error}; expected {expected}") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        raise GeneratorFileError(
            f"{path}: not a readable PyTorch state dict ({one_line(error)}); expected {expected}"
        ) from None
    if not isinstance(loaded, Mapping) or not loaded:
        raise GeneratorFileError(f"{path}: holds a {type(loaded).__name__}, not a state dict; expected {expected}")
    not_tensors = [
        bounded_repr(key, 60)
        for key, value in loaded.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if not_tensors:
        raise GeneratorFileError(
            f"{path}: entries [{', '.join(not_tensors[:3])}] are not named tensors (a checkpoint "
            f"wrapping a state dict?); expected {expected}"
        )
    check_tensors_backed(loaded, str(path))
    return dict(loaded)


def require_keys(state: Mapping[str, torch.Tensor], keys: list[str], path: Path, expected: str) -> None:
    """Raise a GeneratorFileError naming ``path`` unless ``state`` has every one of ``keys``."""
    missing = [key for key in keys if key not in state]
    if missing:
        found = ", ".join(bounded_repr(key, 60)[1:-1] for key in list(state)[:4])
        raise GeneratorFileError(f"{path}: no tensor {missing[0]!r} (keys start {found}, ...); expected {expected}")


def progressive_block_channels(
    state: Mapping[str, torch.Tensor], prefix: str, first_channels: int, num_blocks: int, path: Path, expected: str
) -> tuple[list[int], list[bool]]:
    """Output channels and "fused upscale" flags of each block of a progressive (PGGAN / StyleGAN v1) synthesis
    network, read from the keys of its first conv layers ``<prefix>layer{2k}``: a fused layer (the transposed-conv
    upsampling InterFaceGAN uses at 128 px and above) stores ``weight`` (…, C_out) directly, a plain one
    ``conv.weight`` (C_out, …). Block 0 (``first_channels``) is never fused."""
    channels, fused = [first_channels], [False]
    for block in range(1, num_blocks):
        conv_key, fused_key = f"{prefix}layer{2 * block}.conv.weight", f"{prefix}layer{2 * block}.weight"
        if fused_key in state:
            channels.append(int(state[fused_key].shape[-1]))
            fused.append(True)
        else:
            require_keys(state, [conv_key], path, expected)
            channels.append(int(state[conv_key].shape[0]))
            fused.append(False)
    return channels, fused


def check_against_module(state: Mapping[str, torch.Tensor], module: torch.nn.Module, path: Path, expected: str) -> None:
    """Check that ``state`` has exactly the keys and shapes of ``module.state_dict()`` (the architecture inferred
    from the file), so that a strict load cannot fail with a multi-line PyTorch error.

    Raises:
        GeneratorFileError: a missing or extra key, or a shape that differs; names the first few and the file.
    """
    wanted = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    missing = [key for key in wanted if key not in state]
    extra = [key for key in state if key not in wanted]
    wrong = [
        f"{key} {tuple(state[key].shape)} (expected {wanted[key]})"
        for key in wanted
        if key in state and tuple(state[key].shape) != wanted[key]
    ]
    problems = (
        ([f"missing {', '.join(missing[:3])}"] if missing else [])
        + ([f"unexpected {', '.join(extra[:3])}"] if extra else [])
        + ([f"shape of {', '.join(wrong[:2])}"] if wrong else [])
    )
    if problems:
        raise GeneratorFileError(f"{path}: tensors do not fit {expected}: {'; '.join(problems)}")


def file_fingerprint(name: str, paths: list[Path], settings: Mapping[str, object]) -> str:
    """``name:sha256[:sha256...]:key=value,...``: changes with the weights' bytes and every output-changing kwarg."""
    digests = ":".join(sha256_of(path) for path in paths)
    options = ",".join(f"{key}={value!r}" for key, value in sorted(settings.items()))
    return f"{name}:{digests}:{options}"
