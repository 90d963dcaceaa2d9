"""A RabbitMQ service that declares its own topology runs as it is, in a vhost of its own.

The payment worker below is written as such workers are: aio-pika, settings
from environment variables, its own topic exchange ``payments``, a request
queue with ``x-dead-letter-exchange`` arguments, a TTL retry queue that
dead-letters back into the exchange, results published by routing key, a
SQLite ledger. The harness renames nothing: ``Flow(topology=...)`` gives each
run a virtual host, says where inputs go and where outputs and dead letters
are observed, and deletes the vhost (and all the worker declared) after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any

import aio_pika
import aio_pika.abc
import pytest
from hypothesis import strategies as st

from message_flow_harness import (
    BrokerInfo,
    BrokerUnavailable,
    DestinationError,
    Endpoints,
    Flow,
    InvalidArgument,
    Message,
    Topology,
    by_json_field,
    checks,
    eventually,
    fuzz,
)
from message_flow_harness._fuzz import Example
from message_flow_harness._history import Kind
from message_flow_harness._isolation import Isolation
from message_flow_harness.brokers._local import free_port
from message_flow_harness.brokers.rabbitmq import RabbitAdapter
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.schedule import BrokerRestart, Crash
from tests.doc_pages import page_namespace

pytestmark = [pytest.mark.asyncio, pytest.mark.rabbitmq]

BAD_REQUEST = (ValueError, KeyError, TypeError, InvalidOperation)
PAGE = Path(__file__).resolve().parents[3] / "docs" / "pages" / "how-to" / "wire-your-service.md"


# --- the service, as deployed -----------------------------------------------------------


@dataclass(frozen=True)
class PaymentSettings:
    amqp_url: str
    max_retries: int
    retry_delay_ms: int

    @classmethod
    def from_env(cls) -> PaymentSettings:
        return cls(
            amqp_url=os.environ["PAYMENTS_AMQP_URL"],
            max_retries=int(os.environ.get("PAYMENTS_MAX_RETRIES", "3")),
            retry_delay_ms=int(os.environ.get("PAYMENTS_RETRY_DELAY_MS", "50")),
        )


class Ledger:
    """Every charge, in SQLite (a file in production; in memory here)."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute("CREATE TABLE charges (payment_id TEXT, amount TEXT)")
        # One connection, writes from worker threads: one transaction at a time. (Without
        # it, two requests handled at once failed "cannot start a transaction within a
        # transaction": the crash campaign below found it.)
        self._writing = threading.Lock()

    async def record(self, payment_id: str, amount: Decimal) -> None:
        await asyncio.to_thread(self._insert, payment_id, str(amount))

    def _insert(self, payment_id: str, amount: str) -> None:
        with self._writing, self._db:
            self._db.execute("INSERT INTO charges VALUES (?, ?)", (payment_id, amount))


