"""Work-arounds for the Python versions the harness supports."""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any

_parse_lock = threading.RLock()


def serialize_ast_parsing() -> None:
    """Let one thread at a time build Python ASTs (CPython 3.11, idempotent).

    CPython 3.11 keeps the AST converter's recursion depth in one global:
    two threads in ``ast.parse`` at once fail with "AST constructor recursion
    depth mismatch", and later parses may keep failing (fixed in later releases).
    The harness runs code in threads (Hypothesis's search, broker restarts,
    management calls) while the event loop formats tracebacks (3.11's carets
    call ``ast.parse``), and so does pytest when it reports a failure.
    """
    if sys.version_info >= (3, 12) or getattr(ast.parse, "_harness_serialized", False):
        return
    original = ast.parse

    @functools.wraps(original)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with _parse_lock:
            return original(*args, **kwargs)

    parse._harness_serialized = True  # type: ignore[attr-defined]
    ast.parse = parse
