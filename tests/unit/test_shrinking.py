"""How fuzz shrinks on a noisy broker: which candidates count as failing, which steps go."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from message_flow_harness import Message
from message_flow_harness._shrink import delete_steps, judge, place_at_events, size
from message_flow_harness.schedule import After, Crash, Cut, Pause, Publish, Step


def scripted(outcomes: str) -> tuple[Callable[[], Any], list[str]]:
    """A run that fails ("F") or passes (".") in the given order, and the runs it made."""
    made: list[str] = []

    def run() -> Any:
        outcome = outcomes[len(made)]
        made.append(outcome)
        return SimpleNamespace(ok=outcome == ".", run=len(made))

    return run, made


@pytest.mark.parametrize(
    ("outcomes", "tries", "runs", "fails"),
    [
        ("...", 3, 3, False),  # passes every try: passing
        ("FF", 3, 2, True),  # a failure that repeats at once
        ("F..F", 3, 4, True),  # repeats within `tries` more runs
        ("F...", 3, 4, False),  # failed once by luck: passing
        (".F..F", 3, 5, True),  # a pass before the first failure does not count against it
        ("..F...", 3, 6, False),  # the passes in a row are counted from the failure on
        ("F.", 1, 2, False),  # one try: the failure must repeat on the next run
    ],
)
def test_a_candidate_fails_only_when_its_failure_repeats(
    outcomes: str, tries: int, runs: int, fails: bool
) -> None:
    run, made = scripted(outcomes)
    result = judge(run, tries)
    assert len(made) == runs
    assert result.ok is not fails
    assert result.run == runs  # the run that decided it is the one reported


def needs(*required: str) -> Callable[[tuple[str, ...]], bool]:
    """A failure that shows whenever the schedule holds ``required`` in this order."""

    def fails(candidate: tuple[str, ...]) -> bool:
        rest = iter(candidate)
        return all(step in rest for step in required)

    return fails


@pytest.mark.parametrize(
    ("required", "most_runs"),
    [
        # Deleting one step at a time takes a sweep of 21 candidates, then one
        # more sweep to see nothing else can go: 21 + len(required) at least.
        (("k", "l"), 14),  # what the failure needs sits together: chunks go at once
        (("e", "k", "l"), 24),  # spread out: no worse than one at a time
        (("a",), 2),
    ],
)
def test_deleting_steps_leaves_only_what_the_failure_needs(
    required: tuple[str, ...], most_runs: int
) -> None:
    schedule = tuple("abcdefghijklmnopqrstu")
    tried: list[tuple[str, ...]] = []
    fails = needs(*required)

    def judged(candidate: tuple[str, ...]) -> bool:
        tried.append(candidate)
        return fails(candidate)

    kept = delete_steps(schedule, judged, lambda: True)  # type: ignore[arg-type]
    assert kept == required
    assert all(candidate for candidate in tried)  # never the empty schedule
    assert len(tried) <= most_runs


def test_deleting_steps_stops_when_the_time_is_up() -> None:
    clock = iter([True, True, False])
    tried: list[tuple[str, ...]] = []

    def judged(candidate: tuple[str, ...]) -> bool:
        tried.append(candidate)
        return True  # any schedule fails: without the bound this would delete all but one

    kept = delete_steps(tuple("abcdefgh"), judged, lambda: next(clock))  # type: ignore[arg-type]
    # The first half went (the second half is then all there is, so it stays);
    # the time ran out before the quarters.
    assert tried == [tuple("abcd")]
    assert kept == tuple("abcd")


def test_an_after_step_goes_only_with_the_fault_it_places() -> None:
    """Deleting the After alone would leave a timed crash that fails by luck (a flaky judge
    may pass it): the pair stays or goes as one."""
    publish = Publish(Message(b"1"))
    schedule = (publish, After("committed"), Crash(0), Pause(0.02), Cut(0))
    tried: list[tuple[Step, ...]] = []

    def judged(candidate: tuple[Step, ...]) -> bool:
        tried.append(candidate)
        return Crash(0) in candidate  # a judge that would take the timed crash too

    kept = delete_steps(schedule, judged, lambda: True)
    assert kept == (After("committed"), Crash(0))
    assert all(After("committed") not in candidate or Crash(0) in candidate for candidate in tried)


def test_a_fault_at_an_event_is_smaller_than_a_timed_one() -> None:
    publish = Publish(Message(b"1"))
    at_event = (publish, After("committed"), Crash(0))
    timed = (publish, Crash(0))
    after_pause = (publish, Pause(0.005), Crash(0))
    assert size(at_event) < size(timed) < size(after_pause)


def test_a_timed_crash_is_placed_at_the_first_event_that_still_fails() -> None:
    publish = Publish(Message(b"1"))
    schedule = (publish, Pause(0.02), Crash(0), publish, Cut(0))
    tried: list[tuple[Step, ...]] = []

    def judged(candidate: tuple[Step, ...]) -> bool:
        tried.append(candidate)
        return After("delivered") not in candidate  # the race needs the commit

    kept = place_at_events(schedule, ["delivered", "committed", "output"], judged, lambda: True)
    # The pause makes way for the commit; the cut, led by nothing, gets one too.
    assert kept == (publish, After("committed"), Crash(0), publish, After("committed"), Cut(0))
    assert tried[0] == (publish, After("delivered"), Crash(0), publish, Cut(0))
    assert len(tried) == 2 + 2


def test_placing_leaves_faults_already_at_events_and_stops_when_the_time_is_up() -> None:
    publish = Publish(Message(b"1"))
    placed = (publish, After("acked"), Crash(0))
    assert place_at_events(placed, ["delivered"], lambda c: True, lambda: True) == placed
    timed = (publish, Crash(0))
    assert place_at_events(timed, ["delivered"], lambda c: True, lambda: False) == timed
