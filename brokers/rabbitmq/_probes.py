"""Client-side probes for aio-pika: deliveries, acks, nacks, rejects and publishes.

``install()`` wraps ``IncomingMessage`` (created once per delivery) and its
``ack/nack/reject``, and ``Exchange.publish``, once per process. The wrappers
record only for clients running inside a run's service (see
:mod:`harness._probes`): the connection's reader task inherits the run's
context when the service connects while starting.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.connection import Connection
from aio_pika.exchange import Exchange
from aio_pika.message import IncomingMessage

from message_flow_harness._history import Kind
from message_flow_harness._probes import Recorder, current_recorder, patch_method

_undo: list[Callable[[], None]] = []  # set while installed
_REACHED_BROKER_TIMEOUT = 5.0  # seconds for the broker to answer behind an ack


def _lane(recorder: Recorder, message: IncomingMessage) -> str:
    try:
        channel: object = message.channel
    except Exception:  # a closed channel: the delivery still happened
        channel = message.consumer_tag
    return recorder.lane(channel, "consumer")


def _wrap_init(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: IncomingMessage, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        recorder = current_recorder.get()
        if recorder is not None:
            recorder.history.add(
                Kind.DELIVERED,
                "probe",
                recorder.harness_id(self.headers),
                self.routing_key,
                None,
                None,
                self.delivery_tag,  # the offset of a RabbitMQ event is its delivery tag
                _lane(recorder, self),
                bool(self.redelivered),
            )

    return __init__


def _requeue_position(original: Callable[..., Any]) -> int | None:
    """Where ``requeue`` sits among the method's positional arguments (after self)."""
    names = list(inspect.signature(original).parameters)[1:]
    return names.index("requeue") if "requeue" in names else None


def _wrap_settle(
    original: Callable[..., Awaitable[None]], kind: Kind, *, default: bool | None
) -> Callable[..., Awaitable[None]]:
    # Found once here rather than by Signature.bind() on every ack: the call already
    # succeeded, so its arguments are valid and this is where bind() would find requeue.
    position = _requeue_position(original)

    @functools.wraps(original)
    async def settle(self: IncomingMessage, *args: Any, **kwargs: Any) -> None:
        await original(self, *args, **kwargs)
        recorder = current_recorder.get()
        if recorder is not None:
            if recorder.history.awaited is kind:
                await _reached_broker(self)
            requeue = default
            if position is not None:
                if "requeue" in kwargs:
                    requeue = kwargs["requeue"]
                elif len(args) > position:
                    requeue = args[position]
            recorder.history.add(
                kind,
                "probe",
                recorder.harness_id(self.headers),
                self.routing_key,
                None,
                None,
                self.delivery_tag,
                _lane(recorder, self),
                None,
                requeue,
            )

    return settle


async def _reached_broker(message: IncomingMessage) -> None:
    """Return once the broker has taken what the channel sent before (an ack has no reply).

    An After step's fault lands when the event is recorded: without this, a
    crash could cut the ack on its way (in a socket or the fault proxy) and the
    broker would deliver the input again. A passive declare of ``amq.direct``
    (in every virtual host) is answered only after the frames sent before it.
    """
    # Bounded, and never the service's error: the ack itself already went out.
    with contextlib.suppress(Exception):
        await message.channel.exchange_declare(
            "amq.direct", passive=True, timeout=_REACHED_BROKER_TIMEOUT
        )


def _wrap_publish(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def publish(self: Exchange, message: Any, routing_key: str, **kwargs: Any) -> Any:
        recorder = current_recorder.get()
        if recorder is not None:
            recorder.history.add(
                Kind.SENT,
                "probe",
                recorder.harness_id(getattr(message, "headers", None)),
                routing_key,
                None,
                None,
                None,
                recorder.lane(self.channel, "producer"),
            )
        return await original(self, message, routing_key, **kwargs)

    return publish


def _wrap_connect(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(original)
    async def connect(self: Connection, *args: Any, **kwargs: Any) -> None:
        recorder = current_recorder.get()
        if recorder is not None:
            recorder.track(self)  # before connecting: a cancelled connect may leave it half-open
        await original(self, *args, **kwargs)

    return connect


async def close_leftover(client: object, *, abort: bool = False) -> bool:
    """Close a connection the service left open; True if it had to.

    ``abort`` (a crash, before the service's exit runs) does nothing: an
    aio-pika connection buffers nothing that could go out later (a publish
    waits for its confirm), and the connection is closed after the exit.
    """
    if abort:
        return False
    if not isinstance(client, Connection) or client.is_closed:
        return False
    await client.close()
    return True


def group_member(client: object) -> str | None:
    """No consumer groups on RabbitMQ: a client holds no group membership."""
    return None


_PATCHES: tuple[tuple[type, str, Callable[[Any], Any]], ...] = (
    (IncomingMessage, "__init__", _wrap_init),
    (IncomingMessage, "ack", lambda f: _wrap_settle(f, Kind.ACKED, default=None)),
    (IncomingMessage, "reject", lambda f: _wrap_settle(f, Kind.NACKED, default=False)),
    (IncomingMessage, "nack", lambda f: _wrap_settle(f, Kind.NACKED, default=True)),
    (Exchange, "publish", _wrap_publish),
    (Connection, "connect", _wrap_connect),
)


def install() -> None:
    """Wrap aio-pika's delivery, settlement and publish once; later calls do nothing."""
    if not _undo:
        _undo.extend(patch_method(owner, name, wrap) for owner, name, wrap in _PATCHES)


def uninstall() -> None:
    """Put the driver's own methods back: afterwards the probes cost nothing at all."""
    while _undo:
        _undo.pop()()
