"""How fuzz shrinks on a noisy broker: which candidates count as failing, which steps go."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from message_flow_harness import Message
from message_flow_harness._shrink import (
    Shrinker,
    delete_steps,
    judge,
    place_at_events,
    size,
    steadier,
    steady,
    unsteady_after,
)
from message_flow_harness.schedule import After, Crash, Cut, Join, Pause, Publish, Step


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


@pytest.mark.parametrize(
    ("failed", "runs", "is_steady"),
    [(5, 5, True), (4, 5, True), (3, 5, False), (0, 5, False), (8, 10, True), (0, 0, True)],
)
def test_a_reproduction_is_steady_when_it_fails_again_in_four_of_five(
    failed: int, runs: int, is_steady: bool
) -> None:
    assert steady(failed, runs) is is_steady


def test_a_schedule_cannot_be_steady_once_it_passed_more_than_a_fifth_of_its_reruns() -> None:
    assert (unsteady_after(5), unsteady_after(10), unsteady_after(1)) == (2, 3, 1)


def failing(schedule: tuple[Step, ...], *failed_checks: str) -> Any:
    """A failing run of ``schedule`` whose verdicts name ``failed_checks``."""
    verdicts = [SimpleNamespace(check=check) for check in failed_checks]
    return SimpleNamespace(ok=False, schedule=schedule, failures=lambda: verdicts)


def test_the_larger_failures_are_the_other_runs_failing_what_the_minimal_fails() -> None:
    """Where a steadier reproduction is sought: every other failure seen of the same
    checks (more may fail too), smallest first; one of other checks is another finding."""
    one, two = Publish(Message(b"1", key=b"a")), Publish(Message(b"2", key=b"d"))
    minimal = failing((one, Join()), "no_duplicates()")
    same_size = failing((two, Join()), "no_duplicates()")
    larger = failing((one, two, Join()), "no_duplicates()")
    largest = failing((one, two, Join(), one), "no_duplicates()", "no_loss()")
    elsewhere = failing((one, two, Pause(0.1)), "no_loss()")
    passing = SimpleNamespace(ok=True, schedule=(one,), failures=lambda: [])
    shrinker = Shrinker(seconds=1.0, tries=3, stop=threading.Event())
    for run in (largest, minimal, elsewhere, passing, larger, same_size):
        shrinker.keep(run)
    assert shrinker.smallest is minimal
    assert shrinker.larger_failures(minimal) == [same_size, larger, largest]


def scripted_reruns(outcomes: dict[str, str]) -> tuple[Any, list[tuple[str, int | None]]]:
    """Re-runs of each candidate (named by its first step) failing ("F") or passing (".")
    in the given order across all its re-runs, and the (candidate, give-up) calls made."""
    made: list[tuple[str, int | None]] = []

    async def rerun(run: Any, into: list[bool], give_up: int | None) -> Any:
        name = run.schedule[0]
        made.append((name, give_up))
        while len(into) < 5:
            outcome = outcomes[name][0]
            outcomes[name] = outcomes[name][1:]
            into.append(outcome == "F")
            if give_up is not None and into.count(False) >= give_up:
                break
        return SimpleNamespace(schedule=run.schedule, failing=True)

    return rerun, made


@pytest.mark.parametrize(
    ("minimal_reruns", "outcomes", "chosen", "calls"),
    [
        # Steady already: nothing is re-run.
        ([True, True, True, True, False], {"a": "FFFFF" * 2}, None, []),
        # The first candidate is ruled out at its second pass; the second is screened
        # (4 of 5) and confirmed (5 of 5): the confirmation is its figure.
        (
            [True, False, True, False, False],
            {"a": "F.F.", "b": "FF.FF" + "FFFFF"},
            ("b", [True] * 5),
            [("a", 2), ("b", 2), ("b", None)],
        ),
        # Screened by luck, not confirmed: the search goes on, and nothing is steady.
        (
            [True, False, False, False, False],
            {"a": "FFFF." + "F.F.F", "b": ".."},
            None,
            [("a", 2), ("a", None), ("b", 2)],
        ),
    ],
)
def test_a_steadier_reproduction_is_screened_then_confirmed(
    minimal_reruns: list[bool],
    outcomes: dict[str, str],
    chosen: tuple[str, list[bool]] | None,
    calls: list[tuple[str, int | None]],
) -> None:
    rerun, made = scripted_reruns(outcomes)
    candidates = [SimpleNamespace(schedule=(name,)) for name in outcomes]
    found = asyncio.run(
        steadier(minimal_reruns, candidates, rerun, runs=5, time_left=lambda: True)  # type: ignore[arg-type]
    )
    assert made == calls
    if chosen is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0].schedule[0], found[1]) == chosen


def test_seeking_a_steadier_reproduction_stops_when_the_time_is_up() -> None:
    rerun, made = scripted_reruns({"a": "....."})
    candidates: Any = [SimpleNamespace(schedule=("a",))]
    found = asyncio.run(steadier([False] * 5, candidates, rerun, runs=5, time_left=lambda: False))
    assert found is None
    assert made == []
