"""A run that ended with inputs unaccounted for never reads "all checks held".

Checks that held over inputs that never came out (no ``no_loss()`` among them,
say) are no pass: the report's first line says how many never came out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from histories import Script

from message_flow_harness import Endpoints, Flow, Message, checks
from message_flow_harness._checks import Verdict
from message_flow_harness._flow import RunResult
from message_flow_harness._history import History
from message_flow_harness._runner import ALL_ACCOUNTED_FOR, unaccounted


@contextlib.asynccontextmanager
async def _idle(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


def _result(history: History, *, ended_by: str, verdicts: tuple[Verdict, ...]) -> RunResult:
    flow = Flow(sut=_idle, broker="kafka", name="orders")
    endpoints = Endpoints(
        kind="kafka", input="in", output="out", dead_letter="dlq", bootstrap_servers="nowhere:9"
    )
    return RunResult(
        flow=flow,
        endpoints=endpoints,
        messages=tuple(Message(value=b"%d" % n) for n in range(5)),
        schedule=(),
        history=history,
        verdicts=verdicts,
        ended_by=ended_by,
        unaccounted=() if ended_by == ALL_ACCOUNTED_FOR else unaccounted(history),
    )


def _three_of_five_out() -> History:
    script = Script()
    for n in range(5):
        script.publish(f"i{n}", at=0)
    for n in (0, 2):
        script.output(f"i{n}")
    script.dead_letter("i4")
    return script.build()


def test_checks_that_held_over_inputs_that_never_came_out_do_not_read_as_a_pass() -> None:
    history = _three_of_five_out()
    ended_by = "no progress for 2 s with 2 inputs unaccounted for"
    result = _result(history, ended_by=ended_by, verdicts=(checks.per_key_order()(history),))
    assert result.ok  # the checks given cannot see a loss
    assert result.unaccounted == ("i1", "i3")
    assert result.report().splitlines()[0] == (
        "flow orders on kafka: no check failed, yet 2 of 5 inputs never came out"
        f" (run ended: {ended_by})"
    )


def test_inputs_that_came_out_while_the_service_stopped_are_accounted_for() -> None:
    """The run ended early, but the history the checks read has every input's output."""
    history = Script().publish("i0", at=0).output("i0").build()
    ended_by = "no progress for 2 s with 1 inputs unaccounted for"
    result = _result(history, ended_by=ended_by, verdicts=(checks.no_loss()(history),))
    assert result.unaccounted == ()
    assert "all checks held" in result.report().splitlines()[0]


def test_a_failed_check_still_reads_checks_failed() -> None:
    history = _three_of_five_out()
    ended_by = "no progress for 2 s with 2 inputs unaccounted for"
    result = _result(history, ended_by=ended_by, verdicts=(checks.no_loss()(history),))
    assert not result.ok
    assert result.report().startswith("flow orders on kafka: CHECKS FAILED (5 messages,")
