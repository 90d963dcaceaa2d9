"""pytest plugin (entry point ``pytest11``): broker fixtures, options and markers.

Imports no broker driver: brokers are provisioned only when a test asks for
``kafka_broker`` or ``rabbitmq_broker``. Both are session-scoped; under
pytest-xdist every worker leases the same local broker (see brokers._local),
which stops when the last worker is done. A broker that cannot be had
(unreachable URL, Java missing...) is an error at the setup of every test that
asks for it, with one message naming the problem and the fix, no traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from message_flow_harness import brokers
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._drivers import BROKER_KINDS, BrokerDriver, driver, drivers
from message_flow_harness._errors import HarnessError, InvalidArgument
from message_flow_harness._flow import Flow, RunResult
from message_flow_harness._message import BrokerKind, Message
from message_flow_harness._schedule import Step

_MARKERS = {
    **{
        kind: f"the test needs a {driver(kind).title} broker (the {kind}_broker fixture)"
        for kind in BROKER_KINDS
    },
    "docker": "the test needs a Docker engine (testcontainers); it skips when none answers",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "message-flow harness: which brokers to test against")
    for each in drivers():
        group.addoption(
            each.url_option,
            default=None,
            metavar=each.url_metavar,
            help=each.url_help,
        )
        if each.settings_option is not None:
            group.addoption(
                each.settings_option,
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help=each.settings_help,
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


def _settings(config: pytest.Config, chosen: BrokerDriver) -> dict[str, str] | None:
    if chosen.settings_option is None:
        return None
    return chosen.parse_settings(config.getoption(chosen.settings_option) or [])


def pytest_configure(config: pytest.Config) -> None:
    for name, description in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    try:
        for each in drivers():
            _settings(config, each)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    provider = config.getoption("--broker-provider")
    if provider not in brokers.PROVIDERS:
        raise pytest.UsageError(
            f"--broker-provider={provider!r} is invalid: use one of {', '.join(brokers.PROVIDERS)}"
        )


def _provide(request: pytest.FixtureRequest, kind: BrokerKind) -> Iterator[BrokerInfo]:
    chosen = driver(kind)
    given = request.config.getoption(chosen.url_option)
    provider = request.config.getoption("--broker-provider")
    failure = None
    with contextlib.ExitStack() as stack:
        try:
            info = stack.enter_context(
                brokers.provision(
                    kind, url=given, provider=provider, settings=_settings(request.config, chosen)
                )
            )
        except HarnessError as exc:
            failure = f"{kind}_broker: {exc}{_how_to_let_us_start_one(chosen, given)}"
        if failure is None:
            yield info
    # A setup error with one message, raised outside the handler so no exception
    # chain comes with it: the harness's and the driver's frames would bury it.
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def _how_to_let_us_start_one(chosen: BrokerDriver, given: str | None) -> str:
    """The other way out when the broker named by URL fails: let the harness start one."""
    if not (given or os.environ.get(chosen.url_env)):
        return ""
    return (
        f"\n(or give neither {chosen.url_option} nor {chosen.url_env}, and the harness starts"
        f" a local {chosen.title} broker itself)"
    )


def _broker_fixture(kind: BrokerKind) -> object:
    def provide(request: pytest.FixtureRequest) -> Iterator[BrokerInfo]:
        yield from _provide(request, kind)

    provide.__doc__ = (
        f"A running {driver(kind).title} broker for the whole session"
        " (given by URL, or started locally)."
    )
    return pytest.fixture(scope="session", name=f"{kind}_broker")(provide)


# One session fixture per broker kind: ``kafka_broker``, ``rabbitmq_broker``...
for _kind in BROKER_KINDS:
    globals()[f"{_kind}_broker"] = _broker_fixture(_kind)


class FlowCheck:
    """Runs a flow once on the session's broker: ``await flow_check(flow, messages)``.

    Calling it asserts every check of the flow, failing the test with the
    counterexamples and the paths of the full history (JSON) and of the HTML
    report (verdicts, timeline, the test, the events) written next to the
    test's temporary files. ``await flow_check.run(...)`` only returns the
    :class:`RunResult`, for tests that expect a check to fail.
    """

    def __init__(self, request: pytest.FixtureRequest, history_dir: Path) -> None:
        self._request = request
        self._history_dir = history_dir

    async def run(self, flow: Flow, messages: Sequence[Message | Step]) -> RunResult:
        from message_flow_harness._runner import run_flow

        broker: BrokerInfo = self._request.getfixturevalue(f"{flow.broker}_broker")
        return await run_flow(flow, messages, broker=broker, history_dir=self._history_dir)

    async def __call__(
        self, flow: Flow, messages: Sequence[Message | Step], *, attempts: int = 1
    ) -> RunResult:
        """Run and assert; ``attempts`` runs it up to that many times, failing at the first failure.

        For a race that fails in some runs only (a campaign's re-runs say how
        often): the test passes only if every attempt holds.
        """
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise InvalidArgument(f"attempts={attempts!r} is invalid: give a count >= 1")
        for attempt in range(1, attempts + 1):
            result = await self.run(flow, messages)
            if not result.ok:
                report = self.write_report(result)
                which = f" (attempt {attempt} of {attempts})" if attempts > 1 else ""
                pytest.fail(f"{result.report()}\nreport: {report}{which}", pytrace=False)
        return result

    def write_report(self, result: RunResult) -> Path:
        """Write the run's HTML report beside its history: the test's source replays it."""
        import inspect

        from message_flow_harness import _html_report

        node = self._request.node
        try:
            source = inspect.getsource(self._request.function)
        except (OSError, TypeError):  # no source file (a test built at run time)
            source = ""
        name = result.history_path or self._history_dir / f"{result.endpoints.input}.json"
        return _html_report.write(
            result,
            name.with_suffix(".html"),
            reproduction=f"# pytest '{node.nodeid}'\n{source}",
            facts=[("test", node.nodeid)],
        )


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
    from message_flow_harness._bench.fixture import make_flow_bench

    return make_flow_bench(request)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    import sys

    if "message_flow_harness._bench.fixture" in sys.modules:  # only sessions that timed something
        from message_flow_harness._bench.fixture import terminal_summary

        terminal_summary(terminalreporter)
