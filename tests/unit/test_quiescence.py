"""When a run ends: all inputs accounted for, then a silence in proportion to the pace.

The pace follows the faults (latency stretches the wait for progress, a crashed
Kafka member holds it until it has left its group) and what the service shows
(its first send of an input is progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from message_flow_harness import Endpoints, Flow
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._history import History, Kind
from message_flow_harness._pace import ROUND_TRIPS_PER_STEP, RunPace
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


# --- what the faults and the service show stretch "no progress" -----------------------------


async def test_latency_stretches_the_wait_for_progress_by_round_trips() -> None:
    """Under latency every round trip is slower: ``quiet`` grows by the round trips of a step."""
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    pace = RunPace()
    pace.note_latency(0.02)  # 12 round trips of 2 x 20 ms: 0.48 s more than quiet
    flow = Flow(sut=_idle, broker="kafka", settle=0.01, quiet=0.1)
    began = time.monotonic()
    ended_by = await _await_quiescence(flow, history, deadline=began + 30, pace=pace)
    assert time.monotonic() - began >= 0.1 + ROUND_TRIPS_PER_STEP * 2 * 0.02
    assert ended_by == (
        "no progress for 0.58 s (quiet 0.1 s, 20 ms latency) with 1 inputs unaccounted for"
    )


async def test_the_services_first_send_of_an_input_is_progress() -> None:
    """Its output is on the way (a transaction not yet committed, say): the count restarts."""
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    flow = Flow(sut=_idle, broker="kafka", settle=0.01, quiet=0.2)

    async def send_late() -> None:
        await asyncio.sleep(0.15)
        history.record(Kind.SENT, "probe", harness_id="a")

    began = time.monotonic()
    sending = asyncio.create_task(send_late())
    ended_by = await _await_quiescence(flow, history, deadline=began + 30)
    waited = time.monotonic() - began
    await sending
    assert ended_by.startswith("no progress for 0.2 s")
    assert waited >= 0.35  # 0.15 s to the send, then quiet


async def test_sending_one_input_again_and_again_is_no_progress() -> None:
    """A retry loop re-sending one input forever ends after ``quiet``, not at the deadline."""
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    flow = Flow(sut=_idle, broker="kafka", settle=0.01, quiet=0.2)
    stop = asyncio.Event()

    async def resend() -> None:
        while not stop.is_set():
            history.record(Kind.SENT, "probe", harness_id="a")
            await asyncio.sleep(0.02)

    sending = asyncio.create_task(resend())
    try:
        ended_by = await _await_quiescence(flow, history, deadline=time.monotonic() + 5)
    finally:
        stop.set()
        await sending
    assert ended_by == "no progress for 0.2 s with 1 inputs unaccounted for"


class _Group:
    """Stands for the admin API's view of the service's group: who is in it, asked how often."""

    def __init__(self, members: set[str]) -> None:
        self.members = members
        self.asked = 0

    async def __call__(self) -> frozenset[str]:
        self.asked += 1
        return frozenset(self.members)


async def test_no_progress_waits_until_a_crashed_member_has_left_its_group() -> None:
    """Its partitions go to the others only once its session expires: count from then."""
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    group = _Group({"crashed", "alive"})
    pace = RunPace(members=group)
    pace.note_crash({"crashed"})
    flow = Flow(sut=_idle, broker="kafka", settle=0.01, quiet=0.1)

    async def session_expires() -> None:
        await asyncio.sleep(0.5)
        group.members.discard("crashed")

    began = time.monotonic()
    expiring = asyncio.create_task(session_expires())
    ended_by = await _await_quiescence(flow, history, deadline=began + 30, pace=pace)
    waited = time.monotonic() - began
    await expiring
    assert ended_by == "no progress for 0.1 s with 1 inputs unaccounted for"
    assert waited >= 0.5 + 0.1
    assert group.asked >= 2
    assert not pace.crashed


async def test_a_crashed_member_that_never_leaves_is_bounded_by_the_deadline() -> None:
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    pace = RunPace(members=_Group({"crashed"}))
    pace.note_crash({"crashed"})
    flow = Flow(sut=_idle, broker="kafka", settle=0.01, quiet=0.1, timeout=0.4)
    ended_by = await _await_quiescence(flow, history, deadline=time.monotonic() + 0.4, pace=pace)
    assert ended_by == "timeout after 0.4 s"


async def test_a_crash_holds_nothing_up_where_the_broker_has_no_groups() -> None:
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    pace = RunPace()  # RabbitMQ: no group to ask
    pace.note_crash({"crashed"})
    flow = Flow(sut=_idle, broker="kafka", settle=0.01, quiet=0.1)
    ended_by = await _await_quiescence(flow, history, deadline=time.monotonic() + 5, pace=pace)
    assert ended_by == "no progress for 0.1 s with 1 inputs unaccounted for"


class _Sessions:
    """Stands for the coordinator's LeaveGroup: removes members from a _Group."""

    def __init__(self, group: _Group) -> None:
        self.group = group
        self.ended: list[frozenset[str]] = []

    async def __call__(self, members: frozenset[str]) -> None:
        self.ended.append(members)
        self.group.members -= members


async def test_ending_a_crashed_members_session_frees_its_partitions_at_once() -> None:
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="a")
    group = _Group({"crashed", "alive"})
    sessions = _Sessions(group)
    pace = RunPace(members=group, end_sessions=sessions)
    pace.note_crash({"crashed"})
    await pace.end_crashed()
    assert sessions.ended == [frozenset({"crashed"})]
    assert group.members == {"alive"}
    assert not pace.crashed
    assert pace.left_ns > 0
    flow = Flow(sut=_idle, broker="kafka", settle=0.01, quiet=0.1)
    ended_by = await _await_quiescence(flow, history, deadline=time.monotonic() + 5, pace=pace)
    assert ended_by == "no progress for 0.1 s with 1 inputs unaccounted for"


async def test_a_process_alone_in_its_group_has_every_member_ended() -> None:
    """No probe names a process's members: with no instance left running, all are its."""
    group = _Group({"process-member-1", "process-member-2"})
    sessions = _Sessions(group)
    pace = RunPace(members=group, end_sessions=sessions)
    await pace.end_crashed()  # not alone: nothing known, nothing ended
    assert sessions.ended == []
    await pace.end_crashed(whole_group=True)
    assert sessions.ended == [frozenset({"process-member-1", "process-member-2"})]
    assert not group.members


async def test_a_crash_that_keeps_its_session_ends_nothing() -> None:
    group = _Group({"crashed"})
    pace = RunPace(members=group)  # Flow(crash_keeps_session=True): no end_sessions
    pace.note_crash({"crashed"})
    await pace.end_crashed(whole_group=True)
    assert pace.crashed == {"crashed"}
    assert await pace.held()


async def test_crash_keeps_session_is_a_kafka_flag() -> None:
    with pytest.raises(InvalidArgument, match=r"crash_keeps_session='yes' is invalid"):
        Flow(sut=_idle, broker="kafka", crash_keeps_session="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"invalid for RabbitMQ.*drop crash_keeps_session"):
        Flow(sut=_idle, broker="rabbitmq", crash_keeps_session=True)
    assert Flow(sut=_idle, broker="kafka", crash_keeps_session=True).crash_keeps_session
