"""The timeline picture of one run: a layout computed here, then drawn as inline SVG.

:func:`layout` turns a history and the anomalies the checks found into a
:class:`Timeline` of plain shapes with coordinates, so tests can check the
picture without a browser: every text has a box (:attr:`Text.box`), and no two
boxes intersect because labels are packed into rows (:func:`pack_rows`). Lanes
come in one fixed order (:func:`lane_rank`); the SVG is as large as what it
holds, and its legend wraps instead of running off the edge. :func:`render_svg`
only writes the shapes out.

Text is one monospace font at one size, so a label's width is its length times
:data:`CHAR_WIDTH` (a little over the widest common monospace fonts' advance).
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from message_flow_harness._checks import Anomaly
from message_flow_harness._fault_windows import fault_windows
from message_flow_harness._history import Event, History, Kind

FONT_SIZE = 11
#: Pixels per character: DejaVu Sans Mono and Liberation Mono advance 0.6 em (6.6 px).
CHAR_WIDTH = 7.0
ASCENT, DESCENT = 10.5, 3.0  # a text's box above and below its baseline
ROW = 16  # one row of labels
GAP = 6  # between two labels of a row
MARK_SEPARATION = 10  # moments never closer: publish and output order stay visible
PLOT_WIDTH = 1000  # the run's duration, before moments are pushed apart
PUSH_BUDGET = 1500  # at most this much wider for pushing moments apart
MARGIN = 12
LEGEND_WIDTH = 1100  # the legend wraps at this width
MAX_NOTE = 60  # characters of a fault's or note's label
MAX_DRAWN_ANOMALIES = 200  # anomalies annotated on the picture (the verdicts list them all)
MAX_LABELS_PER_LANE = 300  # a lane's labels: the rest of its marks go unlabelled
LABELS_PER_INPUT = 3  # labels of one input's events of one kind in a lane (a requeue storm's)

COLOURS = {
    Kind.PUBLISHED: "#1f77b4",
    Kind.DELIVERED: "#9467bd",
    Kind.ACKED: "#2ca02c",
    Kind.NACKED: "#d62728",
    Kind.COMMITTED: "#17becf",
    Kind.HANDLER_START: "#bcbd22",
    Kind.HANDLER_END: "#bcbd22",
    Kind.HANDLER_ERROR: "#d62728",
    Kind.SENT: "#8c564b",
    Kind.OUTPUT: "#2ca02c",
    Kind.DEAD_LETTERED: "#ff7f0e",
    Kind.ABORTED: "#b0b0b0",  # grey: landed, but no read_committed consumer sees it
    Kind.SIDE_EVENT: "#98df8a",
    Kind.FAULT: "#d62728",
    Kind.NOTE: "#7f7f7f",
}
ANOMALY_COLOUR = "#c00000"
ANOMALY_LANE = "anomalies"

# --- lanes ------------------------------------------------------------------------

PUBLISHED_LANE = "harness: published"
NOTES_LANE = "harness: notes"
DELIVERIES_LANE = "broker: deliveries"
OUTPUT_LANE = "broker: output"
ABORTED_LANE = "broker: aborted"
DEAD_LETTER_LANE = "broker: dead letters"
SIDE_EVENT_LANE = "broker: side events"
BROKER_LANE = "broker"
#: The one lane order of every picture: the harness, then each service instance
#: (its own lane, then its clients', by name), then what the broker saw.
LANE_ORDER = (
    PUBLISHED_LANE,
    NOTES_LANE,
    "<service instances and their clients, by name>",
    BROKER_LANE,
    DELIVERIES_LANE,
    OUTPUT_LANE,
    ABORTED_LANE,
    DEAD_LETTER_LANE,
    SIDE_EVENT_LANE,
    ANOMALY_LANE,
)
_SERVICE_RANK = LANE_ORDER.index("<service instances and their clients, by name>")


def lane_of(event: Event) -> str:
    """The lane an event is drawn on."""
    if event.kind is Kind.PUBLISHED:
        return PUBLISHED_LANE
    if event.kind is Kind.OUTPUT:
        return OUTPUT_LANE
    if event.kind is Kind.DEAD_LETTERED:
        return DEAD_LETTER_LANE
    if event.kind is Kind.ABORTED:
        return ABORTED_LANE
    if event.kind is Kind.SIDE_EVENT:
        return SIDE_EVENT_LANE
    if event.source == "tap":
        return DELIVERIES_LANE
    if event.lane is None:
        return NOTES_LANE if event.source == "harness" else event.source
    return event.lane


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """``sut2`` before ``sut10``: digits compare as numbers."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def lane_rank(lane: str) -> tuple[int, tuple[tuple[int, int | str], ...]]:
    """Where ``lane`` goes in :data:`LANE_ORDER` (service lanes by their natural name order)."""
    rank = LANE_ORDER.index(lane) if lane in LANE_ORDER else _SERVICE_RANK
    return rank, _natural(lane) if rank == _SERVICE_RANK else ()


