"""Readiness and committed offsets, on the real brokers, with services written as the field does.

The Kafka worker reads its settings from the environment into a settings
object, starts its consumer from a background task after a warm-up (as apps
whose lifespan returns before their workers run do), reads JSON requests at
``auto_offset_reset="latest"`` and commits after each result. By default a run
waits until its group holds the input and starts the group at the input's
first offset, so it sees everything; as a first deploy it starts after the
inputs and its losses say why. The RabbitMQ worker begins consuming a moment
after ``__aenter__`` returns; the run waits for its consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from message_flow_harness import Endpoints, Flow, Kind, Message, ServiceError, checks
from message_flow_harness._flow import Service
from message_flow_harness.pytest_plugin import FlowCheck

pytestmark = pytest.mark.asyncio

REQUESTS = [
    Message(key=f"customer-{n % 3}".encode(), value=json.dumps({"request_id": n}).encode())
    for n in range(12)
]


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker reads from its environment (``ORDERS_*``), once, at start."""

    bootstrap_servers: str
    requests_topic: str
    results_topic: str
    group: str
    warm_up_s: float

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerSettings:
        return cls(
            bootstrap_servers=environ["ORDERS_KAFKA"],
            requests_topic=environ.get("ORDERS_REQUESTS", "order-requests"),
            results_topic=environ.get("ORDERS_RESULTS", "order-results"),
            group=environ.get("ORDERS_GROUP", "orders-worker"),
            warm_up_s=float(environ.get("ORDERS_WARM_UP_S", "0")),
        )


@contextlib.asynccontextmanager
async def orders_worker(settings: WorkerSettings) -> AsyncIterator[None]:
    """Answer each JSON request with a JSON result; commit after the result is sent."""

    async def work() -> None:
        await asyncio.sleep(settings.warm_up_s)  # caches, connections... before consuming
        consumer = AIOKafkaConsumer(
            settings.requests_topic,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.group,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        await consumer.start()
        await producer.start()
        try:
            async for record in consumer:
                request = json.loads(record.value or b"{}")
                result = {"request_id": request["request_id"], "status": "accepted"}
                await producer.send_and_wait(
                    settings.results_topic,
                    json.dumps(result).encode(),
                    key=record.key,
                    headers=list(record.headers),
                )
                await consumer.commit()
        finally:
            await producer.stop()
            await consumer.stop()

    task = asyncio.create_task(work(), name="orders worker")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def kafka_worker(**environ: str) -> Service:
    """The worker, configured for a run through the environment names it reads."""

    def orders(endpoints: Endpoints) -> contextlib.AbstractAsyncContextManager[None]:
        assert endpoints.bootstrap_servers is not None
        assert endpoints.group_id is not None
        run_environ = {
            "ORDERS_KAFKA": endpoints.bootstrap_servers,
            "ORDERS_REQUESTS": endpoints.input,
            "ORDERS_RESULTS": endpoints.output,
            "ORDERS_GROUP": endpoints.group_id,
            "ORDERS_WARM_UP_S": "0.5",
            **environ,
        }
        return orders_worker(WorkerSettings.from_environ({**os.environ, **run_environ}))

    return orders


@pytest.mark.kafka
async def test_a_latest_worker_sees_every_input_by_default(flow_check: FlowCheck) -> None:
    flow = Flow(sut=kafka_worker(), broker="kafka", checks=[checks.no_loss()])
    result = await flow_check(flow, REQUESTS)
    notes = [e.detail or "" for e in result.history.of(Kind.NOTE)]
    assert any(note.startswith("ready to consume after") for note in notes), notes
    assert len(result.history.of(Kind.OUTPUT)) == len(REQUESTS)


@pytest.mark.kafka
async def test_committed_offsets_alone_keep_a_late_latest_worker_whole(
    flow_check: FlowCheck,
) -> None:
    # Published before the worker has even joined (no wait): the group's committed
    # offset 0, not its auto_offset_reset, says where it starts.
    flow = Flow(sut=kafka_worker(), broker="kafka", ready=False, checks=[checks.no_loss()])
    result = await flow_check(flow, REQUESTS)
    assert len(result.history.of(Kind.OUTPUT)) == len(REQUESTS)


@pytest.mark.kafka
async def test_a_first_deploy_explains_what_latest_lost(flow_check: FlowCheck) -> None:
    flow = Flow(
        sut=kafka_worker(),
        broker="kafka",
        ready=False,
        first_deploy=True,
        quiet=1.5,
        checks=[checks.no_loss()],
    )
    result = await flow_check.run(flow, REQUESTS)
    [verdict] = result.failures()
    assert {a.kind for a in verdict.anomalies} == {"lost"}
    assert len(verdict.anomalies) == len(REQUESTS)
    [note] = verdict.notes
    assert note.startswith("the service consumed nothing: it may not subscribe to")
    assert "auto_offset_reset='latest'" in note
    assert "with no committed offsets (Flow(first_deploy=True))" in note
    assert f"note: {note}" in result.report()
    assert "note: the service consumed nothing" in flow_check.write_report(result).read_text()


@pytest.mark.kafka
async def test_a_worker_on_a_group_of_its_own_is_never_ready(flow_check: FlowCheck) -> None:
    own_group = f"orders-worker-{uuid.uuid4().hex[:8]}"
    flow = Flow(
        sut=kafka_worker(ORDERS_GROUP=own_group, ORDERS_WARM_UP_S="0"),
        broker="kafka",
        start_timeout=1.5,
    )
    with pytest.raises(ServiceError) as raised:
        await flow_check.run(flow, REQUESTS)
    message = str(raised.value)
    assert "was not ready to consume: consumer group 'h-" in message
    assert "had no member holding input partition 0 of 'h-" in message
    assert "after 1.5 s" in message
    assert "group_id=endpoints.group_id" in message
    assert "Flow(ready=...)" in message


@dataclass(frozen=True)
class PaymentSettings:
    amqp_url: str
    queue: str
    results_queue: str
    warm_up_s: float


@contextlib.asynccontextmanager
async def payment_worker(settings: PaymentSettings) -> AsyncIterator[None]:
    """Consume from a background task started after a warm-up; answer each request, then ack."""
    connection = await aio_pika.connect(settings.amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=10)

    async def on_request(message: AbstractIncomingMessage) -> None:
        request = json.loads(message.body)
        await channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps({"request_id": request["request_id"], "paid": True}).encode(),
                headers=dict(message.headers),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=settings.results_queue,
        )
        await message.ack()

    async def consume() -> None:
        await asyncio.sleep(settings.warm_up_s)
        queue = await channel.get_queue(settings.queue)
        await queue.consume(on_request)

    starting = asyncio.create_task(consume(), name="payments consumer")
    try:
        yield
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await connection.close()


