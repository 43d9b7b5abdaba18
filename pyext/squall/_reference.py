"""References to KVS keys, pickle-compatible with Cloudburst's ``CloudburstReference``.

A reference travels as the cloudpickle of an object of class ``CloudburstReference``
from module ``cloudburst.shared.reference`` with attributes ``key`` and
``deserialize``. Importing this module registers that module name (and its parent
packages) in ``sys.modules`` unless a real Cloudburst installation already provides
it, so pickles made by Cloudburst clients load here and ours load there.

Example:

    >>> from squall._reference import CloudburstReference
    >>> ref = CloudburstReference("my-array")
    >>> ref.key, ref.deserialize
    ('my-array', True)
"""
from __future__ import annotations

import sys
import types

MODULE = "cloudburst.shared.reference"


class CloudburstReference:
    """A pointer to the value stored under ``key``; the executor replaces it by the
    value (``deserialize=True``) or the raw stored bytes (``deserialize=False``)."""

    def __init__(self, key: str, deserialize: bool = True) -> None:
        self.key = key
        self.deserialize = deserialize

    def __repr__(self) -> str:
        return f"CloudburstReference({self.key!r}, deserialize={self.deserialize!r})"


def _register() -> type:
    """Returns the class pickles must use, registering our module name if needed."""
    existing = sys.modules.get(MODULE)
    if existing is not None and hasattr(existing, "CloudburstReference"):
        return existing.CloudburstReference
    parent = None
    for name in ("cloudburst", "cloudburst.shared", MODULE):
        mod = sys.modules.get(name)
        if mod is None:
            mod = types.ModuleType(name)
            if name != MODULE:
                mod.__path__ = []  # a namespace-like package: submodules resolve
            sys.modules[name] = mod
        if parent is not None:
            setattr(parent, name.rsplit(".", 1)[1], mod)
        parent = mod
    CloudburstReference.__module__ = MODULE
    sys.modules[MODULE].CloudburstReference = CloudburstReference
    return CloudburstReference


CloudburstReference = _register()  # type: ignore[misc]


def is_reference(obj: object) -> bool:
    """True for any object that looks like a Cloudburst reference (ours or theirs)."""
    return type(obj).__name__ == "CloudburstReference" and hasattr(obj, "key")
