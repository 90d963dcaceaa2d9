"""CPython 3.11 cannot build ASTs on two threads at once: the harness serializes ast.parse."""

from __future__ import annotations

import ast
import sys
import threading

import pytest

import message_flow_harness  # noqa: F401 - importing it installs the work-around


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="only CPython 3.11 needs it")
def test_importing_the_harness_serializes_ast_parse() -> None:
    assert getattr(ast.parse, "_harness_serialized", False)


def test_threads_parse_concurrently_without_errors() -> None:
    errors: list[BaseException] = []

    def parse_a_lot() -> None:
        try:
            for _ in range(2000):
                ast.parse("total = [(1, {2: (3, [f(a, b=c)])})] * len(x)")
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=parse_a_lot) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
