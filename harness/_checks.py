"""Checks: pure functions of a history, each returning a verdict a person can read.

Anomaly names follow Jepsen's queue checkers where they fit (lost, duplicate,
unexpected, nonmonotonic) and add what broker users need (dead-lettered,
not-dead-lettered, max-deliveries, late).

Vocabulary: an *input* is a message the harness published (a ``published``
event with a harness id); ``#n`` is its publish position, 1-based. An input
is *accounted for* once it has an ``output`` or ``dead_lettered`` event.
An output's ``detail`` is its kind when the flow declares output kinds
(fan-out: one output of each kind per input is no duplicate); a
``side_event`` answers nothing and no check counts it (see harness._correlation).
Outputs are what a ``read_committed`` consumer sees: an ``aborted`` record (of a
Kafka transaction that aborted) is no output, dead letter nor duplicate; the
summary counts them apart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from message_flow_harness._drivers import drivers
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._fault_windows import FaultWindow, touched_by, windows_of
from message_flow_harness._history import Event, History, Kind
from message_flow_harness._message import Message
from message_flow_harness._text import bounded, plural


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One thing that went wrong, with the inputs it concerns."""

    kind: str
    text: str
    harness_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """A check's result: ok when there are no anomalies."""

    check: str
    anomalies: tuple[Anomaly, ...] = ()
    summary: str = ""
    #: What the run knows about the likely cause (the service consumed nothing...).
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def __str__(self) -> str:
        status = "ok" if self.ok else plural(len(self.anomalies), "anomaly")
        head = f"{self.check}: {status}"
        if self.summary:
            head += f" ({self.summary})"
        # A person reads the first few; every anomaly stays in ``anomalies`` and the JSON.
        listed = [f"  - {a.kind}: {a.text}" for a in self.anomalies]
        notes = [f"  note: {note}" for note in self.notes]
        return "\n".join([head, *bounded(listed, indent="  "), *notes])


@dataclass(frozen=True, slots=True)
class Check:
    """A named, configured check: call it on a history."""

    name: str
    run: Callable[[History], Verdict] = field(repr=False)

    def __call__(self, history: History) -> Verdict:
        return self.run(history)

    def __str__(self) -> str:
        return self.name


# --- the facts every check reads ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Input:
    number: int
    event: Event

    @property
    def harness_id(self) -> str:
        assert self.event.harness_id is not None
        return self.event.harness_id

    @property
    def key(self) -> bytes | None:
        return self.event.key


