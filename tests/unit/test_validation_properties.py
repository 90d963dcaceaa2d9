"""Validation holds for any input: malformed values get InvalidArgument naming them, never
another exception, and secrets never reach the message (Hypothesis property tests)."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from message_flow_harness import (
    BrokerInfo,
    Endpoints,
    Flow,
    InvalidArgument,
    Message,
    brokers,
    checks,
)
from message_flow_harness._cli import main
from message_flow_harness.brokers.kafka._adapter import _check_topic_name
from message_flow_harness.brokers.rabbitmq._codec import _validate_queue_name


class Refused(str):
    """The text of an InvalidArgument a call raised: never mistaken for what it returns."""


def outcome(make: object) -> object:
    """What a call returns, or the text of the InvalidArgument it raises, as ``Refused``."""
    try:
        return make()  # type: ignore[operator]
    except InvalidArgument as error:
        return Refused(f"InvalidArgument: {error}")


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.asynccontextmanager
async def service(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(), st.binary()
)


@FAST
@given(partitions=anything)
def test_partitions_are_whole_numbers_of_at_least_one(partitions: object) -> None:
    valid = isinstance(partitions, int) and not isinstance(partitions, bool) and partitions >= 1
    if valid:
        assert Flow(sut=service, broker="kafka", partitions=partitions).partitions == partitions  # type: ignore[arg-type]
    else:
        with pytest.raises(InvalidArgument, match=r"partitions=.* is invalid"):
            Flow(sut=service, broker="kafka", partitions=partitions)  # type: ignore[arg-type]


@FAST
@given(name=st.sampled_from(["settle", "quiet", "start_timeout", "stop_timeout", "timeout"]),
       value=anything)  # fmt: skip
def test_durations_are_positive_finite_seconds(name: str, value: object) -> None:
    valid = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf
    if valid:
        Flow(sut=service, broker="kafka", **{name: value})  # type: ignore[arg-type]
    else:
        with pytest.raises(InvalidArgument, match=f"{name}=.* is invalid: give a positive"):
            Flow(sut=service, broker="kafka", **{name: value})  # type: ignore[arg-type]


@FAST
@given(value=st.binary(max_size=4096), key=st.none() | st.binary(), text=st.text())
def test_messages_take_any_bytes_and_refuse_text(
    value: bytes, key: bytes | None, text: str
) -> None:
    assert Message(value=value, key=key).value == value
    with pytest.raises(InvalidArgument, match="pass bytes"):
        Message(value=text)  # type: ignore[arg-type]


def test_huge_and_empty_payloads_are_messages() -> None:
    assert len(Message(value=b"\0" * (16 * 1024 * 1024)).value) == 16 * 1024 * 1024
    assert Message().value == b""


@FAST
@given(url=st.text())
def test_kafka_bootstrap_urls_are_host_port_lists_or_rejected(url: str) -> None:
    found = outcome(lambda: brokers.info_from_url("kafka", url))
    if isinstance(found, BrokerInfo):
        assert all(":" in server for server in found.url.split(","))
    else:
        assert "--kafka-bootstrap" in str(found)


@FAST
@given(user=st.text(alphabet="abcdefgh", min_size=1), secret=st.text(min_size=4).filter(
    lambda s: not any(c in s for c in "@/:") and s.strip() == s and s.isprintable()
), tail=st.text())  # fmt: skip
def test_amqp_urls_never_leak_their_password(user: str, secret: str, tail: str) -> None:
    url = f"amqpx://{user}:{secret}@host/{tail}"  # a wrong scheme: rejected, and redacted
    with pytest.raises(InvalidArgument) as caught:
        brokers.info_from_url("rabbitmq", url)
    assert f":{secret}@" not in str(caught.value)
    assert f"{user}:***@" in str(caught.value)


@FAST
@given(name=st.text(max_size=300))
def test_topic_names_are_kafkas_legal_ones_or_rejected(name: str) -> None:
    found = outcome(lambda: _check_topic_name(name))
    if isinstance(found, Refused):
        assert "topic" in found.lower()
    else:
        assert 0 < len(name) <= 249
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


@FAST
@given(name=st.text(max_size=300))
def test_queue_names_are_checked_without_surprises(name: str) -> None:
    found = outcome(lambda: _validate_queue_name(name))
    if isinstance(found, Refused):  # a queue may well be named "InvalidArgument"
        assert "queue" in found.lower()
    else:
        assert 0 < len(name.encode()) <= 255
        assert not name.startswith("amq.")


@FAST
@given(value=anything)
def test_check_parameters_are_validated(value: object) -> None:
    for make in (checks.within, checks.max_deliveries):
        found = outcome(lambda make=make: make(value))  # type: ignore[misc]
        assert isinstance(found, checks.Check) or "is invalid" in str(found)


@settings(max_examples=60, deadline=None)
@given(reference=st.text(max_size=40))
def test_the_cli_answers_any_flow_reference_with_exit_code_2(reference: str) -> None:
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            code = main(["fuzz", "--quiet", "--", reference])
        except SystemExit as exit_:  # argparse's own usage errors
            code = int(exit_.code or 0)
    assert code == 2, sink.getvalue()


def test_broker_info_is_plain_data() -> None:
    info = BrokerInfo(kind="kafka", url="127.0.0.1:9092", provider="url")
    assert info.extra == {}
