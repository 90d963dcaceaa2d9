"""Whether a Kafka broker the harness started is ready: a real round trip, retried.

:func:`await_round_trip` creates a scratch topic, publishes a record, sees it
through a tap and deletes the topic, through a :class:`KafkaAdapter
<brokers.kafka._adapter.KafkaAdapter>`, until that works or the time is up;
:func:`await_connect` retries just connecting (for the SASL_SSL listener).
Both the local recipe and the container wait on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from message_flow_harness._broker import BrokerInfo, DestinationSpec
from message_flow_harness._errors import BrokerStartError, BrokerUnavailable, HarnessError
from message_flow_harness._message import Message
from message_flow_harness.brokers.kafka._adapter import KafkaAdapter
from message_flow_harness.brokers.kafka._errors import describe


async def await_connect(info: BrokerInfo, *, within: float) -> None:
    """Open an adapter (metadata through every client) until it works or ``within`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            async with KafkaAdapter(info, timeout=max(1.0, min(10.0, deadline - loop.time()))):
                return
        except BrokerUnavailable as err:
            if loop.time() >= deadline:
                raise BrokerStartError(
                    f"Kafka's SASL_SSL listener at {info.url} did not accept a connection"
                    f" within {within:g} s: {err}"
                ) from err
        await asyncio.sleep(0.2)


async def await_round_trip(info: BrokerInfo, *, within: float) -> None:
    """Retry :func:`_round_trip` until it works; BrokerStartError once ``within`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: BaseException | None = None
    while (remaining := deadline - loop.time()) > 0:
        try:
            async with asyncio.timeout(remaining):
                # Until the port opens, a cheap connect says "not yet" without
                # aiokafka logging an error for every attempt.
                await _port_open(info.url)
                await _round_trip(info, within=min(remaining, 10.0))
            return
        except (HarnessError, TimeoutError, OSError) as err:
            last = err
        await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
    raise BrokerStartError(
        f"Kafka at {info.url} did not complete a produce-and-consume round trip within "
        f"{within:g} s; last error: {describe(last) if last else 'none'}"
    ) from last


async def _port_open(url: str) -> None:
    host, _, port = url.split(",")[0].strip().rpartition(":")
    _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _round_trip(info: BrokerInfo, *, within: float) -> None:
    """Create a scratch topic, publish one record, see it through a tap, delete the topic."""
    name = f"harness-ready-{uuid.uuid4().hex[:12]}"
    async with KafkaAdapter(info, timeout=within) as adapter:
        await adapter.create(DestinationSpec(name=name))
        try:
            seen = asyncio.Event()
            async with adapter.tap(name, lambda record: seen.set()):
                await adapter.publish(name, Message(b"ready"))
                async with asyncio.timeout(within):
                    await seen.wait()
        finally:
            with contextlib.suppress(HarnessError, TimeoutError):
                await adapter.delete(name)
