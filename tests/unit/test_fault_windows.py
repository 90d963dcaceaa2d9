"""Fault windows and the latency checks that judge the inputs a fault touched apart."""

from __future__ import annotations

import pytest
from histories import MS, Script

from message_flow_harness import InvalidArgument
from message_flow_harness._timeline import layout, render_svg
from message_flow_harness.checks import FaultWindow, fault_windows, latency, within


def crash_run() -> Script:
    """sut0 crashes at 10 ms with b in flight; c is published while it is down; it restarts at
    1000 ms, is started again at 1100 ms and works off b and c by 2100 ms; d comes after."""
    return (
        Script()
        .instance("started", at=0)
        .publish("a", at=1)
        .output("a", at=5)
        .publish("b", at=8)
        .fault("crash", at=10)
        .publish("c", at=50)
        .fault("restart", at=1000)
        .instance("started", at=1100)
        .output("c", at=2040)
        .output("b", at=2100)
        .publish("d", at=3000)
        .output("d", at=3005)
    )


def test_a_crash_window_lasts_until_the_backlog_is_worked_off_after_the_restart() -> None:
    assert fault_windows(crash_run().build()) == (FaultWindow("crash of sut0", 10 * MS, 2100 * MS),)


def test_within_leaves_out_inputs_in_flight_at_a_crash_or_published_during_its_recovery() -> None:
    verdict = within(0.5)(crash_run().build())
    assert verdict.ok
    assert str(verdict) == (
        "within(0.5): ok (4 inputs, 4 outputs, 0 dead-lettered;"
        " 2 inputs touched by faults not judged)"
    )


def test_a_slow_ordinary_input_is_still_late_under_faults() -> None:
    history = crash_run().publish("e", at=3010).output("e", at=3900).build()
    verdict = within(0.5)(history)
    assert [a.text for a in verdict.anomalies] == [
        "input #5 (id e) took 890.0 ms from publish to output (limit 500 ms; no fault touched it)"
    ]


def test_touched_inputs_get_a_bound_of_their_own_naming_the_fault() -> None:
    verdict = within(0.5, under_faults=2.0)(crash_run().build())
    assert verdict.check == "within(0.5, under_faults=2)"
    assert [a.text for a in verdict.anomalies] == [
        "input #2 (id b) took 2092.0 ms from publish to output (limit 2000 ms under faults;"
        " in flight during crash of sut0 (+10.0 ms to +2100.0 ms))"
    ]
    assert "2 inputs touched by faults judged against 2 s" in verdict.summary
    assert within(0.5, under_faults=2.1)(crash_run().build()).ok


def test_latency_percentiles_are_over_the_inputs_no_fault_touched() -> None:
    verdict = latency(max=0.01)(crash_run().build())
    assert verdict.ok
    assert verdict.summary.endswith("; percentiles over 2 inputs (2 touched by faults left out)")
    slow = crash_run().publish("e", at=3010).output("e", at=3030).build()
    assert [a.text for a in latency(max=0.01)(slow).anomalies] == [
        "p100 latency is 20.0 ms over 3 inputs no fault touched (limit 10 ms)"
    ]


def test_without_faults_the_verdicts_read_as_before() -> None:
    history = Script().publish("a", at=0).output("a", at=700).build()
    assert [a.text for a in within(0.5)(history).anomalies] == [
        "input #1 (id a) took 700.0 ms from publish to output (limit 500 ms)"
    ]
    assert "touched" not in within(0.5)(history).summary


def test_the_restarted_instances_first_delivery_ends_its_window() -> None:
    """With client-side probes, the instance is consuming again at its first delivery: what is
    published after it is ordinary, even with nothing in flight at the restart."""
    history = (
        Script()
        .instance("started", at=0)
        .fault("crash", at=10)
        .instance("started", at=100)
        .publish("f", at=1200)
        .deliver("f", lane="sut0:consumer-1", source="probe", at=1500)
        .output("f", at=1510)
        .publish("g", at=1600)
        .output("g", at=2200)
        .build()
    )
    assert fault_windows(history) == (FaultWindow("crash of sut0", 10 * MS, 1500 * MS),)
    assert [a.harness_ids for a in within(0.5)(history).anomalies] == [("g",)]


