"""Broker restarts on RabbitMQ: ``BrokerRestart`` steps and ``faults=["broker_restart"]``.

All on a **private** RabbitMQ node (its own ``HARNESS_CACHE_DIR``, see
``private_broker.py``): a restart drops every connection to the broker, so the
session's shared broker is never restarted. The harness's firehose tap dies
with the broker: the zoo's reconnecting service must lose nothing across a
graceful and a hard restart (no false alarm from the outage), what the tap
missed must be reported from the queues afterwards (constructed here: traces
held back and dropped by a proxy in front of the tap), and a service that
does not reconnect must be reported failing, not hang.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse
from collections.abc import Callable, Iterator

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from message_flow_harness import (
    BrokerInfo,
    BrokerUnavailable,
    DestinationSpec,
    Flow,
    Message,
    TapRecord,
    brokers,
    checks,
    eventually,
    fuzz,
)
from message_flow_harness._fuzz import Example
from message_flow_harness._history import Kind
from message_flow_harness._proxy import FaultProxy
from message_flow_harness._runner import LiveRun, run_flow
from message_flow_harness.brokers._local import free_port
from message_flow_harness.brokers.rabbitmq import RabbitAdapter, Reconciled
from message_flow_harness.schedule import BrokerRestart, Publish, Settle, Step
from message_flow_harness.strategies import POISON
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_correct, rabbitmq_robust
from tests.integration.private_broker import private_broker

pytestmark = pytest.mark.rabbitmq

#: A run holds a restart or two (about 7-12 s each here, more on a loaded 2-core box).
RUN_TIMEOUT_S = 150.0
#: Every wait on the broker in the adapter-level test.
WAIT_S = 30.0


@pytest.fixture(scope="module")
def restartable_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    with private_broker("rabbitmq", tmp_path_factory.mktemp("rabbitmq-restart")) as info:
        yield info


def _flow(sut: Callable[..., object], *, quiet: float = 10.0) -> Flow:
    return Flow(
        sut=sut,  # type: ignore[arg-type]
        broker="rabbitmq",
        checks=[
            checks.no_loss(),
            checks.per_key_order(),
            checks.delivery("at-least-once"),
            checks.dead_lettered(when=lambda m: m.value.startswith(POISON)),
        ],
        timeout=RUN_TIMEOUT_S,
        quiet=quiet,  # the service reconnects after the restart (every 0.5 s)
    )


def _messages(prefix: str, count: int, *, poison: bool = False) -> list[Publish]:
    """``count`` inputs over two keys; with ``poison``, the third one cannot be processed."""
    keys = (b"a", b"b")
    values = [f"{prefix}{i}".encode() for i in range(count)]
    if poison:
        values[2] = POISON + b"-" + values[2]
    return [Publish(Message(key=keys[i % 2], value=value)) for i, value in enumerate(values)]


@pytest.mark.asyncio
@pytest.mark.parametrize("hard", [False, True], ids=["graceful", "hard"])
async def test_a_reconnecting_service_loses_nothing_across_a_restart(
    restartable_rabbitmq: BrokerInfo, hard: bool
) -> None:
    # Graceful: after a Settle, so the service is idle; hard: with inputs in flight.
    # LiveRun is what run_flow drives; here the test looks at the proxy in between.
    began = time.monotonic()
    live = LiveRun(_flow(rabbitmq_robust), broker=restartable_rabbitmq, faults=True)
    async with live:
        await live.publish_burst(_messages("before-", 6, poison=True))
        if not hard:
            await live.do(Settle())
        [instance] = live._instances.instances
        proxy = instance.proxy
        assert proxy is not None
        connections = proxy.connections
        await live.do(BrokerRestart(hard=hard))
        # Held off the broker all through the restart, although it tried to reconnect
        # every 0.5 s; let through only now that the harness's taps are back.
        assert proxy.connections == connections
        assert not proxy.refusing
        await live.publish_burst(_messages("after-", 6))
        result = await live.finish()
    assert proxy.connections > connections  # it did reconnect
    took = time.monotonic() - began
    how = "hard" if hard else "graceful"
    lane = [e.detail or "" for e in result.history.events if e.lane == "broker"]
    print(f"{how} restart run: {took:.1f} s; {lane}")
    assert lane[0] == f"broker restart ({how})"
    assert [e.lane for e in result.history.events if e.kind is Kind.FAULT] == ["broker"]
    assert len(lane) == 3, lane
    assert lane[1].startswith("broker ready again after"), lane
    # The harness's taps came back, and the output and dead-letter queues were read.
    assert lane[2].startswith("taps reconnected, services let through; "), lane
    for queue in (result.endpoints.output, result.endpoints.dead_letter):
        assert f"{queue}: " in lane[2], lane
        assert f"{queue}: not read" not in lane[2], lane
    assert f"{result.endpoints.input}: not read" in lane[2], lane
    assert result.ok, result.report()
    outputs = {e.harness_id for e in result.history.events if e.kind is Kind.OUTPUT}
    dead = {e.harness_id for e in result.history.events if e.kind is Kind.DEAD_LETTERED}
    assert (len(outputs), len(dead)) == (11, 1)


def _landed(records: list[TapRecord]) -> list[TapRecord]:
    return [r for r in records if r.event == "landed"]


async def _until(condition: Callable[[], bool], what: str) -> None:
    await eventually(condition, within=WAIT_S, what=what)


async def _depth(info: BrokerInfo, queue: str) -> int:
    async with asyncio.timeout(WAIT_S):
        connection = await aio_pika.connect(info.url)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
        finally:
            await connection.close()
    count = declared.declaration_result.message_count
    assert count is not None
    return count


@pytest.mark.asyncio
async def test_reconnect_reports_what_the_restart_kept_the_tap_from_seeing(
    restartable_rabbitmq: BrokerInfo, unique: str
) -> None:
    """Traces held back in a proxy in front of the tap, then lost with the broker.

    The tap reports ``same`` twice before the restart (two publishes with one
    message id, body and headers); a third ``same`` and ``second`` land while
    the tap's connection delays everything, and the proxy drops that
    connection before a hard restart: their traces are gone. ``reconnect()``
    must report exactly those two (identical messages counted, not merged),
    in queue order, leave the messages in the queue, not report its own reads
    as deliveries, and leave alone a queue that has a consumer.
    """
    info = restartable_rabbitmq
    port = urllib.parse.urlsplit(info.url).port
    assert port is not None
    proxy = FaultProxy(free_port(), "127.0.0.1", port)
    await proxy.start()
    through = dataclasses.replace(info, url=f"amqp://guest:guest@127.0.0.1:{proxy.listen_port}/")
    tapped, consumed = f"{unique}-out", f"{unique}-in"
    records: list[TapRecord] = []
    others: list[TapRecord] = []
    same = aio_pika.Message(b"same", message_id="m-1", headers={"h": "1"}, delivery_mode=2)
    second = aio_pika.Message(b"second", headers={"h": "2"}, delivery_mode=2)  # a random id
    direct = RabbitAdapter(info, timeout=WAIT_S)
    adapter = RabbitAdapter(through, timeout=10.0)
    await direct.open()
    await adapter.open()
    try:
        await direct.create(DestinationSpec(name=tapped))
        await direct.create(DestinationSpec(name=consumed))
        async with adapter.tap(tapped, records.append), adapter.tap(consumed, others.append):
            async with asyncio.timeout(WAIT_S):
                client = await aio_pika.connect(info.url)
            try:
                channel = await client.channel()  # publisher confirms: the broker has them
                service = await channel.declare_queue(consumed, passive=True)

                async def never_acks(message: AbstractIncomingMessage) -> None:
                    pass

                await service.consume(never_acks)
                await channel.default_exchange.publish(same, routing_key=tapped)
                await channel.default_exchange.publish(same, routing_key=tapped)
                await _until(lambda: len(_landed(records)) == 2, "the tap reporting `same` twice")
                await adapter.prepare_for_restart()
                proxy.latency = 3600.0  # from now on the tap's traces wait in the proxy
                await channel.default_exchange.publish(same, routing_key=tapped)
                await channel.default_exchange.publish(second, routing_key=tapped)
            finally:
                await client.close()
            proxy.hold()  # the held-back traces go with the tap's connection
            report = await asyncio.to_thread(
                brokers.restart_local, info, hard=True, timeout=RUN_TIMEOUT_S
            )
            print(f"hard restart: {report}")
            assert len(_landed(records)) == 2  # the tap never saw the third nor `second`

            # The broker does not answer yet (the proxy refuses): a clear error, bounded.
            with pytest.raises(BrokerUnavailable, match="after a broker restart") as caught:
                await adapter.reconnect()
            assert f"127.0.0.1:{proxy.listen_port}" in str(caught.value)
            proxy.latency = 0.0
            proxy.release()
            assert await direct.reconnect() == []  # no taps: only a new connection
            found = await adapter.reconnect()
            print(*found, sep="\n")

            assert {r.queue: r for r in found} == {
                tapped: Reconciled(tapped, held=4, reported=2, gone=0),
                consumed: Reconciled(consumed, skipped="it had consumers when the restart began"),
            }
            landed = _landed(records)
            assert [(r.message.value, r.message.headers) for r in landed] == [
                (b"same", {"h": b"1"}),
                (b"same", {"h": b"1"}),
                (b"same", {"h": b"1"}),
                (b"second", {"h": b"2"}),
            ]
            assert all(r.destination == tapped and r.routing_key == tapped for r in landed)
            # The tap goes on: a message published now is reported once. By then the
            # traces of reconnect()'s own reads have come through, and were not reported.
            await direct.publish(tapped, Message(b"after"))
            await _until(lambda: len(_landed(records)) == 5, "the tap reporting `after`")
            assert [r for r in records if r.event == "delivered"] == []
            assert await _depth(info, tapped) == 5  # read, not consumed
            assert others == []
        # Leaving the taps raised nothing: they were carried over the restart.
    finally:
        try:
            await direct.delete(tapped)
            await direct.delete(consumed)
        finally:
            await adapter.close()
            await direct.close()
            await proxy.close()


@pytest.mark.asyncio
async def test_a_service_that_does_not_reconnect_is_reported_failing(
    restartable_rabbitmq: BrokerInfo,
) -> None:
    # rabbitmq_correct uses a plain connection: after the restart it consumes nothing.
    schedule: list[Step] = [
        *_messages("before-", 3),
        Settle(),
        BrokerRestart(hard=True),
        *_messages("after-", 3),
    ]
    flow = _flow(rabbitmq_correct, quiet=3.0)
    result = await run_flow(flow, schedule, broker=restartable_rabbitmq)
    print(result.report())
    assert not result.ok
    assert result.ended_by.startswith("no progress for 3 s"), result.ended_by
    lost = [a for v in result.failures() for a in v.anomalies if a.kind == "lost"]
    after = {m.harness_id for m in result.messages if m.value.startswith(b"after-")}
    assert {i for a in lost for i in a.harness_ids} == after


@pytest.mark.asyncio
async def test_a_fuzz_campaign_with_restarts_passes_the_reconnecting_service(
    restartable_rabbitmq: BrokerInfo,
) -> None:
    seen: list[Example] = []
    report = await fuzz(
        _flow(rabbitmq_robust),
        max_examples=3,
        seed=1,
        faults=["broker_restart"],
        broker=restartable_rabbitmq,
        database=None,
        report_dir=None,
        progress=seen.append,
    )
    restarts = sum(isinstance(step, BrokerRestart) for e in seen for step in e.schedule)
    print(report.summary(), f"\n{restarts} broker restarts in {len(seen)} examples")
    assert report.ok, report.summary()
    assert restarts >= 1
