"""Kafka: the adapter the core talks to, a local KRaft broker, and a Docker provider.

* :class:`KafkaAdapter` administers topics, publishes and taps through aiokafka
  and translates its errors into :mod:`harness._errors`.
* :class:`KafkaRecipe` runs Apache Kafka's own jars (resolved once from Maven
  Central by :func:`ensure_jars`) as a single-node KRaft broker tuned for tests.
* :func:`start_container` starts a broker with testcontainers where Docker runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.offset import OffsetRequest

from brokers._local import LaunchPlan, free_port
from brokers._tls import make_pki, openssl_available
from brokers.kafka._clients import MAX_MESSAGE_BYTES, TLS_CLOSE_S, bounded, stop_consumer
from brokers.kafka._diagnose import diagnose
from brokers.kafka._errors import URL_FIX, describe, translate
from brokers.kafka._jars import KAFKA_VERSION, ensure_jars, jar_root, jars_ready
from brokers.kafka._protocol import (
    ASK_AGAIN,
    COORDINATOR_NOT_READY,
    GROUP_ID_NOT_FOUND,
    DeleteGroups,
)
from brokers.kafka._settings import kafka_client_options
from harness._broker import (
    BrokerAdapter,
    BrokerInfo,
    DestinationSpec,
    PublishReceipt,
    TapCallback,
    TapRecord,
    check_producer,
)
from harness._errors import (
    BrokerStartError,
    BrokerUnavailable,
    DestinationError,
    HarnessError,
    InvalidArgument,
)
from harness._message import BrokerKind, Message

__all__ = (
    "KAFKA_VERSION",
    "KafkaAdapter",
    "KafkaRecipe",
    "ensure_jars",
    "start_container",
)

#: The image testcontainers' KafkaContainer is tested with (KRaft needs cp-kafka >= 7.0).
DOCKER_IMAGE = "confluentinc/cp-kafka:7.6.0"

_TOPIC_CHARS = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_TOPIC_LENGTH = 249
_POLL_S = 0.05
#: ListOffsets' timestamp for "the log end offset".
_LATEST = -1


# --------------------------------------------------------------------------- adapter


def _check_topic_name(name: object) -> str:
    """Kafka's own rule for topic names, checked before any request is sent."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"topic name {name!r} is invalid: pass a non-empty str")
    if len(name) > _MAX_TOPIC_LENGTH:
        raise InvalidArgument(
            f"topic name {name[:40]!r}... is invalid: it has {len(name)} characters, "
            f"Kafka allows at most {_MAX_TOPIC_LENGTH}"
        )
    if name in {".", ".."} or not _TOPIC_CHARS.fullmatch(name):
        raise InvalidArgument(
            f"topic name {name!r} is invalid: use only ASCII letters, digits, '.', '_' "
            "and '-' (and not '.' or '..' alone)"
        )
    return name


@dataclass(eq=False)
class _LiveTap:
    consumer: Any
    task: asyncio.Task[None]


