"""A generator weight file is data: it cannot change the process that reads it, and it costs no more time or memory
than its own bytes justify (``stages/runtime/weight_files.py``).

Every hostile file here is crafted in the test, tiny, from pickle opcodes or from records of networks built by our
own modules (no fixture, no NVIDIA code). Loads that misbehaved before the bounds existed (hangs, tens of GB) run in a
forked child with a wall-clock alarm and an address-space limit, so that a regression fails instead of stalling or
swapping the machine.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import resource
import signal
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from stages.plugins.generators import build_generator
from stages.plugins.generators.base import GeneratorFileError
from stages.plugins.generators.biggan import BigGANConfig, BigGANNet
from stages.plugins.generators.nvlabs_common import MappingNetwork, StyleGANNet, same_value
from stages.plugins.generators.nvlabs_pickle import SnapshotUnpickler, read_nvlabs_snapshot
from stages.plugins.generators.nvlabs_stylegan2 import SynthesisNetwork as StyleGAN2Synthesis
from stages.plugins.generators.nvlabs_stylegan3 import SynthesisNetwork as StyleGAN3Synthesis
from stages.plugins.generators.pggan import PGGANArchitecture, PGGANNet
from stages.runtime.weight_files import MAX_PICKLE_DEPTH, MAX_PICKLE_OBJECTS, bounded_repr

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "generators"
SG2_FIXTURE = FIXTURES / "stylegan2-ada" / "network-snapshot-000000.pkl"


# ------------------------------------------------------------------------------------------------ helpers


def run_isolated(action: Callable[[], Any], seconds: int = 60, memory: int = 1 << 30) -> tuple[str, str]:
    """Run ``action`` in a forked child that dies after ``seconds`` and may map only ``memory`` more bytes than
    this process has now. Returns ``("returned", "")``, ``(exception class name, message)`` or ``("killed", how)``."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            status = Path("/proc/self/status")  # Linux; elsewhere the child runs without the memory limit
            if status.is_file():
                mapped = int(
                    next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmSize:"))
                )
                resource.setrlimit(
                    resource.RLIMIT_AS, (mapped * 1024 + memory, resource.getrlimit(resource.RLIMIT_AS)[1])
                )
            signal.alarm(seconds)  # SIGALRM's default action ends the child, even inside a C loop
            try:
                action()
                outcome = ["returned", ""]
            except BaseException as error:  # noqa: BLE001 - everything is reported to the parent
                outcome = [type(error).__name__, str(error)]
            os.write(write_end, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = reader.read()
    _, status = os.waitpid(child, 0)
    if not report:
        return "killed", f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {status}"
    kind, message = json.loads(report)
    return kind, message


def assert_refused(outcome: tuple[str, str], *phrases: str) -> str:
    """``outcome`` (from :func:`run_isolated`) is a one-line WeightFileError (GeneratorFileError) containing every
    phrase."""
    kind, message = outcome
    assert kind == "WeightFileError", outcome  # GeneratorFileError is this class
    assert "\n" not in message, message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    return message


def _record_marker(meta: dict) -> Any:
    raise AssertionError("never called: the bytes name NVlabs' reconstruction function instead")


class Record:
    """Pickles as NVlabs' ``torch_utils.persistence`` does a network: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name, self.state = class_name, state

    def __reduce__(self) -> tuple:
        return _record_marker, (
            {
                "type": "class",
                "version": 6,
                "module_src": "# never read",
                "class_name": self.class_name,
                "state": self.state,
            },
        )


def snapshot_bytes(snapshot: dict, extra_opcodes: bytes = b"") -> bytes:
    """``snapshot`` pickled (protocol 3: bytes as bytes, globals by name) with NVlabs' globals for its
    :class:`Record` s, ``extra_opcodes`` inserted before the final STOP."""
    data = pickle.dumps(snapshot, protocol=3)
    marker = f"c{__name__}\n_record_marker\n".encode()
    data = data.replace(marker, b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n")
    return data[:-1] + extra_opcodes + pickle.STOP


def records_of(
    module: nn.Module, init_kwargs: dict | None = None, recorded: dict[str, dict] | None = None, prefix: str = ""
) -> Record:
    """``module`` as NVlabs records it: parameters, buffers, sub-networks; ``init_kwargs`` on the top network and
    ``recorded`` plain attributes by dotted module path."""
    state: dict[str, Any] = {
        "training": False,
        "_parameters": collections.OrderedDict(module._parameters.items()),
        "_buffers": collections.OrderedDict(module._buffers.items()),
        "_modules": collections.OrderedDict(
            (name, records_of(child, None, recorded, f"{prefix}{name}.")) for name, child in module._modules.items()
        ),
        **(recorded or {}).get(prefix.rstrip("."), {}),
    }
    if init_kwargs is not None:
        state["_init_args"], state["_init_kwargs"] = (), init_kwargs
    return Record("Generator" if init_kwargs is not None else type(module).__name__, state)


SG2_KWARGS = dict(
    z_dim=8,
    c_dim=0,
    w_dim=8,
    img_resolution=8,
    img_channels=3,
    mapping_kwargs={"num_layers": 2},
    synthesis_kwargs={"channel_base": 64, "channel_max": 8, "num_fp16_res": 0, "conv_clamp": 256},
)


def tiny_stylegan2(conv_clamp: float | None = 256, seed: int = 0) -> StyleGANNet:
    """An 8-px StyleGAN2 of our own modules (z 8, w 8, 2 mapping layers, 8 channels), with non-trivial biases."""
    torch.manual_seed(seed)
    synthesis = StyleGAN2Synthesis(
        8,
        8,
        3,
        channel_base=64,
        channel_max=8,
        num_fp16_res=0,
        conv_clamp=conv_clamp,
        resample_filter=[1, 3, 3, 1],
        kernel_size=3,
        use_noise=True,
    )
    net = StyleGANNet(MappingNetwork(8, 0, 8, num_layers=2), synthesis)
    with torch.no_grad():
        for name, tensor in net.named_parameters():
            if name.endswith(("bias", "noise_strength")):
                tensor.add_(torch.randn(tensor.shape) * 0.1)
    return net.eval()


def write_tiny_stylegan2(
    path: Path, extra_opcodes: bytes = b"", conv_clamp: float | None = 256, **kwargs: Any
) -> StyleGANNet:
    net = tiny_stylegan2(conv_clamp)
    init_kwargs = {**SG2_KWARGS, **kwargs}
    init_kwargs["synthesis_kwargs"] = {**SG2_KWARGS["synthesis_kwargs"], "conv_clamp": conv_clamp}
    path.write_bytes(snapshot_bytes({"G_ema": records_of(net, init_kwargs)}, extra_opcodes))
    return net


def memo_dag(levels: int, frozen: bool) -> bytes:
    """Opcodes pushing one object that shares itself 2^levels times, in a few bytes per level: tuples (t, t)
    (hashing one visits every copy; no POP, which torch's weights-only unpickler lacks) or frozensets {f, (f, 1)}
    (hash cached, ``str`` visits every copy)."""
    if not frozen:
        return (
            pickle.EMPTY_TUPLE
            + pickle.BINPUT
            + b"\x00"
            + (pickle.BINGET + b"\x00" + pickle.TUPLE2 + pickle.BINPUT + b"\x00") * levels
        )
    opcodes = pickle.EMPTY_TUPLE + pickle.BINPUT + b"\x00" + pickle.POP
    previous = pickle.BINGET + b"\x00"
    for _ in range(levels):
        opcodes += pickle.MARK + previous + previous + pickle.BININT1 + b"\x01" + pickle.TUPLE2 + pickle.FROZENSET
        opcodes += pickle.BINPUT + b"\x00" + pickle.POP
    return opcodes + previous


def global_opcode(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def build_opcodes(target: bytes, state: object) -> bytes:
    """``target`` (opcodes pushing one object), then BUILD with ``state``, then POP: the stack is as before."""
    return target + pickle.dumps(state, protocol=3)[2:-1] + pickle.BUILD + pickle.POP


def weights_only_round_trip() -> list[float]:
    """What ``torch.load(weights_only=True)`` (as the labelers and LPIPS read their weights) gives for [1, 2, 3]."""
    buffer = io.BytesIO()
    torch.save({"weight": torch.tensor([1.0, 2.0, 3.0])}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["weight"].tolist()


# ------------------------------------------------------------------------- 1. BUILD changes nothing it did not make


@pytest.mark.parametrize(
    ("module", "name", "attribute"),
    [
        ("torch._utils", "_rebuild_tensor_v2", "__defaults__"),
        ("torch._utils", "_rebuild_parameter", "__kwdefaults__"),
        ("torch_utils.persistence", "_reconstruct_persistent_obj", "__defaults__"),
    ],
)
def test_build_cannot_change_an_allowed_global(tmp_path: Path, module: str, name: str, attribute: str) -> None:
    """Appended to a loadable snapshot, a BUILD that sets ``__defaults__`` of ``_rebuild_tensor_v2`` used to load,
    give the right images and make every later tensor load negated ([1, 2, 3] → [-1, -2, -3]), even after the
    load was refused. Now the file is refused and nothing outside its own objects changed."""
    import torch._utils

    from stages.plugins.generators import nvlabs_pickle

    functions = {
        "_rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "_rebuild_parameter": torch._utils._rebuild_parameter,
        "_reconstruct_persistent_obj": nvlabs_pickle._record_persistent_object,
    }
    before = {
        key: (function.__defaults__, function.__kwdefaults__, dict(function.__dict__))
        for key, function in functions.items()
    }
    tamper = build_opcodes(
        global_opcode(module, name), (None, {attribute: ({"neg": True},) if attribute == "__defaults__" else {"x": 1}})
    )
    path = tmp_path / "tampering.pkl"
    write_tiny_stylegan2(path, tamper)
    try:
        with pytest.raises(GeneratorFileError) as caught:
            build_generator("stylegan2", path=str(path))
        message = str(caught.value)
        assert "tampering.pkl: refused: " in message and "BUILD" in message and "\n" not in message
        # the unpickler refuses it too, without the opcode walk that refused the file above
        with pytest.raises(GeneratorFileError, match="direct: refused: BUILD .*never on a global, a type or a"):
            SnapshotUnpickler(io.BytesIO(pickle.PROTO + b"\x03" + tamper + pickle.NONE + pickle.STOP), "direct").load()
        after = {
            key: (function.__defaults__, function.__kwdefaults__, dict(function.__dict__))
            for key, function in functions.items()
        }
        assert after == before
        assert weights_only_round_trip() == [1.0, 2.0, 3.0]
    finally:  # never leave a tainted process behind for the other tests, whatever happened
        for key, function in functions.items():
            function.__defaults__, function.__kwdefaults__ = before[key][0], before[key][1]
            function.__dict__.clear()
            function.__dict__.update(before[key][2])


def test_the_same_snapshot_without_the_tampering_loads(tmp_path: Path) -> None:
    """The base file of the test above is a valid snapshot: the refusal is the BUILD's."""
    path = tmp_path / "clean.pkl"
    net = write_tiny_stylegan2(path)
    generator = build_generator("stylegan2", path=str(path))
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(generator.synthesize(z), net.synthesis(net.mapping(z)[:, None].expand(-1, 4, -1)))


def test_build_cannot_change_a_type_or_a_rebuilt_tensor(tmp_path: Path) -> None:
    """BUILD on a type, and on a tensor the file rebuilt (``Tensor.__setstate__`` would re-point it at any storage
    region, past the checks of its rebuild), is refused like BUILD on a function."""
    on_type = build_opcodes(global_opcode("collections", "OrderedDict"), (None, {"fromkeys": 1}))
    path = tmp_path / "type.pkl"
    write_tiny_stylegan2(path, on_type)
    with pytest.raises(GeneratorFileError, match="type.pkl: refused: .*BUILD"):
        read_nvlabs_snapshot(path)
    rebuilt_tensor = pickle.dumps(torch.zeros(2), protocol=3)[2:-1]  # pushes a tensor rebuilt by the file
    path = tmp_path / "tensor.pkl"
    write_tiny_stylegan2(path, build_opcodes(rebuilt_tensor, (True, None, None)))
    with pytest.raises(GeneratorFileError, match="tensor.pkl: refused: BUILD .* of tensor\\(2,\\)"):
        read_nvlabs_snapshot(path)


def test_only_rebuilding_functions_may_be_called(tmp_path: Path) -> None:
    """``numpy.ndarray`` is allowed as an argument of numpy's array rebuild, not as something to call: a call of it
    with a huge shape used to allocate (lazily) whatever the file asked for."""
    huge_array = global_opcode("numpy", "ndarray") + pickle.dumps(((1 << 40,),), protocol=3)[2:-1] + pickle.REDUCE
    path = tmp_path / "ndarray.pkl"
    write_tiny_stylegan2(path, huge_array + pickle.POP)
    outcome = run_isolated(lambda: read_nvlabs_snapshot(path), memory=512 << 20)
    assert_refused(outcome, "ndarray.pkl: refused: a call of", "ndarray")
    reconstruct = global_opcode("numpy.core.multiarray", "_reconstruct")
    big_empty = reconstruct + pickle.dumps((np.ndarray, (1 << 40,), b"b"), protocol=3)[2:-1] + pickle.REDUCE
    write_tiny_stylegan2(path, big_empty + pickle.POP)
    assert_refused(
        run_isolated(lambda: read_nvlabs_snapshot(path), memory=512 << 20), "an array record that is not numpy's"
    )


# ------------------------------------------------------------------------------- 2. tiny files, bounded costs


@pytest.mark.parametrize("z_dim", [10**7, 500_000])
def test_a_recorded_size_beyond_the_files_weights_is_refused_before_building(tmp_path: Path, z_dim: int) -> None:
    """A 600-byte record (no tensors) claiming z_dim 1e7 made the loader allocate 20 GB before any check (a raw
    RuntimeError); z_dim 5e5 cost GBs and seconds. Sizes are bounded by the weights the file's tensors hold."""
    mapping = Record("MappingNetwork", {"_parameters": {}, "_buffers": {}, "_modules": {}})
    synthesis = Record("SynthesisNetwork", {"_modules": {"b4": Record("SynthesisBlock", {})}})
    generator = Record(
        "Generator",
        {
            "_modules": {"mapping": mapping, "synthesis": synthesis},
            "_init_args": (),
            "_init_kwargs": {**SG2_KWARGS, "z_dim": z_dim, "w_dim": 512},
        },
    )
    path = tmp_path / "claims.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": generator}))
    assert path.stat().st_size < 1000
    message = assert_refused(
        run_isolated(lambda: build_generator("stylegan2", path=str(path)), memory=1 << 30),
        "claims.pkl: refused: G_ema's recorded z_dim is",
        "outside 0..0",
        "may not exceed the number of weights",
    )
    assert f"{z_dim}" in message
    # with real (tiny) tensors the bound is their weight count
    path = tmp_path / "real.pkl"
    write_tiny_stylegan2(path, z_dim=z_dim)
    weights = sum(tensor.numel() for tensor in tiny_stylegan2().state_dict().values())
    assert_refused(
        run_isolated(lambda: build_generator("stylegan2", path=str(path)), memory=1 << 30),
        "recorded z_dim",
        f"outside 0..{weights:,}",
    )


