"""The orders worker, "optimised" to commit each record as it arrives, before its result.

A crash after the commit and before the result has reached the broker
loses the order: the restarted worker resumes after the committed offset.
"""

from __future__ import annotations

from confluent_kafka import Message
from confluent_orders import OrdersWorker, main


class HastyOrdersWorker(OrdersWorker):
    def handle(self, record: Message) -> None:
        self.consumer.commit(message=record, asynchronous=False)
        self.send(record)


if __name__ == "__main__":
    main(HastyOrdersWorker)