# --- shapes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned rectangle: x0 <= x1, y0 <= y1 (SVG coordinates, y down)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )


def text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


@dataclass(frozen=True, slots=True)
class Text:
    """A text drawn left-anchored at ``x`` with its baseline at ``y``."""

    x: float
    y: float
    text: str
    colour: str = "#000"
    bold: bool = False
    tip: str = ""

    @property
    def box(self) -> Box:
        return Box(self.x, self.y - ASCENT, self.x + text_width(self.text), self.y + DESCENT)


@dataclass(frozen=True, slots=True)
class Mark:
    """An event: a dot, ringed when an anomaly names its input."""

    x: float
    y: float
    colour: str
    tip: str
    ringed: bool = False


@dataclass(frozen=True, slots=True)
class Line:
    """A link between two marks, a late input's span, a fault's dashed rule, a lane's axis."""

    x1: float
    y1: float
    x2: float
    y2: float
    colour: str
    role: str  # "axis", "fault", "order", "commit", "late"
    width: float = 1.0
    dashed: bool = False
    tip: str = ""


@dataclass(frozen=True, slots=True)
class Band:
    """A fault's recovery window (harness._fault_windows): a shaded band across every lane.

    It has no label, only a hover text, so it never overlaps a label.
    """

    x0: float
    x1: float
    y0: float
    y1: float
    tip: str


@dataclass(slots=True)
class Timeline:
    """Everything the picture draws, placed."""

    width: float
    height: float
    lanes: list[str]
    texts: list[Text] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)

    def overlapping_texts(self) -> list[tuple[Text, Text]]:
        """Pairs of texts whose boxes intersect (none, by construction)."""
        found = []
        ordered = sorted(self.texts, key=lambda t: t.box.x0)
        for index, first in enumerate(ordered):
            box = first.box
            for second in ordered[index + 1 :]:
                other = second.box
                if other.x0 >= box.x1:
                    break
                if box.overlaps(other):
                    found.append((first, second))
        return found

    def outside(self) -> list[Text]:
        """Texts not wholly inside the picture (none, by construction)."""
        frame = Box(0, 0, self.width, self.height)
        return [
            t
            for t in self.texts
            if t.box.x0 < frame.x0
            or t.box.y0 < frame.y0
            or t.box.x1 > frame.x1
            or t.box.y1 > frame.y1
        ]


# --- packing labels into rows --------------------------------------------------------


def pack_rows(spans: Sequence[tuple[float, float]], *, gap: float = GAP) -> list[int]:
    """The row of each horizontal span ``(x0, x1)``: the lowest row where it fits.

    Spans of one row are at least ``gap`` apart, so texts placed by row never
    touch. Greedy over spans sorted by start: the interval-graph colouring that
    uses no more rows than the most spans any one x has.
    """
    rows_end: list[float] = []
    placed = [0] * len(spans)
    for index in sorted(range(len(spans)), key=lambda i: spans[i]):
        x0, x1 = spans[index]
        for row, end in enumerate(rows_end):
            if end + gap <= x0:
                rows_end[row] = x1
                placed[index] = row
                break
        else:
            placed[index] = len(rows_end)
            rows_end.append(x1)
    return placed