def rabbit_worker() -> Service:
    def payments(endpoints: Endpoints) -> contextlib.AbstractAsyncContextManager[None]:
        assert endpoints.amqp_url is not None
        return payment_worker(
            PaymentSettings(
                amqp_url=endpoints.amqp_url,
                queue=endpoints.input,
                results_queue=endpoints.output,
                warm_up_s=0.5,
            )
        )

    return payments


@pytest.mark.rabbitmq
async def test_a_consumer_that_starts_late_is_awaited(flow_check: FlowCheck) -> None:
    flow = Flow(sut=rabbit_worker(), broker="rabbitmq", checks=[checks.no_loss()])
    result = await flow_check(flow, REQUESTS)
    ready_at = next(
        e.at_ns for e in result.history.of(Kind.NOTE) if (e.detail or "").startswith("ready")
    )
    first_publish = result.history.of(Kind.PUBLISHED)[0]
    assert first_publish.at_ns > ready_at, "published only once the queue had its consumer"


@pytest.mark.rabbitmq
async def test_a_queue_nobody_consumes_is_a_readiness_error(flow_check: FlowCheck) -> None:
    flow = Flow(
        sut=_never_consuming,
        broker="rabbitmq",
        start_timeout=1.0,
    )
    with pytest.raises(ServiceError) as raised:
        await flow_check.run(flow, REQUESTS)
    message = str(raised.value)
    assert "was not ready to consume: queue 'h-" in message
    assert "had no consumer after 1 s" in message
    assert "basic_consume" in message


@contextlib.asynccontextmanager
async def _never_consuming(endpoints: Endpoints) -> AsyncIterator[None]:
    """Connects and declares its own queue, but never consumes the run's input."""
    assert endpoints.amqp_url is not None
    connection = await aio_pika.connect(endpoints.amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(exclusive=True)
        yield
    finally:
        await connection.close()


@pytest.mark.rabbitmq
async def test_a_readiness_check_of_ones_own_is_polled(flow_check: FlowCheck) -> None:
    asked: list[Endpoints] = []

    async def payments_consuming(endpoints: Endpoints) -> bool:
        asked.append(endpoints)
        assert endpoints.amqp_url is not None
        connection = await aio_pika.connect(endpoints.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(endpoints.input, passive=True)
            result = queue.declaration_result
            return bool(result and result.consumer_count)

    flow = Flow(sut=rabbit_worker(), broker="rabbitmq", ready=payments_consuming)
    result = await flow_check(flow, REQUESTS)
    assert len(asked) > 1, "polled until the consumer came"
    assert asked[0].input == result.endpoints.input
