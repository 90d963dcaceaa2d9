"""The history model: recording, queries, readable times and the JSON form."""

from __future__ import annotations

import inspect
import json
import time
from inspect import Parameter
from pathlib import Path
from typing import Any

import pytest
from histories import MS, Script
from hypothesis import given, settings
from hypothesis import strategies as st

from message_flow_harness import HARNESS_ID_HEADER, InvalidArgument, Message, TapRecord
from message_flow_harness._history import Event, History, Kind

FORMAT = "message-flow-harness/history/1"

# --- recording -------------------------------------------------------------------


def test_record_stamps_increasing_perf_counter_times() -> None:
    before = time.perf_counter_ns()
    history = History()
    first = history.record(Kind.PUBLISHED, "harness", harness_id="a", key=b"k")
    second = history.record(Kind.OUTPUT, "tap", harness_id="a", lane="c1")
    after = time.perf_counter_ns()

    assert before <= history.started_ns <= first.at_ns <= second.at_ns <= after
    assert history.events == [first, second]
    assert list(history) == [first, second]
    assert len(history) == 2
    assert first == Event(
        kind=Kind.PUBLISHED, at_ns=first.at_ns, source="harness", harness_id="a", key=b"k"
    )
    assert second.lane == "c1"
    assert second.key is None


def test_record_keeps_a_time_taken_earlier() -> None:
    history = History.of_events([], started_ns=100)
    event = history.record(Kind.PUBLISHED, "harness", at_ns=150, harness_id="a")
    assert event.at_ns == 150
    assert history.since_start(event.at_ns) == "+0.0 ms"
    assert history.events == [event]


def test_record_rejects_a_field_events_do_not_have() -> None:
    with pytest.raises(TypeError, match="colour"):
        History().record(Kind.NOTE, "harness", **{"colour": "red"})


def test_record_and_add_take_events_fields_by_name_and_in_order() -> None:
    # Both are written from Event's fields at import: a field added to Event is one edit.
    details = list(Event._fields[3:])
    record = inspect.signature(History.record).parameters
    assert list(record) == ["self", "kind", "source", "at_ns", *details]
    assert {record[name].kind for name in ["at_ns", *details]} == {Parameter.KEYWORD_ONLY}
    assert all(record[name].default is None for name in ["at_ns", *details])
    add = inspect.signature(History.add).parameters
    assert list(add) == ["self", "kind", "source", *details]
    assert {parameter.kind for parameter in add.values()} == {Parameter.POSITIONAL_ONLY}
    assert all(add[name].default is None for name in details)
    assert History.record.__qualname__ == "History.record"
    assert History.add.__doc__


def test_add_records_the_event_record_would() -> None:
    message = Message(value=b"v", key=b"k", headers={HARNESS_ID_HEADER: b"a"})
    fields: dict[str, Any] = {
        "harness_id": "a",
        "destination": "in",
        "key": b"k",
        "partition": 2,
        "offset": 7,
        "lane": "sut0:consumer-1",
        "redelivered": True,
        "requeue": False,
        "detail": "d",
        "message": message,
    }
    history = History()
    before = time.perf_counter_ns()
    added = history.add(Kind.DELIVERED, "probe", *fields.values())
    after = time.perf_counter_ns()
    recorded = history.record(Kind.DELIVERED, "probe", at_ns=added.at_ns, **fields)

    assert before <= added.at_ns <= after
    assert added == recorded
    assert type(added) is Event
    assert history.events == [added, recorded]


def test_record_tap_keeps_the_brokers_metadata_and_the_taps_time() -> None:
    message = Message(value=b"v", key=b"k", headers={HARNESS_ID_HEADER: b"a"})
    landed = TapRecord(
        event="landed",
        destination="out",
        message=message,
        seen_ns=150,
        partition=2,
        offset=7,
        broker_timestamp_ms=1,
        redelivered=False,
        exchange="x",
        routing_key="r",
    )
    history = History()
    event = history.record_tap(Kind.OUTPUT, landed, "b")
    assert history.events == [event]
    assert event == Event(
        kind=Kind.OUTPUT,
        at_ns=150,
        source="tap",
        harness_id="b",  # as the run correlates it, not necessarily the header's
        destination="out",
        key=b"k",
        partition=2,
        offset=7,
        redelivered=False,
        message=message,
    )


def test_add_and_record_leave_unset_fields_none() -> None:
    history = History()
    added = history.add(Kind.SENT, "probe", "a", "out")
    recorded = history.record(
        Kind.SENT, "probe", at_ns=added.at_ns, harness_id="a", destination="out"
    )

    assert added == recorded == Event(Kind.SENT, added.at_ns, "probe", "a", "out")
    assert added.key is None
    assert added.message is None


