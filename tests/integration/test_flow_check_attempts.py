"""``flow_check(..., attempts=N)``: a race that fails in some runs only still fails the test.

The reproduction a campaign prints carries ``attempts`` when its re-runs did
not all fail; the test must fail at the first failing attempt, and pass only
when every attempt held.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from message_flow_harness import Endpoints, Flow, InvalidArgument, Message, checks
from message_flow_harness.pytest_plugin import FlowCheck

pytestmark = [pytest.mark.asyncio, pytest.mark.rabbitmq]

INPUTS = [Message(b"order-1", key=b"a"), Message(b"order-2", key=b"a")]


@dataclass
class SometimesLossyWorker:
    """Forwards every delivery, except in its ``lossy_run``-th run, where it drops the first."""

    lossy_run: int | None
    runs: int = 0

    @contextlib.asynccontextmanager
    async def __call__(self, endpoints: Endpoints) -> AsyncIterator[None]:
        self.runs += 1
        lossy = self.runs == self.lossy_run
        assert endpoints.amqp_url is not None
        connection = await aio_pika.connect(endpoints.amqp_url)
        channel = await connection.channel()
        dropped: list[bytes] = []

        async def on_delivery(message: AbstractIncomingMessage) -> None:
            if lossy and not dropped:
                dropped.append(message.body)  # acked, never answered: the race's loss
            else:
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


def _flow(worker: SometimesLossyWorker) -> Flow:
    return Flow(sut=worker, broker="rabbitmq", checks=[checks.no_loss()], quiet=0.5)


async def test_the_test_fails_at_the_first_failing_attempt(flow_check: FlowCheck) -> None:
    worker = SometimesLossyWorker(lossy_run=2)
    with pytest.raises(pytest.fail.Exception) as failed:
        await flow_check(_flow(worker), INPUTS, attempts=4)
    assert worker.runs == 2  # stopped there: the failure is the finding
    assert "lost" in str(failed.value)
    assert "(attempt 2 of 4)" in str(failed.value)


async def test_every_attempt_must_hold(flow_check: FlowCheck) -> None:
    worker = SometimesLossyWorker(lossy_run=None)
    result = await flow_check(_flow(worker), INPUTS, attempts=3)
    assert worker.runs == 3
    assert result.ok


async def test_attempts_must_be_a_count(flow_check: FlowCheck) -> None:
    worker = SometimesLossyWorker(lossy_run=None)
    with pytest.raises(InvalidArgument, match=r"attempts=0 is invalid: give a count >= 1"):
        await flow_check(_flow(worker), INPUTS, attempts=0)
    assert worker.runs == 0
