"""RabbitMQ queue types: the arguments a flow's queues are declared with, and what the broker says.

A flow may ask for quorum queues (``Flow(queue_type="quorum")``) with
arguments for its input queue (``queue_arguments={"x-delivery-limit": 5}``),
declared exactly as the service declares them, so the service's own declare
is equivalent. :func:`check_queues` refuses what RabbitMQ would take and then
quietly ignore or degrade, and :func:`check_for_broker` what only some versions
take as asked. Quorum queues say how often they delivered a
message (``x-delivery-count`` on a redelivery) and every dead letter says why
it died (``x-death``): :func:`deliveries_said` and :func:`dead_letter_reason`
read them from a message a tap saw (the firehose keeps the headers; a table
such as ``x-death`` arrives as JSON, see ``_codec._header_bytes``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import Message

#: The queue types a flow may ask for (streams have no dead-lettering nor delivery limit).
QUEUE_TYPES: Final = ("classic", "quorum")
#: Arguments the harness sets itself: dead-lettering goes to ``endpoints.dead_letter`` by policy.
_HARNESS_OWNED: Final = ("x-dead-letter-exchange", "x-dead-letter-routing-key", "x-queue-type")
#: Arguments only a quorum queue honours (a classic queue takes them and ignores them).
_QUORUM_ONLY: Final = ("x-delivery-limit", "x-dead-letter-strategy", "x-quorum-initial-group-size")
DELIVERY_COUNT: Final = "x-delivery-count"
DEATH: Final = "x-death"


def check_queues(
    *, queue_type: object, queue_arguments: Mapping[str, object]
) -> Mapping[str, object]:
    """The input queue's arguments, checked; InvalidArgument naming the fix otherwise."""
    if queue_type is not None and queue_type not in QUEUE_TYPES:
        raise InvalidArgument(
            f"queue_type={queue_type!r} is invalid: use one of {', '.join(QUEUE_TYPES)}"
            " (None: the broker's default, classic)"
        )
    if not isinstance(queue_arguments, Mapping) or not all(
        isinstance(name, str) for name in queue_arguments
    ):
        raise InvalidArgument(
            f"queue_arguments={queue_arguments!r} is invalid: pass a dict of AMQP argument"
            ' names to values, e.g. {"x-delivery-limit": 5}'
        )
    arguments = dict(queue_arguments)
    for name in _HARNESS_OWNED:
        if name in arguments:
            fix = (
                "pass Flow(queue_type=...) instead"
                if name == "x-queue-type"
                else "the harness dead-letters the input queue to endpoints.dead_letter itself"
            )
            raise InvalidArgument(f"queue_arguments[{name!r}] is invalid: {fix}")
    for name in _QUORUM_ONLY:
        if name in arguments and queue_type != "quorum":
            raise InvalidArgument(
                f"queue_arguments[{name!r}] is invalid for a {queue_type or 'classic'} queue:"
                " RabbitMQ ignores it there; pass Flow(queue_type='quorum')"
            )
    limit = arguments.get("x-delivery-limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < -1):
        raise InvalidArgument(
            f"queue_arguments['x-delivery-limit']={limit!r} is invalid: give a whole number >= 0,"
            " or -1 for no limit (RabbitMQ 4.x)"
        )
    strategy = arguments.get("x-dead-letter-strategy")
    if strategy not in (None, "at-most-once", "at-least-once"):
        raise InvalidArgument(
            f"queue_arguments['x-dead-letter-strategy']={strategy!r} is invalid:"
            " use 'at-most-once' or 'at-least-once'"
        )
    if strategy == "at-least-once" and arguments.get("x-overflow") != "reject-publish":
        # RabbitMQ takes it, logs a warning and dead-letters at most once instead.
        raise InvalidArgument(
            "queue_arguments['x-dead-letter-strategy']='at-least-once' needs"
            " 'x-overflow': 'reject-publish' beside it (RabbitMQ falls back to at-most-once"
            " without it)"
        )
    return arguments


def check_for_broker(arguments: Mapping[str, object], *, version: str | None) -> None:
    """Refuse what the broker running ``version`` would take and treat otherwise than asked.

    ``x-delivery-limit: -1`` turns the limit off on RabbitMQ 4.x (whose quorum
    queues have a default limit of 20); 3.x takes it and ends a message at its
    first return.
    """
    limit = arguments.get("x-delivery-limit")
    major = _number(version.partition(".")[0]) if version else None
    if isinstance(limit, int) and limit < 0 and major is not None and major < 4:
        raise InvalidArgument(
            f"queue_arguments['x-delivery-limit']={limit!r} means no limit on RabbitMQ 4.x only:"
            f" this broker runs {version}, where a message goes at its first return; on 3.x"
            " leave x-delivery-limit out (a quorum queue has no limit there)"
        )


def deliveries_said(message: Message, *, queue: str | None) -> int | None:
    """How many times RabbitMQ says it delivered ``message`` from ``queue``, or None.

    A quorum queue's redelivery carries ``x-delivery-count``, the deliveries
    before this one. A dead letter's ``x-death`` counts, per queue and reason,
    how often it died there: each rejection, and each dead-lettering for the
    delivery limit, ended a delivery.
    """
    found: int | None = None
    count = _number(message.headers.get(DELIVERY_COUNT))
    if count is not None:
        found = count + 1
    died = sum(
        _number(death.get("count")) or 0
        for death in _deaths(message)
        if death.get("reason") in ("rejected", "delivery_limit")
        and (queue is None or death.get("queue") == queue)
    )
    if died:
        found = max(found or 0, died)
    return found


def dead_letter_reason(message: Message) -> str | None:
    """Why RabbitMQ dead-lettered ``message`` last: ``x-death``'s first entry, from where."""
    deaths = _deaths(message)
    if not deaths:
        return None
    last = deaths[0]  # RabbitMQ puts the latest death first
    reason = str(last.get("reason", "unknown"))
    explained = {
        "delivery_limit": (
            "the queue's x-delivery-limit, 20 on RabbitMQ 4.x unless set, was reached"
        ),
        "rejected": "a consumer rejected it without requeue",
        "expired": "its TTL expired",
        "maxlen": "the queue was full",
    }.get(reason, reason)
    return f"x-death: {explained} in queue {last.get('queue')!r}"


def _deaths(message: Message) -> list[Mapping[str, object]]:
    raw = message.headers.get(DEATH)
    if not raw:
        return []
    try:
        deaths = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(deaths, list):
        return []
    return [death for death in deaths if isinstance(death, Mapping)]


def _number(value: object) -> int | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
