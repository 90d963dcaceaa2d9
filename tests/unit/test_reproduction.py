"""The reproduction test a failing campaign prints: valid Python, importing only what it uses."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from message_flow_harness import Endpoints, Flow, Message
from message_flow_harness._report import reproduction_test
from message_flow_harness.schedule import Crash, Publish


@asynccontextmanager
async def service(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


FLOW = Flow(sut=service, broker="kafka", name="orders")


def _imported(code: str) -> set[str]:
    tree = ast.parse(code)  # also: it is valid Python
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for alias in node.names}  # fmt: skip


def test_it_imports_just_the_steps_it_replays() -> None:
    code = reproduction_test(FLOW, (Publish(Message(value=b"1", key=b"a")), Crash(0)), "m:flow")
    assert _imported(code) == {"Message", "Publish", "Crash", "flow"}
    assert "Publish(message=Message(value=b'1', key=b'a', headers={}))," in code
    assert "async def test_orders_minimal_reproduction(flow_check):" in code


def test_an_empty_schedule_is_still_valid_python() -> None:
    code = reproduction_test(FLOW, (), None)
    assert _imported(code) == set()
    assert "flow = ...  # your Flow object" in code
