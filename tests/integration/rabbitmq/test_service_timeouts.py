"""A builtin ``TimeoutError`` out of the service's own code is the service's, not the harness's.

Services bound their own waits (aio-pika's ``queue.get(timeout=...)``, a drain on
shutdown) and let ``TimeoutError`` out. Raised from the service's exit it is a
finding ("raised on stop"), judged with the run; raised from its start, it is
the error it raised, not "did not finish starting within N s". Only the
harness's own bounds running out say that (issue 19: the exit's TimeoutError
was read as the harness's stop bound and ended a campaign with exit 2).
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType

import aio_pika
import aio_pika.abc
import pytest

from message_flow_harness import BrokerInfo, Endpoints, Flow, Kind, Message, ServiceError, checks
from message_flow_harness._runner import run_flow

pytestmark = [pytest.mark.asyncio, pytest.mark.rabbitmq]


class RefundWorker:
    """Refunds payments from its queue; on shutdown waits, bounded, for the refund in hand.

    Its defect: it marks itself busy at the first refund and never idle again,
    so every shutdown after a refund runs out its own drain bound and raises.
    """

    def __init__(self, url: str, requests: str, results: str, *, drain_s: float = 0.3) -> None:
        self.url, self.requests, self.results, self.drain_s = url, requests, results, drain_s
        self._idle = asyncio.Event()
        self._idle.set()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def __aenter__(self) -> RefundWorker:
        self._connection = await aio_pika.connect_robust(self.url)
        self._channel = await self._connection.channel()
        queue = await self._channel.get_queue(self.requests)
        self._tag = await queue.consume(self._refund)
        self._queue = queue
        return self

    async def _refund(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self._idle.clear()
        async with message.process():
            refund = json.loads(message.body)
            body = json.dumps({"payment": refund["payment"], "status": "refunded"}).encode()
            await self._channel.default_exchange.publish(
                aio_pika.Message(body, headers=message.headers), routing_key=self.results
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        try:
            await self._queue.cancel(self._tag)
            async with asyncio.timeout(self.drain_s):  # a deploy must not wait for ever
                await self._idle.wait()
        finally:
            await self._connection.close()


def refunds(endpoints: Endpoints) -> RefundWorker:
    return RefundWorker(str(endpoints.amqp_url), endpoints.input, endpoints.output)


class SlowVault:
    """Starts by fetching its signing key, with its own short bound, from a vault that
    does not answer in time."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints

    async def __aenter__(self) -> SlowVault:
        async with asyncio.timeout(0.1):
            await asyncio.sleep(5)  # the vault's answer
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


REFUND = Message(value=json.dumps({"payment": "p-1", "cents": 1200}).encode())


async def test_a_timeout_error_out_of_the_service_exit_is_a_finding(
    rabbitmq_broker: BrokerInfo,
) -> None:
    flow = Flow(sut=refunds, broker="rabbitmq", checks=[checks.no_loss()], quiet=0.5)
    result = await run_flow(flow, [REFUND], broker=rabbitmq_broker)
    assert [v.check for v in result.failures()] == ["service stopped cleanly"], result.report()
    [anomaly] = result.failures()[0].anomalies
    assert anomaly.kind == "raised-on-stop"
    assert "sut0 raised on stop: TimeoutError()" in anomaly.text
    notes = [e.detail for e in result.history.of(Kind.NOTE) if e.lane == "sut0"]
    assert notes[-2:] == ["raised on stop: TimeoutError()", "stopped"]


async def test_a_timeout_error_out_of_the_service_start_is_what_it_raised(
    rabbitmq_broker: BrokerInfo,
) -> None:
    flow = Flow(sut=SlowVault, broker="rabbitmq", start_timeout=30.0)
    with pytest.raises(ServiceError, match=r"raised on start: TimeoutError\(\)") as raised:
        await run_flow(flow, [REFUND], broker=rabbitmq_broker)
    assert "within 30 s" not in str(raised.value)
