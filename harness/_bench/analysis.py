"""A round's figures from its history: latency, in-service time, and the lag and latency series."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

from message_flow_harness._bench.result import Round, Sample
from message_flow_harness._bench.stats import Distribution
from message_flow_harness._history import History, Kind

#: Points of the lag and latency series (per round).
SERIES_POINTS = 200


def analyze(
    history: History,
    measured: Sequence[str],
    *,
    due_ns: Mapping[str, int] | None = None,
    ended_by: str = "",
    cpu_seconds: float | None = None,
    points: int = SERIES_POINTS,
) -> Round:
    """The figures of the inputs ``measured`` (harness ids) in ``history``.

    An input's latency runs from its publish (or its due time in ``due_ns``,
    for open-loop publishing) to its first output or dead letter seen by the
    taps; its in-service time from the first probe-recorded delivery to the
    first probe-recorded send after it.
    """
    wanted = set(measured)
    published: dict[str, int] = {}
    done: dict[str, int] = {}
    delivered: dict[str, int] = {}
    sends: dict[str, list[int]] = {}
    for event in history.events:
        hid = event.harness_id
        if hid is None or hid not in wanted:
            continue
        if event.kind is Kind.PUBLISHED:
            _keep_first(published, hid, event.at_ns)
        elif event.kind in (Kind.OUTPUT, Kind.DEAD_LETTERED):
            _keep_first(done, hid, event.at_ns)
        elif event.kind is Kind.DELIVERED and event.source == "probe":
            _keep_first(delivered, hid, event.at_ns)
        elif event.kind is Kind.SENT and event.source == "probe":
            sends.setdefault(hid, []).append(event.at_ns)
    # The send that answers a delivery is the first one at or after it.
    sent = {
        hid: min(answers)
        for hid, at in delivered.items()
        if (answers := [t for t in sends.get(hid, ()) if t >= at])
    }
    due = dict(due_ns or {})
    starts = {hid: due.get(hid, at) for hid, at in published.items()}
    latencies = {hid: (done[hid] - starts[hid]) // 1000 for hid in done if hid in starts}
    in_service = [(sent[hid] - delivered[hid]) // 1000 for hid in sent]
    completed = [hid for hid in measured if hid in done and hid in starts]
    seconds = 0.0
    series: tuple[Sample, ...] = ()
    if starts:
        begin = min(starts.values())
        end = max((done[hid] for hid in completed), default=begin)
        seconds = (end - begin) / 1e9
        series = _series(
            begin,
            end,
            sorted(published.values()),
            sorted((done[hid], latencies[hid]) for hid in completed),
            points,
        )
    publish_times = list(published.values())
    return Round(
        messages=len(measured),
        completed=len(completed),
        seconds=seconds,
        publish_seconds=(max(publish_times) - min(publish_times)) / 1e9 if publish_times else 0.0,
        latency=Distribution.of(latencies[hid] for hid in completed),
        in_service=Distribution.of(in_service),
        series=series,
        ended_by=ended_by,
        cpu_seconds=cpu_seconds,
    )


def _keep_first(found: dict[str, int], hid: str, at_ns: int) -> None:
    if hid not in found or at_ns < found[hid]:
        found[hid] = at_ns


def _series(
    begin: int,
    end: int,
    publishes: list[int],
    completions: list[tuple[int, int]],
    points: int,
) -> tuple[Sample, ...]:
    """Lag and latency at ``points`` evenly spaced instants (exact, from the timestamps)."""
    points = max(points, 1)
    step = max((end - begin) / points, 1.0)
    done_times = [at for at, _ in completions]
    samples = []
    for index in range(1, points + 1):
        upper = begin + round(step * index)
        lower = begin + round(step * (index - 1))
        issued = bisect.bisect_right(publishes, upper)
        finished = bisect.bisect_right(done_times, upper)
        first = bisect.bisect_right(done_times, lower) if index > 1 else 0
        window = sorted(latency for _, latency in completions[first:finished])
        samples.append(
            Sample(
                t_s=(upper - begin) / 1e9,
                lag=max(issued - finished, 0),
                p50_us=window[(len(window) - 1) // 2] if window else None,
                max_us=window[-1] if window else None,
            )
        )
        if upper >= end:
            break
    return tuple(samples)