def test_sizes_within_the_bound_cost_nothing_until_they_fit_the_tensors(tmp_path: Path) -> None:
    """A StyleGAN3 record whose filter_size (within the weight bound) asks for radial filters of ~10^5 × 10^5 taps
    made the loader design them in numpy (tens of GB) before comparing anything; now the network is built on the
    meta device and refused by the file's own tensor shapes."""
    torch.manual_seed(1)
    layer_args = dict(
        channel_base=256,
        channel_max=16,
        num_layers=6,
        num_critical=2,
        first_cutoff=2,
        first_stopband=2**2.1,
        last_stopband_rel=2**0.3,
        margin_size=4,
        output_scale=0.25,
        num_fp16_res=0,
        conv_kernel=1,
        filter_size=6,
        lrelu_upsampling=2,
        use_radial_filters=True,
        conv_clamp=256,
    )
    net = StyleGANNet(MappingNetwork(8, 0, 32, num_layers=1), StyleGAN3Synthesis(32, 16, 3, **layer_args))
    weights = sum(tensor.numel() for tensor in net.state_dict().values())
    assert weights > 5_000
    kwargs = dict(
        z_dim=8,
        c_dim=0,
        w_dim=32,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs={"num_layers": 1},
        synthesis_kwargs={**layer_args, "filter_size": weights},
    )
    path = tmp_path / "filters.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": records_of(net, kwargs)}))
    assert_refused(
        run_isolated(lambda: build_generator("stylegan3", path=str(path)), memory=1 << 30),
        "filters.pkl: G_ema's tensor shapes differ from a StyleGAN3 generator",
        "filter",
    )


