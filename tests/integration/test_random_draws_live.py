"""A service's random draws come out the same in every run of a schedule.

A worker that jitters its retries or simulates a slow database with
``random`` fails a schedule only with the draws it made then; a re-run or the
pasted reproduction test must make the same ones, or the failure it shows
repeats 3 times in 5. Each run starts ``random`` in one state and gives the
caller's state back afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from message_flow_harness import Endpoints, Flow, Message, checks
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._runner import run
from message_flow_harness.schedule import Publish

pytestmark = [pytest.mark.asyncio, pytest.mark.rabbitmq]


@dataclass
class JitteredWorker:
    """Waits a random 'database' delay per delivery, then answers; notes each delay."""

    delays: list[float] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def __call__(self, endpoints: Endpoints) -> AsyncIterator[None]:
        assert endpoints.amqp_url is not None
        connection = await aio_pika.connect(endpoints.amqp_url)
        channel = await connection.channel()

        async def on_delivery(message: AbstractIncomingMessage) -> None:
            delay = random.uniform(0.0, 0.01)
            self.delays.append(delay)
            await asyncio.sleep(delay)
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, headers=dict(message.headers)),
                routing_key=endpoints.output,
            )
            await message.ack()

        queue = await channel.get_queue(endpoints.input)
        await queue.consume(on_delivery)
        try:
            yield
        finally:
            await connection.close()


SCHEDULE = [Publish(Message(value, key=b"a")) for value in (b"1", b"2", b"3")]


async def test_two_runs_of_a_schedule_draw_the_same_numbers(rabbitmq_broker: BrokerInfo) -> None:
    random.seed(12345)
    outside = random.getstate()
    draws = []
    for _ in range(2):
        worker = JitteredWorker()
        flow = Flow(sut=worker, broker="rabbitmq", checks=[checks.no_loss()], quiet=0.5)
        result = await run(flow, SCHEDULE, broker=rabbitmq_broker)
        assert result.ok, result.headline()
        draws.append(worker.delays)
    assert len(draws[0]) == 3
    assert draws[0] == draws[1]
    # The caller's generator goes on where it was: the runs borrowed it.
    assert random.getstate() == outside
