"""The fault proxy over loopback, against a tiny echo server (no broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from message_flow_harness import BrokerUnavailable
from message_flow_harness._proxy import FaultProxy
from message_flow_harness.brokers._local import free_port

pytestmark = pytest.mark.asyncio


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the proxy aborted its side (a cut)
    finally:
        writer.close()


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fault_proxy = FaultProxy(free_port(), "127.0.0.1", port)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.close()
    server.close()
    await server.wait_closed()


async def _round_trip(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    writer.close()
    return data


async def test_forwards_both_ways(proxy: FaultProxy) -> None:
    assert await _round_trip(proxy.listen_port, b"x" * 200_000) == b"x" * 200_000
    assert proxy.connections == 1


async def test_cut_resets_open_connections_but_new_ones_work(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    proxy.cut()
    writer.write(b"b")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()
    assert await _round_trip(proxy.listen_port) == b"ping"


async def test_crash_refuses_new_connections_until_healed(proxy: FaultProxy) -> None:
    proxy.crash()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _round_trip(proxy.listen_port)
    proxy.heal()
    assert await _round_trip(proxy.listen_port) == b"ping"


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.latency = 0.05
    started = time.monotonic()
    await _round_trip(proxy.listen_port)
    assert time.monotonic() - started >= 0.1  # a lower bound only: machines are noisy


async def test_a_taken_port_is_a_clear_error(proxy: FaultProxy) -> None:
    second = FaultProxy(proxy.listen_port, "127.0.0.1", 1)
    with pytest.raises(BrokerUnavailable, match=f"cannot listen on 127.0.0.1:{proxy.listen_port}"):
        await second.start()


async def test_a_cut_while_the_upstream_opens_ends_that_link_too(
    proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link is known before its upstream answers: a cut meanwhile reaches it."""
    opening, go_on = asyncio.Event(), asyncio.Event()
    real_open = asyncio.open_connection

    async def slow_open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        opening.set()
        await go_on.wait()
        return await real_open(host, port)

    monkeypatch.setattr(asyncio, "open_connection", slow_open)
    reader, writer = await real_open("127.0.0.1", proxy.listen_port)
    await asyncio.wait_for(opening.wait(), 5)
    proxy.cut()
    go_on.set()
    writer.write(b"a")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()
    assert proxy.connections == 0  # never linked to the upstream
