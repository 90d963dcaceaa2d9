"""Quorum queues and delivery limits on the real RabbitMQ.

A flow asks for quorum queues (``Flow(queue_type="quorum", queue_arguments=...)``);
the zoo's ``rabbitmq_quorum_retry`` declares its input as a quorum queue with
``x-delivery-limit`` and nacks a failure with requeue, relying on the broker
to dead-letter poison. It passes, also under crash faults; the same handling
on a classic queue (``rabbitmq_requeue_forever``) is found by ``max_deliveries``.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import aio_pika
import pytest

from message_flow_harness import (
    BrokerInfo,
    Flow,
    HarnessError,
    InvalidArgument,
    Kind,
    Message,
    checks,
    fuzz,
)
from message_flow_harness import strategies as hs
from message_flow_harness._checks import Check, Verdict
from message_flow_harness._history import History
from message_flow_harness._isolation import destination_specs, new_endpoints
from message_flow_harness.brokers.rabbitmq import RabbitAdapter
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.strategies import POISON
from message_flow_harness.zoo.rabbitmq_services import (
    DELIVERY_LIMIT,
    QUORUM_INPUT_ARGUMENTS,
    rabbitmq_quorum_retry,
    rabbitmq_requeue_forever,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.rabbitmq]

#: What the broker's delivery limit allows: the first delivery and DELIVERY_LIMIT more.
MOST_DELIVERIES = DELIVERY_LIMIT + 1


def is_poison(message: Message) -> bool:
    return message.value.startswith(POISON)


INPUTS = [Message(key=b"k", value=f"order-{i}".encode()) for i in range(6)]
INPUTS.insert(3, Message(key=b"k", value=POISON + b"-order"))
POISON_ID = "input #4"

GUARDED = (
    checks.delivery("at-least-once"),
    checks.dead_lettered(when=is_poison),
    checks.max_deliveries(MOST_DELIVERIES),
)


def quorum_flow(*, probes: bool = True, extra: tuple[checks.Check, ...] = ()) -> Flow:
    return Flow(
        sut=rabbitmq_quorum_retry,
        broker="rabbitmq",
        queue_type="quorum",
        queue_arguments=QUORUM_INPUT_ARGUMENTS,
        checks=GUARDED + extra,
        probes=probes,
        quiet=1.5,
    )


AT_LEAST_ONCE = {
    **QUORUM_INPUT_ARGUMENTS,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@pytest.mark.parametrize("arguments", [QUORUM_INPUT_ARGUMENTS, AT_LEAST_ONCE])
async def test_the_run_s_queues_are_quorum_queues_with_the_flow_s_arguments(
    adapter: RabbitAdapter, rabbitmq_broker: BrokerInfo, unique: str, arguments: dict[str, object]
) -> None:
    endpoints = new_endpoints(rabbitmq_broker, unique)
    specs = destination_specs(endpoints, 1, queue_type="quorum", queue_arguments=arguments)
    await adapter.create_all(specs)
    try:
        found = {}
        for spec in specs:
            path = "queues/{vhost}/" + urllib.parse.quote(spec.name, safe="")
            queue = await adapter._management.call("GET", path, f"read queue {spec.name!r}")
            assert isinstance(queue, dict)
            found[spec.name] = (queue["type"], queue["arguments"])
    finally:
        await adapter.delete_all([spec.name for spec in specs])
    assert found == {
        endpoints.dead_letter: ("quorum", {"x-queue-type": "quorum"}),
        endpoints.output: ("quorum", {"x-queue-type": "quorum"}),
        endpoints.input: ("quorum", {"x-queue-type": "quorum", **arguments}),
    }


async def test_no_delivery_limit_is_refused_on_3x_and_holds_past_4x_s_default(
    adapter: RabbitAdapter, rabbitmq_broker: BrokerInfo, unique: str
) -> None:
    """``x-delivery-limit: -1`` turns 4.x's default limit (20) off; 3.x would drop the message."""
    endpoints = new_endpoints(rabbitmq_broker, unique)
    no_limit = {"x-delivery-limit": -1}
    specs = destination_specs(endpoints, 1, queue_type="quorum", queue_arguments=no_limit)
    version = adapter._broker_version()
    assert version is not None
    if int(version.split(".")[0]) < 4:
        with pytest.raises(InvalidArgument, match=r"means no limit on RabbitMQ 4\.x only"):
            await adapter.create_all(specs)
        assert await adapter.list_destinations(unique) == []  # refused before any was made
        return
    await adapter.create_all(specs)
    try:
        await adapter.publish(endpoints.input, Message(b"retried"))
        connection = await aio_pika.connect(rabbitmq_broker.url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(endpoints.input, ensure=False)
            for _ in range(25):  # past the default limit of 20 returns
                message = await queue.get(timeout=5)
                await message.nack(requeue=True)
            last = await queue.get(timeout=5)
            assert last.headers["x-delivery-count"] == 25
            await last.ack()
            dead_letters = await channel.get_queue(endpoints.dead_letter, ensure=False)
            assert await dead_letters.get(fail=False) is None
    finally:
        await adapter.delete_all([spec.name for spec in specs])


async def test_a_service_relying_on_the_delivery_limit_passes(flow_check: FlowCheck) -> None:
    result = await flow_check(quorum_flow(), INPUTS)
    [poison_id] = [m.harness_id for m in result.messages if is_poison(m)]
    deliveries = [
        e for e in result.history if e.kind is Kind.DELIVERED and e.harness_id == poison_id
    ]
    # The firehose saw each delivery, the redeliveries with the quorum queue's count.
    taps = [e for e in deliveries if e.source == "tap"]
    assert len(taps) == MOST_DELIVERIES
    counts = [e.message.headers.get("x-delivery-count") for e in taps if e.message]
    assert counts == [None, *(str(n).encode() for n in range(1, MOST_DELIVERIES))]
    [dead] = [
        e for e in result.history if e.kind is Kind.DEAD_LETTERED and e.harness_id == poison_id
    ]
    assert dead.message is not None
    assert b'"reason": "delivery_limit"' in dead.message.headers["x-death"]


async def test_max_deliveries_counts_the_broker_s_deliveries_with_probes_off(
    flow_check: FlowCheck,
) -> None:
    # Probes off, as for a process service: the broker's tap and its counts are all there is.
    result = await flow_check.run(
        quorum_flow(probes=False, extra=(checks.max_deliveries(DELIVERY_LIMIT),)), INPUTS
    )
    assert not any(e.source == "probe" for e in result.history)
    [verdict] = result.failures()
    assert verdict.check == f"max_deliveries({DELIVERY_LIMIT})"
    [anomaly] = verdict.anomalies
    [poison_id] = [m.harness_id for m in result.messages if is_poison(m)]
    assert anomaly.text.startswith(f"{POISON_ID} (id {poison_id}, key 'k')")
    # Counted once though the tap and the broker's x-delivery-count both say so.
    assert f"was delivered {MOST_DELIVERIES} times (limit {DELIVERY_LIMIT})," in anomaly.text


async def test_a_service_relying_on_the_delivery_limit_passes_crash_faults(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    seen: list[tuple[bool, bool]] = []  # per run: a crash hit it, the limit dead-lettered poison

    def tally(history: History) -> Verdict:
        crashed = any(e.kind is Kind.FAULT and "crash" in (e.detail or "") for e in history)
        limited = any(
            e.kind is Kind.DEAD_LETTERED
            and e.message is not None
            and b"delivery_limit" in e.message.headers.get("x-death", b"")
            for e in history
        )
        seen.append((crashed, limited))
        return Verdict("tally")

    flow = Flow(
        sut=rabbitmq_quorum_retry,
        broker="rabbitmq",
        queue_type="quorum",
        queue_arguments=QUORUM_INPUT_ARGUMENTS,
        checks=(*GUARDED, Check("tally", tally)),
        messages=hs.messages(keys=hs.keys(2), values=hs.values(poison=True), max_size=6),
        quiet=1.5,
    )
    report = await fuzz(
        flow,
        max_examples=12,
        seed=5,
        faults=["crash"],
        broker=rabbitmq_broker,
        database=None,
        report_dir=tmp_path,
    )
    assert report.ok, report.summary()
    # Not vacuous: crashes hit the service, and the broker's limit dead-lettered poison.
    assert any(crashed for crashed, _ in seen), seen
    assert any(limited for _, limited in seen), seen
    assert any(crashed and limited for crashed, limited in seen), seen


async def test_requeueing_forever_on_a_classic_queue_is_found(flow_check: FlowCheck) -> None:
    # The same handling as rabbitmq_quorum_retry, deployed on a classic queue: no limit.
    flow = Flow(
        sut=rabbitmq_requeue_forever,
        broker="rabbitmq",
        checks=GUARDED,
        quiet=1.5,
    )
    result = await flow_check.run(flow, INPUTS)
    failed = {v.check: v for v in result.failures()}
    assert set(failed) == {
        "delivery('at-least-once')",
        "dead_lettered(when=is_poison)",
        f"max_deliveries({MOST_DELIVERIES})",
    }
    [storm] = failed[f"max_deliveries({MOST_DELIVERIES})"].anomalies
    assert storm.text.startswith(f"{POISON_ID} ")
    delivered = int(storm.text.split("was delivered ")[1].split(" times")[0])
    assert delivered > 10 * MOST_DELIVERIES  # redelivered as fast as the broker can
    [lost] = failed["delivery('at-least-once')"].anomalies
    assert lost.kind == "lost"
    # It never ends by itself: the run ends once no output came for ``quiet`` seconds.
    assert result.ended_by == "no progress for 1.5 s with 1 inputs unaccounted for"


async def test_the_quorum_service_on_a_classic_flow_says_which_argument_differs(
    flow_check: FlowCheck,
) -> None:
    flow = Flow(sut=rabbitmq_quorum_retry, broker="rabbitmq", checks=GUARDED, quiet=1.5)
    with pytest.raises(HarnessError) as raised:
        await flow_check.run(flow, INPUTS)
    assert "inequivalent arg 'x-queue-type'" in str(raised.value)
