"""Queue types and arguments of a flow's RabbitMQ queues, and the broker's own delivery counts.

No broker: option validation, the destinations a run asks for, and how
``max_deliveries`` and ``dead_lettered`` read ``x-delivery-count`` and
``x-death`` from what the firehose saw (tests/integration/rabbitmq/
test_quorum_queues.py runs them on the real broker).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from histories import Script

from message_flow_harness import Endpoints, Flow, InvalidArgument, Kind, Message
from message_flow_harness._history import History
from message_flow_harness._isolation import destination_specs
from message_flow_harness.brokers.rabbitmq._queue_types import check_for_broker
from message_flow_harness.checks import dead_lettered, max_deliveries
from message_flow_harness.zoo.rabbitmq_services import DELIVERY_LIMIT, QUORUM_INPUT_ARGUMENTS


@contextlib.asynccontextmanager
async def service(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


# --- options ------------------------------------------------------------------------------


def test_a_quorum_flow_keeps_its_input_arguments() -> None:
    flow = Flow(
        sut=service,
        broker="rabbitmq",
        queue_type="quorum",
        queue_arguments={"x-delivery-limit": 5},
    )
    assert flow.queue_type == "quorum"
    assert flow.queue_arguments == {"x-delivery-limit": 5}


def test_at_least_once_dead_lettering_with_reject_publish_is_taken() -> None:
    arguments = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    flow = Flow(sut=service, broker="rabbitmq", queue_type="quorum", queue_arguments=arguments)
    assert flow.queue_arguments == arguments


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"queue_type": "stream"}, r"queue_type='stream' is invalid: use one of classic, quorum"),
        ({"queue_type": "Quorum"}, r"queue_type='Quorum' is invalid"),
        (
            {"queue_arguments": {"x-delivery-limit": 5}},
            r"\['x-delivery-limit'\] is invalid for a classic queue: RabbitMQ ignores it there;"
            r" pass Flow\(queue_type='quorum'\)",
        ),
        (
            {"queue_type": "quorum", "queue_arguments": {"x-queue-type": "quorum"}},
            r"\['x-queue-type'\] is invalid: pass Flow\(queue_type=...\) instead",
        ),
        (
            {"queue_type": "quorum", "queue_arguments": {"x-dead-letter-exchange": "dlx"}},
            r"the harness dead-letters the input queue to endpoints.dead_letter itself",
        ),
        (
            {"queue_type": "quorum", "queue_arguments": {"x-delivery-limit": -2}},
            r"\['x-delivery-limit'\]=-2 is invalid: give a whole number >= 0, or -1 for no limit"
            r" \(RabbitMQ 4.x\)",
        ),
        (
            {"queue_type": "quorum", "queue_arguments": {"x-delivery-limit": "5"}},
            r"\['x-delivery-limit'\]='5' is invalid",
        ),
        (
            {
                "queue_type": "quorum",
                "queue_arguments": {"x-dead-letter-strategy": "at-least-once"},
            },
            r"needs 'x-overflow': 'reject-publish' beside it",
        ),
        (
            {"queue_type": "quorum", "queue_arguments": {"x-dead-letter-strategy": "twice"}},
            r"use 'at-most-once' or 'at-least-once'",
        ),
        ({"queue_arguments": [("x-delivery-limit", 5)]}, r"pass a dict of AMQP argument names"),
    ],
)
def test_rabbitmq_flows_reject_queue_options_rabbitmq_would_ignore(
    options: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        Flow(sut=service, broker="rabbitmq", **options)  # type: ignore[arg-type]


def test_no_delivery_limit_is_minus_one_on_rabbitmq_4_only() -> None:
    flow = Flow(
        sut=service,
        broker="rabbitmq",
        queue_type="quorum",
        queue_arguments={"x-delivery-limit": -1},
    )
    assert flow.queue_arguments == {"x-delivery-limit": -1}
    check_for_broker(flow.queue_arguments, version="4.0.5")
    check_for_broker(flow.queue_arguments, version=None)  # a broker that says nothing
    check_for_broker({"x-delivery-limit": 5}, version="3.10.8")
    with pytest.raises(InvalidArgument) as raised:
        check_for_broker(flow.queue_arguments, version="3.10.8")
    assert str(raised.value) == (
        "queue_arguments['x-delivery-limit']=-1 means no limit on RabbitMQ 4.x only: this"
        " broker runs 3.10.8, where a message goes at its first return; on 3.x leave"
        " x-delivery-limit out (a quorum queue has no limit there)"
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"queue_type": "quorum"}, "queue_type"),
        ({"queue_arguments": {"x-delivery-limit": 5}}, "queue_arguments"),
    ],
)
def test_kafka_flows_reject_queue_options(options: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        Flow(sut=service, broker="kafka", **options)  # type: ignore[arg-type]
    assert str(raised.value) == (
        f"{named} is invalid for Kafka: its destinations are not queues with types or"
        f" arguments; drop {named} (it is for RabbitMQ flows)"
    )


def test_every_queue_gets_the_type_and_only_the_input_the_arguments() -> None:
    endpoints = Endpoints(
        kind="rabbitmq", amqp_url="amqp://h/", input="in", output="out", dead_letter="dlq"
    )
    specs = destination_specs(
        endpoints, 1, queue_type="quorum", queue_arguments={"x-delivery-limit": 3}
    )
    assert [(s.name, s.queue_type, dict(s.arguments), s.dead_letter) for s in specs] == [
        ("dlq", "quorum", {}, None),
        ("out", "quorum", {}, None),
        ("in", "quorum", {"x-delivery-limit": 3}, "dlq"),
    ]
    assert all(s.queue_type is None and not s.arguments for s in destination_specs(endpoints, 1))


def test_the_zoo_service_declares_what_its_flow_asks_for() -> None:
    flow = Flow(
        sut=service, broker="rabbitmq", queue_type="quorum", queue_arguments=QUORUM_INPUT_ARGUMENTS
    )
    assert flow.queue_arguments == {"x-delivery-limit": DELIVERY_LIMIT}


# --- the broker's own counts ------------------------------------------------------------


def redelivered(script: Script, harness_id: str, count: int, *, source: str) -> Script:
    """A delivery of ``harness_id`` carrying the quorum queue's ``x-delivery-count``."""
    published = script.published[harness_id].message
    assert published is not None
    headers = {**published.headers, "x-delivery-count": str(count).encode()}
    return script.event(
        Kind.DELIVERED,
        source=source,
        harness_id=harness_id,
        destination=script.input,
        redelivered=True,
        message=Message(value=published.value, headers=headers),
    )