class Facts:
    """Inputs, outputs, dead letters and deliveries of a history, indexed by harness id."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.inputs: dict[str, Input] = {}
        self.outputs: dict[str, list[Event]] = defaultdict(list)
        self.dead_letters: dict[str, list[Event]] = defaultdict(list)
        deliveries: dict[str, dict[str, list[Event]]] = defaultdict(lambda: defaultdict(list))
        self.uncorrelated: list[Event] = []
        self.output_order: list[Event] = []
        self.side_events: list[Event] = []
        self.aborted: list[Event] = []  # counted in the summary, judged by no check
        self.sharing_key: dict[str, list[Input]] = defaultdict(list)  # business key -> inputs
        for event in history:
            if event.kind is Kind.PUBLISHED and event.harness_id:
                if event.harness_id not in self.inputs:
                    found = self.inputs[event.harness_id] = Input(len(self.inputs) + 1, event)
                    if event.detail:
                        self.sharing_key[event.detail].append(found)
            elif event.kind is Kind.SIDE_EVENT:
                self.side_events.append(event)
            elif event.kind is Kind.ABORTED:
                self.aborted.append(event)
            elif event.kind in (Kind.OUTPUT, Kind.DEAD_LETTERED):
                target = self.outputs if event.kind is Kind.OUTPUT else self.dead_letters
                if event.kind is Kind.OUTPUT:
                    self.output_order.append(event)
                if event.harness_id:
                    target[event.harness_id].append(event)
                else:
                    self.uncorrelated.append(event)
            elif event.kind is Kind.DELIVERED and event.harness_id:
                deliveries[event.source][event.harness_id].append(event)
        # The broker's own count (a tap) wins over the client's view when both exist.
        self.deliveries: dict[str, list[Event]] = deliveries.get("tap") or deliveries.get(
            "probe", {}
        )

    def at(self, event: Event) -> str:
        return self.history.since_start(event.at_ns)

    def name(self, harness_id: str) -> str:
        """``input #3 (id r1-3, key 'k1')``, or the bare id of an unknown message."""
        found = self.inputs.get(harness_id)
        if found is None:
            return f"unknown message (id {harness_id})"
        key = "" if found.key is None else f", key {_show(found.key)}"
        business = found.event.detail
        if business:
            key += f", {business}"
            others = [f"#{i.number}" for i in self.sharing_key[business] if i is not found]
            if others:
                key += f" shared with {', '.join(others)}: answers go to the earliest unanswered"
        return f"input #{found.number} (id {harness_id}{key})"

    def accounted(self, harness_id: str) -> list[Event]:
        return sorted(
            self.outputs.get(harness_id, []) + self.dead_letters.get(harness_id, []),
            key=lambda e: e.at_ns,
        )

    def summary(self) -> str:
        stray_dead = sum(1 for e in self.uncorrelated if e.kind is Kind.DEAD_LETTERED)
        outputs = sum(len(v) for v in self.outputs.values()) + len(self.uncorrelated) - stray_dead
        dead = sum(len(v) for v in self.dead_letters.values()) + stray_dead
        inputs = plural(len(self.inputs), "input")
        side = f", {plural(len(self.side_events), 'side event')}" if self.side_events else ""
        aborted = f", {len(self.aborted)} aborted (not counted)" if self.aborted else ""
        return f"{inputs}, {plural(outputs, 'output')}, {dead} dead-lettered{side}{aborted}"