class KafkaAdapter(BrokerAdapter):
    """Topics, publishing and taps on one Kafka cluster, every call bounded by ``timeout``.

    Use as ``async with KafkaAdapter(info) as adapter``. One admin client and
    one producer (``acks="all"``) are shared by all calls; each tap has its
    own group-less consumer, kept for the next tap when it is done.
    """

    kind: BrokerKind = "kafka"

    def __init__(self, info: BrokerInfo, *, timeout: float = 10.0) -> None:
        if info.kind != "kafka":
            raise InvalidArgument(
                f"KafkaAdapter got a {info.kind!r} broker ({info.url}): "
                "pass a BrokerInfo with kind='kafka'"
            )
        if not timeout > 0:
            raise InvalidArgument(
                f"timeout={timeout!r} is invalid: pass a positive number of seconds"
            )
        self.info = info
        self._timeout = float(timeout)
        self._admin: Any = None
        self._producer: Any = None
        self._extra_producers: dict[int, Any] = {}  # publish_many(producer=n) for n > 0
        self._producers_lock = asyncio.Lock()
        self._taps: set[_LiveTap] = set()
        self._idle_tap_consumers: list[Any] = []
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._producer is not None else "new"
        return f"<KafkaAdapter {self.info.url} {state}>"

    # ----------------------------------------------------------------- life cycle

    async def open(self) -> None:
        """Connect the admin client and the producer; BrokerUnavailable if nobody answers."""
        if self._closed:
            raise BrokerUnavailable(
                f"this KafkaAdapter for {self.info.url} is closed: make a new one to reconnect"
            )
        if self._producer is not None:
            return
        request_timeout_ms = int(self._timeout * 1000)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.info.url,
            client_id="harness-admin",
            request_timeout_ms=request_timeout_ms,
            **self.info.client_options,
        )
        producer = self._new_producer("harness-producer")
        try:
            async with asyncio.timeout(self._timeout):
                await admin.start()
                await producer.start()
        except BaseException as err:
            await bounded(producer.stop(), self._timeout)
            await bounded(admin.close(), self._timeout)
            if isinstance(err, TimeoutError | kafka_errors.KafkaError | OSError):
                why = None
                if not isinstance(err, TimeoutError):  # a silent server is no TLS mismatch
                    # One bound for the whole diagnosis: open() stays within 2 x timeout.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(self._timeout, 5.0)):
                            why = await diagnose(self.info, within=min(self._timeout, 5.0))
                if why is not None:
                    raise BrokerUnavailable(
                        f"cannot connect to Kafka at {self.info.url}: {why}"
                    ) from err
                raise BrokerUnavailable(
                    f"no Kafka broker answers at {self.info.url} within {self._timeout:g} s "
                    f"({describe(err)}): {URL_FIX}"
                ) from err
            raise
        self._admin, self._producer = admin, producer

    async def close(self) -> None:
        """Stop every tap, the producer and the admin client; each step bounded, safe twice."""
        if self._closed:
            return
        self._closed = True
        for tap in list(self._taps):
            await self._stop_tap(tap)
        while self._idle_tap_consumers:
            await stop_consumer(self._idle_tap_consumers.pop(), self._timeout)
        for extra in self._extra_producers.values():
            await bounded(extra.stop(), self._timeout)
        self._extra_producers.clear()
        if self._producer is not None:
            await bounded(self._producer.stop(), self._timeout)
        if self._admin is not None:
            await bounded(self._admin.close(), self._timeout)
        if "ssl_context" in self.info.client_options:
            # aiokafka closes a TLS connection without waiting for TLS's closing
            # handshake; let it finish, or a loop that ends now leaves the sockets open.
            await asyncio.sleep(TLS_CLOSE_S)

    def _clients(self) -> tuple[Any, Any]:
        if self._producer is None or self._closed:
            raise BrokerUnavailable(
                f"this KafkaAdapter for {self.info.url} is not open: "
                "use `async with KafkaAdapter(info) as adapter`"
            )
        return self._admin, self._producer

    def _translate(self, err: BaseException, doing: str) -> HarnessError:
        """A driver error (or our own deadline) as the harness error a caller can act on."""
        return translate(err, doing, url=self.info.url, timeout=self._timeout)

    # ----------------------------------------------------------------- topics

    async def create(self, spec: DestinationSpec) -> None:
        """Create the topic (replication 1) and wait until every partition has a leader."""
        await self.create_all([spec])

    async def create_all(self, specs: Sequence[DestinationSpec]) -> None:
        """Create topics in one request and wait until every partition of each has a leader."""
        wanted: dict[str, int] = {}
        for spec in specs:
            name = _check_topic_name(spec.name)
            if not isinstance(spec.partitions, int) or spec.partitions < 1:
                raise InvalidArgument(
                    f"partitions={spec.partitions!r} is invalid: a topic needs at least one"
                    " partition"
                )
            wanted[name] = spec.partitions
        if not wanted:
            return
        admin, _ = self._clients()
        names = ", ".join(map(repr, wanted))
        doing = f"creating topic {names}"
        try:
            async with asyncio.timeout(self._timeout):
                response = await admin.create_topics(
                    [NewTopic(name, partitions, 1) for name, partitions in wanted.items()],
                    timeout_ms=int(self._timeout * 1000),
                )
                for topic_error in response.topic_errors:
                    name, code = topic_error[0], topic_error[1]
                    message = topic_error[2] if len(topic_error) > 2 else ""
                    if code == kafka_errors.TopicAlreadyExistsError.errno:
                        raise DestinationError(
                            f"topic {name!r} already exists on {self.info.url}: "
                            "delete it first or use a unique name per run"
                        )
                    if code != 0:
                        raise DestinationError(
                            f"Kafka at {self.info.url} refused to create topic {name!r} "
                            f"({kafka_errors.for_code(code).__name__}: {message}): "
                            "check the name, partitions and the broker's topic policy"
                        )
                # Under KRaft a successful CreateTopics only means the controller
                # committed it: leaders appear in metadata a little later.
                await self._await_leaders(wanted)
        except HarnessError:
            raise
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            if isinstance(err, TimeoutError) and all(
                await asyncio.gather(*(self._exists(name) for name in wanted))
            ):
                raise DestinationError(
                    f"topic {names} was created but not all partitions had a leader within"
                    f" {self._timeout:g} s: check the broker's log"
                ) from err
            raise self._translate(err, doing) from err

    async def _await_leaders(self, wanted: Mapping[str, int]) -> None:
        """Poll until the broker's and then the producer's metadata show every leader."""
        admin, producer = self._clients()
        partitions = {name: set(range(count)) for name, count in wanted.items()}
        pending = set(wanted)
        while pending:
            for topic in await admin.describe_topics(sorted(pending)):
                led = {
                    p["partition"]
                    for p in topic["partitions"]
                    if p["error_code"] == 0 and p["leader"] >= 0
                }
                if topic["error_code"] == 0 and led >= partitions[topic["topic"]]:
                    pending.discard(topic["topic"])
            if pending:
                await asyncio.sleep(_POLL_S)
        # The producer keeps its own metadata: confirm it too, so the first
        # publish does not stall on a refresh (or on stale metadata of an
        # earlier topic with the same name).
        client = producer.client
        for name in wanted:
            await client.add_topic(name)
        pending = set(wanted)
        while pending:
            pending = {
                name
                for name in pending
                if client.cluster.available_partitions_for_topic(name) != partitions[name]
            }
            if pending:
                await client.force_metadata_update()
                if any(
                    client.cluster.available_partitions_for_topic(name) != partitions[name]
                    for name in pending
                ):
                    await asyncio.sleep(_POLL_S)
        # Metadata shows a leader slightly before that leader's replica manager
        # serves the partition (produce then gets NOT_LEADER_OR_FOLLOWER and is
        # retried): ask each leader for the log end offsets until all answer.
        for name in wanted:
            while True:
                if await self._leaders_serve(client, name, partitions[name]):
                    break
                await asyncio.sleep(_POLL_S)

    @staticmethod
    async def _leaders_serve(client: Any, name: str, partitions: set[int]) -> bool:
        by_leader: dict[int, list[tuple[int, int]]] = {}
        for partition in partitions:
            leader = client.cluster.leader_for_partition(TopicPartition(name, partition))
            if leader is None or leader < 0:
                return False
            by_leader.setdefault(leader, []).append((partition, _LATEST))
        for leader, wanted in by_leader.items():
            response = await client.send(leader, OffsetRequest(-1, 0, [(name, wanted)]))
            for _, answers in response.topics:
                if any(answer[1] != 0 for answer in answers):
                    return False
        return True

    async def _topic_names(self) -> list[tuple[str, bool]]:
        admin, _ = self._clients()
        # A metadata request for all topics never auto-creates one.
        return [(t["topic"], bool(t["is_internal"])) for t in await admin.describe_topics(None)]

    async def _exists(self, name: str) -> bool | None:
        """Whether the topic exists; None when the broker does not say within a short bound."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(self._timeout, 2.0)):
                return name in {topic for topic, _ in await self._topic_names()}
        return None

    async def delete(self, name: str) -> None:
        """Delete a topic (a missing one is fine) and wait until metadata no longer shows it."""
        await self.delete_all([name])

    async def delete_all(self, names: Sequence[str]) -> None:
        """Delete topics in one request and wait until metadata shows none of them."""
        doomed = [_check_topic_name(name) for name in names]
        if not doomed:
            return
        admin, producer = self._clients()
        producers = [producer, *self._extra_producers.values()]
        tracked = [p for p in producers if self._forget(p, doomed)]
        doing = f"deleting topic {', '.join(map(repr, doomed))}"
        try:
            async with asyncio.timeout(self._timeout):
                response = await admin.delete_topics(doomed, timeout_ms=int(self._timeout * 1000))
                for name, code in response.topic_error_codes:
                    if code not in (0, kafka_errors.UnknownTopicOrPartitionError.errno):
                        raise DestinationError(
                            f"Kafka at {self.info.url} refused to delete topic {name!r} "
                            f"({kafka_errors.for_code(code).__name__}): check the broker allows "
                            "deletion (delete.topic.enable=true)"
                        )
                # Deletion is asynchronous: poll until the metadata agrees.
                while True:
                    if not {topic for topic, _ in await self._topic_names()} & set(doomed):
                        break
                    await asyncio.sleep(_POLL_S)
                for client in tracked:  # so a publish to one fails at once, without retrying
                    await client.client.force_metadata_update()
        except HarnessError:
            raise
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            raise self._translate(err, doing) from err

    @staticmethod
    def _forget(producer: Any, names: Sequence[str]) -> bool:
        """Stop the producer asking for topics about to be deleted.

        Otherwise its metadata refreshes keep asking for them, which recreates them
        on brokers with auto.create.topics.enable (and logs a warning per topic
        elsewhere). aiokafka has no public call for this. True if it tracked any.
        """
        tracked = getattr(producer.client, "_topics", None)
        if not isinstance(tracked, set) or not tracked & set(names):
            return False
        producer.client.set_topics(tracked - set(names))
        return True

    async def forget_group(self, group_id: str) -> None:
        """Delete a consumer group once it is empty (bounded; a crashed member leaves it
        non-empty until its session times out)."""
        admin, _ = self._clients()
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    try:
                        node = await admin.find_coordinator(group_id)
                        response = await admin._send_request_to_node(node, DeleteGroups([group_id]))
                        [result] = response.to_object()["results"]
                        code = result["error_code"]
                    except COORDINATOR_NOT_READY as not_ready:
                        code = not_ready.errno
                    if code in (0, GROUP_ID_NOT_FOUND):
                        return
                    if code not in ASK_AGAIN:
                        raise DestinationError(
                            f"deleting consumer group {group_id!r} failed"
                            f" ({kafka_errors.for_code(code).__name__})"
                        )
                    await asyncio.sleep(0.1)
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            raise self._translate(err, f"deleting consumer group {group_id!r}") from err

    async def list_groups(self, prefix: str = "") -> list[str]:
        """Consumer groups whose id starts with ``prefix``, sorted (for leak counts)."""
        admin, _ = self._clients()
        try:
            async with asyncio.timeout(self._timeout):
                groups = await admin.list_consumer_groups()
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            raise self._translate(err, "listing consumer groups") from err
        return sorted(group[0] for group in groups if group[0].startswith(prefix))

    async def list_destinations(self, prefix: str = "") -> list[str]:
        """Topics starting with ``prefix``, sorted; internal ones (``__`` names) left out."""
        try:
            async with asyncio.timeout(self._timeout):
                topics = await self._topic_names()
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            raise self._translate(err, "listing topics") from err
        return sorted(
            topic
            for topic, internal in topics
            if not internal and not topic.startswith("__") and topic.startswith(prefix)
        )

    # ----------------------------------------------------------------- traffic

    async def publish(
        self, destination: str, message: Message, *, partition: int | None = None
    ) -> PublishReceipt:
        """Send one record and wait for all in-sync replicas to have it."""
        if partition is not None and (not isinstance(partition, int) or partition < 0):
            raise InvalidArgument(
                f"partition={partition!r} is invalid: pass None or a partition number >= 0"
            )
        [receipt] = await self._send(destination, [message], partition=partition, producer=0)
        return receipt

    async def publish_many(
        self, destination: str, messages: Sequence[Message], *, producer: int = 0
    ) -> list[PublishReceipt]:
        """Send records in order, all in flight at once; wait for all in-sync replicas.

        ``producer`` > 0 is a producer client of its own (its own connection),
        started on first use and stopped with the adapter.
        """
        return await self._send(destination, messages, partition=None, producer=producer)

    async def _send(
        self,
        destination: str,
        messages: Sequence[Message],
        *,
        partition: int | None,
        producer: int,
    ) -> list[PublishReceipt]:
        name = _check_topic_name(destination)
        doing = f"publishing to topic {name!r}"
        try:
            async with asyncio.timeout(self._timeout):
                client = await self._producer_for(producer)
                known = client.client.cluster.partitions_for_topic(name)
                if known is None and await self._exists(name) is False:
                    raise DestinationError(
                        f"topic {name!r} does not exist on {self.info.url}: create it first "
                        f"(adapter.create(DestinationSpec(name={name!r})))"
                    )
                if partition is not None:
                    known = await client.partitions_for(name)
                    if partition not in known:
                        raise InvalidArgument(
                            f"partition={partition} is invalid: topic {name!r} has partitions "
                            f"0..{max(known)}"
                        )
                # send() queues a record and returns its delivery future, so the
                # records queue in call order, and a producer has one batch per
                # partition in flight at a time: the partition keeps that order.
                deliveries = [
                    await client.send(
                        name,
                        value=message.value,
                        key=message.key,
                        partition=partition,
                        headers=list(message.headers.items()),
                    )
                    for message in messages
                ]
                sent = await asyncio.gather(*deliveries)
        except HarnessError:
            raise
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            if await self._exists(name) is False:
                raise DestinationError(
                    f"topic {name!r} does not exist on {self.info.url} (any more): "
                    "create it before publishing"
                ) from err
            raise self._translate(err, doing) from err
        return [
            PublishReceipt(destination=name, partition=record.partition, offset=record.offset)
            for record in sent
        ]

    async def _producer_for(self, number: int) -> Any:
        """Producer ``number``: 0 is the adapter's own, others start on first use."""
        _, own = self._clients()
        if check_producer(number) == 0:
            return own
        async with self._producers_lock:
            client = self._extra_producers.get(number)
            if client is None:
                client = self._new_producer(f"harness-producer-{number}")
                try:
                    await client.start()
                except BaseException:
                    await bounded(client.stop(), self._timeout)
                    raise
                self._extra_producers[number] = client
        return client

    def _new_producer(self, client_id: str) -> Any:
        return AIOKafkaProducer(
            bootstrap_servers=self.info.url,
            client_id=client_id,
            acks="all",
            linger_ms=0,
            max_request_size=MAX_MESSAGE_BYTES,
            request_timeout_ms=int(self._timeout * 1000),
            **self.info.client_options,
        )

    def tap(
        self, destination: str, on_record: TapCallback
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Read every partition of ``destination`` from the beginning, without a group.

        Records reach ``on_record`` from a background task, in offset order per
        partition. If that task fails (including ``on_record`` raising), leaving
        the ``async with`` raises its exception.
        """
        return self._tap(_check_topic_name(destination), on_record)

    @contextlib.asynccontextmanager
    async def _tap(self, name: str, on_record: TapCallback) -> AsyncIterator[None]:
        # A consumer another tap is done with skips a start (bootstrap and metadata).
        consumer = self._idle_tap_consumers.pop() if self._idle_tap_consumers else None
        try:
            async with asyncio.timeout(self._timeout):
                partitions = await self._partitions_of(name)
                if consumer is None:
                    consumer = self._new_tap_consumer()
                    await consumer.start()
                consumer.assign(partitions)
                # Offset 0 is the beginning, or out of range after retention, which
                # auto_offset_reset="earliest" turns into the beginning: no round trip.
                for tp in partitions:
                    consumer.seek(tp, 0)
        except BaseException as err:
            if consumer is not None:
                await stop_consumer(consumer, self._timeout)
            if isinstance(err, TimeoutError | kafka_errors.KafkaError | OSError):
                raise self._translate(err, f"starting a tap on topic {name!r}") from err
            raise
        live = _LiveTap(
            consumer=consumer,
            task=asyncio.create_task(
                self._pump(consumer, name, on_record), name=f"kafka-tap {name}"
            ),
        )
        self._taps.add(live)
        try:
            yield
        except BaseException as body_error:
            failure = await self._stop_tap(live)
            if failure is not None:
                body_error.add_note(f"the Kafka tap on {name!r} had failed too: {failure!r}")
            raise
        failure = await self._stop_tap(live)
        if failure is not None:
            raise failure

    def _new_tap_consumer(self) -> Any:
        return AIOKafkaConsumer(
            bootstrap_servers=self.info.url,
            client_id="harness-tap",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_uncommitted",
            fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            request_timeout_ms=int(self._timeout * 1000),
            # A new topic's leader is unknown until a metadata refresh: retry soon,
            # not after the default 100 ms, so a tap goes live quickly.
            retry_backoff_ms=10,
            fetch_max_wait_ms=50,
            **self.info.client_options,
        )

    async def _partitions_of(self, name: str) -> list[TopicPartition]:
        admin, producer = self._clients()
        known = producer.client.cluster.partitions_for_topic(name)  # fresh after create()
        if not known:
            # All-topics metadata: asking for this one topic would create it
            # on a broker with auto.create.topics.enable.
            found = [t for t in await admin.describe_topics(None) if t["topic"] == name]
            if not found:
                raise DestinationError(
                    f"cannot tap topic {name!r} on {self.info.url}: it does not exist; "
                    "create it first"
                )
            known = {p["partition"] for p in found[0]["partitions"]}
        return [TopicPartition(name, partition) for partition in sorted(known)]

    async def _pump(self, consumer: Any, name: str, on_record: TapCallback) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except kafka_errors.KafkaError as err:
                raise self._translate(err, f"tapping topic {name!r}") from err
            seen_ns = time.perf_counter_ns()
            for tp, records in batches.items():
                for record in records:
                    on_record(
                        TapRecord(
                            event="landed",
                            destination=name,
                            message=Message(
                                value=b"" if record.value is None else record.value,
                                key=record.key,
                                headers={k: b"" if v is None else v for k, v in record.headers},
                            ),
                            seen_ns=seen_ns,
                            partition=tp.partition,
                            offset=record.offset,
                            broker_timestamp_ms=record.timestamp,
                        )
                    )

    async def _stop_tap(self, live: _LiveTap) -> BaseException | None:
        """Stop a tap's task and consumer (bounded); return the task's failure, if any."""
        self._taps.discard(live)
        live.task.cancel()
        await asyncio.wait([live.task], timeout=self._timeout)
        if live.task.cancelled() and not self._closed:
            live.consumer.unsubscribe()  # healthy: keep it for the next tap
            self._idle_tap_consumers.append(live.consumer)
            return None
        await stop_consumer(live.consumer, self._timeout)
        if live.task.done() and not live.task.cancelled():
            return live.task.exception()
        return None


# --------------------------------------------------------------------------- local broker

#: The broker's JVM: a bounded heap; the serial collector, since a test broker
#: on a small machine gains nothing from G1's background threads.
_BROKER_JVM = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)
#: The one-shot storage formatter: C1 only, as it exits before C2 would pay off.
_TOOL_JVM = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData")
_BROKER_MAIN = "kafka.Kafka"
#: Listeners PROXY0, PROXY1 for the fault proxy (see KafkaRecipe).
_PROXY_LISTENERS = 2
_STORAGE_TOOL = "kafka.tools.StorageTool"

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka_request.name = kafka.request.logger
logger.kafka_request.level = warn
"""


def _java() -> str:
    """The java the broker will run with: $JAVA_HOME's, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerStartError(
            "Java is not on PATH: the local Kafka broker needs Java 17 or newer "
            "(apt-get install openjdk-17-jre-headless), or give a broker with --kafka-bootstrap"
        )
    return found


def _java_major(java: str) -> int:
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BrokerStartError(
            f"{java} -version failed ({describe(err)}): check the Java install"
        ) from err
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        raise BrokerStartError(
            f"cannot tell the version of {java} from {done.stderr.strip()!r}: "
            "install Java 17 or newer (apt-get install openjdk-17-jre-headless)"
        )
    major = int(found.group(1))
    # Java 8 and older report "1.8.0_…".
    return int(found.group(2) or 0) if major == 1 else major


def _distinct_free_ports(count: int) -> list[int]:
    """``count`` free ports, no two alike (the OS may hand out a just-released port again)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _cluster_id() -> str:
    """A fresh cluster id in Kafka's format (a UUID, URL-safe base64, unpadded).

    Never one starting with "-" (one in 64 would): the storage tool would read
    it as an option, and Kafka's own Uuid.randomUuid() avoids them too.
    """
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not found.startswith("-"):
            return found


@dataclass(frozen=True, kw_only=True)
class _SecureListener:
    """The SASL_SSL listener of a local broker: TLS with the test CA, SASL PLAIN and SCRAM."""

    port: int
    keystore: Path
    ca: Path
    username: str
    password: str


_SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


def _secure_properties(secure: _SecureListener) -> dict[str, object]:
    prefix = "listener.name.sasl_ssl."
    settings: dict[str, object] = {
        f"{prefix}sasl.enabled.mechanisms": ",".join(("PLAIN", *_SCRAM_MECHANISMS)),
        f"{prefix}plain.sasl.jaas.config": (
            f'{_PLAIN_LOGIN} required user_{secure.username}="{secure.password}";'
        ),
        f"{prefix}ssl.keystore.type": "PEM",
        f"{prefix}ssl.keystore.location": secure.keystore,
        f"{prefix}ssl.truststore.type": "PEM",
        f"{prefix}ssl.truststore.location": secure.ca,
        # A client certificate is checked when given (mutual TLS), not required.
        f"{prefix}ssl.client.auth": "requested",
    }
    for mechanism in _SCRAM_MECHANISMS:
        settings[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = f"{_SCRAM_LOGIN} required;"
    return settings


def _server_properties(
    *,
    data: Path,
    client: int,
    controller: int,
    proxies: Mapping[str, tuple[int, int]],
    secure: _SecureListener | None = None,
) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{client}", f"CONTROLLER://127.0.0.1:{controller}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{client}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    for name, (listen, advertise) in proxies.items():
        listeners.append(f"{name}://127.0.0.1:{listen}")
        # Clients that bootstrap here are sent to the fault proxy's port.
        advertised.append(f"{name}://127.0.0.1:{advertise}")
        protocols.append(f"{name}:PLAINTEXT")
    if secure is not None:
        listeners.append(f"SASL_SSL://127.0.0.1:{secure.port}")
        advertised.append(f"SASL_SSL://127.0.0.1:{secure.port}")
        protocols.append("SASL_SSL:SASL_SSL")
    settings: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocols),
        "log.dirs": data,
        # Tests create their topics explicitly; a typo must fail, not create one.
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        # The first group join would otherwise wait 3 s.
        "group.initial.rebalance.delay.ms": 0,
        # Services under test use 1-2 s session timeouts so crashes cost little.
        "group.min.session.timeout.ms": 500,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "share.coordinator.state.topic.num.partitions": 4,
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "replica.fetch.max.bytes": MAX_MESSAGE_BYTES,
        # Small segments, but a batch must fit in one: Kafka rejects batches
        # larger than the segment, so twice the largest message.
        "log.segment.bytes": 2 * MAX_MESSAGE_BYTES,
        "log.index.size.max.bytes": 1024 * 1024,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 4,
    }
    if secure is not None:
        settings |= _secure_properties(secure)
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaRecipe:
    """A single-node KRaft Kafka (broker and controller in one JVM) for tests.

    Besides the client listener it has two listeners for a fault proxy:
    ``PROXY<i>`` listens on ``extra["proxy<i>.listen"]`` but is advertised as
    ``extra["proxy<i>.advertised"]``, a port a TCP proxy binds and forwards to
    the listen port, so clients that bootstrap through the proxy stay on it.
    """

    kind: BrokerKind = "kafka"
    #: Cold start with cached jars takes about 6 s on 2 cores: format ~1.5 s, then
    #: JVM start, KRaft election and the first round trip ~4.5 s.
    start_timeout: float = 60.0

    def check_prerequisites(self) -> None:
        """Java >= 17, and Maven if Kafka's jars are not cached yet."""
        java = _java()
        major = _java_major(java)
        if major < 17:
            raise BrokerStartError(
                f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java 17 or newer: "
                "apt-get install openjdk-17-jre-headless (or set JAVA_HOME)"
            )
        if not jars_ready() and shutil.which("mvn") is None:
            raise BrokerStartError(
                f"Kafka {KAFKA_VERSION}'s jars are not cached in {jar_root()} and Maven (mvn) "
                "is not on PATH to fetch them: apt-get install maven, then run "
                '`python -c "from brokers.kafka import ensure_jars; ensure_jars()"`'
            )

    def prepare(self, workdir: Path) -> LaunchPlan:
        """Write server.properties and a log4j2 config into ``workdir`` and format storage."""
        workdir = workdir.resolve()  # the broker resolves relative paths against its own cwd
        libs = ensure_jars()
        java = _java()
        classpath = str(libs / "*")
        data = workdir / "data"
        log = workdir / "kafka.log"
        properties = workdir / "server.properties"
        log_config = workdir / "log4j2.properties"

        ports = _distinct_free_ports(3 + 2 * _PROXY_LISTENERS)
        client, controller = ports[0], ports[1]
        proxies = {
            f"PROXY{i}": (ports[2 + 2 * i], ports[3 + 2 * i]) for i in range(_PROXY_LISTENERS)
        }
        secure = _make_secure_listener(workdir, ports[-1])
        properties.write_text(
            _server_properties(
                data=data, client=client, controller=controller, proxies=proxies, secure=secure
            )
        )
        log_config.write_text(_LOG4J2.format(log=log))
        log_option = f"-Dlog4j2.configurationFile={log_config}"

        fmt = [java, *_TOOL_JVM, log_option, "-cp", classpath, _STORAGE_TOOL, "format"]
        fmt += ["--cluster-id", _cluster_id(), "--config", str(properties)]
        if secure is not None:
            for mechanism in _SCRAM_MECHANISMS:
                scram = f"name={secure.username},password={secure.password}"
                fmt += ["--add-scram", f"{mechanism}=[{scram}]"]
        try:
            done = subprocess.run(
                fmt, cwd=workdir, capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise BrokerStartError(
                f"formatting Kafka storage in {data} took over 60 s: is the machine overloaded?"
            ) from err
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise BrokerStartError(
                f"formatting Kafka storage in {data} failed (exit {done.returncode}); "
                f"check {properties}. The tool said:\n{tail}"
            )

        extra = {"log": str(log), "data": str(workdir)}
        for i, (listen, advertise) in enumerate(proxies.values()):
            extra[f"proxy{i}.listen"] = f"127.0.0.1:{listen}"
            extra[f"proxy{i}.advertised"] = f"127.0.0.1:{advertise}"
        if secure is not None:
            tls = secure.keystore.parent
            extra |= {
                "sasl_ssl": f"127.0.0.1:{secure.port}",
                "sasl_ssl.ca": str(secure.ca),
                "sasl_ssl.username": secure.username,
                "sasl_ssl.password_file": str(tls / _PASSWORD_FILE),
                "sasl_ssl.client_cert": str(tls / "client.pem"),
                "sasl_ssl.client_key": str(tls / "client.key"),
            }
        return LaunchPlan(
            argv=[java, *_BROKER_JVM, log_option, "-cp", classpath, _BROKER_MAIN, str(properties)],
            url=f"127.0.0.1:{client}",
            extra=extra,
        )

    def wait_ready(self, info: BrokerInfo, timeout: float) -> None:
        """Retry create, publish, tap and delete of a scratch topic until it works or time is up.

        Then connect once through the SASL_SSL listener, so a broken TLS set-up
        fails here rather than in a test.
        """
        started = time.monotonic()
        asyncio.run(_await_round_trip(info, within=timeout))
        secure = secure_info(info)
        if secure is not None:
            left = max(1.0, timeout - (time.monotonic() - started))
            asyncio.run(_await_connect(secure, within=left))


_PASSWORD_FILE = "sasl-password"


def _make_secure_listener(workdir: Path, port: int) -> _SecureListener | None:
    """Certificates and a SASL password for the SASL_SSL listener (None without openssl)."""
    if not openssl_available():
        return None
    tls = workdir / "tls"
    pki = make_pki(tls)
    password = secrets.token_hex(16)
    password_file = tls / _PASSWORD_FILE
    password_file.write_text(password)
    password_file.chmod(0o600)
    return _SecureListener(
        port=port, keystore=pki.server_keystore, ca=pki.ca, username="harness", password=password
    )


def secure_settings(info: BrokerInfo, *, mechanism: str = "PLAIN") -> dict[str, str] | None:
    """Settings (``brokers.KAFKA_SETTINGS``) for the SASL_SSL listener of a broker the harness
    started, or None when it has none (an older or external broker, or no openssl).

    ``mechanism`` is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512: the listener takes each.
    """
    extra = info.extra
    if "sasl_ssl" not in extra:
        return None
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_username": extra["sasl_ssl.username"],
        "sasl_password": Path(extra["sasl_ssl.password_file"]).read_text().strip(),
        "ssl_cafile": extra["sasl_ssl.ca"],
    }


