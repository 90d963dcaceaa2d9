"""Bad input gets an error that names the value and the fix, before any broker is touched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from message_flow_harness import Endpoints, Flow, InvalidArgument, Message, brokers, checks, fuzz
from message_flow_harness._broker import Publishing
from message_flow_harness._drivers import check_kind
from message_flow_harness._redact import redact_url


@asynccontextmanager
async def service(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


def test_message_rejects_text_payloads_with_the_fix() -> None:
    with pytest.raises(InvalidArgument, match=r"value='hi' is str: pass bytes"):
        Message(value="hi")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="key=3 is int"):
        Message(key=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="header 'n'"):
        Message(headers={"n": "text"})  # type: ignore[dict-item]


def test_message_harness_id_comes_from_its_header() -> None:
    assert Message().harness_id is None
    assert Message(headers={"x-harness-id": b"r1-2"}).harness_id == "r1-2"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"broker": "redis"}, r"Flow\(broker='redis'\) is invalid: use one of kafka, rabbitmq"),
        ({"partitions": 0}, "partitions=0 is invalid: a topic needs at least one partition"),
        ({"broker": "rabbitmq", "partitions": 3}, "queues have no partitions"),
        ({"timeout": 0}, "timeout=0 is invalid"),
        ({"quiet": float("inf")}, "quiet=inf is invalid"),
        ({"checks": ["no_loss"]}, "use the functions of harness.checks"),
        ({"sut": "myservice:main"}, "pass a function of Endpoints"),
    ],
)
def test_flow_rejects_malformed_options(options: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"sut": service, "broker": "kafka", **options}
    with pytest.raises(InvalidArgument, match=match):
        Flow(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"publishing": "exactly-once"},
            r"publishing='exactly-once' is invalid: use one of 'plain', 'idempotent',"
            r" 'transactional'",
        ),
        ({"publishing": None}, r"publishing=None is invalid: use one of 'plain'"),
        ({"publishing": "Plain"}, r"publishing='Plain' is invalid: use one of"),
        (
            {"broker": "rabbitmq", "publishing": "transactional"},
            r"publishing='transactional' is invalid for RabbitMQ: it publishes 'plain' only"
            r" \(the harness publishes every input with publisher confirms already;.*drop"
            r" publishing\)",
        ),
        (
            {"broker": "rabbitmq", "publishing": "idempotent"},
            "publishing='idempotent' is invalid for RabbitMQ",
        ),
    ],
)
def test_flow_rejects_a_publishing_mode_its_broker_lacks(
    options: dict[str, object], match: str
) -> None:
    arguments: dict[str, object] = {"sut": service, "broker": "kafka", **options}
    with pytest.raises(InvalidArgument, match=match):
        Flow(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("broker", "publishing"),
    [
        ("kafka", "plain"),
        ("kafka", "idempotent"),
        ("kafka", "transactional"),
        ("rabbitmq", "plain"),
    ],
)
def test_flow_takes_the_publishing_modes_its_broker_offers(
    broker: str, publishing: Publishing
) -> None:
    assert Flow(sut=service, broker=broker, publishing=publishing).publishing == publishing
    assert Flow(sut=service, broker=broker).publishing == "plain"


@pytest.mark.parametrize(
    ("kind", "url", "publishing", "match"),
    [
        (
            "kafka",
            "127.0.0.1:9",
            "exactly-once",
            "publishing='exactly-once' is invalid: use one of",
        ),
        ("rabbitmq", "amqp://guest:guest@127.0.0.1:9/", "idempotent", "invalid for RabbitMQ"),
    ],
)
def test_an_adapter_refuses_a_publishing_mode_before_it_connects(
    kind: str, url: str, publishing: str, match: str
) -> None:
    adapter = brokers.adapter(brokers.info_from_url(check_kind(kind), url))
    with pytest.raises(InvalidArgument, match=match):
        asyncio.run(adapter.publish_many("t", [Message()], publishing=publishing))  # type: ignore[arg-type]


def test_flow_defaults_check_for_loss() -> None:
    flow = Flow(sut=service, broker="kafka")
    assert [str(c) for c in flow.checks] == ["no_loss()"]
    assert flow.label == "service"
    assert isinstance(flow.checks[0], checks.Check)


def test_endpoints_need_the_address_of_their_broker() -> None:
    with pytest.raises(InvalidArgument, match="bootstrap_servers"):
        Endpoints(kind="kafka", input="i", output="o", dead_letter="d")
    with pytest.raises(InvalidArgument, match="amqp_url"):
        Endpoints(kind="rabbitmq", input="i", output="o", dead_letter="d")


@pytest.mark.parametrize(
    ("kind", "url", "match"),
    [
        ("kafka", "kafka://127.0.0.1:9092", "no scheme"),
        ("kafka", "127.0.0.1", r"host:port"),
        ("kafka", "", r"host:port"),
        ("rabbitmq", "127.0.0.1:5672", "amqp://user:password@host:port/vhost"),
        ("rabbitmq", "http://guest:secret@127.0.0.1:5672/", r"'http://guest:\*\*\*@127"),
    ],
)
def test_broker_urls_of_the_wrong_shape_are_rejected(kind: str, url: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match) as caught:
        brokers.info_from_url(check_kind(kind), url)
    assert "secret" not in str(caught.value)


def test_unknown_broker_kind_and_provider_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="broker='kafak' is invalid"):
        check_kind("kafak")
    with (
        pytest.raises(InvalidArgument, match="provider='cloud' is invalid"),
        brokers.provision("kafka", provider="cloud"),  # type: ignore[arg-type]
    ):
        pass


def test_credentials_are_redacted() -> None:
    assert redact_url("amqp://guest:secret@h:5672/v") == "amqp://guest:***@h:5672/v"
    assert redact_url("see amqps://u:p%40ss@h/ and more") == "see amqps://u:***@h/ and more"
    assert redact_url("127.0.0.1:9092") == "127.0.0.1:9092"


def test_isolation_rejects_a_negative_count_ahead() -> None:
    from message_flow_harness._isolation import Isolation

    with pytest.raises(InvalidArgument, match=r"ahead=-1 is invalid: give a count >= 0"):
        Isolation(object(), 1, ahead=-1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_examples": 0}, r"max_examples=0 is invalid: give a count >= 1"),
        ({"workers": 0}, r"workers=0 is invalid: give a count >= 1"),
        ({"workers": True}, r"workers=True is invalid"),
        ({"workers": 2, "faults": ["crash"]}, r"pass workers=1, or faults=False"),
        ({"workers": 2, "faults": True}, r"Kafka has two, on fixed ports"),
    ],
)
def test_fuzz_rejects_malformed_options_before_any_broker(
    options: dict[str, object], match: str
) -> None:
    flow = Flow(sut=service, broker="rabbitmq")
    # No broker is given and none runs on the default path: the check comes first.
    with pytest.raises(InvalidArgument, match=match):
        asyncio.run(fuzz(flow, database=None, **options))  # type: ignore[arg-type]