@pytest.mark.parametrize("frozen", [False, True], ids=["tuple-key", "frozenset-key"])
def test_a_key_sharing_itself_2_to_the_40_times_is_refused(tmp_path: Path, frozen: bool) -> None:
    """A 300-byte pickle whose dict key is a 40-level shared tuple hung at 100 % CPU (hashing it, or quoting it in
    ``sorted(map(str, snapshot))``). Its expanded size is bounded before anything is unpickled."""
    path = tmp_path / "dag.pkl"
    path.write_bytes(
        pickle.PROTO
        + b"\x02"
        + pickle.EMPTY_DICT
        + memo_dag(40, frozen)
        + pickle.BININT1
        + b"\x01"
        + pickle.SETITEM
        + pickle.STOP
    )
    assert path.stat().st_size < 600
    assert_refused(
        run_isolated(lambda: read_nvlabs_snapshot(path), seconds=30),
        "dag.pkl: refused: the pickle has an object that expands to more than MAX_PICKLE_OBJECTS",
        f"{MAX_PICKLE_OBJECTS:,}",
    )


def test_a_deep_record_chain_is_refused_in_one_line(tmp_path: Path) -> None:
    """A chain of 5000 network records, each the only sub-network of the next, gave a raw RecursionError."""
    opcodes = [pickle.PROTO + b"\x03", pickle.EMPTY_DICT, pickle.dumps("G_ema", protocol=3)[2:-1]]
    strings = ["type", "class", "class_name", "Generator", "state", "_modules", "synthesis"]
    for index, text in enumerate(strings, start=1):
        opcodes.append(
            pickle.BINUNICODE
            + len(text).to_bytes(4, "little")
            + text.encode()
            + pickle.BINPUT
            + bytes([index])
            + pickle.POP
        )
    opcodes.append(
        global_opcode("torch_utils.persistence", "_reconstruct_persistent_obj") + pickle.BINPUT + b"\x08" + pickle.POP
    )
    get = {text: pickle.BINGET + bytes([index]) for index, text in enumerate(strings, start=1)}
    header = get["type"] + get["class"] + get["class_name"] + get["Generator"] + get["state"]
    opcodes.append(pickle.NONE + pickle.BINPUT + b"\x09" + pickle.POP)  # the innermost "child"
    for _ in range(5000):
        opcodes.append(
            pickle.BINGET
            + b"\x08"
            + pickle.EMPTY_DICT
            + pickle.MARK
            + header
            + pickle.EMPTY_DICT
            + get["_modules"]
            + pickle.EMPTY_DICT
            + get["synthesis"]
            + pickle.BINGET
            + b"\x09"
            + pickle.SETITEM
            + pickle.SETITEM
            + pickle.SETITEMS
            + pickle.TUPLE1
            + pickle.REDUCE
            + pickle.BINPUT
            + b"\x09"
            + pickle.POP
        )
    opcodes.append(pickle.BINGET + b"\x09" + pickle.SETITEM + pickle.STOP)
    path = tmp_path / "chain.pkl"
    path.write_bytes(b"".join(opcodes))
    assert_refused(
        run_isolated(lambda: build_generator("stylegan2", path=str(path)), seconds=60),
        "chain.pkl: refused: the pickle has objects nested deeper than MAX_PICKLE_DEPTH",
        f"{MAX_PICKLE_DEPTH}",
    )


