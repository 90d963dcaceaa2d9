"""RabbitMQ: the aio-pika adapter, a private local node, and a Docker provider.

Mapping of the harness model onto AMQP 0-9-1:

* a destination is a durable classic queue; messages are published through
  the default exchange with the queue name as routing key, persistent, with
  publisher confirms and ``mandatory`` (an unroutable message is an error);
* header values are sent as AMQP byte arrays; ``Message.key`` has no AMQP
  equivalent and travels in the :data:`KEY_HEADER` header, so it round-trips
  through the broker (and through services that copy headers);
* dead-lettering goes through the direct exchange :data:`DEAD_LETTER_EXCHANGE`
  rather than the default exchange: RabbitMQ's firehose does not trace
  dead-lettered messages, so a tap sees them land by binding its own queue
  to that exchange (every queue :meth:`RabbitAdapter.create` makes is bound
  to it with its own name);
* the tap is RabbitMQ's firehose tracer (``amq.rabbitmq.trace``): it observes
  publishes and deliveries without consuming anything. It must be on for the
  vhost (``rabbitmqctl trace_on -p VHOST``); nodes the harness starts have it
  on from boot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import decimal
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from brokers._local import LaunchPlan, free_port
from harness._broker import (
    BrokerAdapter,
    BrokerInfo,
    DestinationSpec,
    PublishReceipt,
    TapCallback,
    TapEvent,
    TapRecord,
)
from harness._errors import (
    BrokerError,
    BrokerStartError,
    BrokerUnavailable,
    DestinationError,
    InvalidArgument,
)
from harness._message import BrokerKind, Message
from harness._redact import redact_url

__all__ = (
    "DEAD_LETTER_EXCHANGE",
    "KEY_HEADER",
    "RabbitAdapter",
    "RabbitRecipe",
    "ctl_env",
    "management_url",
    "rabbitmqctl",
    "start_container",
)

#: Header that carries ``Message.key`` (AMQP messages have no key).
KEY_HEADER: Final = "x-harness-key"
#: Direct exchange that dead-lettered messages are routed through.
DEAD_LETTER_EXCHANGE: Final = "harness.dead-letter"
#: Policies that wire a queue's dead-lettering are named this plus the queue's name.
_POLICY_PREFIX: Final = "harness-dlx-"
TRACE_EXCHANGE: Final = "amq.rabbitmq.trace"
#: Marks the message a tap publishes to itself to prove the firehose is live.
_SENTINEL_HEADER: Final = "x-harness-tap-sentinel"
_MAX_NAME_BYTES: Final = 255
# The firehose traces a delivery with routing key "deliver.<queue>", a short string
# too: a longer queue name makes the broker kill the tap's connection.
_MAX_TRACEABLE_BYTES: Final = _MAX_NAME_BYTES - len("deliver.")
_URL_FIX: Final = "check the option --amqp-url / the environment variable HARNESS_AMQP_URL"
_MANAGEMENT_ENV: Final = "HARNESS_RABBITMQ_MANAGEMENT_URL"

RABBITMQ_BIN: Final = Path("/usr/lib/rabbitmq/bin")
_INSTALL_FIX: Final = "install it with `apt-get install rabbitmq-server`"
_CTL_TIMEOUT: Final = 30.0


# --------------------------------------------------------------------------- URLs


def _vhost_of(url: str) -> str:
    # Same rule as aiormq: no path or "/" is the default vhost, else the unquoted path.
    path = urllib.parse.urlsplit(url).path
    if path in ("", "/"):
        return "/"
    return urllib.parse.unquote(path[1:])


def _credentials(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username) if parts.username is not None else "guest"
    password = urllib.parse.unquote(parts.password) if parts.password is not None else "guest"
    return user, password


def management_url(info: BrokerInfo) -> str:
    """The management HTTP API base URL for ``info``.

    $HARNESS_RABBITMQ_MANAGEMENT_URL wins, then ``info.extra["management"]``,
    else ``http://<amqp host>:15672/``. Credentials may be given in the URL;
    without them the AMQP URL's are used.
    """
    configured = os.environ.get(_MANAGEMENT_ENV) or info.extra.get("management")
    if configured:
        return configured
    host = urllib.parse.urlsplit(info.url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:15672/"


# ----------------------------------------------------------------------- messages


# The AMQP 0-9-1 queue-name domain; the client library refuses any other character
# even though RabbitMQ itself would take any UTF-8.
_QUEUE_NAME: Final = re.compile(r"[A-Za-z0-9\-_.:@#,/+ ]+")


def _validate_queue_name(
    name: object, *, what: str = "queue name", limit: int = _MAX_NAME_BYTES
) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{what}={name!r} is invalid: pass a non-empty str")
    size = len(name.encode("utf-8"))
    if size > limit:
        why = (
            f"RabbitMQ queue names are at most {_MAX_NAME_BYTES} bytes"
            if limit == _MAX_NAME_BYTES
            else f"the firehose can only trace queues of at most {limit} bytes"
        )
        raise InvalidArgument(f"{what}={name[:40]!r}... is {size} bytes long: {why}")
    if not _QUEUE_NAME.fullmatch(name):
        raise InvalidArgument(
            f"{what}={name!r} is invalid: AMQP queue names may only hold ASCII letters, "
            "digits, spaces and -_.:@#,/+"
        )
    if name.startswith("amq."):
        raise InvalidArgument(
            f"{what}={name!r} is invalid: names starting with 'amq.' are reserved by RabbitMQ"
        )
    return name


def _encode_headers(message: Message) -> dict[str, Any]:
    if KEY_HEADER in message.headers:
        raise InvalidArgument(
            f"header {KEY_HEADER!r} is reserved: it carries Message.key on RabbitMQ; "
            "pass the key as Message(key=...) instead"
        )
    # pamqp encodes bytearray (not bytes) as an AMQP byte array ('x').
    headers: dict[str, Any] = {name: bytearray(value) for name, value in message.headers.items()}
    if message.key is not None:
        headers[KEY_HEADER] = bytearray(message.key)
    return headers


def _jsonable(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _header_bytes(value: object) -> bytes:
    """An AMQP header value as bytes; tables and arrays (``x-death``) become JSON."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, datetime.datetime):
        return value.isoformat().encode()
    if isinstance(value, int | float | decimal.Decimal):
        return str(value).encode()
    return json.dumps(_jsonable(value), sort_keys=True).encode()