def secure_info(info: BrokerInfo, *, mechanism: str = "PLAIN") -> BrokerInfo | None:
    """``info`` as seen through its SASL_SSL listener (see :func:`secure_settings`), or None."""
    settings = secure_settings(info, mechanism=mechanism)
    if settings is None:
        return None
    return BrokerInfo(
        kind="kafka",
        url=info.extra["sasl_ssl"],
        provider=info.provider,
        client_options=kafka_client_options(settings),
    )


async def _await_connect(info: BrokerInfo, *, within: float) -> None:
    """Open an adapter (metadata through every client) until it works or ``within`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            async with KafkaAdapter(info, timeout=max(1.0, min(10.0, deadline - loop.time()))):
                return
        except BrokerUnavailable as err:
            if loop.time() >= deadline:
                raise BrokerStartError(
                    f"Kafka's SASL_SSL listener at {info.url} did not accept a connection"
                    f" within {within:g} s: {err}"
                ) from err
        await asyncio.sleep(0.2)


async def _await_round_trip(info: BrokerInfo, *, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: BaseException | None = None
    while (remaining := deadline - loop.time()) > 0:
        try:
            async with asyncio.timeout(remaining):
                # Until the port opens, a cheap connect says "not yet" without
                # aiokafka logging an error for every attempt.
                await _port_open(info.url)
                await _round_trip(info, within=min(remaining, 10.0))
            return
        except (HarnessError, TimeoutError, OSError) as err:
            last = err
        await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
    raise BrokerStartError(
        f"Kafka at {info.url} did not complete a produce-and-consume round trip within "
        f"{within:g} s; last error: {describe(last) if last else 'none'}"
    ) from last


async def _port_open(url: str) -> None:
    host, _, port = url.split(",")[0].strip().rpartition(":")
    _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _round_trip(info: BrokerInfo, *, within: float) -> None:
    """Create a scratch topic, publish one record, see it through a tap, delete the topic."""
    name = f"harness-ready-{uuid.uuid4().hex[:12]}"
    async with KafkaAdapter(info, timeout=within) as adapter:
        await adapter.create(DestinationSpec(name=name))
        try:
            seen = asyncio.Event()
            async with adapter.tap(name, lambda record: seen.set()):
                await adapter.publish(name, Message(b"ready"))
                async with asyncio.timeout(within):
                    await seen.wait()
        finally:
            with contextlib.suppress(HarnessError, TimeoutError):
                await adapter.delete(name)


# --------------------------------------------------------------------------- docker


def start_container(*, timeout: float = 120.0) -> tuple[BrokerInfo, Callable[[], None]]:
    """Start a KRaft Kafka container (testcontainers); return its info and a stop function.

    Raises BrokerUnavailable when no Docker engine answers, BrokerStartError
    when the container does not come up or fails a round trip in ``timeout``.
    """
    _require_docker()
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(image=DOCKER_IMAGE).with_kraft()
    # The same test-friendly settings as the local broker (see _server_properties).
    for key, value in {
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_MESSAGE_MAX_BYTES": str(MAX_MESSAGE_BYTES),
        "KAFKA_REPLICA_FETCH_MAX_BYTES": str(MAX_MESSAGE_BYTES),
    }.items():
        container.with_env(key, value)

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            container.stop()

    started = time.monotonic()
    try:
        container.start(timeout=max(1, int(timeout)))
        info = BrokerInfo(
            kind="kafka",
            url=container.get_bootstrap_server(),
            provider="docker",
            extra={"image": DOCKER_IMAGE, "container": str(container.get_wrapped_container().id)},
        )
        remaining = max(1.0, timeout - (time.monotonic() - started))
        asyncio.run(_await_round_trip(info, within=remaining))
    except BaseException as err:
        with contextlib.suppress(Exception):
            stop()
        if isinstance(err, HarnessError):
            raise
        if isinstance(err, Exception):
            raise BrokerStartError(
                f"the Kafka container ({DOCKER_IMAGE}) did not start within {timeout:g} s "
                f"({describe(err)}): check `docker logs` and that the image can be pulled"
            ) from err
        raise
    return info, stop


def _require_docker() -> None:
    from testcontainers.core.docker_client import DockerClient, get_docker_host

    fix = "start Docker or set DOCKER_HOST, or use the local Kafka broker that needs only Java"
    host = get_docker_host() or "unix:///var/run/docker.sock"
    socket_path = Path(host.removeprefix("unix://"))
    if host.startswith("unix://") and not socket_path.exists():
        raise BrokerUnavailable(f"no Docker engine answers: {socket_path} does not exist: {fix}")
    reason = ""
    # docker-py drops the socket of a failed connection without closing it;
    # collect it here, quietly, rather than in whatever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = DockerClient()
            try:
                client.client.ping()
            finally:
                client.client.close()
        except Exception as err:
            reason = describe(err)
        if reason:
            gc.collect()
    if reason:
        raise BrokerUnavailable(f"no Docker engine answers at {host} ({reason}): {fix}")
