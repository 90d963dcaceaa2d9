"""Client-side probes for aiokafka: what an in-process service's consumer and producer do.

``install()`` wraps ``AIOKafkaConsumer.getone/getmany/commit`` and
``AIOKafkaProducer.send`` once per process. The wrappers record only for
clients running inside a run's service (see :mod:`harness._probes`); the
service's code is not changed.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from message_flow_harness._history import Kind
from message_flow_harness._message import Message
from message_flow_harness._probes import Recorder, current_recorder, patch_method

_undo: list[Callable[[], None]] = []  # set while installed


def _as_message(record: Any) -> Message:
    return Message(value=record.value or b"", key=record.key, headers=dict(record.headers or ()))


def _record_deliveries(recorder: Recorder, consumer: object, records: Iterable[Any]) -> None:
    # Hot path, once per record inside the consumer being watched: positional adds,
    # no per-record closures or copies unless the flow correlates by content.
    lane = recorder.lane(consumer, "consumer")
    add = recorder.history.add
    harness_id = recorder.harness_id
    correlating = recorder.correlate is not None
    delivered = Kind.DELIVERED
    for record in records:
        add(
            delivered,
            "probe",
            harness_id(record.headers, functools.partial(_as_message, record))
            if correlating
            else harness_id(record.headers),
            record.topic,
            record.key,
            record.partition,
            record.offset,
            lane,
        )


def _wrap_getone(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def getone(self: AIOKafkaConsumer, *partitions: Any) -> Any:
        record = await original(self, *partitions)
        recorder = current_recorder.get()
        if recorder is not None:
            _record_deliveries(recorder, self, (record,))
        return record

    return getone


def _wrap_getmany(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def getmany(self: AIOKafkaConsumer, *partitions: Any, **options: Any) -> Any:
        batches = await original(self, *partitions, **options)
        recorder = current_recorder.get()
        if recorder is not None:
            for records in batches.values():
                _record_deliveries(recorder, self, records)
        return batches

    return getmany


def _consumed_offsets(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int] | None:
    """What ``commit()`` with no offsets commits: the assignment's consumed positions.

    Read synchronously from aiokafka's subscription state, as ``commit()`` itself
    does (``assignment.all_consumed_offsets()``), so no ``await position()`` per
    partition on every commit, and nothing can move between this snapshot and the
    commit's own. None when those internals are not there (another aiokafka).
    """
    try:
        subscription = consumer._subscription.subscription
        if subscription is None or subscription.assignment is None:
            return {}  # commit() raises IllegalStateError: nothing to record
        consumed = subscription.assignment.all_consumed_offsets()
        return {tp: meta.offset for tp, meta in consumed.items()}
    except AttributeError:
        return None


def _wrap_commit(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def commit(self: AIOKafkaConsumer, offsets: Any = None) -> Any:
        recorder = current_recorder.get()
        if recorder is None:
            return await original(self, offsets)
        committing: dict[TopicPartition, int] | None
        if offsets is None:  # what commit() commits by default: the consumed positions
            committing = _consumed_offsets(self)
            if committing is None:
                committing = {tp: await self.position(tp) for tp in self.assignment()}
        else:
            committing = {
                tp: (value[0] if isinstance(value, tuple) else value)
                for tp, value in offsets.items()
            }
        lane = recorder.lane(self, "consumer")
        try:
            result = await original(self, offsets)
        except Exception as exc:
            recorder.record(Kind.NOTE, lane=lane, detail=f"commit failed: {exc!r}")
            raise
        add = recorder.history.add
        for tp, offset in committing.items():
            add(Kind.COMMITTED, "probe", None, tp.topic, None, tp.partition, offset, lane)
        return result

    return commit


def _wrap_send(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def send(
        self: AIOKafkaProducer,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: Any = None,
        timestamp_ms: Any = None,
        headers: Any = None,
    ) -> Any:
        recorder = current_recorder.get()
        if recorder is not None:
            recorder.history.add(
                Kind.SENT,
                "probe",
                recorder.harness_id(headers),
                topic,
                key if isinstance(key, bytes) else None,
                partition,
                None,
                recorder.lane(self, "producer"),
            )
        return await original(self, topic, value, key, partition, timestamp_ms, headers)

    return send


def _wrap_start(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def start(self: Any) -> Any:
        recorder = current_recorder.get()
        if recorder is not None:
            recorder.track(self)  # before starting: a start that is cancelled leaves it half-open
        return await original(self)

    return start


async def finish_broken_stop(client: AIOKafkaConsumer | AIOKafkaProducer) -> bool:
    """Finish a ``stop()`` that raised halfway; True if there was anything to finish.

    aiokafka's ``Fetcher.close()`` awaits a cancelled fetch unguarded, so a
    consumer stopped while a fetch backs off after a lost connection raises
    that CancelledError (aio-libs/aiokafka#647) before closing its network
    client, whose metadata task and connections would then live on (and
    reconnect). A second ``stop()`` is a no-op. (A producer's sender has the
    same unguarded await.)
    """
    network = client._client if isinstance(client, AIOKafkaConsumer) else client.client
    if network._sync_task is None:  # closed, or never started
        return False
    fetches = list(getattr(getattr(client, "_fetcher", None), "_pending_tasks", ()))
    for fetch in fetches:
        fetch.cancel()
    await asyncio.gather(*fetches, return_exceptions=True)
    await network.close()
    return True


async def close_leftover(client: object) -> bool:
    """Stop a consumer or producer the service left running; True if it had to.

    Also finishes a ``stop()`` of the service's that raised halfway (see
    :func:`finish_broken_stop`): otherwise its client would reconnect for the
    rest of the campaign.
    """
    if not isinstance(client, AIOKafkaConsumer | AIOKafkaProducer):
        return False
    if getattr(client, "_closed", True) is False:
        await client.stop()
        return True
    return await finish_broken_stop(client)


_PATCHES: tuple[tuple[type, str, Callable[[Any], Any]], ...] = (
    (AIOKafkaConsumer, "getone", _wrap_getone),
    (AIOKafkaConsumer, "getmany", _wrap_getmany),
    (AIOKafkaConsumer, "commit", _wrap_commit),
    (AIOKafkaProducer, "send", _wrap_send),
    (AIOKafkaConsumer, "start", _wrap_start),
    (AIOKafkaProducer, "start", _wrap_start),
)


def install() -> None:
    """Wrap aiokafka's consumer and producer once; later calls do nothing."""
    if not _undo:
        _undo.extend(patch_method(owner, name, wrap) for owner, name, wrap in _PATCHES)


def uninstall() -> None:
    """Put the driver's own methods back: afterwards the probes cost nothing at all."""
    while _undo:
        _undo.pop()()