def test_a_cycle_is_refused_before_unpickling(tmp_path: Path) -> None:
    """A container changed after it was placed inside another object (the only way a pickle makes a cycle, which a
    recursive walk of network records would follow forever) is refused by the opcode walk."""
    inner: list = []
    outer = [inner]
    inner.append(outer)
    path = tmp_path / "cycle.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": outer}))
    with pytest.raises(GeneratorFileError, match="cycle.pkl: refused: the pickle has APPEND.* already placed inside"):
        read_nvlabs_snapshot(path)
    itself: list = []
    itself.append(itself)
    path.write_bytes(snapshot_bytes({"G_ema": itself}))
    with pytest.raises(GeneratorFileError, match="cycle.pkl: refused: the pickle has a container that contains itself"):
        read_nvlabs_snapshot(path)


def test_an_nvlabs_tensor_may_not_claim_more_than_its_storage(tmp_path: Path) -> None:
    """A stride-0 view recorded in a snapshot (4 bytes stored, 4 GiB claimed) is refused when it is rebuilt."""
    net = tiny_stylegan2()
    record = records_of(net, SG2_KWARGS)
    record.state["_modules"]["mapping"].state["_buffers"]["w_avg"] = torch.zeros(1).expand(1 << 30)
    path = tmp_path / "stride0.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": record}))
    assert_refused(
        run_isolated(lambda: build_generator("stylegan2", path=str(path)), memory=512 << 20),
        "stride0.pkl: refused: a tensor of shape (1073741824,) claims more elements than its storage",
    )


