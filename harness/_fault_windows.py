"""Fault windows: from a fault until the service it hit is consuming again.

Latency checks judge the inputs a fault touched apart from ordinary ones (see
``within`` and ``latency`` in harness._checks): a crash costs a Kafka group its
session timeout, and a bound every fault breaks tells nothing. A window is read
from the history alone, so a saved history is judged as the run was:

- it opens at the fault: ``crash``, ``cut`` and ``latency N ms`` (N > 0) of an
  instance, ``broker restart``, an instance joining (a ``started`` note of a new
  instance after the first) or leaving (a ``stopped`` note before the last publish;
  the stops after it are the run's teardown);
- the instance is *back* at once after a cut, join or leave (it reconnects or
  rebalances by itself), at its next ``started`` note after a crash, at the next
  ``latency`` change of its lane, and at the broker's last note after a broker
  restart (ready again; on RabbitMQ, taps reconnected); never back: the end of the run;
- it closes at the latest of: back; the instance's first delivery after back (a
  client-side probe's, on its lane) or else the first output after back, because a
  restarted Kafka member consumes only once its group has rebalanced; and the output
  of the last input still in flight when it was back (the backlog drained).

An input is *touched* by a window when it was in flight at some moment of it:
published before the window closed and not output (nor dead-lettered) before it
opened. With several instances, another one's deliveries or outputs may close a
window early: give touched inputs a bound of their own when that matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

from message_flow_harness._history import Event, History, Kind

_ACCOUNTED = (Kind.OUTPUT, Kind.DEAD_LETTERED)


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault's recovery: ``fault`` names it (``crash of sut0``), times in perf_counter_ns."""

    fault: str
    start_ns: int
    end_ns: int

    def touches(self, published_ns: int, first_out_ns: int | None) -> bool:
        """Whether an input published then and first output then (None: never) was in flight."""
        return published_ns < self.end_ns and (first_out_ns is None or first_out_ns > self.start_ns)


def first_outcomes(events: Sequence[Event]) -> tuple[dict[str, int], dict[str, int]]:
    """Each input's publish time and first output or dead letter time, by harness id."""
    published: dict[str, int] = {}
    out: dict[str, int] = {}
    for e in events:
        if not e.harness_id:
            continue
        if e.kind is Kind.PUBLISHED:
            published.setdefault(e.harness_id, e.at_ns)
        elif e.kind in _ACCOUNTED:
            out[e.harness_id] = min(out.get(e.harness_id, e.at_ns), e.at_ns)
    return published, out


def _latency_ms(detail: str) -> float | None:
    """``latency 200 ms`` -> 200.0; anything else None."""
    if not detail.startswith("latency ") or not detail.endswith(" ms"):
        return None
    try:
        return float(detail.removeprefix("latency ").removesuffix(" ms"))
    except ValueError:
        return None


def _opening(
    index: int, events: Sequence[Event], started: set[str], last_publish_ns: int, end_ns: int
) -> tuple[str, str | None, int] | None:
    """(what the fault is, the instance it hit, when it is back) if event ``index`` opens one."""
    e = events[index]
    if e.kind is not Kind.FAULT and e.kind is not Kind.NOTE:
        return None
    lane, detail, later = e.lane, e.detail or "", islice(events, index + 1, None)
    if e.kind is Kind.NOTE and e.source == "harness" and lane is not None:
        if detail == "started":
            first_ever, seen = not started, lane in started
            started.add(lane)
            if first_ever or seen:  # the first instance, or a restart (its crash's window)
                return None
            return f"{lane} joined", lane, e.at_ns
        if detail == "stopped" and e.at_ns < last_publish_ns:
            return f"{lane} left", None, e.at_ns
        return None
    if e.kind is not Kind.FAULT:
        return None
    if detail == "crash" or detail.startswith("crash "):
        back = next(
            (
                x.at_ns
                for x in later
                if x.kind is Kind.NOTE and x.lane == lane and x.detail == "started"
            ),
            end_ns,
        )
        return f"crash of {lane}", lane, back
    if detail == "cut":
        return f"cut of {lane}", lane, e.at_ns
    if detail.startswith("broker restart"):
        back = e.at_ns
        for x in later:
            if x.lane == "broker" and x.kind is Kind.FAULT:
                break
            if x.lane == "broker" and x.kind is Kind.NOTE:
                back = x.at_ns
        return detail, None, back if back != e.at_ns else end_ns
    added = _latency_ms(detail)
    if added:
        back = next(
            (
                x.at_ns
                for x in later
                if x.kind is Kind.FAULT
                and x.lane == lane
                and _latency_ms(x.detail or "") is not None
            ),
            end_ns,
        )
        return f"{detail} on {lane}", lane, back
    return None


def _sign_of_life(events: Sequence[Event], after_ns: int, lane: str | None) -> int | None:
    """The instance's first delivery after ``after_ns`` (its probes' lanes read ``sut0:...``),
    else the first output or dead letter after it."""
    if lane is not None:
        prefix = f"{lane}:"
        for e in events:
            if (
                e.kind is Kind.DELIVERED
                and e.at_ns >= after_ns
                and (e.lane or "").startswith(prefix)
            ):
                return e.at_ns
    return min(
        (e.at_ns for e in events if e.kind in _ACCOUNTED and e.at_ns >= after_ns), default=None
    )


def fault_windows(history: History) -> tuple[FaultWindow, ...]:
    """The recovery window of every fault of ``history``, in the order the faults happened."""
    events = history.events
    published, out = first_outcomes(events)
    return windows_of(events, published, out)


def windows_of(
    events: Sequence[Event], published: Mapping[str, int], out: Mapping[str, int]
) -> tuple[FaultWindow, ...]:
    """:func:`fault_windows` with the inputs' publish and first output times given."""
    if not events:
        return ()
    last_publish_ns = max(published.values(), default=events[0].at_ns)
    end_ns = max(e.at_ns for e in events)  # the run's end: taps stamp out of record order
    started: set[str] = set()
    windows = []
    for index in range(len(events)):
        opened = _opening(index, events, started, last_publish_ns, end_ns)
        if opened is None:
            continue
        fault, lane, back = opened
        end = back
        alive = _sign_of_life(events, back, lane)
        if alive is not None:
            end = max(end, alive)
        backlog = [
            out[hid] for hid, at in published.items() if at < back and out.get(hid, -1) > back
        ]
        end = max([end, *backlog])
        windows.append(FaultWindow(fault, events[index].at_ns, end))
    return tuple(windows)


def touched_by(
    windows: Sequence[FaultWindow], published_ns: int, first_out_ns: int | None
) -> FaultWindow | None:
    """The first window an input was in flight in, or None when no fault touched it."""
    return next((w for w in windows if w.touches(published_ns, first_out_ns)), None)
