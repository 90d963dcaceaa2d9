"""The drivers' probe wrappers, without a broker: what they record for each call shape."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from message_flow_harness._history import Event, History, Kind
from message_flow_harness._probes import Recorder, current_recorder
from message_flow_harness.brokers.kafka import _probes as kafka_probes
from message_flow_harness.brokers.rabbitmq import _probes as rabbitmq_probes

IN_0, IN_1, IN_2 = (TopicPartition("h-in", p) for p in range(3))


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    token = current_recorder.set(recorder)
    try:
        yield recorder
    finally:
        current_recorder.reset(token)


def without_times(events: list[Event]) -> list[Event]:
    return [e._replace(at_ns=0) for e in events]


@pytest_asyncio.fixture
async def consumer() -> AsyncIterator[AIOKafkaConsumer]:
    """A real, never started consumer: its subscription state is what commit() reads."""
    made = AIOKafkaConsumer(group_id="g", bootstrap_servers="localhost:1")
    made.assign([IN_0, IN_1, IN_2])
    made._subscription.seek(IN_0, 5)
    made._subscription.seek(IN_2, 12)  # IN_1 has no position yet: commit() skips it
    yield made
    await made.stop()


class _Committed:
    """Stands for AIOKafkaConsumer.commit: remembers what it was asked, or fails."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[Any] = []
        self.error = error

    async def __call__(self, consumer: object, offsets: Any = None) -> None:
        self.calls.append(offsets)
        if self.error is not None:
            raise self.error


def committed(history: History) -> dict[tuple[str, int], int | None]:
    return {
        (e.destination or "", e.partition or 0): e.offset
        for e in history
        if e.kind is Kind.COMMITTED
    }


@pytest.mark.asyncio
async def test_commit_records_the_positions_commit_itself_commits(
    consumer: AIOKafkaConsumer,
) -> None:
    original = _Committed()
    with recording(Recorder(History())) as recorder:
        await kafka_probes._wrap_commit(original)(consumer)

    assert original.calls == [None]  # commit() still picks its own offsets
    expected = consumer._subscription.subscription.assignment.all_consumed_offsets()
    assert committed(recorder.history) == {
        (tp.topic, tp.partition): meta.offset for tp, meta in expected.items()
    }
    assert committed(recorder.history) == {("h-in", 0): 5, ("h-in", 2): 12}
    assert {await consumer.position(IN_0), await consumer.position(IN_2)} == {5, 12}
    assert {e.lane for e in recorder.history} == {"consumer-1"}
    assert {e.source for e in recorder.history} == {"probe"}


@pytest.mark.asyncio
async def test_commit_records_explicit_offsets_in_either_form(
    consumer: AIOKafkaConsumer,
) -> None:
    original = _Committed()
    offsets = {IN_0: 9, IN_1: (4, "metadata")}
    with recording(Recorder(History())) as recorder:
        await kafka_probes._wrap_commit(original)(consumer, offsets)

    assert original.calls == [offsets]
    assert committed(recorder.history) == {("h-in", 0): 9, ("h-in", 1): 4}


@pytest.mark.asyncio
async def test_a_failed_commit_records_a_note_and_no_offsets(consumer: AIOKafkaConsumer) -> None:
    original = _Committed(error=RuntimeError("rebalanced"))
    with recording(Recorder(History())) as recorder, pytest.raises(RuntimeError):
        await kafka_probes._wrap_commit(original)(consumer)

    [note] = recorder.history
    assert note.kind is Kind.NOTE
    assert note.detail == "commit failed: RuntimeError('rebalanced')"


@pytest.mark.asyncio
async def test_commit_without_a_subscription_records_nothing() -> None:
    unassigned = AIOKafkaConsumer(group_id="g", bootstrap_servers="localhost:1")
    try:
        assert kafka_probes._consumed_offsets(unassigned) == {}
    finally:
        await unassigned.stop()


class _ForeignConsumer:
    """A consumer without aiokafka's internals: the probe falls back to position()."""

    def assignment(self) -> set[TopicPartition]:
        return {IN_0, IN_1}

    async def position(self, tp: TopicPartition) -> int:
        return 40 + int(tp.partition)


@pytest.mark.asyncio
async def test_commit_falls_back_to_position_without_aiokafka_internals() -> None:
    foreign = _ForeignConsumer()
    assert kafka_probes._consumed_offsets(foreign) is None
    with recording(Recorder(History())) as recorder:
        await kafka_probes._wrap_commit(_Committed())(foreign)

    assert committed(recorder.history) == {("h-in", 0): 40, ("h-in", 1): 41}


