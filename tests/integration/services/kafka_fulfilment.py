"""A fulfilment worker as Kafka services are written: fixed topic names in its settings.

It reads ``orders`` and ``payments`` (JSON, keyed by order id), answers an
order with a shipment on ``shipments`` and an invoice on ``invoices``
(fan-out across topics), a payment with a receipt on ``invoices``, and sends
what it cannot read to its dead-letter topic with the error in a header. It
commits each record's offset once its answers are sent (at-least-once).
Settings come from environment variables, read when the worker starts; the
topic names default to the ones it is deployed with.

``commit_payments_first`` is the defect: the payments handler commits the
record before writing its ledger entry and sending the receipt, so a crash
in between loses the payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

BAD_RECORD = (ValueError, KeyError, TypeError, UnicodeDecodeError)


@dataclass(frozen=True)
class FulfilmentSettings:
    bootstrap_servers: str
    group_id: str
    orders_topic: str
    payments_topic: str
    shipments_topic: str
    invoices_topic: str
    dead_letter_topic: str
    ledger_write_ms: int

    @classmethod
    def from_env(cls) -> FulfilmentSettings:
        env = os.environ
        return cls(
            bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            group_id=env.get("FULFILMENT_GROUP", "fulfilment"),
            orders_topic=env.get("ORDERS_TOPIC", "orders"),
            payments_topic=env.get("PAYMENTS_TOPIC", "payments"),
            shipments_topic=env.get("SHIPMENTS_TOPIC", "shipments"),
            invoices_topic=env.get("INVOICES_TOPIC", "invoices"),
            dead_letter_topic=env.get("DEAD_LETTER_TOPIC", "fulfilment.dlq"),
            ledger_write_ms=int(env.get("LEDGER_WRITE_MS", "5")),
        )


class FulfilmentWorker:
    """Consumes orders and payments; ships, invoices and dead-letters."""

    def __init__(self, settings: FulfilmentSettings, *, commit_payments_first: bool = False):
        self.settings, self.commit_payments_first = settings, commit_payments_first
        self.ledger: dict[str, str] = {}
        self.consumer = AIOKafkaConsumer(
            settings.orders_topic,
            settings.payments_topic,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=1000,
            heartbeat_interval_ms=300,
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FulfilmentWorker:
        await self.producer.start()
        try:
            await self.consumer.start()
        except BaseException:
            await self.producer.stop()
            raise
        self._task = asyncio.create_task(self._poll(), name="fulfilment poll loop")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()
        await self.producer.stop()

    async def _poll(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=50)
            for records in batches.values():
                for record in records:
                    await self._handle(record)

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        settings = self.settings
        try:
            body = json.loads(record.value or b"")
            order_id = str(body["order_id"])
            if record.topic == settings.orders_topic:
                answers = self._order_answers(order_id, int(body["items"]))
            else:
                answers = await self._payment_answers(record, order_id, str(body["amount"]))
        except BAD_RECORD as error:
            await self.producer.send_and_wait(
                settings.dead_letter_topic,
                record.value,
                key=record.key,
                headers=[*record.headers, ("x-error", repr(error).encode())],
            )
            await self._commit(record)
            return
        for topic, answer in answers:
            await self.producer.send_and_wait(topic, json.dumps(answer).encode(), key=record.key)
        if not (record.topic == settings.payments_topic and self.commit_payments_first):
            await self._commit(record)

    def _order_answers(self, order_id: str, items: int) -> list[tuple[str, dict[str, object]]]:
        if items < 1:
            raise ValueError(f"order {order_id} has {items} items")
        shipment = {"order_id": order_id, "parcels": items}
        invoice = {"order_id": order_id, "kind": "invoice", "lines": items}
        return [(self.settings.shipments_topic, shipment), (self.settings.invoices_topic, invoice)]

    async def _payment_answers(
        self, record: ConsumerRecord[bytes, bytes], order_id: str, amount: str
    ) -> list[tuple[str, dict[str, object]]]:
        if float(amount) <= 0:
            raise ValueError(f"payment of {amount} for order {order_id}")
        if self.commit_payments_first:
            await self._commit(record)
        await asyncio.sleep(self.settings.ledger_write_ms / 1000)  # the ledger's database
        self.ledger[order_id] = amount
        receipt = {"order_id": order_id, "kind": "receipt", "amount": amount}
        return [(self.settings.invoices_topic, receipt)]

    async def _commit(self, record: ConsumerRecord[bytes, bytes]) -> None:
        partition = TopicPartition(record.topic, record.partition)
        await self.consumer.commit({partition: record.offset + 1})
