"""A lost input comes with its likely cause, as services in the field lose them.

Two stock workers that lose an update whose body is not the JSON object they
expect: one handles each delivery in a task of its own, which dies; the other
catches the error, logs it and acks. Either way the verdict says "lost", and
its note says why: the task's error at the service's line, or the error the
service logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from message_flow_harness import Endpoints, Flow, Message, checks
from message_flow_harness.pytest_plugin import FlowCheck

pytestmark = [pytest.mark.asyncio, pytest.mark.rabbitmq]

log = logging.getLogger("stock.worker")
UPDATES = [Message(b'{"sku": "A-1", "delta": -2}', key=b"A-1"), Message(b"[1, 2]", key=b"A-1")]

Handler = Callable[[AbstractChannel, Endpoints, AbstractIncomingMessage], Awaitable[None]]


async def _apply(
    channel: AbstractChannel, endpoints: Endpoints, body: bytes, headers: dict[str, Any]
) -> None:
    update = json.loads(body)
    stock = {"sku": update["sku"], "applied": update["delta"]}  # a list has no "sku"
    await channel.default_exchange.publish(
        aio_pika.Message(json.dumps(stock).encode(), headers=headers),
        routing_key=endpoints.output,
    )


async def _in_a_task_each(
    channel: AbstractChannel, endpoints: Endpoints, message: AbstractIncomingMessage
) -> None:
    async def handle() -> None:
        await message.ack()  # acked on receipt: the task's death loses the update
        await _apply(channel, endpoints, message.body, dict(message.headers))

    asyncio.create_task(handle())  # noqa: RUF006 (fire and forget, as the worker means)


async def _logs_and_moves_on(
    channel: AbstractChannel, endpoints: Endpoints, message: AbstractIncomingMessage
) -> None:
    try:
        await _apply(channel, endpoints, message.body, dict(message.headers))
    except (ValueError, TypeError, KeyError):
        log.exception("cannot apply stock update %r", message.body)
    await message.ack()


Service = Callable[[Endpoints], contextlib.AbstractAsyncContextManager[None]]


def _worker(handler: Handler) -> Service:
    @contextlib.asynccontextmanager
    async def worker(endpoints: Endpoints) -> AsyncIterator[None]:
        assert endpoints.amqp_url is not None
        connection = await aio_pika.connect(endpoints.amqp_url)
        channel = await connection.channel()
        queue = await channel.get_queue(endpoints.input)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await handler(channel, endpoints, message)

        await queue.consume(on_message)
        try:
            yield
        finally:
            await connection.close()

    return worker


async def _lost_with_notes(flow_check: FlowCheck, handler: Handler) -> tuple[str, ...]:
    flow = Flow(sut=_worker(handler), broker="rabbitmq", checks=[checks.no_loss()], quiet=0.5)
    result = await flow_check.run(flow, UPDATES)
    [verdict] = result.verdicts
    assert [a.kind for a in verdict.anomalies] == ["lost"], result.report()
    return verdict.notes


async def test_a_per_message_task_that_dies_is_named_with_its_line(flow_check: FlowCheck) -> None:
    [note] = await _lost_with_notes(flow_check, _in_a_task_each)
    assert note.startswith("1 task the service spawned while running died")
    assert "TypeError: list indices must be integers or slices, not str" in note
    assert "test_lost_input_causes.py:" in note


async def test_an_error_the_service_logged_is_named(flow_check: FlowCheck) -> None:
    [note] = await _lost_with_notes(flow_check, _logs_and_moves_on)
    assert note == (
        "the service logged 1 error while running: stock.worker: cannot apply stock update"
        " b'[1, 2]' [TypeError: list indices must be integers or slices, not str]"
    )
