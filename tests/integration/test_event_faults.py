"""Faults at events: a crash placed right after a commit or an ack reproduces its race every time.

A crash after a timed pause hits the window between "commit/ack" and
"publish the output" by luck (the zoo's early committers were found 2 to 4
times in 5). After an ``After`` step it lands inside the commit or ack
itself, on the real broker, every run; a correct service meets the same
schedule and passes.
"""

from __future__ import annotations

import pytest

from message_flow_harness import Flow, Kind, Message, checks
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._message import BrokerKind
from message_flow_harness._runner import run
from message_flow_harness.schedule import After, Crash, Publish, Restart, Step
from message_flow_harness.zoo.kafka_services import KAFKA_SERVICES
from message_flow_harness.zoo.rabbitmq_services import RABBITMQ_SERVICES

pytestmark = pytest.mark.asyncio

SERVICES = {**KAFKA_SERVICES, **RABBITMQ_SERVICES}
RUNS = 4


def _flow(service: str, broker: BrokerKind) -> Flow:
    return Flow(
        sut=SERVICES[service], broker=broker, checks=[checks.no_loss()], quiet=1.0, name=service
    )


def _crash_after(event: str) -> list[Step]:
    return [Publish(Message(b"1", key=b"a")), After(event), Crash(0)]


@pytest.mark.parametrize(
    ("broker", "service", "event"),
    [
        pytest.param(
            "kafka", "kafka_commit_before_process", "committed", marks=pytest.mark.kafka, id="kafka"
        ),
        pytest.param(
            "rabbitmq",
            "rabbitmq_ack_before_process",
            "acked",
            marks=pytest.mark.rabbitmq,
            id="rabbitmq",
        ),
    ],
)
async def test_a_crash_right_after_an_early_commit_loses_the_input_every_time(
    request: pytest.FixtureRequest, broker: BrokerKind, service: str, event: str
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    for _ in range(RUNS):
        result = await run(_flow(service, broker), _crash_after(event), broker=info)
        [verdict] = result.verdicts
        assert not verdict.ok, result.history
        assert [a.kind for a in verdict.anomalies] == ["lost"]
        # The crash came inside the event: nothing of the instance reached the broker after it.
        events = list(result.history)
        [trigger_at] = [i for i, e in enumerate(events) if e.kind.value == event][:1]
        assert events[trigger_at + 1].kind is Kind.FAULT
        assert events[trigger_at + 1].detail == "crash"


@pytest.mark.parametrize(
    ("broker", "service", "event"),
    [
        pytest.param("kafka", "kafka_correct", "committed", marks=pytest.mark.kafka, id="kafka"),
        pytest.param(
            "rabbitmq", "rabbitmq_correct", "delivered", marks=pytest.mark.rabbitmq, id="rabbitmq"
        ),
    ],
)
async def test_a_correct_service_keeps_every_input_through_the_same_crash(
    request: pytest.FixtureRequest, broker: BrokerKind, service: str, event: str
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    result = await run(_flow(service, broker), _crash_after(event), broker=info)
    assert all(v.ok for v in result.verdicts), result.verdicts
    assert any(e.kind is Kind.FAULT and e.detail == "crash" for e in result.history)


@pytest.mark.rabbitmq
async def test_an_event_of_a_crashed_instance_is_not_waited_for(
    rabbitmq_broker: BrokerInfo,
) -> None:
    # Nothing records "delivered" for an instance that is down: waiting out the bound
    # (Flow.quiet, 5 s here) would only slow every such example of a campaign.
    flow = Flow(
        sut=SERVICES["rabbitmq_correct"], broker="rabbitmq", checks=[checks.no_loss()], quiet=5.0
    )
    steps = [Crash(0), After("delivered"), Restart(0), Publish(Message(b"1", key=b"a"))]
    result = await run(flow, steps, broker=rabbitmq_broker)
    assert result.ok, result.report()
    notes = [e.detail for e in result.history.of(Kind.NOTE)]
    assert "After('delivered'): its instance is not running, went on at once" in notes
    assert not any("no such event" in (note or "") for note in notes)
