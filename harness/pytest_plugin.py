"""pytest plugin (entry point ``pytest11``): broker fixtures, options and markers.

Imports no broker driver: brokers are provisioned only when a test asks for
``kafka_broker`` or ``rabbitmq_broker``. Both are session-scoped; under
pytest-xdist every worker leases the same local broker (see brokers._local),
which stops when the last worker is done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import brokers
from harness._broker import BrokerInfo
from harness._flow import Flow, RunResult
from harness._message import BrokerKind, Message

_MARKERS = {
    "kafka": "the test needs a Kafka broker (the kafka_broker fixture)",
    "rabbitmq": "the test needs a RabbitMQ broker (the rabbitmq_broker fixture)",
    "docker": "the test needs a Docker engine (testcontainers); it skips when none answers",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "message-flow harness: which brokers to test against")
    group.addoption(
        "--kafka-bootstrap",
        default=None,
        metavar="HOST:PORT",
        help="use this Kafka broker instead of starting one (env HARNESS_KAFKA_BOOTSTRAP)",
    )
    group.addoption(
        "--kafka-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a security setting for the --kafka-bootstrap broker, repeatable: security_protocol,"
        " sasl_mechanism, sasl_username, sasl_password, ssl_cafile, ssl_certfile, ssl_keyfile,"
        " ssl_password, ssl_check_hostname (env HARNESS_KAFKA_<NAME>; prefer the environment"
        " for passwords)",
    )
    group.addoption(
        "--amqp-url",
        default=None,
        metavar="URL",
        help="use this RabbitMQ broker instead of starting one (env HARNESS_AMQP_URL)",
    )
    group.addoption(
        "--broker-provider",
        default="auto",
        metavar="NAME",
        help="where brokers come from: "
        + ", ".join(brokers.PROVIDERS)
        + " (default: auto ="
        + " the URL if one is given, else a broker the harness starts locally)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, description in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    try:
        brokers.parse_kafka_settings(config.getoption("--kafka-option") or [])
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    provider = config.getoption("--broker-provider")
    if provider not in brokers.PROVIDERS:
        raise pytest.UsageError(
            f"--broker-provider={provider!r} is invalid: use one of {', '.join(brokers.PROVIDERS)}"
        )


def _provide(request: pytest.FixtureRequest, kind: BrokerKind) -> Iterator[BrokerInfo]:
    option = brokers.URL_OPTION[kind]
    settings = brokers.parse_kafka_settings(request.config.getoption("--kafka-option") or [])
    with brokers.provision(
        kind,
        url=request.config.getoption(option),
        provider=request.config.getoption("--broker-provider"),
        kafka_settings=settings if kind == "kafka" else None,
    ) as info:
        yield info


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[BrokerInfo]:
    """A running Kafka broker for the whole session (given by URL, or started locally)."""
    yield from _provide(request, "kafka")


@pytest.fixture(scope="session")
def rabbitmq_broker(request: pytest.FixtureRequest) -> Iterator[BrokerInfo]:
    """A running RabbitMQ broker for the whole session (given by URL, or started locally)."""
    yield from _provide(request, "rabbitmq")


class FlowCheck:
    """Runs a flow once on the session's broker: ``await flow_check(flow, messages)``.

    Calling it asserts every check of the flow, failing the test with the
    counterexamples and the path of the full history (JSON) written next to
    the test's temporary files. ``await flow_check.run(...)`` only returns the
    :class:`RunResult`, for tests that expect a check to fail.
    """

    def __init__(self, request: pytest.FixtureRequest, history_dir: Path) -> None:
        self._request = request
        self._history_dir = history_dir

    async def run(self, flow: Flow, messages: Sequence[Message]) -> RunResult:
        from harness._runner import run_flow

        broker: BrokerInfo = self._request.getfixturevalue(f"{flow.broker}_broker")
        return await run_flow(flow, messages, broker=broker, history_dir=self._history_dir)

    async def __call__(self, flow: Flow, messages: Sequence[Message]) -> RunResult:
        result = await self.run(flow, messages)
        if not result.ok:
            pytest.fail(result.report(), pytrace=False)
        return result


@pytest.fixture
def flow_check(request: pytest.FixtureRequest, tmp_path: Path) -> FlowCheck:
    """Run a Flow once against the real broker and assert its checks (see FlowCheck)."""
    return FlowCheck(request, tmp_path)


@pytest.fixture
def flow_bench(request: pytest.FixtureRequest) -> object:
    """Time a flow's service on the session's broker: ``await flow_bench(flow, messages=...)``.

    In the spirit of pytest-benchmark: returns a BenchResult (throughput,
    latency percentiles, in-service time, lag), writes its JSON and SVG next
    to the test's temporary files and lists it at the end of the session.
    """
    from harness._bench.fixture import make_flow_bench

    return make_flow_bench(request)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    import sys

    if "harness._bench.fixture" in sys.modules:  # only sessions that timed something
        from harness._bench.fixture import terminal_summary

        terminal_summary(terminalreporter)