# --- what each event and anomaly says -----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Inputs:
    """Input numbers in publish order, as the checks count them (``input #3``)."""

    numbers: dict[str, int]

    def name(self, harness_id: str | None) -> str:
        if harness_id is None:
            return "no id"
        number = self.numbers.get(harness_id)
        return f"#{number}" if number is not None else f"id {harness_id}"


def event_label(event: Event, inputs: _Inputs) -> str:
    """The short text over a mark: which input, and for settlements which offset or tag."""
    if event.kind in (Kind.FAULT, Kind.NOTE):
        text = event.detail or str(event.kind)
        # An exception's repr can run to hundreds of characters: the hover text has it all.
        return text if len(text) <= MAX_NOTE else text[: MAX_NOTE - 3] + "..."
    if event.kind is Kind.COMMITTED:
        where = "" if event.partition is None else f"p{event.partition}"
        return f"commit {where}@{event.offset}" if event.offset is not None else f"commit {where}"
    name = inputs.name(event.harness_id)
    # A RabbitMQ probe records the delivery tag in ``offset``.
    tag = f" tag {event.offset}" if event.offset is not None else ""
    match event.kind:
        case Kind.ACKED:
            return f"ack {name}{tag}"
        case Kind.NACKED:
            return f"{'requeue' if event.requeue else 'reject'} {name}{tag}"
        case Kind.DELIVERED:
            return f"{name} again" if event.redelivered else name
        case Kind.HANDLER_START:
            return f"{name} start"
        case Kind.HANDLER_END:
            return f"{name} end"
        case Kind.HANDLER_ERROR:
            return f"{name} error"
        case Kind.SENT:
            return f"{name} sent"
        case Kind.OUTPUT if event.harness_id is not None and event.detail:
            return f"{name} {event.detail}"  # its kind: which output, of several
        case Kind.SIDE_EVENT:
            return f"{name} side event"
        case Kind.ABORTED:
            return f"{name} aborted"
    return name


def event_tip(event: Event, history: History) -> str:
    """The hover text of a mark: what, when, which input, where."""
    parts = [str(event.kind), history.since_start(event.at_ns), event.source]
    if event.destination:
        parts.append(f"on {event.destination}")
    if event.harness_id:
        parts.append(f"id {event.harness_id}")
    if event.partition is not None:
        parts.append(f"partition {event.partition}")
    if event.offset is not None:
        parts.append(f"offset {event.offset}")
    if event.detail:
        parts.append(event.detail)
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class _Note:
    """One annotation of the anomalies lane: a text at x, with an optional span under it."""

    x: float
    text: str
    tip: str
    span_to: float | None = None  # a late input: from publish (x) to output (span_to)

    def extent(self) -> tuple[float, float]:
        end = self.x + text_width(self.text)
        return self.x, max(end, self.span_to or end)


# --- the layout ----------------------------------------------------------------------


