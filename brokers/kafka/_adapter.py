"""The adapter the core talks to on a Kafka cluster: topics, consumer groups, publishing, taps.

:class:`KafkaAdapter` does it through aiokafka (an admin client for topics
and groups, one for a run's own group, a producer, and one group-less
consumer per tap), bounds every call, and
translates aiokafka's errors into :mod:`harness._errors` (see
:mod:`brokers.kafka._errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.protocol.commit import OffsetCommitRequest
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.protocol.offset import OffsetRequest

from message_flow_harness._broker import (
    BrokerAdapter,
    BrokerInfo,
    DestinationSpec,
    Publishing,
    PublishReceipt,
    TapCallback,
    check_producer,
    check_publishing,
)
from message_flow_harness._errors import (
    BrokerUnavailable,
    DestinationError,
    HarnessError,
    InvalidArgument,
)
from message_flow_harness._message import BrokerKind, Message
from message_flow_harness.brokers.kafka._clients import MAX_MESSAGE_BYTES, TLS_CLOSE_S, bounded
from message_flow_harness.brokers.kafka._diagnose import diagnose
from message_flow_harness.brokers.kafka._errors import URL_FIX, describe, translate
from message_flow_harness.brokers.kafka._protocol import (
    ASK_AGAIN,
    COORDINATOR_NOT_READY,
    GROUP_ID_NOT_FOUND,
    NON_EMPTY_GROUP,
    UNKNOWN_MEMBER_ID,
    DeleteGroups,
)
from message_flow_harness.brokers.kafka._tap import Taps

_TOPIC_CHARS = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_TOPIC_LENGTH = 249
_POLL_S = 0.05
#: How long deleting a consumer group waits while it still has members: longer than
#: the 30 s session many services use (aiokafka's default is 10 s), so a member that
#: crashed without leaving has been dropped by the broker before this runs out.
GROUP_HELD_S = 60.0
_HELD_POLL_S = 0.5
#: ListOffsets' timestamp for "the log end offset".
_LATEST = -1


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


class KafkaAdapter(BrokerAdapter):
    """Topics, publishing and taps on one Kafka cluster, every call bounded by ``timeout``.

    Use as ``async with KafkaAdapter(info) as adapter``. One admin client and
    one producer (``acks="all"``) are shared by all calls, a second admin
    client serves a run's own group (its committed start, its readiness);
    each tap has its own group-less consumer, kept for the next tap when it
    is done. Other producers (a number > 0, idempotent or transactional
    publishing) start on first use and are kept until the adapter closes.
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
        self._run_admin_client: Any = None  # see _run_admin
        self._run_admin_lock = asyncio.Lock()
        self._coordinators: dict[str, int] = {}  # a run's group -> its coordinator, until forgotten
        self._producer: Any = None
        # publish_many(producer=n, publishing=p) but for (0, "plain"), the one above.
        self._extra_producers: dict[tuple[int, Publishing], Any] = {}
        self._producers_lock = asyncio.Lock()
        # A transactional producer has one transaction open at a time: its calls take turns.
        self._transaction_turns: dict[tuple[int, Publishing], asyncio.Lock] = {}
        # Unique to this adapter: two adapters' producers never fence each other.
        self._transactional_prefix = f"harness-{uuid.uuid4().hex[:12]}"
        self._taps = Taps(info, timeout=self._timeout, clients=self._clients)
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
        producer = self._new_producer(0, "plain")
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
        await self._taps.close()
        for extra in self._extra_producers.values():
            await bounded(extra.stop(), self._timeout)
        self._extra_producers.clear()
        if self._producer is not None:
            await bounded(self._producer.stop(), self._timeout)
        if self._run_admin_client is not None:
            await bounded(self._run_admin_client.close(), self._timeout)
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

    async def _run_admin(self) -> Any:
        """The admin client for a run's own group (its commit, its readiness), started on first use.

        A connection of its own: Kafka answers one connection's requests in
        order, and on the shared admin client a run's commit would wait behind
        the next runs' CreateTopics and the last run's deletions (tens of ms).
        """
        self._clients()  # open, or say so
        async with self._run_admin_lock:
            if self._run_admin_client is None:
                client = AIOKafkaAdminClient(
                    bootstrap_servers=self.info.url,
                    client_id="harness-run-admin",
                    request_timeout_ms=int(self._timeout * 1000),
                    **self.info.client_options,
                )
                try:
                    async with asyncio.timeout(self._timeout):
                        await client.start()
                except BaseException as err:
                    await bounded(client.close(), self._timeout)
                    if isinstance(err, TimeoutError | kafka_errors.KafkaError | OSError):
                        raise self._translate(err, "connecting an admin client") from err
                    raise
                self._run_admin_client = client
        return self._run_admin_client

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
        configs: dict[str, Mapping[str, str]] = {}
        for spec in specs:
            name = _check_topic_name(spec.name)
            if not isinstance(spec.partitions, int) or spec.partitions < 1:
                raise InvalidArgument(
                    f"partitions={spec.partitions!r} is invalid: a topic needs at least one"
                    " partition"
                )
            wanted[name] = spec.partitions
            configs[name] = spec.config
        if not wanted:
            return
        admin, _ = self._clients()
        names = ", ".join(map(repr, wanted))
        doing = f"creating topic {names}"
        try:
            async with asyncio.timeout(self._timeout):
                response = await admin.create_topics(
                    [
                        NewTopic(name, partitions, 1, topic_configs=dict(configs[name]))
                        for name, partitions in wanted.items()
                    ],
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
                            "check the name, partitions, topic configs and the broker's topic"
                            " policy"
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
        """Delete a consumer group once it is empty.

        Silence is bounded by the adapter's timeout (the broker is gone), but a
        group that still has members is asked again for up to
        :data:`GROUP_HELD_S`: a crashed member holds it until its session times
        out (30 s in many services), and the broker answering "not empty" is
        alive. Still held after that: :class:`DestinationError` naming the
        group and how to delete it later.
        """
        self._coordinators.pop(group_id, None)
        admin, _ = self._clients()
        loop = asyncio.get_running_loop()
        held_until = loop.time() + GROUP_HELD_S
        try:
            async with asyncio.timeout(self._timeout) as silence:
                while True:
                    code = await self._delete_group(admin, group_id)
                    if code in (0, GROUP_ID_NOT_FOUND):
                        return
                    if code == NON_EMPTY_GROUP:
                        if loop.time() >= held_until:
                            raise DestinationError(self._held(group_id))
                        silence.reschedule(loop.time() + self._timeout)  # it answered
                        await asyncio.sleep(_HELD_POLL_S)
                        continue
                    if code not in ASK_AGAIN:
                        raise DestinationError(
                            f"deleting consumer group {group_id!r} failed"
                            f" ({kafka_errors.for_code(code).__name__})"
                        )
                    await asyncio.sleep(0.1)
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            raise self._translate(err, f"deleting consumer group {group_id!r}") from err

    @staticmethod
    async def _delete_group(admin: AIOKafkaAdminClient, group_id: str) -> int:
        """One DeleteGroups request to the group's coordinator: its error code."""
        try:
            node = await admin.find_coordinator(group_id)
            response = await admin._send_request_to_node(node, DeleteGroups([group_id]))
        except COORDINATOR_NOT_READY as not_ready:
            return int(not_ready.errno)
        [result] = response.to_object()["results"]
        return int(result["error_code"])

    def _held(self, group_id: str) -> str:
        return (
            f"consumer group {group_id!r} still had members after {GROUP_HELD_S:g} s (a"
            " crashed member holds its group until its session times out): delete it once"
            f" it is empty, with `kafka-consumer-groups.sh --bootstrap-server"
            f" {self.info.url} --delete --group {group_id}`"
        )

    async def unready(
        self, destination: str, *, group_id: str | None, partitions: int
    ) -> str | None:
        """None once ``group_id`` is Stable and its members hold every input partition."""
        if group_id is None:
            return None  # a service without a group reads its partitions itself
        group = await self._describe_group(group_id)
        if group is None:
            return f"consumer group {group_id!r} had no coordinator yet"
        error_code, state, members = group[0], group[2], group[5]
        held: set[int] = set()
        if error_code == 0 and state == "Stable":  # mid-rebalance assignments are stale
            for member in members:
                assignment = ConsumerProtocolMemberAssignment.decode(member[4])
                for topic, numbers in assignment.assignment:
                    if topic == destination:
                        held.update(numbers)
        missing = sorted(set(range(partitions)) - held)
        if not missing:
            return None
        which = ", ".join(map(str, missing))
        return (
            f"consumer group {group_id!r} had no member holding input"
            f" {'partition' if len(missing) == 1 else 'partitions'} {which}"
            f" of {destination!r} (group state {state or 'unknown'},"
            f" {len(members)} {'member' if len(members) == 1 else 'members'})"
        )

    async def group_members(self, group_id: str) -> frozenset[str]:
        """The member ids of ``group_id`` as its coordinator lists them (none: empty or gone).

        A crashed member stays listed until its session times out: only then are
        its partitions assigned again (see harness._pace).
        """
        group = await self._describe_group(group_id)
        if group is None or group[0] != 0:
            return frozenset()
        return frozenset(member[0] for member in group[5])

    async def end_sessions(self, group_id: str, members: frozenset[str]) -> None:
        """Remove ``members`` from ``group_id`` now, as their session timing out would later.

        A LeaveGroup on their behalf (any client may send one naming a member
        id): the coordinator rebalances at once. A member already gone is fine.
        """
        admin = await self._run_admin()

        async def leave(member: str) -> None:
            while True:
                try:
                    node = await admin.find_coordinator(group_id)
                    response = await admin._send_request_to_node(
                        node, LeaveGroupRequest(group_id, member)
                    )
                    code = int(response.error_code)
                except COORDINATOR_NOT_READY as not_ready:
                    code = int(not_ready.errno)
                if code in (0, UNKNOWN_MEMBER_ID, GROUP_ID_NOT_FOUND):
                    return
                if code not in ASK_AGAIN:
                    raise DestinationError(
                        f"removing crashed member {member!r} from consumer group {group_id!r}"
                        f" failed ({kafka_errors.for_code(code).__name__})"
                    )
                await asyncio.sleep(0.05)

        doing = f"removing crashed members from consumer group {group_id!r}"
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.gather(*map(leave, sorted(members)))
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            raise self._translate(err, doing) from err

    async def _describe_group(self, group_id: str) -> Any:
        """``group_id`` as its coordinator describes it; None while it has no coordinator yet.

        The coordinator found is remembered per group, and forgotten when it answers
        that it is not (or no longer) the one.
        """
        admin = await self._run_admin()
        try:
            async with asyncio.timeout(self._timeout):
                [response] = await admin.describe_consumer_groups(
                    [group_id], group_coordinator_id=self._coordinators.get(group_id)
                )
        except COORDINATOR_NOT_READY:
            self._coordinators.pop(group_id, None)
            return None
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            raise self._translate(err, f"describing consumer group {group_id!r}") from err
        [group] = response.groups
        if group[0] in ASK_AGAIN:
            self._coordinators.pop(group_id, None)
            return None
        return group

    async def commit_start(self, destination: str, *, group_id: str, partitions: int) -> None:
        """Commit offset 0 of every partition of a fresh topic for ``group_id`` (no member).

        A commit with generation -1 and no member id is how tools set an
        empty group's offsets (``kafka-consumer-groups --reset-offsets``).
        """
        admin = await self._run_admin()
        request = OffsetCommitRequest(
            group_id,
            OffsetCommitRequest.DEFAULT_GENERATION_ID,
            "",
            OffsetCommitRequest.DEFAULT_RETENTION_TIME,
            [(_check_topic_name(destination), [(n, 0, "") for n in range(partitions)])],
        )
        doing = f"committing the start of {destination!r} for consumer group {group_id!r}"
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    try:
                        node = await admin.find_coordinator(group_id)
                        response = await admin._send_request_to_node(node, request)
                        codes = {code for _, answers in response.topics for _, code in answers}
                    except COORDINATOR_NOT_READY as not_ready:
                        codes = {not_ready.errno}
                    codes.discard(0)
                    if not codes:
                        self._coordinators[group_id] = node  # readiness asks it next
                        return
                    if not codes <= set(ASK_AGAIN):
                        code = min(codes - set(ASK_AGAIN))
                        raise DestinationError(
                            f"{doing} failed ({kafka_errors.for_code(code).__name__})"
                        )
                    await asyncio.sleep(_POLL_S)
        except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
            raise self._translate(err, doing) from err

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
        [receipt] = await self._send(
            destination, [message], partition=partition, producer=0, publishing="plain"
        )
        return receipt

    async def publish_many(
        self,
        destination: str,
        messages: Sequence[Message],
        *,
        producer: int = 0,
        publishing: Publishing = "plain",
    ) -> list[PublishReceipt]:
        """Send records in order, all in flight at once; wait for all in-sync replicas.

        ``producer`` > 0 is a producer client of its own (its own connection),
        started on first use and stopped with the adapter. ``publishing``:
        ``"plain"``, ``"idempotent"`` (``enable_idempotence=True``) or
        ``"transactional"`` (the records go out in one transaction, committed
        before this returns; a failure aborts it).
        """
        return await self._send(
            destination,
            messages,
            partition=None,
            producer=producer,
            publishing=check_publishing(publishing),
        )

    async def _send(
        self,
        destination: str,
        messages: Sequence[Message],
        *,
        partition: int | None,
        producer: int,
        publishing: Publishing,
    ) -> list[PublishReceipt]:
        name = _check_topic_name(destination)
        doing = f"publishing to topic {name!r}"
        lane = (check_producer(producer), publishing)
        try:
            async with asyncio.timeout(self._timeout), self._turn(lane):
                client = await self._producer_for(*lane)
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
                async with self._transaction(client, lane):
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

    async def _producer_for(self, number: int, publishing: Publishing) -> Any:
        """Producer ``number`` publishing as asked: (0, plain) is the adapter's own, others
        start on first use."""
        _, own = self._clients()
        if (number, publishing) == (0, "plain"):
            return own
        async with self._producers_lock:
            client = self._extra_producers.get((number, publishing))
            if client is None:
                client = self._new_producer(number, publishing)
                try:
                    await client.start()
                except BaseException:
                    await bounded(client.stop(), self._timeout)
                    raise
                self._extra_producers[number, publishing] = client
        return client

    def _new_producer(self, number: int, publishing: Publishing) -> Any:
        name = "harness-producer" + (f"-{number}" if number else "")
        modes: dict[str, Any] = {}
        if publishing != "plain":
            modes["enable_idempotence"] = True
            name += f"-{publishing}"
        if publishing == "transactional":
            modes["transactional_id"] = f"{self._transactional_prefix}-{number}"
        return AIOKafkaProducer(
            bootstrap_servers=self.info.url,
            client_id=name,
            acks="all",
            linger_ms=0,
            max_request_size=MAX_MESSAGE_BYTES,
            request_timeout_ms=int(self._timeout * 1000),
            **modes,
            **self.info.client_options,
        )

    def _turn(self, lane: tuple[int, Publishing]) -> contextlib.AbstractAsyncContextManager[Any]:
        """Wait for a transactional producer's transaction in hand to end (others: no wait)."""
        if lane[1] != "transactional":
            return contextlib.nullcontext()
        return self._transaction_turns.setdefault(lane, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _transaction(self, client: Any, lane: tuple[int, Publishing]) -> AsyncIterator[None]:
        """The block's sends in one transaction of a transactional producer (others: as is).

        A transaction that fails (or is cancelled by the call's bound) leaves the
        producer in a state aiokafka cannot always recover: it is dropped, and the
        next call starts one with the same ``transactional_id``, which aborts
        whatever the old one left open.
        """
        if lane[1] != "transactional":
            yield
            return
        try:
            async with client.transaction():
                yield
        except BaseException:
            self._extra_producers.pop(lane, None)
            await bounded(client.stop(), self._timeout)
            raise

    def tap(
        self, destination: str, on_record: TapCallback
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Read every partition of ``destination`` from the beginning, without a group.

        Records reach ``on_record`` from a background task, in offset order per
        partition. If that task fails (including ``on_record`` raising), leaving
        the ``async with`` raises its exception.
        """
        return self._taps.tap(_check_topic_name(destination), on_record)
