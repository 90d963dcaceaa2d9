"""The history of one run: an append-only log of typed, timestamped events.

Probes append; checks read. Recording is one tuple construction and one
list append (no locks, no formatting, no I/O), so a probe does not slow the
consumer it watches; statistics and text come later, from the checks and the
report. Timestamps are ``time.perf_counter_ns()``.

Beside the events, a history keeps the log records of the run's drivers and
service (:class:`LogEntry`, the latest :data:`LOG_LIMIT`; harness._logs
captures them): what they said is next to what they did, and not in the
terminal.
"""

from __future__ import annotations

import base64
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import Message

if TYPE_CHECKING:
    from message_flow_harness._broker import TapRecord


class Kind(StrEnum):
    """What happened."""

    PUBLISHED = "published"  # the harness published an input
    DELIVERED = "delivered"  # the broker handed a message to a consumer
    ACKED = "acked"  # RabbitMQ: the consumer acknowledged it
    NACKED = "nacked"  # RabbitMQ: nack or reject (see ``requeue``)
    COMMITTED = "committed"  # Kafka: the consumer committed ``offset`` of ``partition``
    HANDLER_START = "handler_start"
    HANDLER_END = "handler_end"
    HANDLER_ERROR = "handler_error"
    SENT = "sent"  # the service's producer sent a message (client side)
    OUTPUT = "output"  # a message landed on the output destination
    DEAD_LETTERED = "dead_lettered"  # a message landed on the dead-letter destination
    # A record of a Kafka transaction that aborted, on any destination: a read_committed
    # consumer never sees it, so no check counts it as an output or dead letter.
    ABORTED = "aborted"
    SIDE_EVENT = "side_event"  # an output that answers nothing (Flow(side_events=...))
    FAULT = "fault"  # the harness injected a fault (``detail`` says which)
    NOTE = "note"  # anything else worth seeing on the timeline


class Event(NamedTuple):
    """One thing that happened, as one probe saw it.

    ``harness_id`` correlates the event with the input it concerns (None when
    the probe could not tell). ``lane`` names the consumer or service instance,
    so a timeline can draw one line per consumer. A named tuple, not a frozen
    dataclass: as immutable, and about four times cheaper to build, which
    matters to a probe recording inside the consumer it watches.
    """

    kind: Kind
    at_ns: int
    source: str
    harness_id: str | None = None
    destination: str | None = None
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None
    lane: str | None = None
    redelivered: bool | None = None
    requeue: bool | None = None
    detail: str | None = None
    message: Message | None = None


class LogEntry(NamedTuple):
    """One log record of a driver or the service during the run."""

    at_ns: int  # perf_counter_ns, as events: the record was logged at once
    level: str  # ``ERROR``
    logger: str  # ``aiokafka.consumer.group_coordinator``
    message: str  # formatted, with the exception's type and text if it had one


#: How many log records a history keeps (the latest): a chatty driver cannot fill memory.
LOG_LIMIT = 1000


def _log_buffer() -> deque[LogEntry]:
    return deque(maxlen=LOG_LIMIT)


_new_tuple = tuple.__new__  # builds an Event from its fields, without NamedTuple's checks
_now_ns = time.perf_counter_ns
#: The fields after ``kind``, ``at_ns`` and ``source`` (which the templates below spell out).
_DETAILS = Event._fields[3:]
assert Event._fields[:3] == ("kind", "at_ns", "source")


def define_from_fields(template: str, *, owner: str, scope: dict[str, Any]) -> dict[str, Any]:
    """The functions ``template`` defines, with Event's details written in: once, at import.

    ``Event`` is the one list of an event's fields; the ways of recording one
    are written from it, the way ``dataclasses`` writes ``__init__``. In the
    template, ``{details}`` becomes the details as parameters with their
    defaults (``harness_id=None, destination=None, ...``) and ``{values}``
    their names in Event's order. The result is the code one would write by
    hand (parameters bound by the interpreter, one tuple built positionally),
    so the probes' hot paths pay nothing for it. ``scope`` is the globals the
    bodies see (the calling module's); ``owner`` is the class they go into.
    """
    details = ", ".join(
        f"{name}=_defaults[{name!r}]" if name in Event._field_defaults else name
        for name in _DETAILS
    )
    defined: dict[str, Any] = {"_defaults": Event._field_defaults}
    exec(template.format(details=details, values=", ".join(_DETAILS)), scope, defined)
    del defined["_defaults"]
    for function in defined.values():
        function.__qualname__ = f"{owner}.{function.__name__}"
    return defined


# What a type checker sees of the written methods. It cannot read Event's fields into a
# signature, so the details are ``Any`` to it; a wrong name is still a TypeError naming it.
class _Record(Protocol):
    def __call__(
        self, kind: Kind, source: str, *, at_ns: int | None = None, **details: Any
    ) -> Event: ...


class _Add(Protocol):
    def __call__(self, kind: Kind, source: str, /, *details: Any) -> Event: ...


_RECORDING = '''
def record(self, kind, source, *, at_ns=None, {details}):
    """Append an event stamped now (or at ``at_ns``, a perf_counter_ns taken earlier).

    The details are keyword-only parameters, not ``**details``: binding them
    builds no dict, and a field events do not have is a TypeError naming it.
    """
    # Positional construction: a probe pays this inside the consumer it watches.
    event = _new_tuple(Event, (kind, _now_ns() if at_ns is None else at_ns, source, {values}))
    self.events.append(event)
    if self.on_event is not None:
        self.on_event(event)
    return event

def add(self, kind, source, {details}, /):
    """:meth:`record` stamped now, its fields positional in ``Event``'s order.

    For the probes' hot paths (once per delivered or sent record): positional
    arguments are the cheapest call CPython makes. The same event as
    ``record(kind, source, harness_id=..., ...)``.
    """
    event = _new_tuple(Event, (kind, _now_ns(), source, {values}))
    self.events.append(event)
    if self.on_event is not None:
        self.on_event(event)
    return event
'''
_recording = define_from_fields(_RECORDING, owner="History", scope=globals())