def test_a_pggan_pth_of_stride0_views_is_refused_before_materialising(tmp_path: Path) -> None:
    """A 2 KB ``.pth`` whose tensors are stride-0 views of one-element storages, claiming 1.6 GiB, used to load to
    GBs of memory (the network built, then each view copied in)."""
    architecture = PGGANArchitecture(4096, (4096,), (False,))
    with torch.device("meta"):
        shapes = {name: tensor.shape for name, tensor in PGGANNet(architecture).state_dict().items()}
    state = {name: torch.zeros(1).expand(shape) if len(shape) else torch.zeros(()) for name, shape in shapes.items()}
    path = tmp_path / "stride0.pth"
    torch.save(state, path)
    assert path.stat().st_size < 4096
    assert_refused(
        run_isolated(lambda: build_generator("pggan", path=str(path)), memory=512 << 20),
        "stride0.pth: refused: tensor",
        "a tensor may claim no more elements than the file stores",
    )


def test_tensors_sharing_one_storage_are_refused(tmp_path: Path) -> None:
    """Many names for views of one storage would each be copied into the network: refused too."""
    shared = torch.randn(4096)
    state = {f"t{index}": shared[: 4096 - index] for index in range(8)}
    path = tmp_path / "shared.pth"
    torch.save(state, path)
    with pytest.raises(GeneratorFileError, match="shared.pth: refused: its tensors claim .* but share"):
        build_generator("pggan", path=str(path))


