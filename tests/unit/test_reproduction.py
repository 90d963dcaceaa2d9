"""The reproduction test a failing campaign prints: valid Python, importing only what it uses."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from message_flow_harness import Endpoints, Flow, Message
from message_flow_harness._report import MAX_ATTEMPTS, attempts_to_catch, reproduction_test
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


def test_a_race_that_failed_in_some_re_runs_is_tried_enough_times() -> None:
    steps = (Publish(Message(value=b"1", key=b"a")), Crash(0))
    code = reproduction_test(FLOW, steps, "m:flow", failed_again=(3, 5))
    ast.parse(code)
    assert "    ], attempts=6)\n" in code
    assert "# failed again in 3 of 5 re-runs: 6 attempts catch it 99% of the time" in code


def test_a_failure_that_always_repeats_runs_once() -> None:
    steps = (Publish(Message(value=b"1", key=b"a")),)
    for failed_again in ((5, 5), (0, 0)):
        code = reproduction_test(FLOW, steps, "m:flow", failed_again=failed_again)
        assert "attempts" not in code
        assert code.endswith("    ])\n")


def test_attempts_catch_the_race_99_times_in_100_at_the_rate_seen() -> None:
    for failed, runs in ((4, 5), (3, 5), (2, 5), (1, 5)):
        attempts = attempts_to_catch(failed, runs)
        missed = (1 - failed / runs) ** attempts
        assert missed <= 0.01 or attempts == MAX_ATTEMPTS
        assert (1 - failed / runs) ** (attempts - 1) > 0.01  # and no more than needed
    assert attempts_to_catch(0, 5) == MAX_ATTEMPTS  # never repeated: the most we try