class PaymentWorker:
    """Charges payment requests; a busy gateway is retried through a TTL queue.

    ``ack_first`` is the defect: acknowledging a request before charging and
    publishing the result, so a crash in between loses the payment.
    """

    def __init__(self, settings: PaymentSettings, *, ack_first: bool = False) -> None:
        self.settings, self.ack_first = settings, ack_first
        self.ledger = Ledger()

    async def __aenter__(self) -> PaymentWorker:
        self.connection = await aio_pika.connect_robust(self.settings.amqp_url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=10)
        self.channel = channel
        self.exchange = await channel.declare_exchange(
            "payments", aio_pika.ExchangeType.TOPIC, durable=True
        )
        dead_letters = await channel.declare_exchange(
            "payments.dlx", aio_pika.ExchangeType.TOPIC, durable=True
        )
        dead = await channel.declare_queue("payments.dead", durable=True)
        await dead.bind(dead_letters, routing_key="#")
        await channel.declare_queue(
            "payments.retry",
            durable=True,
            arguments={
                "x-message-ttl": self.settings.retry_delay_ms,
                "x-dead-letter-exchange": "payments",
                "x-dead-letter-routing-key": "payment.requested",
            },
        )
        requests = await channel.declare_queue(
            "payments.requests", durable=True, arguments={"x-dead-letter-exchange": "payments.dlx"}
        )
        await requests.bind(self.exchange, routing_key="payment.requested")
        self.requests = requests
        self.consumer_tag = await requests.consume(self.on_request)
        return self

    async def on_request(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            request = json.loads(message.body)
            payment_id = str(request["payment_id"])
            amount = Decimal(str(request["amount"]))
            if amount <= 0:
                raise ValueError(f"amount {amount} is not positive")
        except BAD_REQUEST:
            await message.reject(requeue=False)  # the broker dead-letters it to payments.dlx
            return
        attempts = int(str(message.headers.get("x-attempts", 0)))
        if attempts < int(request.get("gateway_busy_for", 0)):  # the gateway says "try later"
            if attempts >= self.settings.max_retries:
                await message.reject(requeue=False)
                return
            retry = aio_pika.Message(
                message.body,
                headers={**message.headers, "x-attempts": attempts + 1},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await self.channel.default_exchange.publish(retry, routing_key="payments.retry")
            await message.ack()
            return
        if self.ack_first:
            await message.ack()
        await self.ledger.record(payment_id, amount)
        result = {"payment_id": payment_id, "status": "completed", "amount": str(amount)}
        await self.exchange.publish(
            aio_pika.Message(
                json.dumps(result).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="payment.completed",
        )
        if not self.ack_first:
            await message.ack()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.requests.cancel(self.consumer_tag)
        await self.connection.close()


# --- the glue: the flow -----------------------------------------------------------------

PAYMENTS = Topology(
    input="payments.requests",
    publish=("payments", "payment.requested"),
    output=("payments", "payment.completed"),
    dead_letter=("payments.dlx", "#"),
)
ENV = {"PAYMENTS_AMQP_URL": "{amqp_url}", "PAYMENTS_RETRY_DELAY_MS": "30"}


def payment_worker(endpoints: Endpoints) -> PaymentWorker:
    return PaymentWorker(PaymentSettings.from_env())


def payment_worker_acking_first(endpoints: Endpoints) -> PaymentWorker:
    return PaymentWorker(PaymentSettings.from_env(), ack_first=True)


def is_bad(message: Message) -> bool:
    try:
        return Decimal(str(json.loads(message.value)["amount"])) <= 0
    except BAD_REQUEST:
        return True


def request(payment_id: int, amount: object, *, busy_for: int = 0) -> Message:
    body = {"payment_id": f"pay-{payment_id}", "amount": amount, "gateway_busy_for": busy_for}
    return Message(json.dumps(body).encode())


requests = st.lists(
    st.tuples(st.sampled_from(["12.50", "3", "0", "-1"]), st.integers(0, 2)), max_size=8
).map(lambda items: [request(i, amount, busy_for=b) for i, (amount, b) in enumerate(items)])


def payments_flow(sut: object = payment_worker, **options: object) -> Flow:
    return Flow(
        sut=sut,  # type: ignore[arg-type]
        broker="rabbitmq",
        topology=PAYMENTS,
        env=ENV,
        correlate=by_json_field("payment_id"),
        messages=requests,
        **options,  # type: ignore[arg-type]
    )


async def leftovers(adapter: RabbitAdapter) -> tuple[list[str], list[str]]:
    """Run vhosts still on the broker, and payment queues on its default vhost."""
    return await adapter.list_vhosts("h-"), await adapter.list_destinations("payments")


# --- the tests ---------------------------------------------------------------------------


async def test_the_payment_worker_keeps_its_contract_in_a_vhost_of_its_own(
    flow_check: FlowCheck, adapter: RabbitAdapter
) -> None:
    flow = payments_flow(
        checks=[
            checks.no_loss(),
            checks.no_duplicates(),
            checks.no_unexpected(),
            checks.dead_lettered(when=is_bad),
        ]
    )
    messages = [
        request(1, "12.50"),
        request(2, "-1"),  # refused: dead-lettered by the broker through payments.dlx
        request(3, "7", busy_for=2),  # two trips through the TTL retry queue
        Message(b"not json"),
        request(4, "3"),
    ]
    # Twice: the second run declares the same names again, in a vhost of its own.
    for _ in range(2):
        result = await flow_check(flow, messages)
        assert result.endpoints.input == "payments.requests"
        assert (result.endpoints.output, result.endpoints.dead_letter) == (
            "payments",
            "payments.dlx",
        )
        assert str(result.endpoints.amqp_url).rsplit("/", 1)[-1].startswith("h-")  # its vhost
        outputs = [e for e in result.history.events if e.kind.name == "OUTPUT"]
        dead = [e for e in result.history.events if e.kind.name == "DEAD_LETTERED"]
        assert len(outputs) == 3, result.report()
        assert len(dead) == 2, result.report()
        # The retried payment was delivered three times (the firehose sees deliveries).
        delivered = [e for e in result.history.events if e.kind.name == "DELIVERED"]
        assert len(delivered) >= 7, result.report()
    assert await leftovers(adapter) == ([], [])


async def test_a_crash_campaign_finds_the_worker_that_acks_before_charging(
    rabbitmq_broker: BrokerInfo, adapter: RabbitAdapter, tmp_path: Path
) -> None:
    flow = payments_flow(payment_worker_acking_first, checks=[checks.no_loss()], quiet=1.0)
    report = await fuzz(
        flow, max_examples=60, seed=2, faults=["crash"], broker=rabbitmq_broker,
        database=None, report_dir=tmp_path, shrink_seconds=30,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert report.minimal is not None
    assert any(isinstance(step, Crash) for step in report.minimal.schedule)
    assert "lost" in report.summary()
    assert await leftovers(adapter) == ([], [])


async def test_the_correct_worker_passes_the_same_crash_campaign(
    rabbitmq_broker: BrokerInfo, adapter: RabbitAdapter, tmp_path: Path
) -> None:
    flow = payments_flow(checks=[checks.no_loss()], quiet=1.0)
    examples: list[Example] = []
    report = await fuzz(
        flow, max_examples=25, seed=2, faults=["crash"], broker=rabbitmq_broker,
        database=None, report_dir=tmp_path, progress=examples.append,
    )  # fmt: skip
    assert report.ok, report.summary()
    crashed = [e for e in examples if any(isinstance(step, Crash) for step in e.schedule)]
    assert len(crashed) >= 5, [e.schedule for e in examples]
    assert await leftovers(adapter) == ([], [])


async def test_an_exchange_the_service_never_declares_is_named_with_the_fix(
    flow_check: FlowCheck, adapter: RabbitAdapter
) -> None:
    typo = Topology(
        input="payments.requests",
        output=("payment", "payment.completed"),  # the worker's exchange is "payments"
        dead_letter=("payments.dlx", "#"),
    )
    flow = Flow(sut=payment_worker, broker="rabbitmq", topology=typo, env=ENV)
    with pytest.raises(DestinationError, match=r"exchange 'payment' does not exist"):
        await flow_check.run(flow, [request(1, "5")])
    assert await leftovers(adapter) == ([], [])


async def test_the_pages_payment_worker_runs_in_a_vhost_of_its_own(
    flow_check: FlowCheck, adapter: RabbitAdapter
) -> None:
    flow = page_namespace(PAGE)["payments_flow"]
    result = await flow_check(flow, [request(1, "5"), Message(b"{}"), request(2, "8")])
    outputs = [e for e in result.history.events if e.kind.name == "OUTPUT"]
    dead = [e for e in result.history.events if e.kind.name == "DEAD_LETTERED"]
    assert (len(outputs), len(dead)) == (2, 1), result.report()
    assert await leftovers(adapter) == ([], [])


async def test_a_campaign_hands_the_next_run_an_empty_vhost(adapter: RabbitAdapter) -> None:
    """Ahead, a finished run's vhost is emptied and reused: nothing of the last run is in it."""
    seen: list[tuple[str, list[str]]] = []
    async with Isolation(adapter, 1, ahead=1) as isolation:
        for _ in range(3):
            fresh = await isolation.take(PAYMENTS)
            url = str(fresh.endpoints.amqp_url)
            assert fresh.adapter is not None
            queues = await fresh.adapter.list_destinations()
            seen.append((url, [q for q in queues if not q.startswith("amq.")]))  # not the taps'
            connection = await aio_pika.connect(url)  # what a service leaves behind
            async with connection:
                channel = await connection.channel()
                exchange = await channel.declare_exchange("payments", aio_pika.ExchangeType.TOPIC)
                queue = await channel.declare_queue("payments.requests", durable=True)
                await queue.bind(exchange, "payment.requested")
                await exchange.publish(aio_pika.Message(b"{}"), routing_key="payment.requested")
            await isolation.give_back(fresh.endpoints)
            await asyncio.gather(*isolation._behind)  # the emptying, behind: done before the next
    assert [queues for _, queues in seen] == [[], [], []]
    assert len({url for url, _ in seen}) == 2, "the first run's vhost is the third run's"
    assert await leftovers(adapter) == ([], [])


async def test_a_reused_vhost_keeps_its_binding_tap_and_drops_what_the_last_run_left(
    adapter: RabbitAdapter,
) -> None:
    """The tap's queue serves the vhost's next run, bound again to the service's new
    exchange; a message that reached it after its run ended reaches no later run."""
    heard: list[list[bytes]] = []
    taps: list[tuple[str, int]] = []
    async with Isolation(adapter, 1, ahead=1) as isolation:
        for run in range(3):
            fresh = await isolation.take(PAYMENTS)
            space = fresh.adapter
            assert isinstance(space, RabbitAdapter)
            got: list[bytes] = []
            tap = space.tap_binding(
                "payments",
                "payment.completed",
                lambda record, into=got: into.append(record.message.value),
            )
            connection = await aio_pika.connect(str(fresh.endpoints.amqp_url))
            async with connection:
                channel = await connection.channel()
                exchange = await channel.declare_exchange("payments", aio_pika.ExchangeType.TOPIC)
                async with tap:
                    await tap.bind()
                    taps.append((str(fresh.endpoints.amqp_url), id(tap._queue)))
                    done = aio_pika.Message(f"run {run}".encode())
                    await exchange.publish(done, routing_key="payment.completed")
                    await eventually(lambda seen=got: bool(seen), within=5)
                late = aio_pika.Message(b"after the run")  # the service still publishing
                await exchange.publish(late, routing_key="payment.completed")
            heard.append(got)
            await isolation.give_back(fresh.endpoints)
            await asyncio.gather(*isolation._behind)  # the emptying, behind: done before the next
    assert heard == [[b"run 0"], [b"run 1"], [b"run 2"]]
    assert taps[0] == taps[2], "the first run's vhost and tap queue are the third run's"
    assert taps[0] != taps[1]
    assert await leftovers(adapter) == ([], [])


async def test_a_management_api_that_does_not_answer_is_named_with_the_fix(
    flow_check: FlowCheck, adapter: RabbitAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setenv("HARNESS_RABBITMQ_MANAGEMENT_URL", f"http://127.0.0.1:{free_port()}/")
        with pytest.raises(BrokerUnavailable) as raised:
            await flow_check.run(payments_flow(), [request(1, "5")])
    text = str(raised.value)
    assert "could not create the run's virtual host" in text
    assert "does not answer" in text
    assert "rabbitmq-plugins enable rabbitmq_management" in text
    assert await leftovers(adapter) == ([], [])


async def test_a_broker_restart_is_refused_with_a_topology(
    flow_check: FlowCheck, adapter: RabbitAdapter
) -> None:
    with pytest.raises(InvalidArgument, match=r"drop 'broker_restart'"):
        await flow_check.run(payments_flow(), [request(1, "5"), BrokerRestart()])
    assert await leftovers(adapter) == ([], [])


# --- several inputs and outputs: one mechanism with Kafka's ------------------------------


@contextlib.asynccontextmanager
async def shop_worker(endpoints: Endpoints) -> AsyncIterator[None]:
    """Consumes orders and refunds from two queues; answers each on its own routing key."""
    connection = await aio_pika.connect_robust(os.environ["SHOP_AMQP_URL"])
    channel = await connection.channel()
    shop = await channel.declare_exchange("shop", aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange("shop.dlx", aio_pika.ExchangeType.TOPIC, durable=True)
    arguments: dict[str, aio_pika.abc.FieldValue] = {"x-dead-letter-exchange": "shop.dlx"}
    tags = []

    def answering(routing_key: str) -> Callable[[aio_pika.abc.AbstractIncomingMessage], Any]:
        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            try:
                request_id = json.loads(message.body)["id"]
            except BAD_REQUEST:
                await message.reject(requeue=False)  # to shop.dlx
                return
            answer = json.dumps({"id": request_id, "status": "done"}).encode()
            await shop.publish(aio_pika.Message(answer), routing_key=routing_key)
            await message.ack()

        return on_message

    queues = []
    for queue_name, answer_key in (("shop.orders", "order.done"), ("shop.refunds", "refund.done")):
        queue = await channel.declare_queue(queue_name, durable=True, arguments=arguments)
        queues.append(queue)
        tags.append(await queue.consume(answering(answer_key)))
    try:
        yield
    finally:
        for queue, tag in zip(queues, tags, strict=True):
            await queue.cancel(tag)
        await connection.close()


SHOP = Topology(
    input=["shop.orders", "shop.refunds"],
    output=[("shop", "order.done"), ("shop", "refund.done")],
    dead_letter=("shop.dlx", "#"),
)


async def test_several_input_queues_and_output_routes_each_judged(
    flow_check: FlowCheck, adapter: RabbitAdapter
) -> None:
    flow = Flow(
        sut=shop_worker,
        broker="rabbitmq",
        topology=SHOP,
        env={"SHOP_AMQP_URL": "{amqp_url}"},
        correlate=by_json_field("id"),
        checks=[checks.no_loss(), checks.no_duplicates(), checks.per_key_order()],
    )
    messages = [
        Message(b'{"id": "o-1"}', key=b"k"),
        Message(b'{"id": "r-1"}', key=b"k", to="shop.refunds"),
        Message(b"not json", to="shop.refunds"),
        Message(b'{"id": "o-2"}', key=b"k", to="shop.orders"),
    ]
    result = await flow_check(flow, messages)
    assert result.endpoints.names["shop.refunds"] == "shop.refunds"  # its own, in its vhost
    published = sorted(str(e.destination) for e in result.history.of(Kind.PUBLISHED))
    assert published == ["shop.orders", "shop.orders", "shop.refunds", "shop.refunds"]
    kinds = sorted(str(e.detail) for e in result.history.of(Kind.OUTPUT))
    assert kinds == ["shop:order.done", "shop:order.done", "shop:refund.done"], result.report()
    assert len(result.history.of(Kind.DEAD_LETTERED)) == 1, result.report()
    assert await leftovers(adapter) == ([], [])
