"""Strategies generate what flows need, and reject bad parameters with the fix."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings

from message_flow_harness import InvalidArgument, Message
from message_flow_harness import strategies as hs
from message_flow_harness.schedule import (
    TRIGGER_EVENTS,
    After,
    Crash,
    Cut,
    Join,
    Latency,
    Pause,
    Publish,
    Settle,
    Step,
)


def _collect(strategy: object, examples: int = 200) -> list[object]:
    seen: list[object] = []

    @given(strategy)  # type: ignore[call-overload]
    # derandomize: a coverage check over drawn values must not depend on the seed
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True)
    def collect(value: object) -> None:
        seen.append(value)

    collect()
    return seen


def test_messages_collide_on_few_keys() -> None:
    lists = _collect(hs.messages(keys=hs.keys(2), max_size=6))
    keys = {m.key for batch in lists for m in batch}  # type: ignore[attr-defined]
    assert keys == {b"a", b"b"}
    assert all(1 <= len(batch) <= 6 for batch in lists)  # type: ignore[arg-type]


def test_poison_values_appear_only_when_asked() -> None:
    plain = _collect(hs.values())
    poisoned = _collect(hs.values(poison=True))
    assert hs.POISON not in plain
    assert hs.POISON in poisoned


def test_schedules_interleave_faults_with_publishes() -> None:
    schedules = _collect(hs.schedules(faults=["crash", "join"], max_faults=2), examples=300)
    kinds = {type(step) for schedule in schedules for step in schedule}  # type: ignore[attr-defined]
    assert {Publish, Crash, Join} <= kinds
    for schedule in schedules:
        steps: list[Step] = schedule  # type: ignore[assignment]
        assert isinstance(steps[0], Publish) or not isinstance(steps[0], Crash)
        assert sum(isinstance(s, Crash) for s in steps) <= 2


def test_a_fault_comes_after_a_publish_a_settle_a_pause_or_an_event() -> None:
    """A pause before a crash lands it inside a message's handling, where commits race;
    an After step lands it right at the commit or delivery it names."""
    schedules = _collect(hs.schedules(faults=["crash"], max_faults=1), examples=600)
    leads: set[type] = set()
    events: set[str] = set()
    for schedule in schedules:
        steps: list[Step] = schedule  # type: ignore[assignment]
        for before, step in itertools.pairwise(steps):
            if isinstance(step, Crash):
                leads.add(type(before))
                if isinstance(before, After):
                    events.add(before.event)
    assert leads == {Publish, Settle, Pause, After}
    assert events == set(TRIGGER_EVENTS)


def test_after_steps_follow_publishes_and_wait_only_for_the_events_given() -> None:
    schedules = _collect(
        hs.schedules(faults=True, max_faults=2, events=["committed"]), examples=300
    )
    seen = 0
    for schedule in schedules:
        steps: list[Step] = schedule  # type: ignore[assignment]
        for index, step in enumerate(steps):
            if isinstance(step, After):
                seen += 1
                assert step == After("committed")
                assert isinstance(steps[index - 1], Publish)  # it watches from the publishes
                assert isinstance(steps[index + 1], Crash | Cut | Latency)  # a fault it lands
    assert seen
    no_events = _collect(hs.schedules(faults=True, events=()), examples=100)
    assert not any(isinstance(s, After) for schedule in no_events for s in schedule)  # type: ignore[attr-defined]


def test_events_must_be_trigger_events() -> None:
    with pytest.raises(InvalidArgument, match="events="):
        hs.schedules(events=["commited"])
    with pytest.raises(InvalidArgument, match="events="):
        hs.schedules(events="committed")


def test_schedules_without_faults_only_publish_and_pause() -> None:
    for schedule in _collect(hs.schedules(faults=False)):
        assert all(type(s).__name__ in {"Publish", "Pause"} for s in schedule)  # type: ignore[attr-defined]


def test_schedules_publish_through_one_producer_unless_asked() -> None:
    def producers(strategy: object) -> set[int]:
        found = _collect(strategy)
        return {s.producer for schedule in found for s in schedule if isinstance(s, Publish)}  # type: ignore[attr-defined]

    assert producers(hs.schedules(faults=False)) == {0}
    assert producers(hs.schedules(faults=False, producers=3)) == {0, 1, 2}


def test_a_publish_prints_its_producer_only_when_not_the_first() -> None:
    message = Message(value=b"v", key=b"k")
    assert repr(Publish(message)) == f"Publish(message={message!r})"
    assert repr(Publish(message, producer=2)) == f"Publish(message={message!r}, producer=2)"
    assert eval(repr(Publish(message, producer=2))) == Publish(message, 2)


def test_a_message_is_a_message() -> None:
    [batch] = _collect(hs.messages(min_size=1, max_size=1), examples=1)
    assert isinstance(batch[0], Message)  # type: ignore[index]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: hs.keys(0), r"keys\(count=0\) is invalid"),
        (lambda: hs.messages(min_size=3, max_size=1), "min_size <= max_size"),
        (lambda: hs.schedules(faults=["meteor"]), r"faults=\['meteor'\] is invalid"),
        (lambda: hs.schedules(max_faults=-1), "max_faults=-1 is invalid"),
        (lambda: hs.values(max_size=-2), "max_size=-2"),
        (lambda: hs.schedules(producers=0), "producers=0 is invalid: give 1 to 8"),
        (lambda: hs.schedules(producers=True), "producers=True is invalid"),
        (lambda: Publish(Message(), producer=8), r"Publish\(producer=8\) is invalid: give 0 to 7"),
    ],
)
def test_bad_parameters_name_the_value(make: object, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        make()  # type: ignore[operator]
