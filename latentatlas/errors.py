"""The base class of every error a user can fix (bad params, a missing file, a foreign store, a locked store...).

The command line shows these as one line naming the key or file and what was expected; any other exception is a
bug and keeps its traceback. Subclasses that used to be ``ValueError``s keep that base too, so existing
``except ValueError`` code goes on working.
"""

from __future__ import annotations


class LatentAtlasError(Exception):
    """An error in what the user asked for or handed in, explained in its message; not a bug."""
