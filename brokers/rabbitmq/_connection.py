"""Connections to RabbitMQ: opening and closing them safely, explaining failures, open adapters.

aio-pika leaves a failed connection attempt open and aiormq abandons an RPC
cut short by a cancel, so connecting, closing and administrative calls go
through the guards here; a failed connection is explained the way a user can
act on (an untrusted certificate, TLS on a plain port or the reverse, a
refused login or vhost, no broker at all); and every adapter open in the
process is registered, so a broker restart fault finds the ones to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractConnection

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._redact import redact_url
from message_flow_harness.brokers.rabbitmq._urls import _URL_FIX, _speaks_tls, _vhost_of

if TYPE_CHECKING:
    from message_flow_harness.brokers.rabbitmq._adapter import RabbitAdapter


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _finish_before_cancel(
    method: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Let an administrative call finish (it is bounded) before a cancel takes effect.

    aiormq abandons an RPC cut short by a cancel while the broker carries it
    out; the next one on that channel number then kills the whole connection
    ("second 'channel.open' seen"). One cancelled run must not take the
    adapter's connection, shared by every run, down with it.
    """

    @functools.wraps(method)
    async def finishing(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        call = asyncio.ensure_future(method(*args, **kwargs))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            await asyncio.wait([call])
            if not call.cancelled():
                call.exception()  # retrieved: the cancel is what the caller hears of
            raise

    return finishing


async def _connect_amqp(url: str, *, within: float) -> AbstractConnection:
    """``aio_pika.connect``, except that a failed attempt closes what it opened.

    aio-pika leaves the ``Connection`` of a failed attempt open, and its
    ``__del__`` schedules a ``close()``: collected while no loop runs (say,
    between two tests), that coroutine is never awaited, a RuntimeWarning at
    whatever moment the garbage collector picks.
    """
    connection = aio_pika.Connection(aio_pika.connection.make_url(url))
    try:
        await connection.connect(timeout=within)
    except BaseException:
        await _close_quietly(connection, within=within)
        raise
    return connection


async def _close_quietly(connection: AbstractConnection, *, within: float) -> None:
    # A dead broker (or a connection never made) leaves nothing to release:
    # closing must not fail nor hang.
    with contextlib.suppress(TimeoutError, OSError, RuntimeError, aiormq.exceptions.AMQPError):
        async with asyncio.timeout(within):
            await connection.close()


def open_adapters(info: BrokerInfo) -> list[RabbitAdapter]:
    """The adapters open on ``info``'s broker (same URL) in the running event loop.

    A broker restart fault reconnects them once the broker is back (see
    :meth:`RabbitAdapter.reconnect`): the run's own, and any other that shares
    the broker in this loop, such as a fuzz campaign's.
    """
    loop = asyncio.get_running_loop()
    return [
        adapter
        for adapter in list(_OPEN_ADAPTERS)
        if adapter.info.url == info.url and adapter._loop is loop and not adapter._closing
    ]


#: Every adapter open in this process, for :func:`open_adapters`.
_OPEN_ADAPTERS: Final[weakref.WeakSet[RabbitAdapter]] = weakref.WeakSet()


async def _explain_failure(exc: BaseException, *, url: str, within: float) -> str:
    """Why connecting to ``url`` failed, telling TLS mismatches (a wrong CA, TLS on a plain
    port or plain on a TLS port) apart from an absent broker."""
    parts = urllib.parse.urlsplit(url)
    where = redact_url(url)
    text = f"{exc} {exc.__cause__ or ''}"
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.partition("certificate verify failed:")[2].partition("(_ssl")[0]
        return (
            f"cannot connect to RabbitMQ at {where}: its TLS certificate is not trusted"
            f" ({detail.strip() or text.strip()}): add cafile=/path/ca.pem (the PEM file of"
            " the CA that signed it) to the URL's query; no_verify_ssl=1 skips the check"
            " (test brokers only)"
        )
    if parts.scheme == "amqps" and (isinstance(exc, ssl.SSLError) or "[SSL" in text):
        return (
            f"cannot connect to RabbitMQ at {where}: the TLS handshake failed"
            f" ({str(exc).strip()}): it looks like a plain AMQP port; if so, use amqp://,"
            " or RabbitMQ's TLS port (usually 5671)"
        )
    auth = aiormq.exceptions.AuthenticationError | aiormq.exceptions.ProbableAuthenticationError
    # A silent server is no TLS mismatch (and must not cost a second timeout).
    silent = isinstance(exc, TimeoutError)
    if parts.scheme == "amqp" and not isinstance(exc, auth) and parts.hostname and not silent:
        probe_within = min(within, 5.0)
        if await asyncio.to_thread(_speaks_tls, parts.hostname, parts.port or 5672, probe_within):
            return (
                f"cannot connect to RabbitMQ at {where}: the port answered a TLS handshake,"
                " so it looks like a TLS listener; if so, use"
                " amqps://user:pass@host:port/vhost?cafile=/path/ca.pem"
            )
    why = _why_failed(exc, url=url, within=within)
    return f"no RabbitMQ broker answers at {where}: {why}; {_URL_FIX}"


def _why_failed(exc: BaseException, *, url: str, within: float) -> str:
    """What ``exc``, raised connecting to ``url`` (bounded by ``within``), says went wrong."""
    if isinstance(exc, TimeoutError):
        why = f"no answer within {within:g} s"
    elif isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        why = f"the login was refused ({exc}); check the user and password"
    elif isinstance(exc, aiormq.exceptions.AuthenticationError):
        why = f"no common authentication mechanism ({exc!r})"
    elif isinstance(
        exc, aiormq.exceptions.InvalidFrameError | aiormq.exceptions.ConnectionNotAllowed
    ):
        why = (
            f"the broker refused vhost {_vhost_of(url)!r}: the vhost may be missing, or the"
            " user may lack permission on it; if so, create it or grant the permission"
        )
    else:
        why = f"{type(exc).__name__}: {exc}"
    return why