def test_a_compressed_zip_entry_is_refused(tmp_path: Path) -> None:
    """``torch.load`` inflates a deflated entry of a zip ``.pth``: a few KB could expand to GBs. torch.save never
    compresses, so a compressed entry is refused before torch.load."""
    buffer = io.BytesIO()
    torch.save(PGGANNet(PGGANArchitecture(8, (8,), (False,))).state_dict(), buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(path, "w") as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry.filename), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(GeneratorFileError, match="deflated.pth: refused: the zip entry .* is compressed"):
        build_generator("pggan", path=str(path))


def test_a_pth_whose_key_shares_itself_is_refused_before_torch_load(tmp_path: Path) -> None:
    """``torch.load(weights_only=True)`` hashes dict keys too: a legacy ``.pth`` whose key is a 40-level shared
    tuple hung inside torch.load. The file's pickles are bounded first."""
    header = b"".join(pickle.dumps(value, protocol=2) for value in (0x1950A86A20F9469CFC6C, 1001, {}))
    main = (
        pickle.PROTO
        + b"\x02"
        + pickle.EMPTY_DICT
        + memo_dag(40, frozen=False)
        + pickle.NONE
        + pickle.SETITEM
        + pickle.STOP
    )
    path = tmp_path / "dag.pth"
    path.write_bytes(header + main + pickle.dumps([], protocol=2))
    assert_refused(
        run_isolated(lambda: build_generator("pggan", path=str(path)), seconds=30),
        "dag.pth (pickle 4 of a legacy torch.save file): refused: the pickle has an object that expands",
    )
    # a harmless zip appended at the end does not make the checks look at the zip instead: torch.load does not
    harmless = io.BytesIO()
    torch.save({"lod": torch.zeros(())}, harmless)
    path.write_bytes(header + main + pickle.dumps([], protocol=2) + harmless.getvalue())
    assert zipfile.is_zipfile(path)
    assert_refused(
        run_isolated(lambda: build_generator("pggan", path=str(path)), seconds=30),
        "dag.pth (pickle 4 of a legacy torch.save file): refused: the pickle has an object that expands",
    )


