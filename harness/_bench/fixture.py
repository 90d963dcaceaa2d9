"""The ``flow_bench`` pytest fixture: bench on the session's broker, list the results at the end."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from message_flow_harness._bench.result import BenchResult
from message_flow_harness._bench.run import bench
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._flow import Flow

if TYPE_CHECKING:
    import pytest


class FlowBench:
    """``result = await flow_bench(flow, messages=500)``: bench a flow on the session's broker.

    Takes the options of :func:`bench` (the broker is the session's
    ``kafka_broker`` / ``rabbitmq_broker``), writes the result's JSON and SVG
    next to the test's temporary files, and lists it in the terminal summary.
    It asserts nothing: compare ``result.throughput`` or ``result.latency``
    yourself if a test must fail on a slowdown.
    """

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.results: list[BenchResult] = []

    async def __call__(self, flow: Flow, **options: Any) -> BenchResult:
        if "broker" in options:
            raise InvalidArgument(
                "flow_bench takes the session's broker: drop broker=, or call harness bench()"
            )
        request = self._request
        broker: BrokerInfo = request.getfixturevalue(f"{flow.broker}_broker")
        result = await bench(flow, broker=broker, **options)
        self.results.append(result)
        directory: Path = request.getfixturevalue("tmp_path")
        stem = f"bench-{flow.label}-{len(self.results)}"
        json_path = result.write_json(directory / f"{stem}.json")
        svg_path = result.write_svg(directory / f"{stem}.svg")
        _collected(request.config).append((request.node.nodeid, result, json_path, svg_path))
        return result


@functools.cache
def _results_key() -> Any:
    import pytest

    return pytest.StashKey[list[tuple[str, BenchResult, Path, Path]]]()


def _collected(config: pytest.Config) -> list[tuple[str, BenchResult, Path, Path]]:
    key = _results_key()
    found: list[tuple[str, BenchResult, Path, Path]] | None = config.stash.get(key, None)
    if found is None:
        found = config.stash[key] = []
    return found


def make_flow_bench(request: pytest.FixtureRequest) -> FlowBench:
    """The body of the ``flow_bench`` fixture (function scope)."""
    return FlowBench(request)


def terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every flow_bench result of the session (call from ``pytest_terminal_summary``)."""
    found = terminalreporter.config.stash.get(_results_key(), None)
    if not found:
        return
    terminalreporter.write_sep("-", "flow_bench results")
    for nodeid, result, json_path, svg_path in found:
        terminalreporter.write_line(nodeid)
        for line in result.table().splitlines():
            terminalreporter.write_line(f"  {line}")
        terminalreporter.write_line(f"  json: {json_path}  svg: {svg_path}")
