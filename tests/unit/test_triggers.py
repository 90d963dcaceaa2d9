"""After steps: a trigger armed on the history fires inside the event it waits for."""

from __future__ import annotations

import asyncio

import pytest

from message_flow_harness import InvalidArgument, Message
from message_flow_harness._history import History, Kind
from message_flow_harness._schedule import faults_of
from message_flow_harness._triggers import Trigger
from message_flow_harness.schedule import After, Crash, Publish


def test_after_names_an_event_and_an_instance() -> None:
    assert repr(After("committed")) == "After('committed')"
    assert repr(After("acked", instance=1)) == "After('acked', instance=1)"
    with pytest.raises(InvalidArgument, match="use one of delivered, committed"):
        After("commited")
    with pytest.raises(InvalidArgument, match="instance number"):
        After("sent", instance=-1)


def test_an_after_step_is_no_fault() -> None:
    schedule = [Publish(Message(b"1")), After("delivered"), Crash(0)]
    assert faults_of(schedule) == [Crash(0)]


def test_the_trigger_fires_inside_the_matching_event_only() -> None:
    async def scenario() -> None:
        history = History()
        fired_while_recording: list[int] = []
        trigger = Trigger(
            After("committed"),
            history,
            "sut0:",
            lambda: fired_while_recording.append(len(history.events)),
        )
        # A probe whose event has no broker reply (a RabbitMQ ack) asks what is awaited.
        assert history.awaited is Kind.COMMITTED
        history.record(Kind.DELIVERED, "probe", lane="sut0:consumer-1")  # another kind
        history.record(Kind.COMMITTED, "probe", lane="sut1:consumer-1")  # another instance
        history.add(Kind.COMMITTED, "probe", None, "in", None, 0, 1, "sut0:consumer-1")
        # Carried out inside add(), before it returned: the service had no next instruction.
        assert fired_while_recording == [3]
        assert history.on_event is None  # disarmed: a second commit fires nothing
        assert history.awaited is None
        history.record(Kind.COMMITTED, "probe", lane="sut0:consumer-1")
        assert fired_while_recording == [3]
        assert await trigger.wait(1.0)
        assert trigger.fired_at_once

    asyncio.run(scenario())


def test_outputs_are_the_brokers_whatever_the_lane() -> None:
    async def scenario() -> None:
        history = History()
        trigger = Trigger(After("output", instance=1), history, "sut1:", None)
        history.record(Kind.OUTPUT, "tap")
        assert await trigger.wait(1.0)
        assert not trigger.fired_at_once  # nothing to carry out with it

    asyncio.run(scenario())


def test_an_event_that_never_comes_ends_the_wait_and_disarms() -> None:
    async def scenario() -> None:
        history = History()
        trigger = Trigger(After("acked"), history, "sut0:", lambda: None)
        assert not await trigger.wait(0.01)
        assert history.on_event is None
        assert not trigger.fired_at_once

    asyncio.run(scenario())


def test_a_failing_fault_is_raised_by_the_wait_never_into_the_service() -> None:
    def broken() -> None:
        raise InvalidArgument("Crash needs a fault proxy")

    async def scenario() -> None:
        history = History()
        trigger = Trigger(After("sent"), history, "sut0:", broken)
        history.record(Kind.SENT, "probe", lane="sut0:producer-1")  # does not raise here
        with pytest.raises(InvalidArgument, match="fault proxy"):
            await trigger.wait(1.0)

    asyncio.run(scenario())
