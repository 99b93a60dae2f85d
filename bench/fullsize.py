"""Full-size benchmark generators with random weights, built from the project's own networks (no download, no
NVIDIA code): the compute of the published networks, not their images.

Each builder makes the network the official configuration defines, initialised at random (seeded), and wraps it
behind the :class:`~stages.plugins.generators.base.Generator` protocol exactly as a loaded file would be:

- **StyleGAN2 config-f** (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020): z, w 512,
  8 mapping layers, skip generator, channel_base 32768 (the converted FFHQ config-f file's value: 512 channels up
  to 64², then 256, 128, 64, 32 at 1024²), ``num_fp16_res`` 4 and ``conv_clamp`` 256 as the StyleGAN3 repository's
  ``--cfg=stylegan2`` trains it (fp16 only matters on CUDA; on the CPU every layer runs in fp32, as config-f).
- **StyleGAN3-T / -R 256²** (Karras et al., "Alias-Free Generative Adversarial Networks", 2021), the FFHQ-U 256²
  configurations: T with channel_base 16384, channel_max 512, 3×3 convolutions; R with both doubled (32768, 1024),
  1×1 convolutions and radially symmetric down-sampling filters; 2 mapping layers, 14 synthesis layers.
- **PGGAN 1024²** (Karras et al., "Progressive Growing of GANs", 2018) as InterFaceGAN loads it: latent 512,
  channels 512 (4² … 32²), 256, 128, 64, 32, 16 (1024²), nearest-neighbour upsampling (no fused scale).

Random weights change nothing in the cost of a forward pass: the same layers, shapes and operations run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from stages.plugins.generators.base import Generator

#: name → (description, resolution); the builders are in :data:`BUILDERS`.
NETWORKS: dict[str, tuple[str, int]] = {
    "stylegan2-f-256": ("StyleGAN2 config-f 256²", 256),
    "stylegan2-f-1024": ("StyleGAN2 config-f 1024²", 1024),
    "stylegan3-t-256": ("StyleGAN3-T 256²", 256),
    "stylegan3-r-256": ("StyleGAN3-R 256²", 256),
    "pggan-1024": ("PGGAN 1024²", 1024),
    "stylegan2-tiny-32": ("StyleGAN2 32², narrow (smoke tests)", 32),
    "stylegan3-t-tiny-32": ("StyleGAN3-T 32², narrow (smoke tests)", 32),
}


def _stylegan2(
    resolution: int, seed: int, fp16: bool = True, channel_base: int = 32768, channel_max: int = 512
) -> Generator:
    from stages.plugins.generators.nvlabs_common import MappingNetwork, StyleGANGenerator, StyleGANNet
    from stages.plugins.generators.nvlabs_stylegan2 import IMPLEMENTATION, SynthesisNetwork

    torch.manual_seed(seed)
    mapping = MappingNetwork(z_dim=512, c_dim=0, w_dim=512, num_layers=8, lr_multiplier=0.01)
    synthesis = SynthesisNetwork(
        w_dim=512,
        img_resolution=resolution,
        img_channels=3,
        channel_base=channel_base,
        channel_max=channel_max,
        num_fp16_res=4 if fp16 else 0,
        conv_clamp=256,
        resample_filter=[1, 3, 3, 1],
        kernel_size=3,
        use_noise=True,
    )
    _randomise_noise_strengths(synthesis)
    return StyleGANGenerator(
        StyleGANNet(mapping, synthesis),
        "stylegan2",
        f"random-{resolution}-seed{seed}",
        1.0,
        "const",
        None,
        IMPLEMENTATION,
    )


def _stylegan3(
    config: str, seed: int, fp16: bool = True, resolution: int = 256, channel_base: int = 16384
) -> Generator:
    from stages.plugins.generators.nvlabs_common import MappingNetwork, StyleGANGenerator, StyleGANNet
    from stages.plugins.generators.nvlabs_stylegan3 import IMPLEMENTATION, SYNTHESIS_DEFAULTS, SynthesisNetwork

    torch.manual_seed(seed)
    arguments = {
        **SYNTHESIS_DEFAULTS,
        "channel_base": channel_base,
        "channel_max": 512,
        "num_fp16_res": 4 if fp16 else 0,
    }
    if config == "r":
        arguments.update(channel_base=32768, channel_max=1024, conv_kernel=1, use_radial_filters=True)
    mapping = MappingNetwork(z_dim=512, c_dim=0, w_dim=512, num_layers=2, lr_multiplier=0.01)
    synthesis = SynthesisNetwork(w_dim=512, img_resolution=resolution, img_channels=3, **arguments)
    return StyleGANGenerator(
        StyleGANNet(mapping, synthesis), "stylegan3", f"random-{config}-seed{seed}", 1.0, "const", None, IMPLEMENTATION
    )


def _pggan_1024(seed: int) -> Generator:
    from stages.plugins.generators.pggan import PGGANArchitecture, PGGANGenerator, PGGANNet

    torch.manual_seed(seed)
    architecture = PGGANArchitecture(
        latent_dim=512, channels=(512, 512, 512, 512, 256, 128, 64, 32, 16), fused_scale=(False,) * 9
    )
    return PGGANGenerator(PGGANNet(architecture), "pggan", f"pggan:random-1024-seed{seed}")


def _randomise_noise_strengths(synthesis: torch.nn.Module) -> None:
    """Trained networks have non-zero noise strengths; random ones start at 0 (the cost is the same either way,
    the images are less degenerate this way)."""
    for name, parameter in synthesis.named_parameters():
        if name.endswith("noise_strength"):
            parameter.data.fill_(0.05)


BUILDERS: dict[str, Callable[[int, bool], Generator]] = {
    "stylegan2-f-256": lambda seed, fp16: _stylegan2(256, seed, fp16),
    "stylegan2-f-1024": lambda seed, fp16: _stylegan2(1024, seed, fp16),
    "stylegan3-t-256": lambda seed, fp16: _stylegan3("t", seed, fp16),
    "stylegan3-r-256": lambda seed, fp16: _stylegan3("r", seed, fp16),
    "pggan-1024": lambda seed, fp16: _pggan_1024(seed),
    "stylegan2-tiny-32": lambda seed, fp16: _stylegan2(32, seed, fp16, channel_base=512, channel_max=64),
    "stylegan3-t-tiny-32": lambda seed, fp16: _stylegan3("t", seed, fp16, resolution=32, channel_base=128),
}


def build_fullsize(name: str, seed: int = 0, fp16: bool = True) -> Generator:
    """The random-weight full-size network ``name`` (a key of :data:`NETWORKS`) behind the Generator protocol.
    ``fp16``: StyleGAN2/3 run their top 4 resolutions in fp16 on CUDA, as NVIDIA's code does (False: fp32
    throughout; the CPU runs fp32 either way); other networks ignore it (the pipeline's AMP decides).

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    if name not in BUILDERS:
        raise KeyError(f"unknown full-size network {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](seed, fp16)


def parameter_count(generator: Generator) -> int:
    """Parameters of the generator's network (mapping and synthesis)."""
    return sum(parameter.numel() for parameter in generator.net.parameters())  # type: ignore[attr-defined]