class _Layout:
    """State of one layout: the marks' x per event, then lanes stacked top to bottom."""

    def __init__(self, history: History, anomalies: Sequence[Anomaly]) -> None:
        self.history = history
        self.events = list(history)
        self.anomalies = anomalies
        self.inputs = _Inputs({hid: n for n, hid in enumerate(history.inputs(), 1)})
        self.named = {hid for a in anomalies for hid in a.harness_ids}
        self.by_lane: dict[str, list[int]] = defaultdict(list)
        # Indexes, so a run of 100,000 events with thousands of anomalies is drawn in seconds.
        self.of_input: dict[tuple[str, Kind], list[int]] = defaultdict(list)
        self.commits: list[int] = []
        for index, event in enumerate(self.events):
            self.by_lane[lane_of(event)].append(index)
            if event.harness_id is not None:
                self.of_input[event.harness_id, event.kind].append(index)
            if event.kind is Kind.COMMITTED:
                self.commits.append(index)
        lanes = [*self.by_lane, *([ANOMALY_LANE] if anomalies else [])]
        self.lanes = sorted(lanes, key=lane_rank)
        self.left = MARGIN + max((text_width(lane) for lane in self.lanes), default=0) + 2 * MARGIN
        self.labelled = {i for ids in self.by_lane.values() for i in self._labelled(ids)}
        self.x = self._place_marks()
        self.right = max([self.left + PLOT_WIDTH, *self.x.values()])  # the axes' end
        self.y: dict[int, float] = {}  # each event's mark y, once its lane is placed
        self.timeline = Timeline(width=0, height=0, lanes=self.lanes)

    def _place_marks(self) -> dict[int, float]:
        """Each event's x: its time on one axis shared by every lane, warped so that no two
        moments with events are closer than a separation.

        A moment is a time and, for events of one lane at the very same time (a burst's
        publishes), their order: so a burst's inputs get marks of their own in publish order,
        and one axis keeps the order across lanes (a commit stays left of the crash after it).
        Only moments with a label are pushed, and the separation shrinks when there are many,
        so the picture is at most :data:`PUSH_BUDGET` wider and a requeue storm's thousand
        unlabelled redeliveries do not squeeze the labelled start of the run.
        """
        start = min((e.at_ns for e in self.events), default=0)
        span = max(max((e.at_ns for e in self.events), default=0) - start, 1)
        moment: dict[int, tuple[int, int]] = {}
        same_time: dict[tuple[str, int], int] = defaultdict(int)
        for index, event in enumerate(self.events):
            lane = lane_of(event)
            moment[index] = (event.at_ns, same_time[lane, event.at_ns])
            same_time[lane, event.at_ns] += 1
        moments = sorted(set(moment.values()))
        # Only moments with a label are pushed apart: a storm's unlabelled marks take no room.
        labelled = {moment[i] for i in self.labelled}
        separation = min(MARK_SEPARATION, PUSH_BUDGET / max(len(labelled), 1))
        x_of: dict[tuple[int, int], float] = {}
        previous, shift = -float("inf"), 0.0
        for at_ns, order in moments:
            x = self.left + (at_ns - start) / span * PLOT_WIDTH + shift
            if (at_ns, order) in labelled and x < previous + separation:
                # Room is inserted, not taken: later moments keep their spacing in time.
                shift += previous + separation - x
                x = previous + separation
            x_of[at_ns, order] = previous = x
        return {index: x_of[key] for index, key in moment.items()}

    def first(self, harness_id: str, *kinds: Kind) -> int | None:
        """The first event of ``harness_id`` of one of ``kinds``."""
        found = [
            self.of_input[harness_id, kind][0] for kind in kinds if self.of_input[harness_id, kind]
        ]
        return min(found, default=None)

    # --- stacking lanes ---

    def build(self) -> Timeline:
        top: float = MARGIN
        notes = list(self._notes())
        for lane in self.lanes:
            if lane == ANOMALY_LANE:
                top = self._anomaly_lane(top, notes)
            else:
                top = self._event_lane(lane, top)
        self._draw_links()
        lanes_bottom = top
        top = self._legend(top + ROW)
        right = max(
            [self.right]
            + [t.box.x1 for t in self.timeline.texts]
            + [m.x + 5 for m in self.timeline.marks]
            + [max(line.x1, line.x2) for line in self.timeline.lines]
        )
        self.timeline.width = round(right + MARGIN)
        self.timeline.height = round(top + MARGIN)
        for index, line in enumerate(self.timeline.lines):
            if line.role == "fault":  # a fault's rule crosses every lane
                self.timeline.lines[index] = Line(
                    line.x1,
                    MARGIN,
                    line.x2,
                    lanes_bottom,
                    line.colour,
                    "fault",
                    dashed=True,
                    tip=line.tip,
                )
        self._bands(lanes_bottom)
        return self.timeline

    def _bands(self, bottom: float) -> None:
        """One shaded band per fault window, from the fault to the end of its recovery."""
        first_x: dict[int, float] = {}
        last_x: dict[int, float] = {}
        for index, event in enumerate(self.events):
            x = self.x[index]
            first_x[event.at_ns] = min(x, first_x.get(event.at_ns, x))
            last_x[event.at_ns] = max(x, last_x.get(event.at_ns, x))
        since = self.history.since_start
        for window in fault_windows(self.history):
            x0 = first_x.get(window.start_ns, self.left)
            x1 = max(x0, last_x.get(window.end_ns, self.right))
            tip = (
                f"recovery window of {window.fault}: {since(window.start_ns)} to"
                f" {since(window.end_ns)}; inputs in flight in it are touched by the fault"
            )
            self.timeline.bands.append(Band(x0, x1, MARGIN, bottom, tip))

    def _lane_title(self, lane: str, axis_y: float) -> None:
        self.timeline.texts.append(Text(MARGIN, axis_y + 4, lane, bold=lane == ANOMALY_LANE))

    def _event_lane(self, lane: str, top: float) -> float:
        indices = self.by_lane[lane]
        labelled = [i for i in indices if i in self.labelled]
        texts = {i: event_label(self.events[i], self.inputs) for i in labelled}
        # A label is centred over its mark but never starts left of the plot.
        starts = {i: max(self.left, self.x[i] - text_width(texts[i]) / 2) for i in labelled}
        rows = pack_rows([(starts[i], starts[i] + text_width(texts[i])) for i in labelled])
        height = max(rows, default=-1) + 1
        axis_y = top + height * ROW + ASCENT + 4
        self._lane_title(lane, axis_y)
        self.timeline.lines.append(Line(self.left, axis_y, self.right, axis_y, "#ddd", "axis"))
        for index, row in zip(labelled, rows, strict=True):
            event = self.events[index]
            named = event.harness_id in self.named
            colour = ANOMALY_COLOUR if named else COLOURS.get(event.kind, "#000")
            baseline = axis_y - 7 - row * ROW
            tip = event_tip(event, self.history)
            self.timeline.texts.append(
                Text(starts[index], baseline, texts[index], colour, named, tip)
            )
        for index in indices:
            event = self.events[index]
            self.y[index] = axis_y
            tip = event_tip(event, self.history)
            ringed = event.harness_id in self.named
            self.timeline.marks.append(
                Mark(self.x[index], axis_y, COLOURS.get(event.kind, "#000"), tip, ringed)
            )
            if event.kind is Kind.FAULT:
                self.timeline.lines.append(
                    Line(self.x[index], 0, self.x[index], 0, COLOURS[Kind.FAULT], "fault", tip=tip)
                )
        return axis_y + DESCENT + ROW

    def _labelled(self, indices: list[int]) -> list[int]:
        """The events of a lane that get a label: an input's first few of each kind, within a
        bound per lane. A requeue storm's thousand redeliveries keep their marks; their count
        is in the anomalies lane and every event is in the table."""
        chosen: list[int] = []
        seen: dict[tuple[Kind, str, bool | None], int] = defaultdict(int)
        for index in indices:
            event = self.events[index]
            if event.harness_id is not None:
                key = (event.kind, event.harness_id, event.redelivered or event.requeue)
                seen[key] += 1
                if seen[key] > LABELS_PER_INPUT:
                    continue
            if len(chosen) < MAX_LABELS_PER_LANE:
                chosen.append(index)
        return chosen

    # --- anomalies ---

    def _notes(self) -> Iterator[_Note]:
        """The annotations of the anomalies lane, one per (anomaly, input) it names."""
        seen: set[tuple[str, str]] = set()
        for anomaly in self.anomalies[:MAX_DRAWN_ANOMALIES]:
            for harness_id in anomaly.harness_ids:
                if (anomaly.kind, harness_id) in seen and anomaly.kind != "nonmonotonic":
                    continue
                seen.add((anomaly.kind, harness_id))
                note = self._note(anomaly, harness_id)
                if note is not None:
                    yield note
        rest = len(self.anomalies) - MAX_DRAWN_ANOMALIES
        if rest > 0:
            yield _Note(self.left, f"... and {rest} more anomalies (see the verdicts)", "")

    def _note(self, anomaly: Anomaly, harness_id: str) -> _Note | None:
        name = self.inputs.name(harness_id)
        published = self.first(harness_id, Kind.PUBLISHED)
        output = self.first(harness_id, Kind.OUTPUT, Kind.DEAD_LETTERED)
        at = self.x[published] if published is not None else self.left
        kind = anomaly.kind
        if kind == "late" and published is not None and output is not None:
            took = (self.events[output].at_ns - self.events[published].at_ns) / 1e6
            return _Note(at, f"{name} late: {took:.1f} ms", anomaly.text, self.x[output])
        if kind == "lost":
            settled = self._early_settlement(harness_id)
            if settled is not None:
                what = event_label(self.events[settled], self.inputs)
                return _Note(
                    self.x[settled], f"{name} lost: {what} before its output", anomaly.text
                )
            return _Note(at, f"{name} lost", anomaly.text)
        if kind == "nonmonotonic":
            if harness_id != anomaly.harness_ids[0]:
                return None  # one note per pair, at the output that came too late
            later = self.first(harness_id, Kind.OUTPUT)
            other = self.inputs.name(anomaly.harness_ids[1])
            x = self.x[later] if later is not None else at
            return _Note(x, f"{other} output before {name}", anomaly.text)
        if kind == "not-dead-lettered":
            return _Note(at, f"{name} should be dead-lettered", anomaly.text)
        if kind == "duplicate":
            count = len(self.of_input[harness_id, Kind.OUTPUT]) + len(
                self.of_input[harness_id, Kind.DEAD_LETTERED]
            )
            x = self.x[output] if output is not None else at
            return _Note(x, f"{name} out {count} times", anomaly.text)
        if kind == "max-deliveries":
            deliveries = [self.events[i] for i in self.of_input[harness_id, Kind.DELIVERED]]
            # The broker's own count (a tap) wins over the client's, as the check counts.
            count = sum(e.source == "tap" for e in deliveries) or len(deliveries)
            delivered = self.first(harness_id, Kind.DELIVERED)
            x = self.x[delivered] if delivered is not None else at
            return _Note(x, f"{name} delivered {count} times", anomaly.text)
        return _Note(at, f"{name} {kind}", anomaly.text)

    def _early_settlement(self, harness_id: str) -> int | None:
        """The commit (Kafka) or ack (RabbitMQ) that let a never-output input go."""
        published = self.first(harness_id, Kind.PUBLISHED)
        acked = self.first(harness_id, Kind.ACKED)
        if acked is not None:
            return acked
        if published is None:
            return None
        source = self.events[published]
        if source.offset is None:
            return None
        for index in self.commits:
            event = self.events[index]
            if (
                event.destination in (None, source.destination)
                and event.partition == source.partition
                and event.offset is not None
                and event.offset > source.offset
            ):
                return index
        return None

    def _anomaly_lane(self, top: float, notes: list[_Note]) -> float:
        rows = pack_rows([note.extent() for note in notes])
        height = max(rows, default=-1) + 1
        axis_y = top + ASCENT
        self._lane_title(ANOMALY_LANE, axis_y)
        for note, row in zip(notes, rows, strict=True):
            baseline = axis_y + row * (ROW + 4)
            self.timeline.texts.append(
                Text(note.x, baseline, note.text, ANOMALY_COLOUR, bold=True, tip=note.tip)
            )
            if note.span_to is not None:
                y = baseline + DESCENT + 1
                self.timeline.lines.append(
                    Line(note.x, y, note.span_to, y, ANOMALY_COLOUR, "late", 2, tip=note.tip)
                )
        return axis_y + max(height, 1) * (ROW + 4)

    def _draw_links(self) -> None:
        """The crossing of a reordering and the settlement before a lost output."""
        for anomaly in self.anomalies[:MAX_DRAWN_ANOMALIES]:
            if anomaly.kind == "nonmonotonic":
                for harness_id in anomaly.harness_ids:
                    self._link(
                        self.first(harness_id, Kind.PUBLISHED),
                        self.first(harness_id, Kind.OUTPUT),
                        "order",
                        f"{self.inputs.name(harness_id)}: publish -> output",
                    )
            elif anomaly.kind == "lost":
                for harness_id in anomaly.harness_ids:
                    self._link(
                        self.first(harness_id, Kind.PUBLISHED),
                        self._early_settlement(harness_id),
                        "commit",
                        f"{self.inputs.name(harness_id)} settled, never output",
                    )

    def _link(self, start: int | None, end: int | None, role: str, tip: str) -> None:
        if start is None or end is None:
            return
        self.timeline.lines.append(
            Line(
                self.x[start], self.y[start], self.x[end], self.y[end], ANOMALY_COLOUR, role,
                1.5, dashed=role == "commit", tip=tip,
            )
        )  # fmt: skip

    # --- the legend ---

    def _legend(self, top: float) -> float:
        """Swatches and names, wrapped to the picture's width so none is cut off."""
        items: list[tuple[str, str]] = [(str(kind), colour) for kind, colour in COLOURS.items()]
        items += [
            ("ringed: named by an anomaly", ANOMALY_COLOUR),
            ("solid red links: publish -> output of a reordered pair", ANOMALY_COLOUR),
            ("dashed red link: settled before output (lost)", ANOMALY_COLOUR),
            ("red bar: publish -> output of a late input", ANOMALY_COLOUR),
            ("dashed rule: a fault", COLOURS[Kind.FAULT]),
            ("shaded band: a fault's recovery window", COLOURS[Kind.FAULT]),
        ]
        # Wrapped within the first screenful, so a wide run's legend needs no scrolling.
        widest = max(12 + text_width(text) for text, _ in items)
        limit = MARGIN + text_width("legend:") + 2 * GAP + max(LEGEND_WIDTH, widest)
        x, baseline = float(MARGIN), top + ASCENT
        self.timeline.texts.append(Text(x, baseline, "legend:", bold=True))
        x += text_width("legend:") + 2 * GAP
        for text, colour in items:
            width = 12 + text_width(text)
            if x + width > limit:
                x, baseline = MARGIN + text_width("legend:") + 2 * GAP, baseline + ROW
            self.timeline.marks.append(Mark(x + 4, baseline - 4, colour, text))
            self.timeline.texts.append(Text(x + 12, baseline, text))
            x += width + 3 * GAP
        return baseline + DESCENT


