"""RabbitAdapter against a real node: errors, destinations, and connection loss."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import socket
import sys
import time
import urllib.parse
import urllib.request
import warnings
from typing import Any

import aio_pika
import pytest

from message_flow_harness import (
    BrokerInfo,
    BrokerUnavailable,
    DestinationError,
    DestinationSpec,
    InvalidArgument,
    Message,
    TapRecord,
)
from message_flow_harness.brokers._local import free_port
from message_flow_harness.brokers.rabbitmq import (
    DEAD_LETTER_EXCHANGE,
    KEY_HEADER,
    RabbitAdapter,
    rabbitmqctl,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.asyncio]


def management(info: BrokerInfo, method: str, path: str, body: object = None) -> Any:
    """One call to the node's management HTTP API as guest."""
    request = urllib.request.Request(
        info.extra["management"].rstrip("/") + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
            "Content-Type": "application/json",
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        data = response.read()
    return json.loads(data) if data else None


async def plain_queue_arguments(info: BrokerInfo, name: str) -> Any:
    """The arguments the broker reports for a durable queue declared with none, as services do.

    None before 4.0 (``{}``); 4.x records the type it chose (``{"x-queue-type": "classic"}``).
    """
    connection = await aio_pika.connect(info.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        try:
            return management(info, "GET", f"/api/queues/%2F/{name}")["arguments"]
        finally:
            await queue.delete(if_unused=False, if_empty=False)


def with_url(info: BrokerInfo, url: str) -> BrokerInfo:
    return BrokerInfo(kind="rabbitmq", url=url, provider="url", extra=info.extra)


def amqp_port(info: BrokerInfo) -> int:
    port = urllib.parse.urlsplit(info.url).port
    assert port is not None
    return port


async def test_unreachable_port_is_unavailable_quickly_with_password_redacted() -> None:
    port = free_port()
    info = BrokerInfo(kind="rabbitmq", url=f"amqp://guest:s3cret@127.0.0.1:{port}/", provider="url")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        async with RabbitAdapter(info, timeout=5.0):
            pass
    assert time.monotonic() - started < 2.0
    text = str(caught.value)
    assert f"amqp://guest:***@127.0.0.1:{port}/" in text
    assert "s3cret" not in text
    assert "--amqp-url" in text
    assert "HARNESS_AMQP_URL" in text


async def test_wrong_password_is_unavailable_quickly_with_password_redacted(
    rabbitmq_broker: BrokerInfo,
) -> None:
    port = amqp_port(rabbitmq_broker)
    info = with_url(rabbitmq_broker, f"amqp://guest:n0t-the-password@127.0.0.1:{port}/")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="login was refused") as caught:
        async with RabbitAdapter(info, timeout=5.0):
            pass
    assert time.monotonic() - started < 2.0
    assert "n0t-the-password" not in str(caught.value)
    assert f"amqp://guest:***@127.0.0.1:{port}/" in str(caught.value)


async def test_missing_vhost_is_unavailable(rabbitmq_broker: BrokerInfo) -> None:
    port = amqp_port(rabbitmq_broker)
    info = with_url(rabbitmq_broker, f"amqp://guest:guest@127.0.0.1:{port}/no-such-vhost")
    with pytest.raises(BrokerUnavailable, match="no-such-vhost"):
        async with RabbitAdapter(info, timeout=5.0):
            pass


async def test_a_refused_connection_leaves_nothing_for_the_garbage_collector(
    rabbitmq_broker: BrokerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aio-pika leaves a failed attempt's Connection open; collected with no loop running,
    its __del__ made a close() coroutine nobody awaited (an error in a later test)."""
    port = amqp_port(rabbitmq_broker)
    info = with_url(rabbitmq_broker, f"amqp://guest:guest@127.0.0.1:{port}/no-such-vhost")
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(repr(u.exc_value)))

    async def attempt() -> None:
        with pytest.raises(BrokerUnavailable, match="no-such-vhost"):
            async with RabbitAdapter(info, timeout=5.0):
                pass

    def in_a_thread_of_its_own() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(attempt())
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # as the suite runs: a warning is an error
                gc.collect()  # the loop is open and not running, as between two tests
        finally:
            loop.close()

    await asyncio.to_thread(in_a_thread_of_its_own)
    assert unraisable == []


@pytest.mark.parametrize(
    "name",
    ["", "amq.reserved", "x" * 256, "é" * 100, "tab\there", "star*"],
    ids=["empty", "amq-prefix", "256-bytes", "non-ascii", "tab", "star"],
)
async def test_invalid_names_are_invalid_argument(adapter: RabbitAdapter, name: str) -> None:
    with pytest.raises(InvalidArgument):
        await adapter.create(DestinationSpec(name=name))
    with pytest.raises(InvalidArgument):
        await adapter.delete(name)


async def test_longest_valid_name_works(adapter: RabbitAdapter, unique: str) -> None:
    name = (unique + "-a.b:c@d#e,f/g+h i_" + "x" * 255)[:247]
    await adapter.create(DestinationSpec(name=name))
    try:
        await adapter.publish(name, Message(b"long"))
        assert name in await adapter.list_destinations(unique)
    finally:
        await adapter.delete(name)


@pytest.mark.parametrize("partitions", [0, 2, 12])
async def test_partitions_other_than_one_are_invalid(
    adapter: RabbitAdapter, unique: str, partitions: int
) -> None:
    with pytest.raises(InvalidArgument, match="no partitions"):
        await adapter.create(DestinationSpec(name=unique, partitions=partitions))
    assert await adapter.list_destinations(unique) == []


async def test_publish_with_a_partition_is_invalid(adapter: RabbitAdapter, unique: str) -> None:
    await adapter.create(DestinationSpec(name=unique))
    try:
        with pytest.raises(InvalidArgument, match="partition=0"):
            await adapter.publish(unique, Message(b"x"), partition=0)
    finally:
        await adapter.delete(unique)


async def test_reserved_key_header_is_invalid(adapter: RabbitAdapter, unique: str) -> None:
    with pytest.raises(InvalidArgument, match=KEY_HEADER):
        await adapter.publish(unique, Message(b"x", headers={KEY_HEADER: b"k"}))


async def test_publish_to_missing_queue_is_destination_error_and_adapter_survives(
    adapter: RabbitAdapter, unique: str
) -> None:
    with pytest.raises(DestinationError, match="does not exist"):
        await adapter.publish(f"{unique}-missing", Message(b"lost"))
    await adapter.create(DestinationSpec(name=unique))
    try:
        receipt = await adapter.publish(unique, Message(b"kept"))
        assert receipt.destination == unique
        assert receipt.partition is None
    finally:
        await adapter.delete(unique)


async def test_creating_an_existing_queue_is_destination_error(
    adapter: RabbitAdapter, unique: str
) -> None:
    await adapter.create(DestinationSpec(name=unique))
    try:
        with pytest.raises(DestinationError, match="already exists"):
            await adapter.create(DestinationSpec(name=unique))
        await adapter.publish(unique, Message(b"still usable"))
    finally:
        await adapter.delete(unique)


async def test_a_batch_of_hundreds_still_refuses_an_existing_queue(
    adapter: RabbitAdapter, unique: str
) -> None:
    # The existence check was one management API call for the whole batch: with
    # a few hundred names its request line passed the server's 8,000 bytes (414).
    names = [f"{unique}-queue-number-{i}" for i in range(300)]
    await adapter.create(DestinationSpec(name=names[-1]))
    try:
        with pytest.raises(DestinationError, match=f"queue '{names[-1]}' already exists"):
            await adapter.create_all([DestinationSpec(name=name) for name in names])
        assert await adapter.list_destinations(unique) == [names[-1]]  # nothing else made
    finally:
        await adapter.delete(names[-1])


async def test_many_creations_at_once_keep_the_connection(
    adapter: RabbitAdapter, unique: str
) -> None:
    # Existence checks were passive declares the broker answered by closing the
    # channel (404); aiormq reopened the number while the broker was still closing
    # it, a connection error ("second 'channel.open' seen") that ended a campaign.
    batches = [
        [DestinationSpec(name=f"{unique}-{i}-{part}") for part in ("dlq", "out", "in")]
        for i in range(12)
    ]
    try:
        for _ in range(3):
            await asyncio.gather(*(adapter.create_all(specs) for specs in batches))
            names = [spec.name for specs in batches for spec in specs]
            assert sorted(await adapter.list_destinations(unique)) == sorted(names)
            await asyncio.gather(*(adapter.delete_all([s.name for s in b]) for b in batches))
    finally:
        await adapter.delete_all([spec.name for specs in batches for spec in specs])


async def test_administration_hands_its_channels_on_and_a_refusal_closes_only_its_own(
    adapter: RabbitAdapter, unique: str
) -> None:
    """Opening and closing a channel costs more than a step: the steps reuse theirs."""
    assert adapter._connection is not None
    assert adapter._connection.transport is not None
    channels = adapter._connection.transport.connection.channels
    specs = [DestinationSpec(name=f"{unique}-{part}") for part in ("dlq", "out", "in")]
    specs[2] = DestinationSpec(name=f"{unique}-in", dead_letter=f"{unique}-dlq")
    try:
        await adapter.create_all(specs)
        await adapter.delete_all([spec.name for spec in specs])
        before = set(channels)
        for _ in range(5):
            await adapter.create_all(specs)
            await adapter.delete_all([spec.name for spec in specs])
        assert set(channels) == before  # the same channels, none opened since
        # A step the broker refuses (a passive declare's 404) closes its channel only.
        assert await adapter._consumers(f"{unique}-never-existed") == 0
        await adapter.create_all(specs)
        await adapter.publish(f"{unique}-in", Message(b"still usable"))
        assert len(channels) <= len(before) + 1
    finally:
        await adapter.delete_all([spec.name for spec in specs])


async def test_management_calls_keep_their_connection_and_replace_a_lost_one(
    adapter: RabbitAdapter, unique: str
) -> None:
    await adapter.list_destinations(unique)
    kept = list(adapter._management._idle)
    assert len(kept) == 1
    for _ in range(3):
        await adapter.list_destinations(unique)
    assert adapter._management._idle == kept  # one after another: the same connection
    # Calls at once keep a connection each; then the server drops them all, as a
    # broker restart does: the next call makes a new one, and the stale ones go.
    for _ in range(20):  # the calls overlap in the worker threads, mostly at once
        await asyncio.gather(*(adapter.list_destinations(unique) for _ in range(3)))
        if len(adapter._management._idle) >= 2:
            break
    stale = list(adapter._management._idle)
    assert len(stale) >= 2
    for connection in stale:
        assert connection.sock is not None
        connection.sock.shutdown(socket.SHUT_RDWR)
    assert await adapter.list_destinations(unique) == []
    assert len(adapter._management._idle) == 1
    assert adapter._management._idle[0] not in stale
    await adapter.close()
    assert adapter._management._idle == []  # closed with the adapter, none left to the collector


async def test_delete_is_clean_and_idempotent(adapter: RabbitAdapter, unique: str) -> None:
    await adapter.create(DestinationSpec(name=unique))
    await adapter.publish(unique, Message(b"doomed"))
    assert await adapter.list_destinations(unique) == [unique]
    await adapter.delete(unique)
    assert await adapter.list_destinations(unique) == []
    await adapter.delete(unique)
    await adapter.delete(f"{unique}-never-existed")
    # The name is free again, with no message left from before.
    await adapter.create(DestinationSpec(name=unique))
    try:
        depth = management(adapter.info, "GET", f"/api/queues/%2F/{unique}")
        assert depth["name"] == unique
        assert depth["durable"] is True
        # No argument of the harness's: a service may declare it plainly (durable=True).
        assert depth["arguments"] == await plain_queue_arguments(adapter.info, f"{unique}-plain")
    finally:
        await adapter.delete(unique)


async def test_list_destinations_filters_by_prefix(adapter: RabbitAdapter, unique: str) -> None:
    names = [f"{unique}-b", f"{unique}-a", f"{unique}x-c"]
    for name in names:
        await adapter.create(DestinationSpec(name=name))
    try:
        assert await adapter.list_destinations(unique) == sorted(names)
        assert await adapter.list_destinations(f"{unique}-") == [f"{unique}-a", f"{unique}-b"]
        assert set(names) <= set(await adapter.list_destinations())
    finally:
        for name in names:
            await adapter.delete(name)


async def test_dead_letter_queue_is_wired_through_the_harness_exchange(
    adapter: RabbitAdapter, unique: str
) -> None:
    await adapter.create(DestinationSpec(name=f"{unique}-in", dead_letter=f"{unique}-dlq"))
    await adapter.create(DestinationSpec(name=f"{unique}-dlq"))
    try:
        queue = management(adapter.info, "GET", f"/api/queues/%2F/{unique}-in")
        # Wired by a policy, so the queue's own arguments stay as a service declares them.
        assert queue["arguments"] == await plain_queue_arguments(adapter.info, f"{unique}-plain")
        policy = management(adapter.info, "GET", f"/api/policies/%2F/harness-dlx-{unique}-in")
        assert policy["definition"] == {
            "dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "dead-letter-routing-key": f"{unique}-dlq",
        }
        # A service that declares its input queue the usual way is not refused,
        # and what it rejects reaches the dead-letter queue.
        await adapter.publish(f"{unique}-in", Message(b"poison"))
        connection = await aio_pika.connect(adapter.info.url)
        async with connection:
            channel = await connection.channel()
            inbox = await channel.declare_queue(f"{unique}-in", durable=True)
            delivered = await inbox.get(timeout=5)
            assert delivered is not None
            await delivered.reject(requeue=False)
            dead_letters = await channel.declare_queue(f"{unique}-dlq", passive=True)
            dead = None
            for _ in range(100):
                dead = await dead_letters.get(fail=False)
                if dead is not None:
                    break
                await asyncio.sleep(0.02)
            assert dead is not None
            assert dead.body == b"poison"
            await dead.ack()
        bindings = management(
            adapter.info,
            "GET",
            "/api/exchanges/%2F/harness.dead-letter/bindings/source",  # the fanout's router
        )
        routes = {(b["destination"], b["routing_key"]) for b in bindings}
        assert (f"{unique}-dlq", f"{unique}-dlq") in routes
    finally:
        await adapter.delete(f"{unique}-in")
        await adapter.delete(f"{unique}-dlq")
    policies = management(adapter.info, "GET", "/api/policies/%2F")
    assert f"harness-dlx-{unique}-in" not in {p["name"] for p in policies}


async def test_management_url_from_environment_wins(
    rabbitmq_broker: BrokerInfo, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("HARNESS_RABBITMQ_MANAGEMENT_URL", f"http://guest:s3cret@127.0.0.1:{port}/")
    async with RabbitAdapter(rabbitmq_broker, timeout=3.0) as adapter:
        with pytest.raises(BrokerUnavailable, match="management API") as caught:
            await adapter.list_destinations(unique)
    assert f"http://guest:***@127.0.0.1:{port}/" in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_tap_on_a_vhost_without_tracing_says_how_to_turn_it_on(
    rabbitmq_broker: BrokerInfo, unique: str
) -> None:
    vhost = f"{unique}-untraced"
    management(rabbitmq_broker, "PUT", f"/api/vhosts/{vhost}", {})
    try:
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        management(rabbitmq_broker, "PUT", f"/api/permissions/{vhost}/guest", permissions)
        info = with_url(
            rabbitmq_broker, f"amqp://guest:guest@127.0.0.1:{amqp_port(rabbitmq_broker)}/{vhost}"
        )
        async with RabbitAdapter(info, timeout=1.0) as adapter:
            await adapter.create(DestinationSpec(name=unique))
            with pytest.raises(DestinationError) as caught:
                async with adapter.tap(unique, lambda record: None):
                    pass
            text = str(caught.value)
            assert f"firehose tracing is off on vhost {vhost!r}" in text
            assert f"rabbitmqctl trace_on -p {vhost}" in text
            # The failed tap left the adapter usable.
            await adapter.publish(unique, Message(b"after"))
    finally:
        management(rabbitmq_broker, "DELETE", f"/api/vhosts/{vhost}")


async def test_connection_loss_is_seen_by_calls_and_taps(
    rabbitmq_broker: BrokerInfo, unique: str
) -> None:
    user = f"{unique}-user"
    # A user of its own (its connections alone are closed); the adapter needs the management tag.
    account = {"password": "pw", "tags": "management"}
    management(rabbitmq_broker, "PUT", f"/api/users/{user}", account)
    try:
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        management(rabbitmq_broker, "PUT", f"/api/permissions/%2F/{user}", permissions)
        port = amqp_port(rabbitmq_broker)
        info = with_url(rabbitmq_broker, f"amqp://{user}:pw@127.0.0.1:{port}/")
        adapter = RabbitAdapter(info, timeout=5.0)
        await adapter.open()
        try:
            await adapter.create(DestinationSpec(name=unique))
            seen: list[TapRecord] = []

            async def cut_while_tapping() -> None:
                async with adapter.tap(unique, seen.append):
                    rabbitmqctl(rabbitmq_broker, "close_all_user_connections", user, "test")
                    with pytest.raises(BrokerUnavailable, match="lost"):
                        await publish_until_it_fails()

            async def publish_until_it_fails() -> None:
                for _ in range(1000):  # bounded: the close frame arrives at once
                    await adapter.publish(unique, Message(b"into the void"))

            with pytest.raises(BrokerUnavailable, match="lost its channel"):
                await cut_while_tapping()
            await adapter.close()
            await adapter.close()
        finally:
            await adapter.close()
        async with RabbitAdapter(rabbitmq_broker) as other:
            await other.delete(unique)
    finally:
        management(rabbitmq_broker, "DELETE", f"/api/users/{user}")
