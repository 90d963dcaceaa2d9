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
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError
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


def _wrap_connect(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def connect(self: Any) -> Any:
        recorder = current_recorder.get()
        if recorder is not None:
            # Held until the instance ends: see close_leftover. A connection whose
            # peer went away is otherwise dropped by aiokafka without a close.
            recorder.track(self)
        return await original(self)

    return connect


def _close_orphan(conn: AIOKafkaConnection, *, abort: bool) -> None:
    """Close a connection of the instance's that no client will close.

    aiokafka forgets a connection whose peer closed it (its pool drops what is
    not ``connected()``), and one a cancelled task was opening; the socket then
    lingers until garbage collection warns of it. After a crash every socket
    goes, as a killed process's do; after a stop only those already broken
    (an open one belongs to a client being stopped, which closes it itself).
    """
    if conn._reader is not None and (abort or not conn.connected()):
        conn.close()


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


class InstanceCrashed(KafkaConnectionError):  # type: ignore[misc]
    """What a crashed instance's pending sends fail with: its process is gone."""


#: How long an aborted client's tasks get to end once cancelled (its connections close after).
ABORT_WAIT_S = 1.0


def _crash_tasks(client: AIOKafkaConsumer | AIOKafkaProducer) -> list[asyncio.Future[Any]]:
    """Stop ``client`` where it stands, flushing nothing; the tasks it ran, cancelled.

    A producer's buffered batches fail (nobody is left to be told: their
    exceptions are retrieved here) and are dropped, so its sender cannot
    deliver them once the network heals; a consumer's coordinator sends no
    final commit nor LeaveGroup, its fetcher fetches nothing more. Marked
    closed, so the service's own ``stop()`` later does nothing.
    """
    tasks: list[asyncio.Future[Any] | None] = []
    if isinstance(client, AIOKafkaProducer):
        accumulator = client._message_accumulator
        lost = InstanceCrashed("the instance crashed: its unsent records went with it")
        batches = [*accumulator._pending_batches]
        for queue in accumulator._batches.values():
            batches += queue
        accumulator._batches.clear()  # pending ones leave _pending_batches as they fail
        accumulator._exception = lost  # a send after the crash fails too
        for batch in batches:
            batch.failure(lost)
            # Retrieved, so asyncio says nothing of a send nobody awaits (a crashed
            # process has nobody left to tell); a service awaiting one still gets it.
            for future in (batch.future, batch._drain_waiter, *(f for f, _ in batch._msg_futures)):
                if future.done() and not future.cancelled():
                    future.exception()
        sender = client._sender
        tasks.append(sender.sender_task if sender is not None else None)
    else:
        coordinator = client._coordinator
        if coordinator is not None:
            if not coordinator._closing.done():
                coordinator._closing.set_result(None)  # no close() will send anything
            for name in (
                "_coordination_task",
                "_heartbeat_task",
                "_commit_refresh_task",
                "_reset_committed_task",
            ):
                tasks.append(getattr(coordinator, name, None))
        fetcher = client._fetcher
        if fetcher is not None:
            fetcher._closed = True
            tasks += [fetcher._fetch_task, *fetcher._pending_tasks]
            for waiter in fetcher._fetch_waiters:
                if not waiter.done():
                    waiter.set_result(None)  # a getmany() waiting returns (and meets _closed)
    client._closed = True  # last: internals missing on the way leave stop() to do it all
    running = [task for task in tasks if task is not None and not task.done()]
    for task in running:
        task.cancel()
    return running


async def abort_client(client: AIOKafkaConsumer | AIOKafkaProducer) -> bool:
    """End a crashed instance's client at once (see :func:`_crash_tasks`); True if it ran.

    ``stop()`` would flush: a producer's pending batch would reach the broker
    after the crash (aiokafka's sender retries until the proxy heals on a
    Restart), which a killed process never does. Its tasks get
    ``ABORT_WAIT_S`` to end once cancelled (one that does not is left behind,
    cancelled); then its connections are closed.
    """
    network = client._client if isinstance(client, AIOKafkaConsumer) else client.client
    if client._closed is not False:  # stopped, or never started: at most a broken stop
        return await finish_broken_stop(client)
    try:
        tasks = _crash_tasks(client)
    except AttributeError:  # another aiokafka's internals: close it, flushing or not
        await client.stop()
        return True
    if tasks:  # the crash cut their connections already: nothing more goes out
        done, _ = await asyncio.wait(tasks, timeout=ABORT_WAIT_S)
        for task in done:
            if not task.cancelled():
                task.exception()
    # Only now: a task cancelled while it opened a connection closes that one itself,
    # and whatever it had opened before is in the network client's pool by then.
    await network.close()
    return True


def group_member(client: object) -> str | None:
    """The consumer-group member id ``client`` holds, if it is a consumer in a group."""
    coordinator = getattr(client, "_coordinator", None)
    member = getattr(coordinator, "member_id", None) if coordinator is not None else None
    # Before it joins (and after it leaves) aiokafka's member id is "" (UNKNOWN_MEMBER_ID).
    return (
        member
        if isinstance(client, AIOKafkaConsumer) and isinstance(member, str) and member
        else None
    )


async def close_leftover(client: object, *, abort: bool = False) -> bool:
    """Stop a consumer or producer the service left running; True if it had to.

    Also finishes a ``stop()`` of the service's that raised halfway (see
    :func:`finish_broken_stop`): otherwise its client would reconnect for the
    rest of the campaign. ``abort`` (a crash) stops it without flushing or
    saying goodbye (see :func:`abort_client`).
    """
    if isinstance(client, AIOKafkaConnection):
        _close_orphan(client, abort=abort)
        return False  # a socket, not a client the service left open
    if not isinstance(client, AIOKafkaConsumer | AIOKafkaProducer):
        return False
    if abort:
        return await abort_client(client)
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
    (AIOKafkaConnection, "connect", _wrap_connect),
)


def install() -> None:
    """Wrap aiokafka's consumer and producer once; later calls do nothing."""
    if not _undo:
        _undo.extend(patch_method(owner, name, wrap) for owner, name, wrap in _PATCHES)


def uninstall() -> None:
    """Put the driver's own methods back: afterwards the probes cost nothing at all."""
    while _undo:
        _undo.pop()()
