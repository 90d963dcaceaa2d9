"""amqps:// pass-through for RabbitMQ: a real TLS listener (throw-away CA), reached by
the adapter, the firehose taps, the management API over HTTPS and a service under test.

The session's node has the listeners when the harness started it (see
``RabbitRecipe``); otherwise (an older or external broker) a private one is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

from message_flow_harness import (
    BrokerInfo,
    BrokerUnavailable,
    DestinationSpec,
    Endpoints,
    Flow,
    Message,
    brokers,
    checks,
    run,
)
from message_flow_harness.brokers._tls import make_pki
from message_flow_harness.brokers.rabbitmq import RabbitAdapter, management_url, secure_url
from tests.integration.private_broker import private_broker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def tls_rabbit(
    rabbitmq_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerInfo]:
    """A harness-started RabbitMQ node with AMQPS and HTTPS management listeners."""
    if secure_url(rabbitmq_broker) is not None:
        yield rabbitmq_broker
        return
    with private_broker("rabbitmq", tmp_path_factory.mktemp("rabbit-tls")) as info:
        yield info


def _amqps(node: BrokerInfo, *, client_cert: bool = False, https: bool = True) -> BrokerInfo:
    """The node through its AMQPS URL, as a user gives it (provider 'url')."""
    url = secure_url(node, client_cert=client_cert)
    assert url is not None
    info = brokers.info_from_url("rabbitmq", url)
    management = node.extra["management_tls" if https else "management"]
    return BrokerInfo(
        kind="rabbitmq", url=info.url, provider="url", extra={"management": management}
    )


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-tls", "mutual-tls"])
async def test_adapter_taps_and_https_management_work_over_amqps(
    tls_rabbit: BrokerInfo, unique: str, client_cert: bool
) -> None:
    info = _amqps(tls_rabbit, client_cert=client_cert)
    assert management_url(info).startswith("https://")
    async with RabbitAdapter(info, timeout=20) as adapter:
        await adapter.create(DestinationSpec(name=unique))
        try:
            seen = asyncio.Event()
            async with adapter.tap(unique, lambda record: seen.set()):
                await adapter.publish(unique, Message(b"over tls", key=b"k"))
                async with asyncio.timeout(20):
                    await seen.wait()
            # Listing goes through the management API, here over HTTPS with the URL's CA.
            assert await adapter.list_destinations(unique) == [unique]
        finally:
            await adapter.delete(unique)


@contextlib.asynccontextmanager
async def _echo_service(endpoints: Endpoints) -> AsyncIterator[None]:
    """A service that connects the way it is told: with endpoints.amqp_url, as given."""
    assert endpoints.amqp_url is not None
    assert endpoints.amqp_url.startswith("amqps://")
    connection = await aio_pika.connect(endpoints.amqp_url)
    channel = await connection.channel()
    queue = await channel.get_queue(endpoints.input)

    async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, headers=message.headers),
                routing_key=endpoints.output,
            )

    await queue.consume(handle)
    try:
        yield
    finally:
        await connection.close()


async def test_a_flow_runs_through_amqps(tls_rabbit: BrokerInfo, tmp_path: Path) -> None:
    info = _amqps(tls_rabbit)
    flow = Flow(
        sut=_echo_service, broker="rabbitmq", checks=[checks.no_loss(), checks.no_duplicates()]
    )
    messages = [Message(key=b"k", value=str(i).encode()) for i in range(5)]
    result = await run(flow, messages, broker=info, history_dir=tmp_path)
    assert result.ok, result.report()


# ------------------------------------------------------------------ errors


async def _refusal(info: BrokerInfo) -> str:
    async with asyncio.timeout(30):  # every failure is bounded
        with pytest.raises(BrokerUnavailable) as caught:
            async with RabbitAdapter(info, timeout=5):
                pass
    return str(caught.value)


def _with_url(info: BrokerInfo, url: str) -> BrokerInfo:
    return BrokerInfo(kind="rabbitmq", url=url, provider="url", extra=dict(info.extra))


async def test_a_wrong_ca_names_cafile(tls_rabbit: BrokerInfo, tmp_path: Path) -> None:
    info = _amqps(tls_rabbit)
    other = make_pki(tmp_path / "other")
    text = await _refusal(
        _with_url(info, info.url.replace(tls_rabbit.extra["tls.ca"], str(other.ca)))
    )
    assert "not trusted" in text
    assert "cafile=" in text


async def test_tls_against_the_plain_port_says_so(tls_rabbit: BrokerInfo) -> None:
    info = _amqps(tls_rabbit)
    plain_port = urllib.parse.urlsplit(tls_rabbit.url).port
    text = await _refusal(
        _with_url(info, info.url.replace(f":{tls_rabbit.extra['amqps_port']}/", f":{plain_port}/"))
    )
    assert "the TLS handshake failed" in text  # what was seen
    assert "it looks like a plain AMQP port; if so, use amqp://" in text  # the guess, the fix


async def test_plain_against_the_tls_port_says_so(tls_rabbit: BrokerInfo) -> None:
    plain_port = urllib.parse.urlsplit(tls_rabbit.url).port
    url = tls_rabbit.url.replace(f":{plain_port}/", f":{tls_rabbit.extra['amqps_port']}/")
    text = await _refusal(_with_url(tls_rabbit, url))
    assert "the port answered a TLS handshake" in text  # what was seen
    assert "it looks like a TLS listener; if so, use" in text  # the guess, then the fix
    assert "amqps://" in text


async def test_a_wrong_password_is_named_and_redacted(tls_rabbit: BrokerInfo) -> None:
    info = _amqps(tls_rabbit)
    parts = urllib.parse.urlsplit(info.url)
    url = info.url.replace(f"{parts.username}:{parts.password}@", f"{parts.username}:s3cret-pw@")
    text = await _refusal(_with_url(info, url))
    assert "login was refused" in text
    assert "s3cret-pw" not in text


async def test_https_against_a_plain_management_port_says_so(tls_rabbit: BrokerInfo) -> None:
    info = _amqps(tls_rabbit, https=False)
    plain = info.extra["management"]
    wrong = BrokerInfo(
        kind="rabbitmq",
        url=info.url,
        provider="url",
        extra={"management": plain.replace("http://", "https://")},
    )
    async with asyncio.timeout(30), RabbitAdapter(wrong, timeout=5) as adapter:
        with pytest.raises(BrokerUnavailable, match=r"failed .*: it looks like a plain HTTP API"):
            await adapter.list_destinations("none-")
        # The same broker with its management API named right works.
    async with RabbitAdapter(info, timeout=5) as adapter:
        assert isinstance(await adapter.list_destinations("none-"), list)