def test_record_builds_events_that_round_trip_as_named_tuples() -> None:
    event = History().record(Kind.COMMITTED, "probe", destination="in", partition=0, offset=3)
    assert event._asdict()["offset"] == 3
    assert event._replace(offset=4).offset == 4
    assert Event._make(tuple(event)) == event


def test_events_are_immutable() -> None:
    event = History().record(Kind.NOTE, "harness", detail="x")
    with pytest.raises(AttributeError):
        event.detail = "y"  # type: ignore[misc]


def test_append_keeps_the_event_as_given() -> None:
    history = History.of_events([], started_ns=5)
    event = Event(kind=Kind.FAULT, at_ns=1, source="harness", detail="crash c1")
    history.append(event)
    assert history.events == [event]
    assert history.started_ns == 5


def test_of_events_defaults_to_a_zero_start_and_copies_the_events() -> None:
    events = [Event(kind=Kind.NOTE, at_ns=3, source="s")]
    history = History.of_events(events)
    events.append(Event(kind=Kind.NOTE, at_ns=4, source="s"))
    assert history.started_ns == 0
    assert len(history) == 1


# --- queries -------------------------------------------------------------------------


def test_of_selects_kinds_in_recorded_order() -> None:
    history = (
        Script()
        .publish("a")
        .deliver("a")
        .output("a")
        .publish("b")
        .dead_letter("b")
        .note("done")
        .build()
    )
    assert [e.kind for e in history.of(Kind.OUTPUT, Kind.PUBLISHED)] == [
        Kind.PUBLISHED,
        Kind.OUTPUT,
        Kind.PUBLISHED,
    ]
    assert [e.harness_id for e in history.of(Kind.DEAD_LETTERED)] == ["b"]
    assert history.of(Kind.COMMITTED) == []
    assert history.of() == []


def test_inputs_are_the_stamped_publishes_in_publish_order() -> None:
    history = (
        Script()
        .publish("b", at=1)
        .publish(None, at=2)  # unstamped: not an input
        .publish("a", at=3)
        .output("a", at=4)
        .deliver("b", at=5)
        .build()
    )
    inputs = history.inputs()
    assert list(inputs) == ["b", "a"]
    assert inputs["b"].at_ns == 1 * MS
    assert all(e.kind is Kind.PUBLISHED for e in inputs.values())


def test_inputs_keep_the_first_publish_of_a_repeated_id() -> None:
    # Same as the checks' numbering: an input is its first publish.
    history = Script().publish("a", at=1).publish("b", at=2).publish("a", at=3).build()
    inputs = history.inputs()
    assert list(inputs) == ["a", "b"]
    assert inputs["a"].at_ns == 1 * MS


@pytest.mark.parametrize(
    ("offset_ns", "text"),
    [
        (0, "+0.0 ms"),
        (12_345_678, "+12.3 ms"),
        (49_999, "+0.0 ms"),
        (50_001, "+0.1 ms"),
        (1_500 * MS, "+1500.0 ms"),
    ],
)
def test_since_start_reads_as_ms_from_the_start(offset_ns: int, text: str) -> None:
    history = History.of_events([], started_ns=7_000_000_000)
    assert history.since_start(7_000_000_000 + offset_ns) == text


# --- JSON ----------------------------------------------------------------------------


def every_field_history() -> History:
    """One event of every kind, with every field used, binary bytes and None fields."""
    binary = bytes(range(256))
    message = Message(
        value=binary,
        key=b"\x00\xffkey",
        headers={HARNESS_ID_HEADER: b"a", "bin": b"\x80\x81", "empty": b""},
    )
    events = [
        Event(
            kind=kind,
            at_ns=1_000 + i,
            source=f"source-{i}",
            harness_id="a" if i % 2 else None,
            destination="in",
            key=b"\xfe\x00" if i % 3 else None,
            partition=i,
            offset=10 * i,
            lane=f"c{i}",
            redelivered=bool(i % 2),
            requeue=not i % 2,
            detail="d\u00e9tail \u2603",
            message=message,
        )
        for i, kind in enumerate(Kind)
    ]
    events += [
        Event(kind=Kind.NOTE, at_ns=5, source="bare"),  # every optional field None
        Event(kind=Kind.OUTPUT, at_ns=6, source="s", key=b"", message=Message()),
        Event(kind=Kind.OUTPUT, at_ns=7, source="s", message=Message(value=b"", key=b"")),
        Event(kind=Kind.NACKED, at_ns=8, source="s", redelivered=False, requeue=False),
        Event(kind=Kind.COMMITTED, at_ns=9, source="s", partition=0, offset=0),
    ]
    return History.of_events(events, started_ns=999)