def _show(raw: bytes) -> str:
    try:
        return repr(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(raw)


def _outcome(event: Event) -> str:
    if event.kind is not Kind.OUTPUT:
        return "dead-lettered"
    return "output" if event.detail is None else f"output {event.detail!r}"


def _landing(event: Event) -> str:
    return "an output" if event.kind is Kind.OUTPUT else "a dead letter"


def _verdict(name: str, facts: Facts, anomalies: Iterable[Anomaly]) -> Verdict:
    return Verdict(name, tuple(anomalies), facts.summary())


def _check(name: str, body: Callable[[Facts], Iterable[Anomaly]]) -> Check:
    def run(history: History) -> Verdict:
        facts = Facts(history)
        return _verdict(name, facts, body(facts))

    return Check(name, run)


# --- delivery guarantees --------------------------------------------------------


def no_loss() -> Check:
    """Every input is output or dead-lettered (Jepsen: *lost*)."""

    def body(facts: Facts) -> Iterator[Anomaly]:
        for harness_id, found in facts.inputs.items():
            if not facts.accounted(harness_id):
                yield Anomaly(
                    "lost",
                    f"{facts.name(harness_id)} published at {facts.at(found.event)}"
                    " was never output nor dead-lettered",
                    (harness_id,),
                )

    return _check("no_loss()", body)


def no_duplicates() -> Check:
    """No input is output twice, or both output and dead-lettered (*duplicate*).

    With declared output kinds (fan-out), twice means two outputs of one kind:
    a ``result`` and an ``end`` of one input are no duplicate.
    """

    def body(facts: Facts) -> Iterator[Anomaly]:
        for harness_id in facts.inputs:
            landed = facts.accounted(harness_id)
            kinds = [e.detail or "" for e in landed if e.kind is Kind.OUTPUT]
            dead = len(landed) - len(kinds)
            repeated = sorted({k for k in kinds if kinds.count(k) > 1})
            if repeated or dead > 1 or (dead and kinds):
                named = [repr(k) for k in repeated if k]
                as_kind = f" as {', '.join(named)}" if named else ""
                where = ", ".join(f"{_outcome(e)} at {facts.at(e)}" for e in landed)
                yield Anomaly(
                    "duplicate",
                    f"{facts.name(harness_id)} came out {len(landed)} times{as_kind}: {where}",
                    (harness_id,),
                )

    return _check("no_duplicates()", body)


def no_unexpected() -> Check:
    """Every output answers an input of this run (*unexpected* otherwise)."""

    def body(facts: Facts) -> Iterator[Anomaly]:
        for event in facts.uncorrelated:
            why = event.detail or "copy the input's headers or pass Flow(correlate=...)"
            yield Anomaly(
                "unexpected",
                f"{_landing(event)} at {facts.at(event)} carries no harness id ({why})",
            )
        for harness_id in {**facts.outputs, **facts.dead_letters}:
            if harness_id not in facts.inputs:
                first = facts.accounted(harness_id)[0]
                yield Anomaly(
                    "unexpected",
                    f"{_landing(first)} at {facts.at(first)} answers id {harness_id},"
                    " which this run never published",
                    (harness_id,),
                )

    return _check("no_unexpected()", body)


Guarantee = Literal["at-least-once", "exactly-once", "at-most-once"]


def delivery(guarantee: Guarantee) -> Check:
    """The anomalies a delivery guarantee forbids, tolerating those it allows.

    at-least-once: nothing lost (duplicates allowed); exactly-once: nothing
    lost or duplicated; at-most-once: nothing duplicated (loss allowed).
    """
    parts = {
        "at-least-once": (no_loss(),),
        "exactly-once": (no_loss(), no_duplicates()),
        "at-most-once": (no_duplicates(),),
    }.get(guarantee if isinstance(guarantee, str) else "")
    if parts is None:
        raise InvalidArgument(
            f"guarantee={guarantee!r} is invalid: use 'at-least-once', 'exactly-once'"
            " or 'at-most-once'"
        )
    return all_of(f"delivery({guarantee!r})", parts)


def all_of(name: str, parts: Sequence[Check]) -> Check:
    """One check made of several: its anomalies are theirs, in order."""

    def run(history: History) -> Verdict:
        verdicts = [part(history) for part in parts]
        anomalies = tuple(a for v in verdicts for a in v.anomalies)
        return Verdict(name, anomalies, verdicts[0].summary if verdicts else "")

    return Check(name, run)


# --- order ----------------------------------------------------------------------


def _order_anomalies(
    facts: Facts, group_of: Callable[[Input], object], describe: Callable[[object], str]
) -> Iterator[Anomaly]:
    """Within each group, first outputs must come in publish order (*nonmonotonic*).

    Groups are per input destination and per output destination as well (a
    flow with several inputs or outputs: see ``Topology``).

    Publish order is what the publishers guaranteed: an input whose publish
    started after another's (bursts run one after another), or a later one
    of the same producer in a burst. Inputs that concurrent producers
    published in one burst have no order, since the broker may interleave them.
    Redelivered duplicates are judged by their first output, so the replay
    that at-least-once delivery causes after a crash is not a reordering.
    """
    # Per output destination: outputs of one input on two destinations (fan-out) each keep
    # their own order, and so do inputs of two input destinations (one ordered log each).
    first_output: dict[tuple[str | None, str], int] = {}
    for at, event in enumerate(facts.output_order):
        if event.harness_id is not None:
            first_output.setdefault((event.destination, event.harness_id), at)
    outputs = sorted({out for out, _ in first_output}, key=str)
    several_inputs = len({i.event.destination for i in facts.inputs.values()}) > 1
    groups: dict[tuple[str | None, str | None, object], list[Input]] = defaultdict(list)
    for out in outputs:
        for found in facts.inputs.values():
            if (out, found.harness_id) in first_output:
                groups[out, found.event.destination, group_of(found)].append(found)
    for (out, into, group), members in groups.items():
        where = [f"input {into}"] if several_inputs else []
        where += [f"output {out}"] if len(outputs) > 1 else []
        described = ", ".join([*where, describe(group)])
        position = {i.harness_id: first_output[out, i.harness_id] for i in members}
        emitted = sorted(members, key=lambda i: position[i.harness_id])
        latest: Input | None = None  # output so far: the one whose publish started last
        latest_of: dict[str | None, Input] = {}  # ... and the latest one of each producer
        for found in emitted:
            started = found.event.at_ns
            if latest is not None and started < latest.event.at_ns:
                after: Input | None = latest
            else:
                after = latest_of.get(found.event.lane)
                if after is not None and after.number < found.number:
                    after = None
            if after is not None:
                out_late = facts.output_order[position[found.harness_id]]
                out_early = facts.output_order[position[after.harness_id]]
                yield Anomaly(
                    "nonmonotonic",
                    f"{described}: output of #{after.number} (id {after.harness_id})"
                    f" at {facts.at(out_early)} came before #{found.number}"
                    f" (id {found.harness_id}) at {facts.at(out_late)};"
                    f" published at {facts.at(after.event)} and {facts.at(found.event)}",
                    (found.harness_id, after.harness_id),
                )
            if latest is None or started > latest.event.at_ns:
                latest = found
            mine = latest_of.get(found.event.lane)
            if mine is None or found.number > mine.number:
                latest_of[found.event.lane] = found


def per_key_order() -> Check:
    """Inputs with the same key are output in the order they were published."""

    def body(facts: Facts) -> Iterator[Anomaly]:
        return _order_anomalies(
            facts,
            lambda i: i.key,
            lambda key: "no key" if key is None else f"key {_show(key)}",  # type: ignore[arg-type]
        )

    return _check("per_key_order()", body)


def per_partition_order() -> Check:
    """Inputs of one partition (Kafka) or one queue (RabbitMQ) are output in publish order."""

    def body(facts: Facts) -> Iterator[Anomaly]:
        def describe(group: object) -> str:
            assert isinstance(group, tuple)
            destination, partition = group
            return f"queue {destination}" if partition is None else f"partition {partition}"

        return _order_anomalies(facts, lambda i: (i.event.destination, i.event.partition), describe)

    return _check("per_partition_order()", body)


# --- error handling --------------------------------------------------------------


def dead_lettered(when: Callable[[Message], bool]) -> Check:
    """Inputs for which ``when(message)`` holds are dead-lettered, and only those.

    A poison input must reach the dead-letter destination and never the
    output; every other input must not be dead-lettered.
    """
    if not callable(when):
        raise InvalidArgument(
            f"dead_lettered(when={when!r}) needs a function of the input Message returning bool"
        )

    def body(facts: Facts) -> Iterator[Anomaly]:
        for harness_id, found in facts.inputs.items():
            message = found.event.message
            if message is None:
                continue
            poison = bool(when(message))
            dead = facts.dead_letters.get(harness_id, [])
            outputs = facts.outputs.get(harness_id, [])
            if poison and not dead:
                fate = f"was output at {facts.at(outputs[0])}" if outputs else "vanished"
                yield Anomaly(
                    "not-dead-lettered",
                    f"{facts.name(harness_id)} should have been dead-lettered but {fate}",
                    (harness_id,),
                )
            elif poison and outputs:
                yield Anomaly(
                    "not-dead-lettered",
                    f"{facts.name(harness_id)} was dead-lettered but also output"
                    f" at {facts.at(outputs[0])}",
                    (harness_id,),
                )
            elif not poison and dead:
                yield Anomaly(
                    "dead-lettered",
                    f"{facts.name(harness_id)} was dead-lettered at {facts.at(dead[0])}"
                    f"{_dead_letter_reason(dead[0].message)} though it is not poison",
                    (harness_id,),
                )

    return _check(f"dead_lettered(when={getattr(when, '__name__', 'when')})", body)


def max_deliveries(n: int) -> Check:
    """No input is delivered to consumers more than ``n`` times (catches requeue storms).

    The count is the most any witness saw: the broker-side tap, the client
    probes, or the broker's own count on the message (RabbitMQ's
    ``x-delivery-count`` on a quorum queue's redelivery, ``x-death`` on a dead
    letter), so deliveries no probe saw (a process service, ``probes=False``)
    still count, and a delivery two witnesses saw counts once.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidArgument(f"max_deliveries(n={n!r}) is invalid: n is a whole number >= 1")

    def body(facts: Facts) -> Iterator[Anomaly]:
        for harness_id, found in _deliveries(facts).items():
            if found.count > n:
                seen = found.events
                when = (
                    f", first at {facts.at(seen[0])}, last at {facts.at(seen[-1])}" if seen else ""
                )
                said = (
                    f"; the broker counts {found.said}"
                    if found.said is not None and found.said != len(seen)
                    else ""
                )
                yield Anomaly(
                    "max-deliveries",
                    f"{facts.name(harness_id)} was delivered {found.count} times"
                    f" (limit {n}{said}){when}",
                    (harness_id,),
                )

    return _check(f"max_deliveries({n})", body)


@dataclass(frozen=True, slots=True)
class _Delivered:
    """How often one input was delivered: the most any witness says."""

    count: int
    events: list[Event]  # the deliveries of the witness that saw the most
    said: int | None  # the broker's own count, from the message's headers


def _deliveries(facts: Facts) -> dict[str, _Delivered]:
    """Per input, its deliveries as the tap, the probes and the broker itself count them.

    The most of them, never their sum: the tap and the probes see the same
    deliveries, and the broker's count is the same deliveries again.
    """
    seen: dict[str, dict[str, list[Event]]] = defaultdict(lambda: defaultdict(list))
    said: dict[str, int] = {}
    for event in facts.history:
        harness_id = event.harness_id
        if harness_id is None:
            continue
        if event.kind is Kind.DELIVERED:
            seen[harness_id][event.source].append(event)
        elif event.kind is not Kind.DEAD_LETTERED:
            continue
        if event.message is not None:
            found_input = facts.inputs.get(harness_id)
            queue = None if found_input is None else found_input.event.destination
            count = _broker_deliveries(event.message, queue)
            if count is not None and count > said.get(harness_id, 0):
                said[harness_id] = count
    found: dict[str, _Delivered] = {}
    for harness_id in dict.fromkeys([*seen, *said]):  # in the order they were first seen
        events = max(seen[harness_id].values(), key=len, default=[])
        broker = said.get(harness_id)
        found[harness_id] = _Delivered(max(len(events), broker or 0), events, broker)
    return found


def _broker_deliveries(message: Message, queue: str | None) -> int | None:
    """The broker's own delivery count on ``message``, as its driver reads it."""
    counts = [d.deliveries_said(message, queue=queue) for d in drivers()]
    return max((c for c in counts if c is not None), default=None)


def _dead_letter_reason(message: Message | None) -> str:
    """`` (x-death: ...)`` when the broker says why it dead-lettered ``message``."""
    if message is None:
        return ""
    reasons = [d.dead_letter_reason(message) for d in drivers()]
    return next((f" ({reason})" for reason in reasons if reason), "")


# --- timing --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Timing:
    """Publish -> first output (or dead letter) of one accounted input, and the fault window
    it was in flight in (None: an ordinary input)."""

    harness_id: str
    took_ms: float
    touched: FaultWindow | None


def _timings(facts: Facts) -> tuple[list[_Timing], tuple[FaultWindow, ...]]:
    published = {hid: item.event.at_ns for hid, item in facts.inputs.items()}
    out = {hid: landed[0].at_ns for hid in facts.inputs if (landed := facts.accounted(hid))}
    windows = windows_of(facts.history.events, published, out)
    found = [
        _Timing(hid, (out[hid] - at) / 1e6, touched_by(windows, at, out[hid]))
        for hid, at in published.items()
        if hid in out
    ]
    return found, windows


def _during(facts: Facts, window: FaultWindow) -> str:
    """``crash of sut0 (+12.0 ms to +2010.3 ms)``."""
    at = facts.history.since_start
    return f"{window.fault} ({at(window.start_ns)} to {at(window.end_ns)})"


def _positive_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        and not math.isinf(value)
    )


