"""Services that do not copy headers, correlated by business key on the real brokers.

The order workers below are written as the field writes them: settings read
from environment variables, JSON payloads, every output a new record that
names the order (``{"type": "order.accepted", "order": 17}``), an ``end``
record after each result (fan-out), and beside each dead letter an
``order.payment.failed`` event on the same destination (a side event). None
copies the harness's header. The flows link outputs to inputs by the orders'
ids, and each buggy variant is caught with an anomaly that names the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import strategies as st

from message_flow_harness import (
    BrokerInfo,
    Endpoints,
    Flow,
    Kind,
    Message,
    by_json_field,
    checks,
    fuzz,
)
from message_flow_harness._flow import RunResult
from message_flow_harness.pytest_plugin import FlowCheck
from tests.doc_pages import page_namespace

pytestmark = pytest.mark.asyncio

log = logging.getLogger("orders.worker")

COUPONS = {"WELCOME": 5.0}


class PaymentDeclined(Exception):
    """The order cannot be paid: dead-letter it and tell the payments team."""


class LedgerUnavailable(Exception):
    """The ledger did not answer in time: worth another try."""


@dataclass(frozen=True)
class Settings:
    """The worker's configuration, from its environment (as in its deployment)."""

    orders: str
    results: str
    dead_letters: str
    kafka_bootstrap: str = ""
    kafka_group: str = ""
    amqp_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            orders=env["ORDERS_TOPIC"],
            results=env["RESULTS_TOPIC"],
            dead_letters=env["DLQ_TOPIC"],
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", ""),
            kafka_group=env.get("KAFKA_GROUP", ""),
            amqp_url=env.get("AMQP_URL", ""),
        )


def environment(endpoints: Endpoints) -> dict[str, str]:
    """What the deployment would set: the glue between a run and the worker's settings."""
    return {
        "ORDERS_TOPIC": endpoints.input,
        "RESULTS_TOPIC": endpoints.output,
        "DLQ_TOPIC": endpoints.dead_letter,
        "KAFKA_BOOTSTRAP": endpoints.bootstrap_servers or "",
        "KAFKA_GROUP": endpoints.group_id or "",
        "AMQP_URL": endpoints.amqp_url or "",
    }


def charge(order: dict[str, object]) -> float:
    """The amount to charge; raises PaymentDeclined for an order that cannot be paid."""
    total = order["total"]
    if not isinstance(total, int | float) or total <= 0:
        raise PaymentDeclined(f"order {order['id']}: total {total!r}")
    coupon = order.get("coupon")
    if coupon is not None and coupon not in COUPONS:
        raise PaymentDeclined(f"order {order['id']}: unknown coupon {coupon!r}")
    return max(0.0, float(total) - COUPONS.get(str(coupon), 0.0))


def results(order: dict[str, object], charged: float) -> list[bytes]:
    """The result and the end-of-order marker, as new records."""
    return [
        json.dumps({"type": "order.accepted", "order": order["id"], "charged": charged}).encode(),
        json.dumps({"type": "end", "order": order["id"]}).encode(),
    ]


def payment_failed(order: dict[str, object], error: Exception) -> bytes:
    return json.dumps(
        {"type": "order.payment.failed", "order": order["id"], "reason": str(error)}
    ).encode()


# --- Kafka ------------------------------------------------------------------------------


class Ledger:
    """Where charges are written; ``flaky_over`` makes the first write of a large order time out."""

    def __init__(self, *, flaky_over: float | None = None) -> None:
        self.charged: dict[object, float] = {}
        self.flaky_over = flaky_over
        self.failed_once: set[object] = set()

    def write(self, order_id: object, amount: float) -> None:
        large = self.flaky_over is not None and amount > self.flaky_over
        if large and order_id not in self.failed_once:
            self.failed_once.add(order_id)
            raise LedgerUnavailable(f"ledger timed out writing order {order_id}")
        self.charged[order_id] = amount