@pytest.mark.asyncio
async def test_commit_with_no_run_in_progress_records_nothing(
    consumer: AIOKafkaConsumer,
) -> None:
    original = _Committed()
    await kafka_probes._wrap_commit(original)(consumer)
    assert original.calls == [None]


def _record(offset: int, headers: tuple[tuple[str, bytes], ...]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="h-in",
        partition=1,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"v%d" % offset,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=2,
        headers=headers,
    )


def test_deliveries_record_what_record_would() -> None:
    records = [_record(3, (("x-harness-id", b"r-1"),)), _record(4, ())]
    recorder = Recorder(History(), prefix="sut0:")
    kafka_probes._record_deliveries(recorder, object(), records)

    expected = History()
    for record, harness_id in zip(records, ("r-1", None), strict=True):
        expected.record(
            Kind.DELIVERED,
            "probe",
            at_ns=0,
            harness_id=harness_id,
            destination="h-in",
            key=b"k",
            partition=1,
            offset=record.offset,
            lane="sut0:consumer-1",
        )
    assert without_times(recorder.history.events) == expected.events


def test_deliveries_correlate_by_content_when_asked() -> None:
    recorder = Recorder(History(), correlate=lambda m: m.value.decode())
    kafka_probes._record_deliveries(recorder, object(), [_record(5, ())])
    [event] = recorder.history
    assert event.harness_id == "v5"


@pytest.mark.asyncio
async def test_send_records_a_sent_event() -> None:
    sent: list[tuple[Any, ...]] = []

    async def original(*args: Any) -> str:
        sent.append(args)
        return "future"

    producer = object()
    headers = [("x-harness-id", b"r-9")]
    with recording(Recorder(History())) as recorder:
        send = kafka_probes._wrap_send(original)
        assert await send(producer, "h-out", b"v", b"k", None, None, headers) == "future"
        await send(producer, "h-out", b"w", "not bytes", 2)

    assert sent[0] == (producer, "h-out", b"v", b"k", None, None, headers)
    first, second = recorder.history
    assert first == Event(Kind.SENT, first.at_ns, "probe", "r-9", "h-out", b"k", lane="producer-1")
    assert second == Event(
        Kind.SENT, second.at_ns, "probe", None, "h-out", None, 2, lane="producer-1"
    )


# --- RabbitMQ: which requeue a settlement records ---------------------------------


class _Message:
    """Stands for aio-pika's IncomingMessage: what the settle probe reads."""

    def __init__(self) -> None:
        self.headers = {"x-harness-id": b"r-3"}
        self.routing_key = "h-in"
        self.channel = "channel-1"
        self.delivery_tag = 5


async def _nack(self: object, multiple: bool = False, requeue: bool = True) -> None:
    pass


async def _reject(self: object, requeue: bool = False) -> None:
    pass


async def _ack(self: object, multiple: bool = False) -> None:
    pass


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "default", "args", "kwargs"),
    [
        (_nack, True, (), {}),
        (_nack, True, (True,), {}),
        (_nack, True, (False, False), {}),
        (_nack, True, (), {"requeue": False}),
        (_nack, True, (True,), {"requeue": False}),
        (_reject, False, (), {}),
        (_reject, False, (True,), {}),
        (_reject, False, (), {"requeue": True}),
        (_ack, None, (), {}),
        (_ack, None, (True,), {}),
    ],
)
async def test_settle_records_the_requeue_signature_bind_finds(
    method: Any, default: bool | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    message = _Message()
    with recording(Recorder(History())) as recorder:
        await rabbitmq_probes._wrap_settle(method, Kind.NACKED, default=default)(
            message, *args, **kwargs
        )

    bound = inspect.signature(method).bind(message, *args, **kwargs).arguments
    [event] = recorder.history
    assert event == Event(
        Kind.NACKED,
        event.at_ns,
        "probe",
        "r-3",
        "h-in",
        offset=5,  # the delivery tag
        lane="consumer-1",
        requeue=bound.get("requeue", default),
    )


@pytest.mark.parametrize("probes", [kafka_probes, rabbitmq_probes], ids=["kafka", "rabbitmq"])
def test_uninstalling_puts_the_drivers_own_methods_back(probes: Any) -> None:
    probes.install()
    wrapped = {(owner, name): vars(owner)[name] for owner, name, _ in probes._PATCHES}
    probes.uninstall()
    try:
        for (owner, name), wrapper in wrapped.items():
            assert vars(owner)[name] is wrapper.__wrapped__, f"{owner.__name__}.{name}"
        probes.uninstall()  # twice is fine
    finally:
        probes.install()  # as the rest of the session expects
    assert all(hasattr(vars(owner)[name], "__wrapped__") for owner, name in wrapped)