def _decode_message(body: bytes, headers: Mapping[str, Any] | None) -> Message:
    decoded = {str(name): _header_bytes(value) for name, value in (headers or {}).items()}
    key = decoded.pop(KEY_HEADER, None)
    return Message(value=bytes(body), key=key, headers=decoded)


# ------------------------------------------------------------------------ adapter


class RabbitAdapter(BrokerAdapter):
    """Administration, publishing and firehose taps on one RabbitMQ vhost.

    Uses a plain (not robust) aio-pika connection so that connection loss is
    seen, never hidden by reconnects. Every call is bounded by ``timeout``.
    """

    kind: BrokerKind = "rabbitmq"

    def __init__(self, info: BrokerInfo, *, timeout: float = 10.0) -> None:
        if info.kind != "rabbitmq":
            raise InvalidArgument(
                f"info.kind={info.kind!r} is invalid: RabbitAdapter needs 'rabbitmq'"
            )
        parts = urllib.parse.urlsplit(info.url)
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError as exc:
            raise InvalidArgument(
                f"url={redact_url(info.url)!r} has an invalid port ({exc}); " + _URL_FIX
            ) from exc
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise InvalidArgument(
                f"url={redact_url(info.url)!r} is invalid: use amqp://user:pass@host:port/vhost; "
                + _URL_FIX
            )
        if not timeout > 0:
            raise InvalidArgument(
                f"timeout={timeout!r} is invalid: pass a positive number of seconds"
            )
        self.info = info
        self._timeout = float(timeout)
        self._where = redact_url(info.url)
        self._vhost = _vhost_of(info.url)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._closing = False
        self._lost: BaseException | None = None

    # -- life cycle

    async def open(self) -> None:
        """Connect and open the publishing channel within ``timeout``."""
        if self._connection is not None and not self._connection.is_closed:
            return
        self._closing = False
        self._lost = None
        connection: AbstractConnection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                connection = await aio_pika.connect(self.info.url, timeout=self._timeout)
                self._channel = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            if connection is not None:
                await self._close_quietly(connection)
            raise BrokerUnavailable(self._unavailable_text(exc)) from exc
        connection.close_callbacks.add(self._on_connection_closed)
        self._connection = connection

    def _on_connection_closed(self, _connection: object, exc: BaseException | None) -> None:
        if not self._closing:
            self._lost = exc or ConnectionError("the connection closed")

    def _is_lost(self) -> bool:
        """True once the connection has died under the adapter (not closed by close())."""
        connection = self._connection
        if self._closing or connection is None:
            return False
        return self._lost is not None or not connection.connected.is_set()

    def _unavailable_text(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {self._timeout:g} s"
        elif isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
            why = f"the login was refused ({exc}); check the user and password"
        elif isinstance(exc, aiormq.exceptions.AuthenticationError):
            why = f"no common authentication mechanism ({exc!r})"
        elif isinstance(
            exc, aiormq.exceptions.InvalidFrameError | aiormq.exceptions.ConnectionNotAllowed
        ):
            why = f"the broker refused vhost {self._vhost!r} (missing vhost or no permission)"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return f"no RabbitMQ broker answers at {self._where}: {why}; {_URL_FIX}"

    async def close(self) -> None:
        """Close the connection (and with it every tap); safe to call twice."""
        self._closing = True
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await self._close_quietly(connection)

    async def _close_quietly(self, connection: AbstractConnection) -> None:
        # A dead broker leaves nothing to release: closing must not fail nor hang.
        with contextlib.suppress(TimeoutError, OSError, RuntimeError, aiormq.exceptions.AMQPError):
            async with asyncio.timeout(self._timeout):
                await connection.close()

    def _require_connection(self) -> AbstractConnection:
        connection = self._connection
        if connection is None:
            raise BrokerUnavailable(
                f"not connected to RabbitMQ at {self._where}: call open() first "
                "(or use `async with RabbitAdapter(info) as adapter`)"
            )
        if connection.is_closed or self._is_lost():
            raise BrokerUnavailable(
                f"the connection to RabbitMQ at {self._where} was lost ({self._lost!r}): "
                "check that the broker is still running; " + _URL_FIX
            )
        return connection

    @contextlib.asynccontextmanager
    async def _translated(self, doing: str) -> AsyncIterator[None]:
        """Bound the block by ``timeout`` and turn driver errors into harness errors."""
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ at {self._where} did not finish {doing} within {self._timeout:g} s: "
                "check that the broker is up and not overloaded"
            ) from exc
        except aiormq.exceptions.ChannelClosed as exc:
            raise DestinationError(
                f"RabbitMQ at {self._where} refused {doing}: {_reply(exc)}"
            ) from exc
        except (
            aiormq.exceptions.AMQPConnectionError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            OSError,
        ) as exc:
            raise BrokerUnavailable(
                f"lost the connection to RabbitMQ at {self._where} while {doing} "
                f"({type(exc).__name__}: {exc}): check that the broker is still running"
            ) from exc
        except aiormq.exceptions.AMQPError as exc:
            raise DestinationError(f"RabbitMQ at {self._where} failed {doing}: {exc!r}") from exc
        except RuntimeError as exc:
            # aiormq says "connection closed" with a bare RuntimeError.
            if not self._is_lost():
                raise
            raise BrokerUnavailable(
                f"lost the connection to RabbitMQ at {self._where} while {doing} "
                f"({self._lost!r}): check that the broker is still running"
            ) from exc

    @contextlib.asynccontextmanager
    async def _scratch_channel(self) -> AsyncIterator[AbstractChannel]:
        """A channel for one administrative step: a 404 or 406 closes it, not the adapter's."""
        channel = await self._require_connection().channel(publisher_confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _exists(self, name: str) -> bool:
        try:
            async with self._scratch_channel() as channel:
                await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            return True  # exclusive to another connection: it exists all the same
        return True

    # -- destinations

    async def create(self, spec: DestinationSpec) -> None:
        """Declare a durable classic queue; wire dead-lettering to ``spec.dead_letter``."""
        name = _validate_queue_name(spec.name, limit=_MAX_TRACEABLE_BYTES)
        if spec.partitions != 1:
            raise InvalidArgument(
                f"partitions={spec.partitions!r} is invalid for RabbitMQ queue {name!r}: "
                "a queue has no partitions; pass partitions=1"
            )
        if spec.dead_letter is not None:
            dead_letter = _validate_queue_name(
                spec.dead_letter, what="dead_letter", limit=_MAX_TRACEABLE_BYTES
            )
        async with self._translated(f"creating queue {name!r}"):
            if await self._exists(name):
                raise DestinationError(
                    f"queue {name!r} already exists on vhost {self._vhost!r} at {self._where}: "
                    "pick another name or delete it first"
                )
            if spec.dead_letter is not None:
                # A policy, not queue arguments: a service that declares its own
                # queue (durable, no arguments) must not clash with the harness's.
                await self._call_management(
                    "PUT",
                    self._policy_path(name),
                    f"set the dead-letter policy of {name!r}",
                    {
                        "pattern": f"^{re.escape(name)}$",
                        "apply-to": "queues",
                        "priority": 100,
                        "definition": {
                            "dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                            "dead-letter-routing-key": dead_letter,
                        },
                    },
                )
            async with self._scratch_channel() as channel:
                await channel.declare_exchange(
                    DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
                )
                queue = await channel.declare_queue(name, durable=True)
                await queue.bind(DEAD_LETTER_EXCHANGE, routing_key=name)
            if spec.dead_letter is not None and await self._exists(spec.dead_letter):
                # A dead-letter queue made before this one, or outside the harness.
                async with self._scratch_channel() as channel:
                    dead = await channel.declare_queue(spec.dead_letter, passive=True)
                    await dead.bind(DEAD_LETTER_EXCHANGE, routing_key=spec.dead_letter)

    async def delete(self, name: str) -> None:
        """Delete queue ``name`` with its messages; a missing queue is not an error."""
        _validate_queue_name(name)
        async with self._translated(f"deleting queue {name!r}"):
            try:
                async with self._scratch_channel() as channel:
                    await channel.queue_delete(name)
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass  # brokers that answer 404 for a missing queue
        await self._call_management(
            "DELETE", self._policy_path(name), f"delete the dead-letter policy of {name!r}"
        )

    async def list_destinations(self, prefix: str = "") -> list[str]:
        """Queue names on this vhost starting with ``prefix``, from the management HTTP API."""
        self._require_connection()
        base = management_url(self.info)
        try:
            async with asyncio.timeout(self._timeout + 1.0):
                names = await asyncio.to_thread(self._fetch_queue_names, base)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"the RabbitMQ management API at {redact_url(base)} did not answer within "
                f"{self._timeout:g} s: {_management_fix()}"
            ) from exc
        return sorted(name for name in names if name.startswith(prefix))

    def _fetch_queue_names(self, base: str) -> list[str]:
        payload = self._management(base, "GET", "queues/{vhost}?columns=name", "list the queues")
        if not isinstance(payload, list):
            raise BrokerError(f"the RabbitMQ management API at {redact_url(base)} answered"
                              f" {payload!r:.200}")  # fmt: skip
        return [str(item["name"]) for item in payload if isinstance(item, dict) and "name" in item]

    def _management(
        self, base: str, method: str, path: str, doing: str, body: object = None
    ) -> object:
        """One management HTTP API call (``{vhost}`` in ``path`` is filled in), blocking."""
        parts = urllib.parse.urlsplit(base)
        if parts.password is not None:
            user, password = _credentials(base)
        else:
            user, password = _credentials(self.info.url)
        host = parts.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        root = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        vhost = urllib.parse.quote(self._vhost, safe="")
        request = urllib.request.Request(
            f"{root}/api/{path.format(vhost=vhost)}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": "Basic "
                + base64.b64encode(f"{user}:{password}".encode()).decode("ascii"),
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        # Direct connection: an http_proxy from the environment must not see broker traffic.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        where = redact_url(base)
        try:
            with opener.open(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise BrokerUnavailable(
                    f"the RabbitMQ management API at {where} refused user {user!r} "
                    f"(HTTP {exc.code}): put credentials with the management tag in "
                    f"${_MANAGEMENT_ENV} (http://user:pass@host:port/)"
                ) from exc
            if method == "DELETE" and exc.code == 404:
                return None
            raise DestinationError(
                f"the RabbitMQ management API at {where} could not {doing} on "
                f"vhost {self._vhost!r}: HTTP {exc.code} {exc.reason}"
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise BrokerUnavailable(
                f"the RabbitMQ management API at {where} does not answer ({exc}): "
                + _management_fix()
            ) from exc
        return json.loads(raw) if raw else None

    async def _call_management(
        self, method: str, path: str, doing: str, body: object = None
    ) -> object:
        base = management_url(self.info)
        try:
            async with asyncio.timeout(self._timeout + 1.0):
                return await asyncio.to_thread(self._management, base, method, path, doing, body)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"the RabbitMQ management API at {redact_url(base)} did not answer within "
                f"{self._timeout:g} s: {_management_fix()}"
            ) from exc

    @staticmethod
    def _policy_path(name: str) -> str:
        return "policies/{vhost}/" + urllib.parse.quote(f"{_POLICY_PREFIX}{name}", safe="")

    # -- traffic

    async def _publishing_channel(self) -> AbstractChannel:
        connection = self._require_connection()
        channel = self._channel
        if channel is None or channel.is_closed:
            # The broker closes a channel on some refusals; the connection is still good.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._channel = channel
        return channel

    async def publish(
        self, destination: str, message: Message, *, partition: int | None = None
    ) -> PublishReceipt:
        """Publish persistently to queue ``destination`` and wait for the broker's confirm.

        ``message.key`` travels in the :data:`KEY_HEADER` header.
        """
        if partition is not None:
            raise InvalidArgument(
                f"partition={partition!r} is invalid for RabbitMQ queue {destination!r}: "
                "queues have no partitions; pass partition=None"
            )
        if not isinstance(destination, str) or len(destination.encode()) > _MAX_NAME_BYTES:
            raise InvalidArgument(
                f"destination={destination!r:.60} is invalid: pass a queue name of at most "
                f"{_MAX_NAME_BYTES} bytes"
            )
        amqp_message = aio_pika.Message(
            body=message.value,
            headers=_encode_headers(message),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        async with self._translated(f"publishing to queue {destination!r}"):
            channel = await self._publishing_channel()
            try:
                await channel.default_exchange.publish(
                    amqp_message, routing_key=destination, mandatory=True, timeout=self._timeout
                )
            except aiormq.exceptions.PublishError as exc:
                raise DestinationError(
                    f"queue {destination!r} does not exist on vhost {self._vhost!r} at "
                    f"{self._where}: the broker returned the message as unroutable; "
                    "create the queue first"
                ) from exc
            except aiormq.exceptions.DeliveryError as exc:
                raise DestinationError(
                    f"RabbitMQ at {self._where} refused a message for queue {destination!r} "
                    f"(negative confirm: {exc!r}): check the queue's limits and policies"
                ) from exc
        return PublishReceipt(destination=destination)

    def tap(self, destination: str, on_record: TapCallback) -> AbstractAsyncContextManager[None]:
        """Observe ``destination`` through the firehose without consuming it.

        Records: ``landed`` when a publish is routed to the queue (or a message is
        dead-lettered into it), ``delivered`` when the broker hands a message from
        it to a consumer (``redelivered`` from the trace). An exception raised by
        ``on_record`` stops the tap's callbacks and is re-raised on exit.
        """
        _validate_queue_name(destination, what="destination", limit=_MAX_TRACEABLE_BYTES)
        return _FirehoseTap(self, destination, on_record)


def _reply(exc: aiormq.exceptions.AMQPError) -> str:
    # aiormq puts (reply_code, reply_text) in args; the text names the cause.
    texts = [str(arg) for arg in exc.args if isinstance(arg, str)]
    return texts[-1] if texts else repr(exc)


def _management_fix() -> str:
    return (
        "enable the rabbitmq_management plugin (`rabbitmq-plugins enable rabbitmq_management`) "
        f"or point ${_MANAGEMENT_ENV} at it (http://user:pass@host:15672/)"
    )


class _FirehoseTap(AbstractAsyncContextManager[None]):
    """One server-named queue bound to the firehose (and the dead-letter exchange)."""

    def __init__(self, adapter: RabbitAdapter, destination: str, on_record: TapCallback) -> None:
        self._adapter = adapter
        self._destination = destination
        self._deliver_key = f"deliver.{destination}"
        self._on_record = on_record
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._token = secrets.token_hex(8)
        self._live = asyncio.Event()
        self._stopping = False
        self._error: BaseException | None = None
        self._lost: BaseException | None = None

    async def __aenter__(self) -> None:
        adapter = self._adapter
        doing = f"starting a firehose tap on queue {self._destination!r}"
        try:
            async with adapter._translated(doing):
                await self._start()
        except BaseException:
            await self._stop()
            raise
        try:
            async with asyncio.timeout(adapter._timeout):
                await self._live.wait()
        except TimeoutError as exc:
            await self._stop()
            vhost = adapter._vhost
            raise DestinationError(
                f"firehose tracing is off on vhost {vhost!r} at {adapter._where}: a tap's "
                f"sentinel message was not traced within {adapter._timeout:g} s; turn it on "
                f"with `rabbitmqctl trace_on -p {vhost}` or the management API "
                f"(PUT /api/vhosts/{urllib.parse.quote(vhost, safe='')} with "
                '{"tracing": true})'
            ) from exc

    async def _start(self) -> None:
        channel = await self._adapter._require_connection().channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._channel = channel
        channel.close_callbacks.add(self._on_channel_closed)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        self._queue = queue
        await queue.bind(TRACE_EXCHANGE, routing_key="publish.#")
        # A name with "*" or "#" words binds more than its own deliveries: _record filters.
        await queue.bind(TRACE_EXCHANGE, routing_key=self._deliver_key)
        await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        await queue.bind(DEAD_LETTER_EXCHANGE, routing_key=self._destination)
        await queue.consume(self._on_message, no_ack=True)
        sentinel = aio_pika.Message(body=b"", headers={_SENTINEL_HEADER: self._token})
        await channel.default_exchange.publish(sentinel, routing_key=queue.name, mandatory=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        channel = self._channel
        if self._lost is None and not self._adapter._closing:
            if self._adapter._is_lost():
                self._lost = self._adapter._lost or ConnectionError("the connection closed")
            elif channel is not None and channel.is_closed:
                self._lost = ConnectionError("the broker closed the tap's channel")
        await self._stop()
        problem: BaseException | None = self._error
        if problem is None and self._lost is not None:
            problem = BrokerUnavailable(
                f"the firehose tap on queue {self._destination!r} lost its channel to "
                f"{self._adapter._where} ({self._lost!r}): records after that were missed"
            )
            problem.__cause__ = self._lost
        if problem is None:
            return
        if exc is not None:
            exc.add_note(f"the tap on queue {self._destination!r} also failed: {problem!r}")
            return
        raise problem

    async def _stop(self) -> None:
        self._stopping = True
        channel, self._channel = self._channel, None
        if channel is None or channel.is_closed:
            return
        # The exclusive, auto-delete queue goes away with its channel's consumer.
        with contextlib.suppress(TimeoutError, OSError, RuntimeError, aiormq.exceptions.AMQPError):
            async with asyncio.timeout(self._adapter._timeout):
                if self._queue is not None:
                    await self._queue.delete(if_unused=False, if_empty=False)
                await channel.close()

    def _on_channel_closed(self, _channel: object, exc: BaseException | None) -> None:
        if not self._stopping and not self._adapter._closing and exc is not None:
            self._lost = exc

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        seen_ns = time.perf_counter_ns()
        if self._stopping or self._error is not None:
            return
        try:
            record = self._record(message, seen_ns)
            if record is not None:
                self._on_record(record)
        except Exception as exc:  # re-raised from __aexit__, never lost
            self._error = exc

    def _record(self, message: AbstractIncomingMessage, seen_ns: int) -> TapRecord | None:
        if message.exchange == DEAD_LETTER_EXCHANGE:
            if message.routing_key != self._destination:
                return None
            return TapRecord(
                event="landed",
                destination=self._destination,
                message=_decode_message(message.body, message.headers),
                seen_ns=seen_ns,
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=message.routing_key,
            )
        if message.exchange != TRACE_EXCHANGE:
            return None  # the sentinel's own copy, published straight to the tap queue
        trace: Mapping[str, Any] = message.headers
        routing_key = message.routing_key or ""
        properties = trace.get("properties")
        original_headers = properties.get("headers") if isinstance(properties, Mapping) else None
        if not isinstance(original_headers, Mapping):
            original_headers = None
        event: TapEvent
        redelivered: bool | None = None
        if routing_key.startswith("publish."):
            if self._is_sentinel(trace, original_headers):
                self._live.set()
                return None
            if not self._routed_here(trace):
                return None
            event = "landed"
        elif routing_key == self._deliver_key:
            event = "delivered"
            redelivered = bool(trace.get("redelivered"))
        else:
            return None
        exchange = trace.get("exchange_name")
        routing_keys = trace.get("routing_keys")
        first_key = routing_keys[0] if isinstance(routing_keys, list) and routing_keys else None
        return TapRecord(
            event=event,
            destination=self._destination,
            message=_decode_message(message.body, original_headers),
            seen_ns=seen_ns,
            redelivered=redelivered,
            exchange=_text(exchange),
            routing_key=_text(first_key),
        )

    def _is_sentinel(self, trace: Mapping[str, Any], headers: object) -> bool:
        if not isinstance(headers, Mapping) or _text(headers.get(_SENTINEL_HEADER)) != self._token:
            return False
        queue = self._queue
        return queue is not None and self._routed(trace, queue.name)

    def _routed_here(self, trace: Mapping[str, Any]) -> bool:
        return self._routed(trace, self._destination)

    @staticmethod
    def _routed(trace: Mapping[str, Any], queue: str) -> bool:
        routed = trace.get("routed_queues")
        if isinstance(routed, list):
            return queue in [_text(name) for name in routed]
        # Brokers before 3.7 do not say where a publish went: trust the default exchange.
        keys = trace.get("routing_keys")
        return _text(trace.get("exchange_name")) == "" and isinstance(keys, list) and queue in keys


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


# ------------------------------------------------------------------- local node


def _epmd_names(port: int, *, timeout: float) -> list[str]:
    """Node names registered with the epmd on 127.0.0.1:``port`` (empty if none answers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"\x00\x01n")  # NAMES_REQ: length 1, then 'n'
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return []
    text = b"".join(chunks)[4:].decode("utf-8", "replace")
    return [line.split()[1] for line in text.splitlines() if line.startswith("name ")]


def _tail(path: Path, *, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


# Booting loads about 1,100 modules one after the other (RabbitMQ scans every module
# for boot steps), which costs a JIT-compiling VM 4-8 s on two cores. Loading them in
# parallel from the start, while the node does its other work, takes about 3 s off.
# Erlang terms evaluated with file:script/1; failure only forfeits the speed-up.
_PRELOAD_SCRIPT: Final = """\
spawn(fun() ->
    try
        Props = fun(App) ->
            case code:where_is_file(atom_to_list(App) ++ ".app") of
                non_existing -> [];
                Path ->
                    case file:consult(Path) of
                        {ok, [{application, _, P}]} -> P;
                        _ -> []
                    end
            end
        end,
        Closure = fun
            Closure([], Seen) -> Seen;
            Closure([App | Rest], Seen) ->
                case lists:member(App, Seen) of
                    true -> Closure(Rest, Seen);
                    false ->
                        P = Props(App),
                        Deps = proplists:get_value(applications, P, [])
                            ++ proplists:get_value(included_applications, P, []),
                        Closure(Deps ++ Rest, [App | Seen])
                end
        end,
        Apps = Closure([rabbitmq_prelaunch, rabbit, rabbitmq_management], []),
        Modules = [proplists:get_value(modules, Props(A), []) || A <- Apps],
        code:ensure_modules_loaded(lists:append(Modules))
    catch _:_ -> ok
    end
end).
"""


def ctl_env(info: BrokerInfo) -> dict[str, str]:
    """Environment additions that let ``rabbitmqctl`` reach a :class:`RabbitRecipe` node."""
    try:
        node, data, epmd_port = info.extra["node"], info.extra["data"], info.extra["epmd_port"]
    except KeyError as exc:
        raise InvalidArgument(
            f"info.extra lacks {exc.args[0]!r}: rabbitmqctl can only reach a node the harness "
            "started itself (provider 'local')"
        ) from exc
    workdir = Path(data)
    return {
        "HOME": str(workdir),  # the Erlang cookie lives in $HOME
        "RABBITMQ_NODENAME": node,
        "ERL_EPMD_PORT": epmd_port,
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # Every Erlang VM in this family listens for distribution on loopback only
        # and never spawns a daemon epmd of its own.
        "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false",
        # The CLI's own distribution port: any free one, not the fixed 35672-35682 range.
        "RABBITMQ_CTL_DIST_PORT_MIN": "0",
        "RABBITMQ_CTL_DIST_PORT_MAX": "0",
        "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        "ERL_CRASH_DUMP": str(workdir / "erl_crash.dump"),
    }


def rabbitmqctl(info: BrokerInfo, *args: str, timeout: float = _CTL_TIMEOUT) -> str:
    """Run ``rabbitmqctl ARGS`` against a harness-started node; return its output.

    Raises BrokerError with the tool's output when it fails or exceeds ``timeout``.
    """
    argv = [str(RABBITMQ_BIN / "rabbitmqctl"), *args]
    try:
        done = subprocess.run(
            argv,
            env={**os.environ, **ctl_env(info)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(
            f"`rabbitmqctl {' '.join(args)}` did not finish within {timeout:g} s"
        ) from exc
    except OSError as exc:
        raise BrokerError(f"cannot run {argv[0]} ({exc}): {_INSTALL_FIX}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-2000:]
        raise BrokerError(
            f"`rabbitmqctl {' '.join(args)}` failed with exit code {done.returncode}:\n{output}"
        )
    return done.stdout


class RabbitRecipe:
    """A private RabbitMQ node from Debian's rabbitmq-server, everything inside one workdir.

    Bound to 127.0.0.1 (AMQP, management, Erlang distribution, its own epmd),
    with the management plugin on and firehose tracing on for vhost "/" from boot
    (so it survives a broker restart).
    """

    kind: BrokerKind = "rabbitmq"
    start_timeout: float = 60.0

    def check_prerequisites(self) -> None:
        """Raise BrokerStartError unless rabbitmq-server and epmd are installed."""
        server = RABBITMQ_BIN / "rabbitmq-server"
        if not os.access(server, os.X_OK):
            raise BrokerStartError(f"{server} is missing: {_INSTALL_FIX}")
        if shutil.which("epmd") is None:
            raise BrokerStartError(f"epmd (Erlang) is not on PATH: {_INSTALL_FIX}")

    def prepare(self, workdir: Path) -> LaunchPlan:
        """Pick four free loopback ports and write config, plugins and cookie into ``workdir``."""
        ports: list[int] = []
        while len(ports) < 4:
            port = free_port()
            if port not in ports:
                ports.append(port)
        amqp_port, dist_port, epmd_port, management_port = ports
        node = f"rabbit-harness-{amqp_port}@localhost"
        workdir = workdir.resolve()
        (workdir / "mnesia").mkdir(parents=True, exist_ok=True)
        (workdir / "log").mkdir(exist_ok=True)
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {management_port}\n"
        )
        # trace_vhosts is what `rabbitmqctl trace_on` sets at run time; set here it also
        # holds after a restart.
        (workdir / "advanced.config").write_text('[{rabbit, [{trace_vhosts, [<<"/">>]}]}].\n')
        (workdir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        # An empty env file keeps /etc/rabbitmq/rabbitmq-env.conf out of the picture.
        (workdir / "rabbitmq-env.conf").write_text("")
        cookie = workdir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        info_extra = {
            "management": f"http://127.0.0.1:{management_port}/",
            "node": node,
            "log": str(workdir / "log" / f"{node}.log"),
            "data": str(workdir),
            "epmd_port": str(epmd_port),
            "dist_port": str(dist_port),
        }
        url = f"amqp://guest:guest@127.0.0.1:{amqp_port}/"
        env = {
            **ctl_env(BrokerInfo(kind="rabbitmq", url=url, provider="local", extra=info_extra)),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            # Set, it would make the script exec erl with a shell reading stdin.
            "RABBITMQ_ALLOW_INPUT": "",
        }
        preload = workdir / "preload.erl"
        preload.write_text(_PRELOAD_SCRIPT)
        if not any(c.isspace() or c in "\"'\\" for c in str(preload)):
            # Only the server gets it (ERL_AFLAGS runs before `-s rabbit boot`), not the CLI.
            env["ERL_AFLAGS"] = f'-eval file:script(\\"{preload}\\")'
        epmd = shutil.which("epmd") or "epmd"
        server = RABBITMQ_BIN / "rabbitmq-server"
        # The node must not boot before its private epmd listens (it would fail to
        # register); wait for it, bounded, then become the server.
        start = (
            "i=0; "
            f'until "{epmd}" -port "$ERL_EPMD_PORT" -names >/dev/null 2>&1; do '
            "i=$((i+1)); "
            'if [ "$i" -ge 200 ]; then '
            'echo "epmd on port $ERL_EPMD_PORT did not start" >&2; exit 1; fi; '
            "sleep 0.05; done; "
            f'exec "{server}"'
        )
        return LaunchPlan(
            argv=["/bin/sh", "-c", start],
            url=url,
            env=env,
            companions=[[epmd, "-port", str(epmd_port), "-address", "127.0.0.1"]],
            extra=info_extra,
        )

    def wait_ready(self, info: BrokerInfo, timeout: float) -> None:
        """Wait for epmd registration, ``await_startup``, then a traced publish-and-consume."""
        deadline = time.monotonic() + timeout
        node = info.extra["node"]
        short_name = node.split("@", 1)[0]
        epmd_port = int(info.extra["epmd_port"])
        log = Path(info.extra["log"])

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerStartError(
                    f"RabbitMQ node {node} was not ready within {timeout:g} s; "
                    f"its log ({log}) ends with:\n{_tail(log)}"
                )
            return left

        data = Path(info.extra["data"])
        # Cheap polling first: each rabbitmqctl costs about a second of CPU.
        while short_name not in _epmd_names(epmd_port, timeout=min(1.0, remaining())):
            if (data / "erl_crash.dump").exists() or "BOOT FAILED" in _tail(log, lines=200):
                raise BrokerStartError(
                    f"RabbitMQ node {node} failed to boot; its log ({log}) ends with:\n"
                    f"{_tail(log)}\nits console ({data / 'broker.out'}) ends with:\n"
                    f"{_tail(data / 'broker.out')}"
                )
            time.sleep(0.05)
        left = remaining()
        try:
            rabbitmqctl(info, "await_startup", "--timeout", str(max(1, int(left))), timeout=left)
        except BrokerError as exc:
            raise BrokerStartError(
                f"RabbitMQ node {node} did not start: {exc}\n"
                f"its log ({log}) ends with:\n{_tail(log)}"
            ) from exc
        try:
            asyncio.run(_round_trip(info.url, within=remaining()))
        except (BrokerError, TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerStartError(
                f"RabbitMQ node {node} is up but a publish-and-consume round trip failed: {exc!r}"
            ) from exc


async def _round_trip(url: str, *, within: float) -> None:
    """Declare a queue, publish to it, consume the message back and see its firehose trace."""
    async with asyncio.timeout(within):
        connection = await aio_pika.connect(url, timeout=within)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            trace = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await trace.bind(TRACE_EXCHANGE, routing_key="publish.#")
            token = secrets.token_hex(8)
            queue = await channel.declare_queue(f"harness-ready-{token}", exclusive=True)
            await channel.default_exchange.publish(
                aio_pika.Message(body=token.encode()), routing_key=queue.name, mandatory=True
            )
            got = await _get(queue)
            await got.ack()
            if got.body != token.encode():
                raise BrokerError(f"the round trip returned {got.body!r}, not {token!r}")
            traced = await _get(trace)
            routed = traced.headers.get("routed_queues")
            if not isinstance(routed, list) or queue.name not in routed:
                raise BrokerError(f"the firehose traced {traced.headers!r}, not the round trip")
            await queue.delete(if_unused=False, if_empty=False)
        finally:
            await connection.close()


async def _get(queue: AbstractQueue) -> AbstractIncomingMessage:
    """The next message on ``queue``; polls until the caller's deadline cancels it."""
    while True:
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------ docker


def _docker_engine_problem() -> str | None:
    """None when a Docker engine answers, else why not."""
    cli = shutil.which("docker")
    if cli is not None:
        try:
            done = subprocess.run(
                [cli, "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`docker info` failed: {exc}"
        if done.returncode != 0:
            return (
                done.stderr.strip() or done.stdout.strip() or "`docker info` failed"
            ).splitlines()[0]
        return None
    import gc
    import warnings

    import docker  # type: ignore[import-untyped]

    # docker-py leaks its socket when no engine answers: keep that ResourceWarning quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(version="auto", timeout=15)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # docker-py raises several unrelated types here
            return f"{type(exc).__name__}: {exc}"
        finally:
            gc.collect()
    return None


def start_container(
    *, image: str = "rabbitmq:3.10-management", timeout: float = 120.0
) -> tuple[BrokerInfo, Callable[[], None]]:
    """Start RabbitMQ in a container with tracing on; return its info and a stop function."""
    problem = _docker_engine_problem()
    if problem is not None:
        raise BrokerUnavailable(
            f"no Docker engine answers: {problem}; start Docker (or set DOCKER_HOST), "
            "or use the local provider or --amqp-url / HARNESS_AMQP_URL"
        )
    from testcontainers.community.rabbitmq import RabbitMqContainer

    container = RabbitMqContainer(image).with_exposed_ports(15672)
    deadline = time.monotonic() + timeout
    try:
        container.start()
        exit_code, output = container.exec(["rabbitmqctl", "trace_on", "-p", "/"])
        if exit_code != 0:
            raise BrokerStartError(f"`rabbitmqctl trace_on` in the container failed: {output!r}")
        host = container.get_container_host_ip()
        amqp_port = container.get_exposed_port(container.port)
        management_port = container.get_exposed_port(15672)
    except BrokerError:
        container.stop()
        raise
    except Exception as exc:  # testcontainers and docker-py raise many types
        with contextlib.suppress(Exception):
            container.stop()
        raise BrokerStartError(f"the RabbitMQ container ({image}) did not start: {exc!r}") from exc
    if time.monotonic() > deadline:
        container.stop()
        raise BrokerStartError(f"the RabbitMQ container ({image}) took more than {timeout:g} s")
    user = urllib.parse.quote(container.username, safe="")
    password = urllib.parse.quote(container.password, safe="")
    info = BrokerInfo(
        kind="rabbitmq",
        url=f"amqp://{user}:{password}@{host}:{amqp_port}/",
        provider="docker",
        extra={
            "management": f"http://{host}:{management_port}/",
            "container": container.get_container_id(),
            "image": image,
        },
    )
    return info, container.stop