def kafka_worker(*, ledger_after_send: bool) -> object:
    """The Kafka order worker; ``ledger_after_send`` is the bug: it publishes, then records."""

    @contextlib.asynccontextmanager
    async def worker(endpoints: Endpoints) -> AsyncIterator[None]:
        settings = Settings.from_env(environment(endpoints))
        ledger = Ledger(flaky_over=100.0)
        consumer = AIOKafkaConsumer(
            settings.orders,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.kafka_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=1000,
            heartbeat_interval_ms=300,
        )
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await consumer.start()
        await producer.start()

        async def publish(topic: str, values: list[bytes], key: bytes) -> None:
            sent = [await producer.send(topic, value, key=key) for value in values]
            await asyncio.gather(*sent)

        async def retry_later(raw: bytes, key: bytes, attempt: int) -> None:
            # A retry is a new record on the orders topic: the header says which attempt.
            headers = [("x-retry", str(attempt).encode())]
            await producer.send_and_wait(settings.orders, raw, key=key, headers=headers)

        async def handle(raw: bytes, attempt: int) -> None:
            order = json.loads(raw)
            key = str(order["id"]).encode()
            try:
                amount = charge(order)
            except PaymentDeclined as error:
                await publish(settings.dead_letters, [raw], key)
                await publish(settings.results, [payment_failed(order, error)], key)
                return
            try:
                if not ledger_after_send:
                    ledger.write(order["id"], amount)
                await publish(settings.results, results(order, amount), key)
                if ledger_after_send:
                    ledger.write(order["id"], amount)
            except LedgerUnavailable:
                log.warning("ledger unavailable for order %s: retrying", order["id"])
                await retry_later(raw, key, attempt + 1)

        async def consume() -> None:
            async for record in consumer:
                retry = dict(record.headers).get("x-retry", b"0")
                await handle(record.value, int(retry))
                await consumer.commit()

        task = asyncio.create_task(consume())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await consumer.stop()
            await producer.stop()

    return worker


# --- RabbitMQ -----------------------------------------------------------------------------


