"""The core layer of latentatlas: what the stages and the orchestration both build on.

- :mod:`latentatlas.params`: ``params.yaml`` validated once into typed objects;
- :mod:`latentatlas.layout`: the name of every store and output path;
- :mod:`latentatlas.stores`, :mod:`latentatlas.locations`, :mod:`latentatlas.atomic`: chunked stores with
  fingerprints, atomic chunks and locks, on local disk or in an object store;
- :mod:`latentatlas.dataset`: the reader users open (``from latentatlas import dataset``);
- :mod:`latentatlas.registry`: the small name → factory registries behind the plugins;
- :mod:`latentatlas.errors`: the base of every error a user can fix.

Nothing here imports ``stages`` or ``pipeline``; ``tests/test_layering.py`` fails if anything does.
"""