def test_every_kind_is_in_the_round_trip_history() -> None:
    assert {e.kind for e in every_field_history()} == set(Kind)


def test_json_round_trip_keeps_every_field() -> None:
    history = every_field_history()
    data = json.loads(json.dumps(history.to_json()))  # plain JSON: no bytes, no enums
    loaded = History.from_json(data)
    assert loaded == history
    assert loaded.events[0].message is not None
    assert loaded.events[0].message.value == bytes(range(256))
    assert loaded.events[-4].key == b""
    assert loaded.events[-3].message == Message(value=b"", key=b"")
    assert loaded.events[-2].requeue is False
    assert all(type(e.kind) is Kind for e in loaded)


def test_json_form_names_its_format_and_leaves_out_missing_fields() -> None:
    data = History.of_events(
        [Event(kind=Kind.NOTE, at_ns=5, source="bare")], started_ns=1
    ).to_json()
    assert data == {
        "format": FORMAT,
        "started_ns": 1,
        "events": [{"kind": "note", "at_ns": 5, "source": "bare"}],
    }


def test_dump_and_load_round_trip_through_a_file(tmp_path: Path) -> None:
    history = every_field_history()
    path = tmp_path / "runs" / "one" / "history.json"
    assert history.dump(path) == path
    assert json.loads(path.read_text())["format"] == FORMAT
    assert History.load(path) == history


def test_a_script_history_round_trips() -> None:
    history = (
        Script(started_ns=123)
        .publish("a", key=b"k", partition=0, offset=4)
        .deliver("a")
        .crash()
        .deliver("a", redelivered=True, lane="c2")
        .handle("a", lane="c2")
        .commit(0, 5, lane="c2")
        .output("a", lane="c2")
        .output(None)
        .build()
    )
    assert History.from_json(json.loads(json.dumps(history.to_json()))) == history


@pytest.mark.parametrize("bad", ["message-flow-harness/history/99", "", 1, None])
def test_from_json_rejects_an_unknown_format(bad: object) -> None:
    data = {"format": bad, "started_ns": 0, "events": []}
    with pytest.raises(InvalidArgument) as raised:
        History.from_json(data)
    assert f"format={bad!r}" in str(raised.value)
    assert "expected 'message-flow-harness/history/1'" in str(raised.value)


def test_from_json_rejects_data_without_a_format() -> None:
    with pytest.raises(InvalidArgument, match=r"format=None is not a history"):
        History.from_json({"started_ns": 0, "events": []})


# --- the round trip, for any events ---------------------------------------------------

optional_bytes = st.none() | st.binary(max_size=20)
optional_text = st.none() | st.text(max_size=10)
optional_int = st.none() | st.integers(min_value=-(2**63), max_value=2**63)
optional_bool = st.none() | st.booleans()
messages = st.builds(
    Message,
    value=st.binary(max_size=30),
    key=optional_bytes,
    headers=st.dictionaries(st.text(max_size=8), st.binary(max_size=8), max_size=3),
)
events = st.builds(
    Event,
    kind=st.sampled_from(Kind),
    at_ns=st.integers(min_value=0, max_value=2**64),
    source=st.text(max_size=10),
    harness_id=optional_text,
    destination=optional_text,
    key=optional_bytes,
    partition=optional_int,
    offset=optional_int,
    lane=optional_text,
    redelivered=optional_bool,
    requeue=optional_bool,
    detail=optional_text,
    message=st.none() | messages,
)


@settings(deadline=None, max_examples=100)
@given(
    events=st.lists(events, max_size=8),
    started_ns=st.integers(min_value=0, max_value=2**64),
)
def test_any_history_survives_the_json_round_trip(events: list[Event], started_ns: int) -> None:
    history = History.of_events(events, started_ns=started_ns)
    text = json.dumps(history.to_json())
    assert History.from_json(json.loads(text)) == history


def test_every_record_call_in_the_project_names_fields_an_event_has() -> None:
    """``record`` is written from Event's fields, so mypy types its details loosely:
    this catches a misspelled field anywhere in the project before it runs."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    allowed = set(Event._fields) | {"at_ns"}
    wrong = []
    for folder in ("harness", "brokers", "tests", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "record"
                ):
                    wrong += [
                        f"{path.relative_to(root)}:{node.lineno}: {keyword.arg}="
                        for keyword in node.keywords
                        if keyword.arg is not None and keyword.arg not in allowed
                    ]
    assert wrong == []
