"""The timeline's layout on hand-built histories: what it draws, and that no two labels collide.

A browser checks the same on the zoo's real failures (tests/integration/test_report_render.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from message_flow_harness import History, Kind
from message_flow_harness._checks import Anomaly, Check, no_loss, per_key_order, within
from message_flow_harness._checks import dead_lettered as dead_lettered_check
from message_flow_harness._timeline import (
    ANOMALY_LANE,
    DEAD_LETTER_LANE,
    DELIVERIES_LANE,
    GAP,
    LANE_ORDER,
    LEGEND_WIDTH,
    MARGIN,
    MAX_NOTE,
    OUTPUT_LANE,
    PLOT_WIDTH,
    PUBLISHED_LANE,
    PUSH_BUDGET,
    Line,
    Timeline,
    layout,
    pack_rows,
    render_svg,
)
from tests.unit.histories import Script


def anomalies(history: History, *checks: Check) -> list[Anomaly]:
    return [a for check in checks for a in check(history).anomalies]


def drawn(history: History, *checks: Check) -> Timeline:
    timeline = layout(history, anomalies(history, *checks))
    assert timeline.overlapping_texts() == []
    assert timeline.outside() == []
    return timeline


def texts(timeline: Timeline) -> list[str]:
    return [t.text for t in timeline.texts]


def reordering() -> History:
    """Two inputs of one key published in one burst (same instant), output in reverse."""
    return (
        Script()
        .publish("r-1", key=b"k", at=0)
        .publish("r-2", key=b"k", at=0)
        .deliver("r-1", at=1)
        .deliver("r-2", at=1)
        .output("r-2", at=3)
        .output("r-1", at=3)
        .build()
    )


def crossing(first: Line, second: Line) -> bool:
    """Whether two segments cross (strictly, not just touch at an end)."""

    def side(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    p1, p2 = (first.x1, first.y1), (first.x2, first.y2)
    q1, q2 = (second.x1, second.y1), (second.x2, second.y2)
    return side(p1, p2, q1) * side(p1, p2, q2) < 0 and side(q1, q2, p1) * side(q1, q2, p2) < 0


def test_a_reordering_is_drawn_as_crossing_links() -> None:
    timeline = drawn(reordering(), per_key_order())
    links = [line for line in timeline.lines if line.role == "order"]
    assert [line.tip for line in links] == ["#1: publish -> output", "#2: publish -> output"]
    assert crossing(*links)
    assert "#1 output before #2" not in texts(timeline)
    assert "#2 output before #1" in texts(timeline)


def test_inputs_published_at_one_instant_get_separate_labels_in_publish_order() -> None:
    timeline = drawn(reordering(), per_key_order())
    published = [m for m in timeline.marks if m.tip.startswith("published +")]
    assert [m.tip.split()[-1] for m in sorted(published, key=lambda m: m.x)] == ["r-1", "r-2"]
    assert published[0].x < published[1].x
    labels = {t.text: t for t in timeline.texts if t.text in ("#1", "#2")}
    assert len(labels) == 2


def test_named_inputs_are_ringed_and_others_are_not() -> None:
    history = (
        Script().publish("r-1", key=b"k").publish("r-2", key=b"j").output("r-1").build()
    )  # r-2 is lost
    timeline = drawn(history, no_loss())
    ringed = {m.tip.split()[-1] for m in timeline.marks if m.ringed}
    assert ringed == {"r-2"}
    assert "#2 lost" in texts(timeline)


def test_a_commit_before_the_output_is_drawn_for_a_loss() -> None:
    history = (
        Script()
        .publish("r-1", partition=0, offset=4, at=0)
        .deliver("r-1", at=1)
        .commit(0, 5, at=2)  # covers offset 4 before any output
        .crash(at=3)
        .build()
    )
    timeline = drawn(history, no_loss())
    assert "commit p0@5" in texts(timeline)
    assert "#1 lost: commit p0@5 before its output" in texts(timeline)
    [link] = [line for line in timeline.lines if line.role == "commit"]
    commit = next(m for m in timeline.marks if m.tip.startswith("committed +"))
    assert (link.x2, link.y2) == (commit.x, commit.y)


def test_an_ack_before_the_output_is_drawn_for_a_loss_with_its_delivery_tag() -> None:
    history = (
        Script()
        .publish("r-1", at=0)
        .deliver("r-1", source="probe", at=1)
        .event(Kind.ACKED, source="probe", harness_id="r-1", lane="c1", offset=7, at=2)
        .crash(at=3)
        .build()
    )
    timeline = drawn(history, no_loss())
    assert "ack #1 tag 7" in texts(timeline)
    assert "#1 lost: ack #1 tag 7 before its output" in texts(timeline)


def test_commits_and_settlements_never_read_as_a_question_mark() -> None:
    history = (
        Script()
        .publish("r-1", partition=0, offset=0)
        .deliver("r-1")
        .commit(0, 1)
        .commit(1, 0)
        .ack("r-1")
        .nack("r-1", requeue=False)
        .event(Kind.ACKED, source="probe", lane="c1", offset=3)  # no harness id
        .output("r-1")
        .build()
    )
    labels = texts(drawn(history))
    assert {"commit p0@1", "commit p1@0", "ack #1", "reject #1", "ack no id tag 3"} <= set(labels)
    assert not any("?" in label for label in labels)


def test_a_late_input_shows_its_gap_with_the_duration() -> None:
    history = Script().publish("r-1", at=0).output("r-1", at=250).build()
    timeline = drawn(history, within(0.1))
    assert "#1 late: 250.0 ms" in texts(timeline)
    [gap] = [line for line in timeline.lines if line.role == "late"]
    published = next(m for m in timeline.marks if m.tip.startswith("published +"))
    output = next(m for m in timeline.marks if m.tip.startswith("output +"))
    assert (gap.x1, gap.x2) == (published.x, output.x)


def test_a_poison_input_that_vanished_is_marked_should_be_dead_lettered() -> None:
    history = Script().publish("r-1", value=b"POISON").publish("r-2").output("r-2").build()
    timeline = drawn(history, dead_lettered_check(lambda m: m.value == b"POISON"))
    assert "#1 should be dead-lettered" in texts(timeline)


def test_crash_restart_and_started_at_one_instant_do_not_overlap() -> None:
    history = (
        Script()
        .publish("r-1", at=0)
        .crash("sut0", at=1)
        .event(Kind.FAULT, source="harness", lane="sut0", detail="restart", at=1)
        .event(Kind.NOTE, source="harness", lane="sut0", detail="started", at=1)
        .event(Kind.NOTE, source="harness", lane="sut0", detail="stopped", at=1)
        .output("r-1", at=2)
        .build()
    )
    timeline = drawn(history)
    assert {"crash sut0", "restart", "started", "stopped"} <= set(texts(timeline))


def test_a_burst_of_thirty_and_a_requeue_storm_keep_labels_apart() -> None:
    script = Script()
    for n in range(30):
        script.publish(f"r-{n}", key=b"k", at=0)
    for n in range(30):
        script.output(f"r-{n}", at=1)
    for _ in range(600):
        script.deliver("r-3", redelivered=True, at=2)
        script.nack("r-3", at=2)
    timeline = drawn(script.build())
    assert "#4 again" in texts(timeline)
    assert timeline.width < 1000 + PLOT_WIDTH + PUSH_BUDGET, "1,200 marks do not stretch it"


def test_one_time_axis_keeps_the_order_across_lanes() -> None:
    # Twenty publishes within 20 microseconds push their marks apart; the commit and the
    # crash just after them must still be drawn after them, and in their own order.
    script = Script()
    for n in range(20):
        script.publish(f"r-{n}", partition=0, offset=n, at=n / 1000)
    history = script.commit(0, 20, at=0.03).crash(at=0.04).output("r-0", at=5).build()
    timeline = drawn(history, no_loss())

    def at(kind: str) -> list[float]:
        return [m.x for m in timeline.marks if m.tip.startswith(f"{kind} +")]

    [commit], [crash], [output] = at("committed"), at("fault"), at("output")
    assert max(at("published")) < commit < crash < output


def lanes_of(history: History) -> list[str]:
    return layout(history).lanes


def test_the_lane_order_is_fixed_and_absent_lanes_are_left_out() -> None:
    early_dead_letter = (
        Script()
        .dead_letter("r-9", at=0)
        .note("hello", at=1)
        .deliver("r-1", lane="sut1:consumer-1", at=2)
        .deliver("r-1", lane="sut0:consumer-2", source="probe", at=3)
        .event(Kind.NOTE, source="harness", lane="sut10", detail="started", at=4)
        .event(Kind.NOTE, source="harness", lane="sut0", detail="started", at=4)
        .publish("r-1", at=5)
        .output("r-1", at=6)
        .build()
    )
    assert lanes_of(early_dead_letter) == [
        PUBLISHED_LANE,
        "harness: notes",
        "sut0",
        "sut0:consumer-2",
        "sut10",
        DELIVERIES_LANE,
        OUTPUT_LANE,
        DEAD_LETTER_LANE,
    ]
    plain = Script().output("r-1", at=0).publish("r-1", at=1).build()
    assert lanes_of(plain) == [PUBLISHED_LANE, OUTPUT_LANE]
    assert [lane for lane in LANE_ORDER if lane in lanes_of(early_dead_letter)] == [
        lane for lane in lanes_of(early_dead_letter) if lane in LANE_ORDER
    ]
    history = reordering()
    assert layout(history, anomalies(history, per_key_order())).lanes[-1] == ANOMALY_LANE


def test_the_picture_holds_its_whole_legend_however_narrow_the_run() -> None:
    timeline = drawn(Script().publish("r-1").build())
    legend = [t for t in timeline.texts if t.y > max(m.y for m in timeline.marks[:1])]
    assert "dashed rule: a fault" in [t.text for t in legend]
    assert len({t.y for t in legend}) > 1, "the legend wraps onto more rows"
    assert max(t.box.x1 for t in timeline.texts) <= timeline.width
    assert max(t.box.y1 for t in timeline.texts) <= timeline.height


def test_the_svg_is_sized_to_its_content() -> None:
    timeline = drawn(reordering(), per_key_order())
    svg = render_svg(timeline)
    assert f'width="{timeline.width}" height="{timeline.height}"' in svg
    assert svg.count("<text ") == len(timeline.texts)


def test_an_empty_history_draws_an_empty_picture_with_its_legend() -> None:
    timeline = drawn(History.of_events([]))
    assert timeline.lanes == []
    assert "legend:" in texts(timeline)


@given(st.lists(st.tuples(st.floats(0, 500), st.floats(1, 80)), max_size=60))
def test_packed_rows_never_overlap(spans: list[tuple[float, float]]) -> None:
    boxes = [(x, x + width) for x, width in spans]
    rows = pack_rows(boxes)
    for i, (a0, a1) in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b0, b1 = boxes[j]
            if rows[i] == rows[j]:
                assert a1 + GAP <= b0 or b1 + GAP <= a0


@pytest.mark.parametrize("width", [10.0, 100.0])
def test_packing_uses_no_more_rows_than_labels_stacked_at_one_point(width: float) -> None:
    spans = [(0.0, width)] * 3 + [(width + GAP, 2 * width + GAP)] * 2
    assert max(pack_rows(spans)) + 1 == 3


def test_a_long_note_is_cut_short_and_the_legend_wraps_within_a_screen() -> None:
    error = "exit after crash: " + "x" * 300
    script = Script().publish("r-1", at=0)
    for n in range(200):  # a wide run: many labelled moments
        script.deliver("r-1", lane=f"c{n % 3}", redelivered=True, at=n / 100)
    timeline = drawn(script.note(error, at=3).build())
    [note] = [t for t in timeline.texts if t.text.startswith("exit after crash")]
    assert len(note.text) == MAX_NOTE
    assert note.text.endswith("...")
    assert timeline.width > LEGEND_WIDTH + 200
    legend_top = next(t.y for t in timeline.texts if t.text == "legend:")
    legend = [t for t in timeline.texts if t.y >= legend_top]
    assert max(t.box.x1 for t in legend) <= MARGIN + 100 + LEGEND_WIDTH