def dead_letter(script: Script, harness_id: str, *, reason: str, count: int = 1) -> Script:
    """``harness_id`` lands on the dead-letter queue with RabbitMQ's ``x-death``."""
    death = [{"count": count, "queue": script.input, "reason": reason, "exchange": ""}]
    headers = {"x-harness-id": harness_id.encode(), "x-death": json.dumps(death).encode()}
    return script.event(
        Kind.DEAD_LETTERED,
        source="tap",
        harness_id=harness_id,
        destination=script.dead_letter_name,
        message=Message(value=b"poison", headers=headers),
    )


def test_the_broker_count_and_the_tap_are_the_same_deliveries() -> None:
    script = Script().publish("a", value=b"poison").deliver("a", source="tap")
    for count in (1, 2):
        redelivered(script, "a", count, source="tap")
    history = script.build()
    assert max_deliveries(3)(history).ok  # 3 seen, 3 said: not 6
    [anomaly] = max_deliveries(2)(history).anomalies
    assert "was delivered 3 times (limit 2)," in anomaly.text


def test_probe_and_tap_seeing_the_same_deliveries_count_them_once() -> None:
    script = Script().publish("a").deliver("a", source="tap").deliver("a", source="probe")
    redelivered(script, "a", 1, source="tap")
    script.deliver("a", redelivered=True, source="probe")
    assert max_deliveries(2)(script.build()).ok


def test_deliveries_no_witness_saw_count_through_the_broker_count() -> None:
    # The tap came late (or lost its channel): it saw only the fifth delivery.
    script = Script().publish("a")
    history = redelivered(script, "a", 4, source="tap").build()
    [anomaly] = max_deliveries(3)(history).anomalies
    assert anomaly.text.startswith("input #1 (id a) was delivered 5 times (limit 3;")
    assert "the broker counts 5" in anomaly.text


def test_a_dead_letter_s_x_death_counts_its_rejections() -> None:
    # A retry loop through a dead-letter exchange: rejected 4 times, no delivery seen.
    history = dead_letter(Script().publish("a"), "a", reason="rejected", count=4).build()
    [anomaly] = max_deliveries(3)(history).anomalies
    assert "was delivered 4 times (limit 3; the broker counts 4)" in anomaly.text


def test_x_death_of_another_queue_does_not_count() -> None:
    script = Script().publish("a")
    death = [{"count": 9, "queue": "elsewhere", "reason": "rejected"}]
    script.event(
        Kind.DEAD_LETTERED,
        source="tap",
        harness_id="a",
        destination="dlq",
        message=Message(value=b"", headers={"x-death": json.dumps(death).encode()}),
    )
    assert max_deliveries(1)(script.build()).ok


def test_dead_lettered_says_why_the_broker_dead_lettered_an_ordinary_input() -> None:
    history = dead_letter(Script().publish("a", value=b"fine"), "a", reason="delivery_limit")
    [anomaly] = dead_lettered(when=lambda m: m.value.startswith(b"poison"))(
        history.build()
    ).anomalies
    assert anomaly.kind == "dead-lettered"
    assert (
        "(x-death: the queue's x-delivery-limit, 20 on RabbitMQ 4.x unless set, was reached in"
        " queue 'in') though it is not poison" in anomaly.text
    )


def test_unreadable_broker_headers_are_no_count() -> None:
    script = Script().publish("a").deliver("a")
    script.event(
        Kind.DELIVERED,
        source="tap",
        harness_id="a",
        message=Message(value=b"", headers={"x-delivery-count": b"many", "x-death": b"{"}),
    )
    history: History = script.build()
    assert max_deliveries(2)(history).ok
