"""A TCP proxy between a service and its broker: how faults reach the network.

Each service instance talks to the broker through its own proxy, so the
harness can cut one instance's connections (a crash: nothing graceful gets
through afterwards), refuse new ones while it is down, delay every chunk
(latency), drop the current connections once (a network blip the client
should survive), or hold every instance off the broker while it restarts.
For Kafka the broker advertises the proxy's address on a listener of its own
(see brokers.kafka), so clients do not bypass it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from message_flow_harness._errors import BrokerUnavailable

_CHUNK = 64 * 1024


@dataclass(eq=False)
class FaultProxy:
    """Forwards 127.0.0.1:``listen_port`` to ``upstream_host``:``upstream_port``."""

    listen_port: int
    upstream_host: str
    upstream_port: int
    latency: float = 0.0  # seconds added to every chunk, both ways
    refusing: bool = False  # while True, new connections are closed at once
    _server: asyncio.Server | None = None
    _links: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    # Each open connection: what the service sends (its reader), the service's end, the broker's.
    _open: set[tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamWriter]] = field(
        default_factory=set
    )
    connections: int = 0  # accepted so far, for tests and reports

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.listen_port, reuse_address=True
            )
        except OSError as exc:
            raise BrokerUnavailable(
                f"the fault proxy cannot listen on 127.0.0.1:{self.listen_port}: {exc.strerror};"
                " another process probably holds the port; if so, restart the local broker for"
                " everyone: harness brokers down --force"
            ) from exc

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.cut()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    def cut(self) -> None:
        """Abort every open connection now (the peers see a reset, not a clean close)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def crash(self) -> None:
        """Cut every connection and refuse new ones until :meth:`heal`.

        What the service had already written reaches the broker first, as the
        writes of a killed process do (they sit in the kernel's buffers): an
        ack or a commit it made just before the crash counts, nothing after it.
        Synchronous, so a crash at an event lands before the service's next step.
        """
        self.refusing = True
        for reader, client, upstream in list(self._open):
            upstream.write(_sent_so_far(reader, client))
            self._writers.discard(upstream)
            upstream.close()  # after what it has buffered: a closed connection, as a crash leaves
        self.cut()

    def heal(self) -> None:
        self.refusing = False
        self.latency = 0.0

    def hold(self) -> None:
        """Cut every connection and refuse new ones until :meth:`release` (latency stays)."""
        self.refusing = True
        self.cut()

    def release(self) -> None:
        """Accept connections again after :meth:`hold`; a latency fault carries on."""
        self.refusing = False

    async def _accept(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if self.refusing:
            client.transport.abort()
            return
        # Known before the upstream opens: a cut, crash or close meanwhile aborts it
        # too, instead of leaving a link that outlives the fault (or a leaked socket).
        self._writers.add(client)
        try:
            upstream_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), 5.0
            )
        except (OSError, TimeoutError):
            self._writers.discard(client)
            client.transport.abort()
            return
        if client.transport.is_closing() or self.refusing:  # a fault landed meanwhile
            self._writers.discard(client)
            client.transport.abort()
            upstream.transport.abort()
            return
        self.connections += 1
        self._writers.add(upstream)
        link = (reader, client, upstream)
        self._open.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, upstream)),
            asyncio.create_task(self._pump(upstream_reader, client)),
        ]
        self._links.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._links.difference_update(pumps)
            self._open.discard(link)
            for writer in (client, upstream):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(_CHUNK):
                if self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(chunk)
                await writer.drain()


def _sent_so_far(reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> bytes:
    """What the service has sent that the proxy has not passed on yet, taken now.

    The stream's buffer (read by the event loop, not yet by the pump) and the
    socket's (in the kernel, not yet read): a non-blocking read of a duplicate
    of the socket takes that without waiting for the loop.
    """
    buffered: bytearray | None = getattr(reader, "_buffer", None)  # CPython's StreamReader
    pending = bytearray(buffered or b"")
    if buffered:
        buffered.clear()
    transport_socket = client.get_extra_info("socket")
    if transport_socket is None:
        return bytes(pending)
    with (
        transport_socket.dup() as own,
        contextlib.suppress(BlockingIOError, OSError),
    ):
        own.setblocking(False)
        while chunk := own.recv(_CHUNK):
            pending += chunk
    return bytes(pending)