@dataclass(slots=True)
class History:
    """An append-only list of events, in the order they were recorded.

    :meth:`record` (the details by keyword) and :meth:`add` (positional, for
    the probes' hot paths) are written from ``Event``'s fields: see
    :data:`_RECORDING`.
    """

    events: list[Event] = field(default_factory=list)
    started_ns: int = field(default_factory=time.perf_counter_ns)
    logs: deque[LogEntry] = field(default_factory=_log_buffer)
    logs_dropped: int = 0  # older records the limit pushed out
    # Called with each event as it is recorded, inside whoever records it (a probe
    # inside the service): how an After step's fault lands right at its event.
    on_event: Callable[[Event], None] | None = field(default=None, repr=False, compare=False)
    # The kind ``on_event`` waits for: a probe whose event has no broker reply
    # (a RabbitMQ ack) makes sure the broker has it before recording it.
    awaited: Kind | None = field(default=None, repr=False, compare=False)

    record: ClassVar[_Record] = _recording["record"]
    add: ClassVar[_Add] = _recording["add"]

    def record_tap(
        self, kind: Kind, record: TapRecord, harness_id: str | None, detail: str | None = None
    ) -> Event:
        """Append what a broker-side tap saw, as an event of ``kind`` at the tap's receipt time.

        ``harness_id`` is the input the record concerns, as the run correlates it
        (``record.message.harness_id`` for a message that kept the harness's header);
        ``detail`` is an output's kind, or why it could not be correlated. A record
        of an aborted transaction (``record.aborted``) is :attr:`Kind.ABORTED`,
        whatever ``kind`` its destination gives: outputs are what a ``read_committed``
        consumer sees.
        """
        message = record.message
        return self.record(
            Kind.ABORTED if record.aborted else kind,
            "tap",
            at_ns=record.seen_ns,
            harness_id=harness_id,
            destination=record.destination,
            key=message.key,
            partition=record.partition,
            offset=record.offset,
            redelivered=record.redelivered,
            detail=detail,
            message=message,
        )

    def append(self, event: Event) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def add_log(self, entry: LogEntry) -> None:
        """Keep a log record; past :data:`LOG_LIMIT`, the oldest goes (and is counted)."""
        if len(self.logs) == self.logs.maxlen:
            self.logs_dropped += 1
        self.logs.append(entry)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def of(self, *kinds: Kind) -> list[Event]:
        """The events of the given kinds, in order."""
        wanted = set(kinds)
        return [e for e in self.events if e.kind in wanted]

    def since_start(self, at_ns: int) -> str:
        """``at_ns`` as a readable offset from the start of the run: ``+12.1 ms``."""
        return f"{(at_ns - self.started_ns) / 1e6:+.1f} ms"

    def inputs(self) -> dict[str, Event]:
        """The published inputs by harness id, in publish order."""
        found: dict[str, Event] = {}
        for e in self.events:
            if e.kind is Kind.PUBLISHED and e.harness_id:
                found.setdefault(e.harness_id, e)  # a republished id stays its first publish
        return found

    # --- JSON ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The history as JSON; ``logs`` and ``logs_dropped`` only when there are some."""
        data: dict[str, Any] = {
            "format": "message-flow-harness/history/1",
            "started_ns": self.started_ns,
            "events": [_event_to_json(e) for e in self.events],
        }
        if self.logs:
            data["logs"] = [entry._asdict() for entry in self.logs]
        if self.logs_dropped:
            data["logs_dropped"] = self.logs_dropped
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> History:
        if data.get("format") != "message-flow-harness/history/1":
            raise InvalidArgument(
                f"format={data.get('format')!r} is not a history this version reads:"
                " expected 'message-flow-harness/history/1'"
            )
        logs = _log_buffer()
        logs.extend(LogEntry(**entry) for entry in data.get("logs", ()))
        return cls(
            events=[_event_from_json(e) for e in data["events"]],
            started_ns=int(data["started_ns"]),
            logs=logs,
            logs_dropped=int(data.get("logs_dropped", 0)),
        )

    def dump(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> History:
        return cls.from_json(json.loads(path.read_text()))

    @classmethod
    def of_events(cls, events: Iterable[Event], *, started_ns: int = 0) -> History:
        """A history from hand-built events (tests, replays)."""
        return cls(events=list(events), started_ns=started_ns)


def _bytes_to_json(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def _bytes_from_json(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _event_to_json(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in Event._fields:
        value = getattr(event, name)
        if value is None:
            continue
        if name == "key":
            value = _bytes_to_json(value)
        elif name == "message":
            value = {
                "key": _bytes_to_json(value.key),
                "value": _bytes_to_json(value.value),
                "headers": {k: _bytes_to_json(v) for k, v in value.headers.items()},
                **({"to": value.to} if value.to is not None else {}),
            }
        elif name == "kind":
            value = str(value)
        data[name] = value
    return data


def _event_from_json(data: Mapping[str, Any]) -> Event:
    values = dict(data)
    values["kind"] = Kind(values["kind"])
    if "key" in values:
        values["key"] = _bytes_from_json(values["key"])
    if "message" in values:
        raw = values["message"]
        values["message"] = Message(
            key=_bytes_from_json(raw.get("key")),
            value=_bytes_from_json(raw.get("value")) or b"",
            headers={k: _bytes_from_json(v) or b"" for k, v in raw.get("headers", {}).items()},
            to=raw.get("to"),
        )
    return Event(**values)
