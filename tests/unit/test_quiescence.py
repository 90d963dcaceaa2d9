"""When a run ends: all inputs accounted for, then a silence in proportion to the pace."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from message_flow_harness import Endpoints, Flow
from message_flow_harness._history import History, Kind
from message_flow_harness._runner import _await_quiescence

pytestmark = pytest.mark.asyncio
MS = 1_000_000


@contextlib.asynccontextmanager
async def _idle(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


def _flow(settle: float) -> Flow:
    return Flow(sut=_idle, broker="kafka", settle=settle, quiet=5.0)


def _handled(history: History, harness_id: str, *, took_ms: float) -> None:
    """An input published long ago, delivered, and output ``took_ms`` after its delivery."""
    now = time.perf_counter_ns()
    history.record(Kind.PUBLISHED, "harness", at_ns=now - 10_000 * MS, harness_id=harness_id)
    delivered = now - round(took_ms * MS)
    history.record(Kind.DELIVERED, "tap", at_ns=delivered, harness_id=harness_id)
    history.record(Kind.OUTPUT, "tap", at_ns=now, harness_id=harness_id)


async def test_a_delivery_after_all_is_accounted_for_gets_twice_the_slowest_handling() -> None:
    """A message delivered again (a consumer joined, a batch went back) may come out twice."""
    history = History()
    _handled(history, "a", took_ms=100)
    began = time.monotonic()
    history.record(Kind.DELIVERED, "probe", harness_id="a", redelivered=True)
    ended_by = await _await_quiescence(_flow(0.01), history, deadline=began + 30)
    assert ended_by == "every input accounted for"
    assert time.monotonic() - began >= 0.2


async def test_a_delivery_already_answered_gets_no_such_wait() -> None:
    """Only a delivery that may still come out keeps the run open for the slow pace."""
    history = History()
    _handled(history, "a", took_ms=1000)  # slowest handling: 1 s
    _handled(history, "b", took_ms=1)  # delivered last, and answered already
    began = time.monotonic()
    # Waiting twice the slowest handling after b's delivery would run into the deadline.
    ended_by = await _await_quiescence(_flow(0.01), history, deadline=began + 0.5)
    assert ended_by == "every input accounted for"


async def test_a_delivery_answered_before_it_was_recorded_counts_as_answered() -> None:
    """A tap may record a delivery after the output it led to: the times decide."""
    history = History()
    now = time.perf_counter_ns()
    history.record(Kind.PUBLISHED, "harness", at_ns=now - 2000 * MS, harness_id="a")
    history.record(Kind.DELIVERED, "probe", at_ns=now - 1000 * MS, harness_id="a")
    history.record(Kind.OUTPUT, "tap", at_ns=now - 2 * MS, harness_id="a")
    history.record(Kind.DELIVERED, "tap", at_ns=now - 3 * MS, harness_id="a")
    began = time.monotonic()
    ended_by = await _await_quiescence(_flow(0.01), history, deadline=began + 0.5)
    assert ended_by == "every input accounted for"


async def test_an_event_restarts_the_silence() -> None:
    history = History()
    _handled(history, "a", took_ms=1)

    async def late_ack() -> None:
        await asyncio.sleep(0.06)
        history.record(Kind.ACKED, "probe", harness_id="a")

    began = time.monotonic()
    acked = asyncio.create_task(late_ack())
    ended_by = await _await_quiescence(_flow(0.1), history, deadline=began + 30)
    waited = time.monotonic() - began
    await acked
    assert ended_by == "every input accounted for"
    assert waited >= 0.16  # 0.06 s to the ack, then 0.1 s of silence


async def test_an_input_not_accounted_for_ends_the_run_after_quiet() -> None:
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    flow = Flow(sut=_idle, broker="kafka", settle=0.03, quiet=0.2)
    ended_by = await _await_quiescence(flow, history, deadline=time.monotonic() + 30)
    assert ended_by == "no progress for 0.2 s with 1 inputs unaccounted for"


async def test_a_latency_fault_stretches_the_quiet_bound_by_a_recovery_of_round_trips() -> None:
    """Under Latency(10 ms) a reconnect pays 12 round trips of 2 x 10 ms: quiet 0.2 s -> 0.44 s."""
    history = History()
    history.record(Kind.FAULT, "harness", lane="sut0", detail="latency 10 ms")
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    flow = Flow(sut=_idle, broker="kafka", settle=0.03, quiet=0.2)
    started = time.monotonic()
    ended_by = await _await_quiescence(flow, history, deadline=time.monotonic() + 30)
    assert ended_by == "no progress for 0.44 s with 1 inputs unaccounted for"
    assert time.monotonic() - started >= 0.44  # a lower bound only: never a timed ceiling
