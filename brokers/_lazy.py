"""Names a driver package offers without importing its client library up front."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` (PEP 562) that loads ``name`` from ``where[name]`` when asked.

    A driver package is imported whenever its driver is looked up, so it must
    not import aiokafka or aio-pika itself; its public names come from the
    submodules that do, on first use.
    """

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
