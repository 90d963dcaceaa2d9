"""The probes' recorder: correlation from any driver's header shape, lanes, tracking."""

from __future__ import annotations

import inspect
from inspect import Parameter

import pytest

from message_flow_harness import History, Kind, Message
from message_flow_harness._history import Event
from message_flow_harness._probes import Recorder


def test_harness_id_from_every_header_shape() -> None:
    recorder = Recorder(History())
    assert recorder.harness_id([("x-harness-id", b"r1-3")]) == "r1-3"  # aiokafka
    assert recorder.harness_id({"x-harness-id": bytearray(b"r1-4")}) == "r1-4"  # aio-pika
    assert recorder.harness_id({"x-harness-id": "r1-5"}) == "r1-5"
    assert recorder.harness_id(None) is None
    assert recorder.harness_id([]) is None


def test_correlate_is_the_fallback() -> None:
    recorder = Recorder(History(), correlate=lambda m: m.value.decode())
    assert recorder.harness_id({}, lambda: Message(value=b"r2-1")) == "r2-1"
    assert recorder.harness_id({"x-harness-id": b"r2-2"}, lambda: Message(value=b"no")) == "r2-2"


def test_lanes_are_stable_readable_and_tracked() -> None:
    recorder = Recorder(History(), prefix="sut1:")
    first, second = object(), object()
    assert recorder.lane(first, "consumer") == "sut1:consumer-1"
    assert recorder.lane(second, "producer") == "sut1:producer-2"
    assert recorder.lane(first, "consumer") == "sut1:consumer-1"
    recorder.track(first)
    assert recorder.clients == [first, second]


def test_record_stamps_probe_events() -> None:
    history = History()
    Recorder(history).record(Kind.DELIVERED, harness_id="r1-1")
    [event] = history
    assert event.source == "probe"
    assert event.harness_id == "r1-1"


def test_record_is_history_record_with_source_probe() -> None:
    history = History()
    recorder = Recorder(history)
    recorder.record(Kind.NACKED, harness_id="r1-2", destination="q", requeue=True, lane="c")
    [probed] = history
    expected = History().record(
        Kind.NACKED,
        "probe",
        at_ns=probed.at_ns,
        harness_id="r1-2",
        destination="q",
        requeue=True,
        lane="c",
    )
    assert probed == expected


def test_record_takes_events_details_by_name() -> None:
    parameters = inspect.signature(Recorder.record).parameters
    assert list(parameters) == ["self", "kind", *Event._fields[3:]]
    assert {parameters[name].kind for name in Event._fields[3:]} == {Parameter.KEYWORD_ONLY}
    with pytest.raises(TypeError, match="at_ns"):
        Recorder(History()).record(Kind.NOTE, at_ns=1)  # probes record now


def test_harness_id_takes_the_first_matching_header_and_survives_bad_utf8() -> None:
    recorder = Recorder(History())
    headers = [("other", b"x"), ("x-harness-id", b"r1-6"), ("x-harness-id", b"r1-7")]
    assert recorder.harness_id(headers) == "r1-6"
    assert recorder.harness_id((("x-harness-id", b"r1-\xff"),)) == "r1-\ufffd"
    assert recorder.harness_id({"x-harness-id": 8}) == "8"
