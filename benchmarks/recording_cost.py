"""Recording cost: nanoseconds per ``History.record()`` call, the work every probe and tap does.

Three shapes of call, each timed with :mod:`timeit` (best of 5 repeats, a
fresh history each, so list growth is included): the smallest record, a
tap's record with every field, and a client probe's record through its
:class:`~message_flow_harness._probes.Recorder` (header lookup, lane, record). Then the
same probe record the way the drivers' probes make it on their hot paths
(header lookup, lane, the positional ``History.add``). Also the cost of a
patched driver method finding no run in progress (one context-variable
lookup), and for reference the same stamp-construct-append with Event's
fields in a plain slots dataclass (``Event`` is a named tuple).
Target: < 2 µs.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import Figure, Options
from message_flow_harness._history import History, Kind
from message_flow_harness._message import HARNESS_ID_HEADER, Message
from message_flow_harness._probes import Recorder, current_recorder

NAME = "recording_cost"


@dataclass(slots=True, kw_only=True)
class _Unfrozen:
    """Event's fields in a plain (not frozen) slots dataclass: the reference figure."""

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


_REPEATS = 5


def _best_ns(make: Callable[[], Callable[[], object]], calls: int) -> float:
    """The fastest of ``_REPEATS`` timings of ``calls`` calls, per call, in ns."""
    timings = []
    for _ in range(_REPEATS):
        call = make()  # fresh state (an empty history) per repeat
        timings.append(timeit.timeit(call, number=calls))
    return min(timings) / calls * 1e9


def run(options: Options) -> list[Figure]:
    calls = options.recording_calls
    message = Message(value=b"x" * 100, key=b"key-1", headers={HARNESS_ID_HEADER: b"abc-1"})

    def minimal() -> Callable[[], object]:
        history = History()
        return lambda: history.record(Kind.NOTE, "harness")

    def tap_like() -> Callable[[], object]:
        history = History()

        def record() -> object:
            return history.record(
                Kind.OUTPUT,
                "tap",
                at_ns=1,
                harness_id="abc-1",
                destination="h-abc-out",
                key=b"key-1",
                partition=0,
                offset=7,
                redelivered=None,
                message=message,
            )

        return record

    def probe_like() -> Callable[[], object]:
        recorder = Recorder(History(), prefix="sut0:")
        client = object()

        def record() -> None:
            found = current_recorder.get() or recorder
            found.record(
                Kind.DELIVERED,
                harness_id=found.harness_id([(HARNESS_ID_HEADER, b"abc-1")]),
                destination="h-abc-in",
                key=b"key-1",
                partition=0,
                offset=7,
                lane=found.lane(client, "consumer"),
            )

        return record

    def probe_positional() -> Callable[[], object]:
        recorder = Recorder(History(), prefix="sut0:")
        client = object()

        def record() -> None:
            found = current_recorder.get() or recorder
            found.history.add(
                Kind.DELIVERED,
                "probe",
                found.harness_id([(HARNESS_ID_HEADER, b"abc-1")]),
                "h-abc-in",
                b"key-1",
                0,
                7,
                found.lane(client, "consumer"),
            )

        return record

    def idle_lookup() -> Callable[[], object]:
        return current_recorder.get

    def unfrozen() -> Callable[[], object]:
        events: list[_Unfrozen] = []

        def record() -> None:
            events.append(_Unfrozen(kind=Kind.NOTE, at_ns=time.perf_counter_ns(), source="x"))

        return record

    figures = []
    for label, make in (
        ("record(), no details", minimal),
        ("record(), a tap's event (every field)", tap_like),
        ("probe record (headers, lane, record)", probe_like),
        ("probe record as the probes make it (headers, lane, History.add)", probe_positional),
    ):
        figures.append(
            Figure(
                benchmark=NAME,
                name=label,
                value=_best_ns(make, calls),
                unit="ns/call",
                target="< 2000",
                details={"calls": calls, "repeats": _REPEATS, "statistic": "min"},
            )
        )
    figures.append(
        Figure(
            benchmark=NAME,
            name="patched driver method, no run in progress",
            value=_best_ns(idle_lookup, calls),
            unit="ns/call",
            note="one ContextVar.get(): what a probe costs outside a run",
        )
    )
    figures.append(
        Figure(
            benchmark=NAME,
            name="reference: Event's fields, unfrozen slots dataclass",
            value=_best_ns(unfrozen, calls),
            unit="ns/call",
            note="stamp, construct, append: the same work in a plain slots dataclass",
        )
    )
    return figures
