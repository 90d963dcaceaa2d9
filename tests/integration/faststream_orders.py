"""Order confirmations as a FastStream app, written the way FastStream projects write them.

Settings come from the environment; the app is built by a factory so that
``faststream run faststream_orders:app_from_env --factory`` and an in-process
test build the same thing. Confirmations are new JSON records that carry the
order id, not the input's headers; a bad order goes to a rejected topic as it
came, headers and all, with the reason in an ``error`` header. The consumer
commits after its handler returns (``AckPolicy.ACK``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import BaseModel


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    orders_topic: str = "orders"
    confirmations_topic: str = "order-confirmations"
    rejected_topic: str = "orders-rejected"
    group_id: str = "order-confirmer"
    offset_reset: str = "earliest"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            orders_topic=env.get("ORDERS_TOPIC", cls.orders_topic),
            confirmations_topic=env.get("CONFIRMATIONS_TOPIC", cls.confirmations_topic),
            rejected_topic=env.get("REJECTED_TOPIC", cls.rejected_topic),
            group_id=env.get("ORDERS_GROUP", cls.group_id),
            offset_reset=env.get("ORDERS_OFFSET_RESET", cls.offset_reset),
        )


def create_app(settings: Settings, ack_policy: AckPolicy = AckPolicy.ACK) -> FastStream:
    broker = KafkaBroker(settings.bootstrap_servers)
    confirmations = broker.publisher(settings.confirmations_topic)
    rejected = broker.publisher(settings.rejected_topic)

    @broker.subscriber(
        settings.orders_topic,
        group_id=settings.group_id,
        auto_offset_reset=settings.offset_reset,  # type: ignore[arg-type]
        ack_policy=ack_policy,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    async def confirm(message: KafkaMessage) -> None:  # the raw record: bad JSON is ours to handle
        body = message.body
        try:
            order = json.loads(body)
            total = order["quantity"] * order["price"]
        except (ValueError, KeyError, TypeError) as error:
            headers = {**message.headers, "error": str(error)}
            await rejected.publish(body, key=message.raw_message.key, headers=headers)
            return
        confirmation = {"order_id": order["id"], "total": total}
        await confirmations.publish(json.dumps(confirmation).encode(), key=message.raw_message.key)

    return FastStream(broker)


class Order(BaseModel):
    id: int
    quantity: int
    price: int


def create_typed_app(settings: Settings) -> FastStream:
    """The same service in FastStream's favourite style: the body parsed into a model.

    A body that does not parse never reaches the handler, so nothing here
    rejects it: FastStream logs the ValidationError and, under AckPolicy.ACK,
    commits the record all the same.
    """
    broker = KafkaBroker(settings.bootstrap_servers)
    confirmations = broker.publisher(settings.confirmations_topic)

    @broker.subscriber(
        settings.orders_topic,
        group_id=settings.group_id,
        auto_offset_reset=settings.offset_reset,  # type: ignore[arg-type]
        ack_policy=AckPolicy.ACK,
    )
    async def confirm(order: Order, message: KafkaMessage) -> None:
        confirmation = {"order_id": order.id, "total": order.quantity * order.price}
        await confirmations.publish(json.dumps(confirmation).encode(), key=message.raw_message.key)

    return FastStream(broker)


def app_from_env() -> FastStream:
    return create_app(Settings.from_env())
