"""How messages and names travel over AMQP 0-9-1: the header codec, queue names, exchanges.

A header value goes out as an AMQP byte array, and ``Message.key``, which
AMQP lacks, in the :data:`KEY_HEADER` header, so the key round-trips through
the broker and through services that copy headers; whatever a header holds on
the way back (tables and arrays such as ``x-death`` too) is read back as
bytes. Queue names are checked against what the client library, the broker
and the firehose accept. The exchanges the harness's dead letters and the
firehose's traces go through are named here, where the adapter, the tap and
the node's readiness check all find them.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import Message

#: Header that carries ``Message.key`` (AMQP messages have no key).
KEY_HEADER: Final = "x-harness-key"
#: Fanout exchange every dead letter goes through (the queues' policies name it).
DEAD_LETTER_EXCHANGE: Final = "harness.dead-letters"
#: Direct exchange behind it that routes a dead letter to the queue its routing key names.
_DEAD_LETTER_ROUTER: Final = "harness.dead-letter"
TRACE_EXCHANGE: Final = "amq.rabbitmq.trace"
_MAX_NAME_BYTES: Final = 255
# The firehose traces a delivery with routing key "deliver.<queue>", a short string
# too: a longer queue name makes the broker kill the tap's connection.
_MAX_TRACEABLE_BYTES: Final = _MAX_NAME_BYTES - len("deliver.")

# The AMQP 0-9-1 queue-name domain; the client library refuses any other character
# even though RabbitMQ itself would take any UTF-8.
_QUEUE_NAME: Final = re.compile(r"[A-Za-z0-9\-_.:@#,/+ ]+")


def _some(names: Sequence[str]) -> str:
    """Up to three of ``names`` for a message, and how many more (a batch may be hundreds)."""
    shown = ", ".join(map(repr, names[:3]))
    return shown if len(names) <= 3 else f"{shown} and {len(names) - 3} more"


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
