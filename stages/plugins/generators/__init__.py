"""Pretrained generators behind one small protocol (:mod:`stages.plugins.generators.base`), one file per network."""

from stages.plugins.generators.base import GENERATORS, FactorizableGenerator, Generator, build_generator, generator_for

__all__ = ["GENERATORS", "FactorizableGenerator", "Generator", "build_generator", "generator_for"]
