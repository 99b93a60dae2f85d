"""Plugins found by name in ``params.yaml``: ``generators`` (with batched synthesis), ``labelers`` (with scoring and
classifier training) and direction-finding ``methods``; each package has a ``base.py`` with its protocol and
registry."""