def layout(history: History, anomalies: Iterable[Anomaly] = ()) -> Timeline:
    """Place the picture of ``history``, marking what ``anomalies`` name."""
    return _Layout(history, tuple(anomalies)).build()


# --- drawing -------------------------------------------------------------------------


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def render_svg(timeline: Timeline) -> str:
    """The timeline as an inline ``<svg>`` element, sized to what it holds."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{timeline.width}"'
        f' height="{timeline.height}" viewBox="0 0 {timeline.width} {timeline.height}"'
        f' font-family="monospace" font-size="{FONT_SIZE}">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for band in timeline.bands:  # under everything else: marks and labels stay readable
        parts.append(
            f'<rect class="fault-window" x="{band.x0:.1f}" y="{band.y0:.1f}"'
            f' width="{band.x1 - band.x0:.1f}" height="{band.y1 - band.y0:.1f}"'
            f' fill="{COLOURS[Kind.FAULT]}" fill-opacity="0.08">'
            f"<title>{_attr(band.tip)}</title></rect>"
        )
    for line in timeline.lines:
        dash = ' stroke-dasharray="4 3"' if line.dashed else ""
        if line.role in ("order", "commit"):  # links cross lanes: the labels stay readable
            dash += ' stroke-opacity="0.6"'
        tip = f"<title>{_attr(line.tip)}</title>" if line.tip else ""
        parts.append(
            f'<line class="{line.role}" x1="{line.x1:.1f}" y1="{line.y1:.1f}" x2="{line.x2:.1f}"'
            f' y2="{line.y2:.1f}" stroke="{line.colour}" stroke-width="{line.width}"{dash}>'
            f"{tip}</line>"
        )
    for mark in timeline.marks:
        ring = ' stroke="#c00000" stroke-width="2"' if mark.ringed else ""
        radius = 5 if mark.ringed else 4
        parts.append(
            f'<circle cx="{mark.x:.1f}" cy="{mark.y:.1f}" r="{radius}" fill="{mark.colour}"{ring}>'
            f"<title>{_attr(mark.tip)}</title></circle>"
        )
    for text in timeline.texts:
        weight = ' font-weight="bold"' if text.bold else ""
        drawn = (
            f'<text x="{text.x:.1f}" y="{text.y:.1f}" fill="{text.colour}"{weight}>'
            f"{html.escape(text.text)}</text>"
        )
        # The hover text goes beside the <text>, not in it, so the text holds only its label.
        parts.append(f"<g><title>{_attr(text.tip)}</title>{drawn}</g>" if text.tip else drawn)
    parts.append("</svg>")
    return "\n".join(parts)