def within(seconds: float, *, under_faults: float | None = None) -> Check:
    """Every input is output (or dead-lettered) within ``seconds`` of being published (*late*).

    Like every duration in the API it is in seconds: ``within(0.5)`` is 500 ms.
    An input a fault touched (in flight during its recovery window, see
    harness._fault_windows) is judged against ``under_faults`` seconds instead,
    or not at all when it is None (the default); the verdict counts them.
    """
    if not _positive_seconds(seconds):
        raise InvalidArgument(
            f"within({seconds!r}) is invalid: give a positive number of seconds, e.g. within(0.5)"
        )
    if under_faults is not None and not _positive_seconds(under_faults):
        raise InvalidArgument(
            f"within({seconds!r}, under_faults={under_faults!r}) is invalid: give a positive"
            " number of seconds for inputs a fault touched, or None to leave them out"
        )
    limit_ms = seconds * 1000
    bound = "" if under_faults is None else f", under_faults={under_faults:g}"
    name = f"within({seconds:g}{bound})"

    def late(facts: Facts, timing: _Timing, windows: bool) -> Anomaly | None:
        window = timing.touched
        if window is None:
            limit, why = limit_ms, "; no fault touched it" if windows else ""
        elif under_faults is None:
            return None
        else:
            limit = under_faults * 1000
            why = f" under faults; in flight during {_during(facts, window)}"
        if timing.took_ms <= limit:
            return None
        return Anomaly(
            "late",
            f"{facts.name(timing.harness_id)} took {timing.took_ms:.1f} ms from publish to"
            f" output (limit {limit:g} ms{why})",
            (timing.harness_id,),
        )

    def run(history: History) -> Verdict:
        facts = Facts(history)
        timings, windows = _timings(facts)
        found = (late(facts, timing, bool(windows)) for timing in timings)
        anomalies = [anomaly for anomaly in found if anomaly is not None]
        touched = sum(t.touched is not None for t in timings)
        summary = facts.summary()
        if touched:
            how = "not judged" if under_faults is None else f"judged against {under_faults:g} s"
            summary += f"; {plural(touched, 'input')} touched by faults {how}"
        return Verdict(name, tuple(anomalies), summary)

    return Check(name, run)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    # In exact arithmetic: as floats, 7 / 100 * 100 is 7.000000000000001, rank 8.
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered) / 100))
    return ordered[rank - 1]