def rabbitmq_worker(*, ack_first: bool) -> object:
    """The RabbitMQ order worker; ``ack_first`` is the bug: it acks, then handles."""

    @contextlib.asynccontextmanager
    async def worker(endpoints: Endpoints) -> AsyncIterator[None]:
        settings = Settings.from_env(environment(endpoints))
        connection = await aio_pika.connect_robust(settings.amqp_url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        orders = await channel.get_queue(settings.orders)

        async def publish(body: bytes) -> None:
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await channel.default_exchange.publish(message, routing_key=settings.results)

        async def handle(order: dict[str, object]) -> None:
            if ack_first:  # the bug: an unknown coupon is a KeyError, not a decline
                amount = float(order["total"]) - COUPONS[str(order.get("coupon", "WELCOME"))]  # type: ignore[arg-type]
            else:
                amount = charge(order)
            for body in results(order, amount):
                await publish(body)

        async def consume() -> None:
            async with orders.iterator() as messages:
                async for message in messages:
                    order = json.loads(message.body)
                    if ack_first:
                        await message.ack()
                        try:
                            await handle(order)
                        except Exception:
                            log.exception("order %s failed", order.get("id"))
                        continue
                    try:
                        await handle(order)
                    except PaymentDeclined as error:
                        await publish(payment_failed(order, error))
                        await message.reject(requeue=False)  # to the dead letters
                        continue
                    await message.ack()

        task = asyncio.create_task(consume())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await connection.close()

    return worker


# --- the flows -------------------------------------------------------------------------------


def declined(message: Message) -> bool:
    try:
        charge(json.loads(message.value))
    except PaymentDeclined:
        return True
    return False


CONTRACT = (
    checks.no_loss(),
    checks.no_duplicates(),
    checks.no_unexpected(),
    checks.dead_lettered(when=declined),
)


def orders_flow(broker: str, sut: object) -> Flow:
    return Flow(
        sut=sut,  # type: ignore[arg-type]
        broker=broker,
        checks=CONTRACT,
        correlate=by_json_field("id", output="order"),
        output_kinds="type",
        side_events={"order.payment.failed"},
        settle=0.3,  # the end marker lands just after the result
        quiet=1.0,
    )


def order(order_id: int, total: float, **extra: object) -> Message:
    body = json.dumps({"id": order_id, "total": total, **extra}).encode()
    return Message(key=b"customer-1", value=body)


ORDERS = [order(1, 20), order(2, 250), order(3, -5), order(4, 40, coupon="WELCOME")]


def kinds_per_order(result: RunResult) -> dict[str, list[str]]:
    """Each input's outputs by kind, and the side events (under 'side')."""
    found: dict[str, list[str]] = {}
    for event in result.history:
        if event.kind is Kind.OUTPUT and event.harness_id:
            found.setdefault(event.harness_id, []).append(event.detail or "")
        if event.kind is Kind.SIDE_EVENT:
            found.setdefault("side", []).append(event.detail or "")
    return {k: sorted(v) for k, v in found.items()}


def assert_fanned_out(result: RunResult) -> None:
    """Every accepted order has its result and end; the decline its side event."""
    ids = [m.harness_id for m in result.messages]
    seen = kinds_per_order(result)
    for accepted in (ids[0], ids[1], ids[3]):
        assert seen[accepted or ""] == ["end", "order.accepted"]
    assert seen["side"] == ["order.payment.failed"]


@pytest.mark.kafka
async def test_kafka_worker_without_header_copying_is_found_correct(
    flow_check: FlowCheck,
) -> None:
    result = await flow_check(orders_flow("kafka", kafka_worker(ledger_after_send=False)), ORDERS)
    assert_fanned_out(result)


@pytest.mark.rabbitmq
async def test_rabbitmq_worker_without_header_copying_is_found_correct(
    flow_check: FlowCheck,
) -> None:
    result = await flow_check(orders_flow("rabbitmq", rabbitmq_worker(ack_first=False)), ORDERS)
    assert_fanned_out(result)


@pytest.mark.kafka
async def test_kafka_worker_that_publishes_before_its_ledger_write_duplicates_the_order(
    flow_check: FlowCheck,
) -> None:
    """Order 2's ledger write times out after its result went out: the retry sends it again."""
    result = await flow_check.run(
        orders_flow("kafka", kafka_worker(ledger_after_send=True)), ORDERS
    )
    failed = {v.check: v for v in result.failures()}
    assert set(failed) == {"no_duplicates()"}
    [duplicate] = failed["no_duplicates()"].anomalies
    second = result.messages[1].harness_id
    assert duplicate.harness_ids == (second,)
    assert duplicate.text.startswith(
        f"input #2 (id {second}, key 'customer-1', business key '2') came out 4 times"
        " as 'end', 'order.accepted': output"
    )
    # The retry is a record the service built: the probes still know it is order 2.
    deliveries = [e for e in result.history.of(Kind.DELIVERED) if e.harness_id == second]
    assert len(deliveries) == 2


@pytest.mark.rabbitmq
async def test_rabbitmq_worker_that_acks_first_loses_the_order_it_fails(
    flow_check: FlowCheck,
) -> None:
    messages = [order(1, 20), order(2, 30, coupon="SPRING"), order(3, 40)]
    result = await flow_check.run(
        orders_flow("rabbitmq", rabbitmq_worker(ack_first=True)), messages
    )
    failed = {v.check: v for v in result.failures()}
    assert set(failed) == {"no_loss()", "dead_lettered(when=declined)"}
    [lost] = failed["no_loss()"].anomalies
    second = result.messages[1].harness_id
    assert lost.text.startswith(
        f"input #2 (id {second}, key 'customer-1', business key '2') published at"
    )
    assert lost.text.endswith("was never output nor dead-lettered")


@pytest.mark.rabbitmq
async def test_fuzzing_orders_with_unique_ids_finds_the_lost_one_by_its_key(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    """Hypothesis draws orders with unique ids, some with a coupon the worker does not know."""
    orders = st.lists(
        st.tuples(st.integers(1, 10_000), st.sampled_from([None, "WELCOME", "SPRING"])),
        min_size=1,
        max_size=4,
        unique_by=lambda drawn: drawn[0],
    ).map(
        lambda drawn: [
            order(i, 30) if coupon is None else order(i, 30, coupon=coupon) for i, coupon in drawn
        ]
    )
    flow = dataclasses.replace(
        orders_flow("rabbitmq", rabbitmq_worker(ack_first=True)),
        checks=(checks.no_loss(),),
        messages=orders,
        quiet=0.5,  # an order lost for half a second is lost: keeps shrinking short
    )
    report = await fuzz(
        flow,
        max_examples=10,
        seed=2,
        broker=rabbitmq_broker,
        database=None,
        report_dir=tmp_path,
        shrink_seconds=20,
        reruns=1,
    )
    assert not report.ok, report.summary()
    assert report.minimal is not None
    [lost] = report.minimal.messages
    assert json.loads(lost.value)["coupon"] == "SPRING"
    assert re.search(
        r"lost: input #1 \(id \S+, key 'customer-1', business key '\d+'\)", report.summary()
    )


# --- the how-to's example ----------------------------------------------------------------------

PAGE = Path(__file__).resolve().parents[2] / "docs" / "pages" / "how-to" / "wire-your-service.md"


@pytest.mark.kafka
async def test_the_how_tos_service_that_copies_no_headers_keeps_its_contract(
    flow_check: FlowCheck,
) -> None:
    page = page_namespace(PAGE)
    result = await flow_check(page["events_flow"], page["orders"])
    good, bad, other = (m.harness_id or "" for m in result.messages)
    seen = kinds_per_order(result)
    assert seen[good] == seen[other] == ["end", "order.accepted"]
    assert bad not in seen
    assert seen["side"] == ["order.rejected"]
