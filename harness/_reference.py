"""``MODULE:FLOW`` references, as the CLI takes them: the Flow, or what is wrong and the
closest names ("did you mean ...?").

Module names are suggested from the folders Python would import them from;
flow names from the Flow objects the module defines.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterable
from types import ModuleType

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._flow import Flow
from message_flow_harness._text import shorten

_EXAMPLE = "give e.g. myservice.tests:orders_flow"


def load_flow(reference: str) -> Flow:
    """``package.module:NAME`` → the Flow object it names (the current directory is importable).

    Raises InvalidArgument naming what is wrong and, where one is close, the
    reference that was probably meant.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, colon, attribute = reference.partition(":")
    if not colon:
        raise InvalidArgument(_without_colon(reference))
    if not _dotted(module_name) or not attribute.isidentifier():
        hint = _path_hint(module_name)
        raise InvalidArgument(f"{reference!r} is not MODULE:FLOW: {hint or _EXAMPLE}")
    module = _import(module_name)
    flows = flows_in(module)
    found = getattr(module, attribute, None)
    if isinstance(found, Flow):
        return found
    what = (
        f"{module_name} has no {attribute!r}"
        if found is None
        else f"{reference} is a {type(found).__name__}, not a harness.Flow"
    )
    raise InvalidArgument(f"{what}: {_flow_hint(module_name, attribute, flows)}")


def flows_in(module: ModuleType) -> list[str]:
    """The names of the Flow objects ``module`` defines at its top level."""
    return sorted(name for name, value in vars(module).items() if isinstance(value, Flow))


def did_you_mean(wrong: str, names: Iterable[str]) -> str | None:
    """The name in ``names`` closest to ``wrong``, if one is close enough to be a typo."""
    close = difflib.get_close_matches(wrong, list(names), n=1, cutoff=0.6)
    return close[0] if close else None


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def _path_hint(module_name: str) -> str | None:
    """A file path given for a module: the dotted name it imports as."""
    if not (module_name.endswith(".py") or "/" in module_name):
        return None
    dotted = module_name.removesuffix(".py").strip("/").replace("/", ".")
    if not _dotted(dotted):
        return None
    return f"name the module, not its file: {dotted}:FLOW"


def _without_colon(reference: str) -> str:
    """A reference without ``:``: perhaps ``module.flow``, or a module whose flow is unsaid."""
    head = f"{reference!r} is not MODULE:FLOW"
    module_name, _, last = reference.rpartition(".")
    for candidate, attribute in ((reference, None), (module_name, last)):
        if not _dotted(candidate):
            continue
        try:
            module = importlib.import_module(candidate)
        except Exception:  # only looking for a hint: the error stands as it is
            continue
        flows = flows_in(module)
        if attribute is not None and attribute in flows:
            return f"{head}: did you mean {candidate}:{attribute}?"
        if flows:
            return f"{head}: name a flow of {candidate}: {', '.join(flows)}"
    return f"{head}: {_EXAMPLE}"


def _import(module_name: str) -> ModuleType:
    """Import the user's module; its failures in CLI terms, with the closest module name."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise InvalidArgument(
                f"importing {module_name} failed: it imports {missing}, which is not installed"
                " here: install it in the environment that runs harness"
            ) from exc
        raise InvalidArgument(
            f"no module named {missing} (looked in {os.getcwd()} and sys.path): "
            + _module_hint(missing)
        ) from exc
    except Exception as exc:
        raise InvalidArgument(
            f"importing {module_name} raised {type(exc).__name__}:"
            f" {shorten(str(exc), limit=200)}: fix the module (--traceback shows where)"
        ) from exc


def _module_hint(missing: str) -> str:
    parent, _, last = missing.rpartition(".")
    try:
        paths = importlib.import_module(parent).__path__ if parent else None
    except (ImportError, AttributeError):
        paths = None
    names = [info.name for info in pkgutil.iter_modules(paths)]
    close = did_you_mean(last, names)
    if close is not None:
        return f"did you mean {parent + '.' if parent else ''}{close}?"
    return "run harness from the directory that contains it, or install it"


def _flow_hint(module_name: str, attribute: str, flows: list[str]) -> str:
    close = did_you_mean(attribute, flows)
    if close is not None:
        return f"did you mean {module_name}:{close}?"
    if flows:
        return f"its flows are {', '.join(flows)}"
    return f"{module_name} defines no Flow at module level: add one, e.g. flow = Flow(...)"