def test_without_a_delivery_the_first_output_after_the_restart_ends_the_window() -> None:
    history = (
        Script()
        .instance("started", at=0)
        .fault("crash", at=10)
        .instance("started", at=100)
        .publish("f", at=200)
        .output("f", at=1500)  # waited for the group to rebalance: touched
        .publish("g", at=1600)
        .output("g", at=1605)
        .build()
    )
    assert fault_windows(history) == (FaultWindow("crash of sut0", 10 * MS, 1500 * MS),)
    assert within(0.5)(history).ok


def test_a_crash_never_restarted_lasts_to_the_end_of_the_run() -> None:
    history = (
        Script()
        .instance("started", at=0)
        .fault("crash", at=10)
        .publish("a", at=20)
        .note("quiet", at=900)
        .build()
    )
    assert fault_windows(history) == (FaultWindow("crash of sut0", 10 * MS, 900 * MS),)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            Script()
            .instance("started", at=0)
            .publish("a", at=5)
            .instance("started", "sut1", at=10)
            .output("a", at=800),
            FaultWindow("sut1 joined", 10 * MS, 800 * MS),
        ),
        (
            Script()
            .instance("started", at=0)
            .instance("started", "sut1", at=1)
            .instance("stopped", "sut1", at=10)
            .publish("a", at=20)
            .output("a", at=800),
            FaultWindow("sut1 left", 10 * MS, 800 * MS),
        ),
        (
            Script()
            .instance("started", at=0)
            .fault("cut", at=10)
            .publish("a", at=20)
            .output("a", at=300),
            FaultWindow("cut of sut0", 10 * MS, 300 * MS),
        ),
        (
            Script()
            .instance("started", at=0)
            .fault("latency 200 ms", at=10)
            .publish("a", at=20)
            .fault("latency 0 ms", at=500)
            .output("a", at=600),
            FaultWindow("latency 200 ms on sut0", 10 * MS, 600 * MS),
        ),
        (
            Script()
            .instance("started", at=0)
            .fault("broker restart (hard)", "broker", at=10)
            .publish("a", at=20)
            .instance("broker ready again after 3.0 s", "broker", at=3010)
            .output("a", at=3200),
            FaultWindow("broker restart (hard)", 10 * MS, 3200 * MS),
        ),
    ],
    ids=["join", "leave", "cut", "latency", "broker-restart"],
)
def test_each_fault_kind_has_a_window(script: Script, expected: FaultWindow) -> None:
    assert fault_windows(script.build())[-1] == expected


def test_the_first_start_the_teardown_and_removing_latency_open_no_window() -> None:
    history = (
        Script()
        .instance("started", at=0)
        .fault("latency 0 ms", at=1)
        .publish("a", at=2)
        .output("a", at=5)
        .instance("stopped", at=10)
        .build()
    )
    assert fault_windows(history) == ()


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), True, "5"])
def test_within_rejects_a_bad_bound_under_faults(bad: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        within(0.5, under_faults=bad)  # type: ignore[arg-type]
    assert f"under_faults={bad!r}) is invalid" in str(raised.value)
    assert "or None to leave them out" in str(raised.value)


def test_the_timeline_shades_each_recovery_window_without_a_label() -> None:
    timeline = layout(crash_run().build())
    [band] = timeline.bands
    crash = next(m for m in timeline.marks if m.tip.startswith("fault +10.0 ms"))
    b_out = next(m for m in timeline.marks if m.tip.startswith("output +2100.0 ms"))
    assert (band.x0, band.x1) == (crash.x, b_out.x)
    assert "recovery window of crash of sut0: +10.0 ms to +2100.0 ms" in band.tip
    assert timeline.overlapping_texts() == []
    assert render_svg(timeline).count('class="fault-window"') == 1
