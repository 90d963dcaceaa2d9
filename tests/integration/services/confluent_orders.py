"""Orders worker on confluent-kafka: one result per order, bad input to a dead-letter topic.

Deployed as ``python confluent_orders.py``; every setting comes from the
environment (see :class:`Settings`). An order is a JSON object with an
``id``. The worker handles one record at a time: it produces the result
(or the record itself, with the error in a header, to the dead-letter
topic), waits for the broker's acknowledgement, and only then commits the
record's offset, so a crash in between replays the record instead of
losing it. SIGTERM stops it cleanly: it finishes the record in hand and
leaves the group.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

log = logging.getLogger("orders.worker")

BAD_INPUT = (ValueError, KeyError, TypeError)
REQUIRED = ("ORDERS_BOOTSTRAP", "ORDERS_IN", "ORDERS_OUT", "ORDERS_DLQ", "ORDERS_GROUP")


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    input_topic: str
    output_topic: str
    dead_letter_topic: str
    group_id: str
    # A crashed member holds its partitions until its session expires.
    session_timeout_ms: int = 1500

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        missing = [
            name
            for name in (
                "ORDERS_BOOTSTRAP",
                "ORDERS_IN",
                "ORDERS_OUT",
                "ORDERS_DLQ",
                "ORDERS_GROUP",
            )
            if not environ.get(name)
        ]
        if missing:
            raise SystemExit(f"missing settings: {', '.join(missing)}")
        return cls(
            bootstrap_servers=environ["ORDERS_BOOTSTRAP"],
            input_topic=environ["ORDERS_IN"],
            output_topic=environ["ORDERS_OUT"],
            dead_letter_topic=environ["ORDERS_DLQ"],
            group_id=environ["ORDERS_GROUP"],
            session_timeout_ms=int(environ.get("ORDERS_SESSION_TIMEOUT_MS", "1500")),
        )


def result(value: bytes | None) -> bytes:
    """The result for one order; raises ValueError, KeyError or TypeError on bad input."""
    order = json.loads(value or b"")
    return json.dumps({"order": order["id"], "status": "accepted"}).encode()


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a produced record."""


class OrdersWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.running = True
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(settings.session_timeout_ms // 5, 100),
            }
        )
        self.producer = Producer(
            {"bootstrap.servers": settings.bootstrap_servers, "acks": "all", "linger.ms": 0}
        )

    def stop(self, *_: object) -> None:
        log.info("stopping")
        self.running = False

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each partition at its committed offset, or at its beginning.

        Resolved here rather than by auto.offset.reset, so the log says where
        consumption starts, and it starts at once: librdkafka's own reset
        spends about 100 ms on an offset query first.
        """
        committed = consumer.committed(partitions, timeout=10)
        for partition, stored in zip(partitions, committed, strict=True):
            if stored.offset >= 0:
                partition.offset = stored.offset
            else:
                partition.offset, _ = consumer.get_watermark_offsets(partition, timeout=10)
        consumer.assign(partitions)
        log.info(
            "partitions assigned: %s",
            ", ".join(f"{p.topic}[{p.partition}]@{p.offset}" for p in partitions),
        )

    def run(self) -> None:
        self.consumer.subscribe([self.settings.input_topic], on_assign=self.on_assign)
        try:
            while self.running:
                record = self.consumer.poll(0.1)
                if record is not None and self.usable(record):
                    self.handle(record)
        finally:
            self.consumer.close()  # leaves the group at once
            self.producer.flush(5)

    @staticmethod
    def usable(record: Message) -> bool:
        error = record.error()
        if error is None:
            return True
        if error.fatal():
            raise RuntimeError(f"consumer failed: {error}")
        log.warning("consumer: %s", error)
        return False

    def handle(self, record: Message) -> None:
        self.send(record)
        self.consumer.commit(message=record, asynchronous=False)

    def send(self, record: Message) -> None:
        """Produce the record's result (or dead letter) and wait until the broker has it."""
        headers = list(record.headers() or [])
        try:
            topic, value = self.settings.output_topic, result(record.value())
        except BAD_INPUT as error:
            log.info("dead-lettering offset %d: %r", record.offset(), error)
            topic, value = self.settings.dead_letter_topic, record.value()
            headers.append(("x-error", repr(error).encode()))
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                failures.append(error)

        self.producer.produce(
            topic, value, key=record.key(), headers=headers, on_delivery=delivered
        )
        if self.producer.flush(10) or failures:
            raise DeliveryFailed(f"{topic}: {failures or 'not acknowledged within 10 s'}")


def main(worker_class: type[OrdersWorker] = OrdersWorker) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    worker = worker_class(Settings.from_env())
    signal.signal(signal.SIGTERM, worker.stop)
    log.info("consuming %s as %s", worker.settings.input_topic, worker.settings.group_id)
    worker.run()
    log.info("stopped")


if __name__ == "__main__":
    main()