def _percentile_name(name: str) -> float:
    try:
        q = float(name.removeprefix("p").replace("_", "."))
    except ValueError:
        q = -1.0
    if not name.startswith("p") or not 0 < q <= 100:
        raise InvalidArgument(
            f"latency({name}=...) is invalid: name a percentile p50, p99, p99_9, or max"
        )
    return q


def latency(**limits: float) -> Check:
    """Latency percentiles stay under limits in seconds, e.g. ``latency(p50=0.02, p99=0.2)``.

    The percentiles are over the inputs no fault touched (see harness._fault_windows):
    a crash's recovery is no measure of the service's latency. The verdict says
    how many were left out.
    """
    parsed: dict[float, float] = {}  # percentile -> limit in ms
    for name, limit in limits.items():
        q = 100.0 if name == "max" else _percentile_name(name)
        if not _positive_seconds(limit):
            raise InvalidArgument(
                f"latency({name}={limit!r}) is invalid: give a positive number of seconds"
            )
        parsed[q] = limit * 1000
    if not parsed:
        raise InvalidArgument("latency() needs at least one limit, e.g. latency(p99=0.2)")
    label = ", ".join(f"{k}={v:g}" for k, v in limits.items())

    def run(history: History) -> Verdict:
        facts = Facts(history)
        timings, _ = _timings(facts)
        values = [t.took_ms for t in timings if t.touched is None]
        touched = len(timings) - len(values)
        left_out = f" ({touched} touched by faults left out)" if touched else ""
        anomalies = []
        for q, limit in sorted(parsed.items()) if values else ():
            seen = percentile(values, q)
            if seen > limit:
                no_fault = " no fault touched" if touched else ""
                anomalies.append(
                    Anomaly(
                        "late",
                        f"p{q:g} latency is {seen:.1f} ms over"
                        f" {plural(len(values), 'input')}{no_fault} (limit {limit:g} ms)",
                    )
                )
        summary = facts.summary()
        if touched:
            summary += f"; percentiles over {plural(len(values), 'input')}{left_out}"
        return Verdict(name, tuple(anomalies), summary)

    name = f"latency({label})"
    return Check(name, run)
