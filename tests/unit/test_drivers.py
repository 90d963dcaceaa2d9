"""The driver registry: every broker kind behind one BrokerDriver, the core blind to kinds."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from message_flow_harness import Endpoints, Flow, InvalidArgument
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._drivers import (
    BROKER_KINDS,
    DRIVER_MODULES,
    BrokerDriver,
    check_kind,
    driver,
)
from message_flow_harness._isolation import new_endpoints

ROOT = Path(__file__).resolve().parents[2]
#: Each driver package's client library, which importing the package must not load.
CLIENT_LIBRARIES = {"kafka": "aiokafka", "rabbitmq": "aio_pika"}


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_each_kind_has_a_driver_of_its_own_kind(kind: str) -> None:
    found = driver(kind)
    assert isinstance(found, BrokerDriver)
    assert found.kind == kind
    assert found.url_option.startswith("--")
    assert found.url_env.startswith("HARNESS_")


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_looking_a_driver_up_loads_no_client_library(kind: str) -> None:
    code = (
        "import sys, message_flow_harness._drivers as d; d.driver(sys.argv[1]);"
        " print(sorted(m for m in sys.modules if m.split('.')[0] == sys.argv[2]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, kind, CLIENT_LIBRARIES[kind]],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_every_public_name_of_a_driver_package_resolves(kind: str) -> None:
    package = importlib.import_module(DRIVER_MODULES[kind])
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        package.nonexistent  # noqa: B018


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="broker='kafak' is invalid: use one of kafka"):
        check_kind("kafak")
    with pytest.raises(InvalidArgument, match="use one of kafka, rabbitmq"):
        Flow(sut=lambda e: None, broker="nats")  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_a_drivers_endpoints_are_valid_and_its_proxy_keeps_the_names(kind: str) -> None:
    chosen = driver(kind)
    info = chosen.info_from_url(chosen.url_example)
    endpoints = new_endpoints(info, "run")
    assert (endpoints.kind, endpoints.input, endpoints.output, endpoints.dead_letter) == (
        kind,
        "h-run-in",
        "h-run-out",
        "h-run-dlq",
    )
    proxied = chosen.through_proxy(endpoints, info, 40001)
    assert "127.0.0.1:40001" in str(proxied.bootstrap_servers or proxied.amqp_url)
    assert (proxied.input, proxied.group_id) == (endpoints.input, endpoints.group_id)


def test_endpoints_without_the_address_of_their_kind_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="kind='kafka' needs bootstrap_servers"):
        Endpoints(kind="kafka", input="i", output="o", dead_letter="d", amqp_url="amqp://h/")
    with pytest.raises(InvalidArgument, match="kind='rabbitmq' needs amqp_url"):
        Endpoints(kind="rabbitmq", input="i", output="o", dead_letter="d")


def test_kafka_proxies_exist_only_where_the_broker_advertises_listeners_at_them() -> None:
    kafka = driver("kafka")
    given = BrokerInfo(kind="kafka", url="10.0.0.5:9092", provider="url")
    assert kafka.proxy_addresses(given) == []
    started = BrokerInfo(
        kind="kafka",
        url="127.0.0.1:9092",
        provider="local",
        extra={"proxy0.listen": "127.0.0.1:9101", "proxy0.advertised": "127.0.0.1:9201"},
    )
    assert kafka.proxy_addresses(started) == [(9201, "127.0.0.1", 9101)]


def _kind_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in BROKER_KINDS for o in operands):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_core_never_compares_a_broker_kind() -> None:
    """Kind-specific behaviour belongs to the drivers (brokers/<kind>/)."""
    found = [
        line
        for path in sorted((ROOT / "harness").rglob("*.py"))
        for line in _kind_comparisons(path)
    ]
    assert found == []
