"""SASL/TLS pass-through for Kafka: a real SASL_SSL listener (TLS with a throw-away CA,
SASL PLAIN and SCRAM), reached by the adapter, the taps and a service under test.

The session's broker has the listener when the harness started it (see
``KafkaRecipe``); otherwise (an older or external broker) a private one is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from message_flow_harness import (
    BrokerInfo,
    BrokerUnavailable,
    DestinationSpec,
    Endpoints,
    Flow,
    Message,
    brokers,
    checks,
    eventually,
    run,
)
from message_flow_harness.brokers._tls import make_pki
from message_flow_harness.brokers.kafka import KafkaAdapter, secure_info, secure_settings
from message_flow_harness.brokers.kafka._settings import KAFKA_SETTINGS, kafka_client_options
from tests.integration.private_broker import private_broker

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def tls_kafka(
    kafka_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerInfo]:
    """A harness-started Kafka with a SASL_SSL listener (its plain ``url`` too)."""
    if secure_settings(kafka_broker) is not None:
        yield kafka_broker
        return
    with private_broker("kafka", tmp_path_factory.mktemp("kafka-tls")) as info:
        yield info


def _secure(info: BrokerInfo, **changes: str) -> BrokerInfo:
    settings = secure_settings(info)
    assert settings is not None
    return BrokerInfo(
        kind="kafka",
        url=info.extra["sasl_ssl"],
        provider="url",
        client_options=kafka_client_options({**settings, **changes}),
    )


async def _round_trip(info: BrokerInfo, topic: str) -> None:
    async with KafkaAdapter(info, timeout=20) as adapter:
        await adapter.create(DestinationSpec(name=topic, partitions=2))
        try:
            seen = asyncio.Event()
            async with adapter.tap(topic, lambda record: seen.set()):
                await adapter.publish(topic, Message(b"over tls", key=b"k"))
                async with asyncio.timeout(20):
                    await seen.wait()
            assert topic in await adapter.list_destinations(topic)
        finally:
            await adapter.delete(topic)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_adapter_and_taps_work_over_sasl_ssl(
    tls_kafka: BrokerInfo, unique: str, mechanism: str
) -> None:
    info = secure_info(tls_kafka, mechanism=mechanism)
    assert info is not None
    assert info.client_options["security_protocol"] == "SASL_SSL"
    await _round_trip(info, unique)


async def test_mutual_tls_client_certificate_is_passed(tls_kafka: BrokerInfo, unique: str) -> None:
    info = _secure(
        tls_kafka,
        ssl_certfile=tls_kafka.extra["sasl_ssl.client_cert"],
        ssl_keyfile=tls_kafka.extra["sasl_ssl.client_key"],
    )
    await _round_trip(info, unique)


async def test_environment_and_provision_carry_the_settings(
    tls_kafka: BrokerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = secure_settings(tls_kafka)
    assert settings is not None
    for name, value in settings.items():
        monkeypatch.setenv(KAFKA_SETTINGS[name], value)
    with brokers.provision("kafka", url=tls_kafka.extra["sasl_ssl"], provider="url") as info:
        assert info.client_options["sasl_mechanism"] == "PLAIN"
        assert settings["sasl_password"] not in repr(info)
        async with KafkaAdapter(info) as adapter:
            await adapter.list_destinations("none-")


@contextlib.asynccontextmanager
async def _echo_service(endpoints: Endpoints) -> AsyncIterator[None]:
    """A service that connects the way it is told: bootstrap servers plus kafka_options."""
    assert endpoints.kafka_options, "the harness must hand SASL/TLS options to the service"
    consumer = AIOKafkaConsumer(
        endpoints.input,
        bootstrap_servers=endpoints.bootstrap_servers,
        group_id=endpoints.group_id,
        auto_offset_reset="earliest",
        session_timeout_ms=1000,
        heartbeat_interval_ms=300,
        **endpoints.kafka_options,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=endpoints.bootstrap_servers, acks="all", **endpoints.kafka_options
    )
    await consumer.start()
    await producer.start()

    async def loop() -> None:
        async for record in consumer:
            await producer.send_and_wait(
                endpoints.output, record.value, key=record.key, headers=list(record.headers)
            )

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()


async def test_a_flow_runs_through_sasl_ssl(tls_kafka: BrokerInfo, tmp_path: Path) -> None:
    info = secure_info(tls_kafka, mechanism="SCRAM-SHA-256")
    assert info is not None
    flow = Flow(
        sut=_echo_service, broker="kafka", checks=[checks.no_loss(), checks.no_duplicates()]
    )
    messages = [Message(key=b"k", value=str(i).encode()) for i in range(5)]
    result = await run(flow, messages, broker=info, history_dir=tmp_path)
    assert result.ok, result.report()
    password = str(info.client_options["sasl_plain_password"])
    assert password not in result.report()
    assert password not in await asyncio.to_thread(_written_text, tmp_path)


def _written_text(directory: Path) -> str:
    return "".join(
        path.read_text(errors="replace") for path in directory.rglob("*") if path.is_file()
    )


# ------------------------------------------------------------------ errors


def _sockets_to(ports: set[int]) -> list[str]:
    """The socket inodes of this process's TCP connections to any of ``ports``."""
    ours = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed while we look
            target = os.readlink(fd)
            if target.startswith("socket:["):
                ours.add(target.removeprefix("socket:[").removesuffix("]"))
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()  # sl, local, remote, state, ..., inode (the tenth)
            if int(fields[2].rpartition(":")[2], 16) in ports and fields[9] in ours:
                found.append(fields[9])
    return found