def test_a_biggan_config_claiming_huge_widths_is_refused_before_building(tmp_path: Path) -> None:
    """``config.json`` sizes are bounded by the weights file's own tensors before a network is built from them
    (channel_width 10^5 used to build a network of ~10^12 weights first)."""
    raw = {
        "output_dim": 16,
        "z_dim": 4,
        "class_embed_dim": 4,
        "channel_width": 2,
        "num_classes": 3,
        "layers": [[True, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1]],
        "attention_layer_position": 1,
        "eps": 1e-4,
        "n_stats": 2,
    }
    (tmp_path / "config.json").write_text(json.dumps(raw))
    torch.save(BigGANNet(BigGANConfig.from_json(tmp_path / "config.json")).state_dict(), tmp_path / "pytorch_model.bin")
    assert build_generator("biggan", path=str(tmp_path), class_index=0).resolution == 16
    (tmp_path / "config.json").write_text(json.dumps({**raw, "channel_width": 100_000}))
    assert_refused(
        run_isolated(lambda: build_generator("biggan", path=str(tmp_path), class_index=0), memory=1 << 30),
        "config.json: refused: channel_width",
        "more than the",
        "weights pytorch_model.bin holds",
    )


def test_quoting_file_content_is_bounded() -> None:
    shared: tuple = ()
    for _ in range(60):
        shared = (shared, shared)
    assert len(bounded_repr(shared)) <= 121 and bounded_repr(shared).endswith("…")
    assert bounded_repr(10**5000) == "<int of 16610 bits>"
    assert bounded_repr({"a": [1, 2.5, None, "x" * 500]}, 40).startswith("{'a': [1, 2.5, None, 'xxx")
    assert bounded_repr(["G", "D"]) == "['G', 'D']"


# -------------------------------------------------------------------------------- 5. conv_clamp None and friends


def test_a_snapshot_without_conv_clamp_loads(tmp_path: Path) -> None:
    """Every run trained with --fp32 and every StyleGAN2 pickle converted from TensorFlow records conv_clamp None,
    on the generator and on each layer; such files were refused ("is None in the file but None when derived")."""
    path = tmp_path / "fp32.pkl"
    net = write_tiny_stylegan2(path, conv_clamp=None)
    layers_with_clamp = [name for name, module in net.named_modules() if hasattr(module, "conv_clamp")]
    assert layers_with_clamp
    recorded = {name: {"conv_clamp": None} for name in layers_with_clamp}
    kwargs = {**SG2_KWARGS, "synthesis_kwargs": {**SG2_KWARGS["synthesis_kwargs"], "conv_clamp": None}}
    path.write_bytes(snapshot_bytes({"G_ema": records_of(net, kwargs, recorded)}))
    generator = build_generator("stylegan2", path=str(path))
    assert all(module.conv_clamp is None for name, module in generator.net.named_modules() if name in layers_with_clamp)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(generator.synthesize(z), net.synthesis(net.mapping(z)[:, None].expand(-1, 4, -1)))


