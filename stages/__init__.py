"""Stage logic of latentatlas: one module per ``dvc.yaml`` stage at this level (``sample``, ``synthesize``,
``label``, ``train_encoder``, ``fit``, ``evaluate``, ``report``), each a plain class or function over stores, and
their parts grouped by role in subpackages: ``plugins`` (generators, labelers, methods), ``latent`` (directions and
how they edit, seeded streams, PPL, LPIPS), ``photo`` (align, encode, invert, edit real photos), ``reporting`` and
``runtime`` (the chunked stage shape, devices, pinned weight files)."""