async def _refusal(info: BrokerInfo) -> str:
    ports = {int(server.rpartition(":")[2]) for server in info.url.split(",")}
    before = set(_sockets_to(ports))  # other tests' connections are not this one's
    async with asyncio.timeout(30):  # every failure is bounded
        with pytest.raises(BrokerUnavailable) as caught:
            async with KafkaAdapter(info, timeout=5):
                pass
    # Nothing stays connected. A TLS connection closes only after its shutdown
    # round trip (aiokafka does not wait for it when a SASL login fails), so
    # wait for it here: a test's loop that ended first would leave the socket
    # for the garbage collector, and its ResourceWarning in a later test.
    await eventually(
        lambda: not set(_sockets_to(ports)) - before,
        within=10,
        what=f"the refused connections to {ports} to close",
    )
    return str(caught.value)


async def test_a_wrong_ca_names_ssl_cafile(tls_kafka: BrokerInfo, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    text = await _refusal(_secure(tls_kafka, ssl_cafile=str(other.ca)))
    assert "not trusted" in text
    assert "ssl_cafile" in text


async def test_a_wrong_password_names_the_sasl_settings(tls_kafka: BrokerInfo) -> None:
    text = await _refusal(_secure(tls_kafka, sasl_password="wrong-password"))
    assert "refused" in text
    assert "sasl_password" in text
    assert "wrong-password" not in text


async def test_tls_against_a_plain_port_says_so(tls_kafka: BrokerInfo) -> None:
    info = dataclasses.replace(_secure(tls_kafka), url=tls_kafka.url)
    text = await _refusal(info)
    assert "did not complete a TLS handshake" in text  # what was seen
    assert "it looks like a PLAINTEXT or SASL_PLAINTEXT listener; if so" in text  # the guess


async def test_plaintext_against_the_tls_port_says_so(tls_kafka: BrokerInfo) -> None:
    info = BrokerInfo(kind="kafka", url=tls_kafka.extra["sasl_ssl"], provider="url")
    text = await _refusal(info)
    assert "answered a TLS handshake" in text  # what was seen
    assert "it looks like a TLS listener; if so" in text  # the guess, then the fix
    assert "SASL_SSL" in text