@pytest.mark.skipif(not SG2_FIXTURE.is_file(), reason=f"NVlabs fixture absent: {SG2_FIXTURE}")
def test_the_stylegan2_fixture_with_conv_clamp_none_gives_the_reference_images(tmp_path: Path) -> None:
    """The official fixture's records edited to conv_clamp None (its activations stay far below the recorded 256,
    so the official images are unchanged) load and reproduce the reference."""
    snapshot = read_nvlabs_snapshot(SG2_FIXTURE)

    def edited(record: Any) -> Record:
        state = dict(record.state)
        if "conv_clamp" in state:
            state["conv_clamp"] = None
        state["_modules"] = {
            name: None if child is None else edited(child) for name, child in dict(state.get("_modules") or {}).items()
        }
        return Record(record.class_name, state)

    generator_record = edited(snapshot.generator)
    kwargs = dict(generator_record.state["_init_kwargs"])
    kwargs["synthesis_kwargs"] = {**kwargs["synthesis_kwargs"], "conv_clamp": None}
    generator_record.state["_init_kwargs"] = kwargs
    path = tmp_path / "fp32.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": generator_record}))
    reference = dict(np.load(SG2_FIXTURE.parent / "reference.npz"))
    generator = build_generator("stylegan2", path=str(path))
    assert generator.net.synthesis.b4.conv1.conv_clamp is None
    with torch.no_grad():
        images = generator.synthesize(torch.from_numpy(reference["z"]))
    assert float((images.double() - torch.from_numpy(reference["img"]).double()).abs().max()) < 1e-4


@pytest.mark.parametrize(
    ("recorded", "derived", "same"),
    [
        (None, None, True),
        (None, 256, False),
        (256, None, False),
        (None, 0, False),
        (None, False, False),
        (True, True, True),
        (False, False, True),
        (True, False, False),
        (np.bool_(True), True, True),
        (True, 1, False),
        ("skip", "skip", True),
        ("skip", "resnet", False),
        ("256", 256, False),
        (256, 256, True),
        (256, 256.0, True),
        (0.5, 0.5 + 1e-9, True),
        (0.5, 0.51, False),
        (np.float32(0.1), 0.1, True),
        (np.int64(3), 3, True),
        (float("nan"), float("nan"), False),
        ([1, 2, 3, 4], [1, 2, 3, 4], True),
        ([1, 2, 3, 4], (1, 2, 3, 4), True),
        ([1, 2], [1, 2, 3], False),
        ((36, 36), 36, True),
        (np.array([36, 36]), 36, True),
        (np.array([36, 35]), 36, False),
        ([], 36, False),
        (np.array([1.0, 2.0]), [1.0, 2.0], True),
        ([[1, 2], [3]], [[1, 2], [3]], True),
        ([None], [None], True),
        ({"a": 1}, {"a": 1}, False),
        (np.array(5.0), 5, True),
    ],
)
def test_the_recorded_attribute_check_on_every_kind_of_value(recorded: Any, derived: Any, same: bool) -> None:
    assert same_value(recorded, derived) is same
    assert same_value(derived, recorded) is same


def test_a_recorded_attribute_that_differs_is_quoted_boundedly(tmp_path: Path) -> None:
    """A recorded value that shares itself 2^18 times (within the pickle bounds) is quoted in a short line."""
    shared: tuple = ()
    for _ in range(18):
        shared = (shared, shared)
    net = tiny_stylegan2()
    path = tmp_path / "attribute.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": records_of(net, SG2_KWARGS, {"synthesis.b4.conv1": {"up": shared}})}))
    message = assert_refused(
        run_isolated(lambda: build_generator("stylegan2", path=str(path)), seconds=30),
        "G_ema.synthesis.b4.conv1.up is ((((",
        "in the file but 1 when derived",
    )
    assert len(message) < 2 * len(str(path)) + 300
