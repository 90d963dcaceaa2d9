"""A service that hangs, raises, never consumes or floods: every run still ends, bounded,
with a clear message, nothing left behind, and the partial history kept."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from message_flow_harness import (
    BrokerInfo,
    Endpoints,
    Flow,
    Kind,
    Message,
    ServiceError,
    brokers,
    checks,
)
from message_flow_harness._checks import Anomaly
from message_flow_harness._flow import RunResult, Service
from message_flow_harness._runner import run_flow
from message_flow_harness.schedule import Join, Leave, Pause

pytestmark = pytest.mark.asyncio

BROKERS = [
    pytest.param("kafka", marks=pytest.mark.kafka),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
]
GENEROUS = 30.0  # a hang guard, not a speed target: each bound below is a few seconds


@asynccontextmanager
async def hangs_on_start(endpoints: Endpoints) -> AsyncIterator[None]:
    await asyncio.sleep(3600)
    yield


@asynccontextmanager
async def raises_on_start(endpoints: Endpoints) -> AsyncIterator[None]:
    raise ConnectionRefusedError("cannot reach the orders database")
    yield


@asynccontextmanager
async def hangs_on_stop(endpoints: Endpoints) -> AsyncIterator[None]:
    yield
    await asyncio.sleep(3600)


@asynccontextmanager
async def never_consumes(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


@asynccontextmanager
async def raises_on_stop(endpoints: Endpoints) -> AsyncIterator[None]:
    yield
    raise ConnectionResetError("its consume loop died with the connection")


@asynccontextmanager
async def cancelled_on_stop(endpoints: Endpoints) -> AsyncIterator[None]:
    """Awaits, on exit, a consume task its driver cancelled when a connection dropped."""

    async def consume() -> None:
        raise asyncio.CancelledError  # what aiokafka's fetcher can do after a cut

    task = asyncio.create_task(consume())
    yield
    await task


def _info(endpoints: Endpoints) -> BrokerInfo:
    url = endpoints.bootstrap_servers or endpoints.amqp_url
    assert url is not None
    return BrokerInfo(kind=endpoints.kind, url=url, provider="url")


@asynccontextmanager
async def floods_output(endpoints: Endpoints) -> AsyncIterator[None]:
    """Publishes junk to the output without end (through the harness's own adapter)."""

    async def flood() -> None:
        async with brokers.adapter(_info(endpoints)) as adapter:
            while True:
                await adapter.publish(endpoints.output, Message(value=b"junk"))

    task = asyncio.create_task(flood())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _leftovers(info: BrokerInfo, prefix: str) -> list[str]:
    async with brokers.adapter(info) as adapter:
        return await adapter.list_destinations(prefix)


async def _expect_service_error(
    request: pytest.FixtureRequest, broker: str, flow_options: dict[str, object], match: str,
    tmp_path: Path,
) -> ServiceError:  # fmt: skip
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    flow = Flow(broker=info.kind, **flow_options)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(ServiceError, match=match) as caught:
        await run_flow(flow, [Message(value=b"1")], broker=info, history_dir=tmp_path)
    assert time.monotonic() - started < GENEROUS
    # This run's destinations (named after its id, which names the partial history) are gone.
    path = caught.value.history_path
    assert isinstance(path, Path)
    run_id = path.name.removeprefix(f"{flow.label}-").removesuffix("-partial.json")
    assert await _leftovers(info, f"h-{run_id}") == []
    return caught.value


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_service_that_hangs_on_start_is_stopped_at_the_bound(
    request: pytest.FixtureRequest, broker: str, tmp_path: Path
) -> None:
    await _expect_service_error(
        request, broker, {"sut": hangs_on_start, "start_timeout": 1.0},
        r"did not finish starting within 1 s: its __aenter__ must return once its clients",
        tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_service_that_raises_on_start_is_reported_with_its_error(
    request: pytest.FixtureRequest, broker: str, tmp_path: Path
) -> None:
    error = await _expect_service_error(
        request, broker, {"sut": raises_on_start},
        r"raised on start: ConnectionRefusedError\('cannot reach the orders database'\)",
        tmp_path,
    )  # fmt: skip
    assert error.history is not None


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_service_that_hangs_on_stop_keeps_the_partial_history(
    request: pytest.FixtureRequest, broker: str, tmp_path: Path
) -> None:
    error = await _expect_service_error(
        request, broker, {"sut": hangs_on_stop, "stop_timeout": 1.0, "quiet": 0.5, "ready": False},
        r"did not stop within 1 s: cancel its consume loop on exit", tmp_path,
    )  # fmt: skip
    assert isinstance(error.history_path, Path)
    assert error.history_path.exists()
    assert "partial history" in "".join(getattr(error, "__notes__", []))


async def _stop_anomaly(info: BrokerInfo, service: Service) -> tuple[RunResult, Anomaly]:
    """Run ``service`` with no inputs; its one failure must be how it stopped."""
    flow = Flow(sut=service, broker=info.kind, checks=[checks.no_loss()], quiet=0.5, ready=False)
    result = await run_flow(flow, [], broker=info)
    [failed] = result.failures()
    assert failed.check == "service stopped cleanly"
    [anomaly] = failed.anomalies
    assert anomaly.kind == "raised-on-stop"
    return result, anomaly


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_service_that_raises_on_stop_fails_the_run_with_its_error(
    request: pytest.FixtureRequest, broker: str
) -> None:
    # A finding about the service, judged like a check (fuzz can shrink it), not
    # an error of the harness's: the run still ends with its verdicts and history.
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    result, anomaly = await _stop_anomaly(info, raises_on_stop)
    assert "sut0 raised on stop: ConnectionResetError('its consume loop died" in anomaly.text
    notes = [e.detail for e in result.history.of(Kind.NOTE) if e.lane == "sut0"]
    assert notes[-2:] == [f"raised on stop: {anomaly.text.partition(': ')[2]}", "stopped"]
    assert await _leftovers(info, result.endpoints.input.removesuffix("-in")) == []


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_stray_cancel_out_of_a_service_exit_fails_the_run_not_the_campaign(
    request: pytest.FixtureRequest, broker: str
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    result, anomaly = await _stop_anomaly(info, cancelled_on_stop)
    assert "sut0 raised on stop: CancelledError()" in anomaly.text
    assert "await its cancelled tasks inside a try/except CancelledError" in anomaly.text
    assert await _leftovers(info, result.endpoints.input.removesuffix("-in")) == []


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_service_that_never_consumes_ends_after_the_quiet_bound(
    request: pytest.FixtureRequest, broker: str
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    # Not awaited (by default the run would wait for a consumer: see test_readiness.py).
    flow = Flow(
        sut=never_consumes, broker=info.kind, checks=[checks.no_loss()], quiet=1.0, ready=False
    )
    started = time.monotonic()
    result = await run_flow(flow, [Message(value=b"1"), Message(value=b"2")], broker=info)
    assert time.monotonic() - started < GENEROUS
    assert result.ended_by == "no progress for 1 s with 2 inputs unaccounted for"
    [verdict] = result.failures()
    assert [a.kind for a in verdict.anomalies] == ["lost", "lost"]
    [note] = verdict.notes
    assert note.startswith("the service consumed nothing: it may not ")


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_service_that_floods_its_output_is_bounded_and_flagged(
    request: pytest.FixtureRequest, broker: str
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    flow = Flow(
        sut=floods_output, broker=info.kind, checks=[checks.no_unexpected()], quiet=1.0,
        timeout=3.0, ready=False,
    )  # fmt: skip
    started = time.monotonic()
    result = await run_flow(flow, [Message(value=b"1")], broker=info)
    assert time.monotonic() - started < GENEROUS
    junk = result.history.of(Kind.OUTPUT)
    assert len(junk) > 10
    assert {a.kind for v in result.failures() for a in v.anomalies} == {"unexpected"}
    assert await _leftovers(info, result.endpoints.input.removesuffix("-in")) == []


@asynccontextmanager
async def swallows_cancels_on_stop(endpoints: Endpoints) -> AsyncIterator[None]:
    """Awaits its own work on stop under suppress(CancelledError), as services often do."""
    yield
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(2.0)


@pytest.mark.rabbitmq
async def test_a_cancel_the_service_swallows_still_ends_the_run(
    rabbitmq_broker: BrokerInfo,
) -> None:
    # Leave stops the joined instance: the cancel lands inside its swallowing exit.
    flow = Flow(sut=swallows_cancels_on_stop, broker="rabbitmq", quiet=0.5, ready=False)
    task = asyncio.create_task(run_flow(flow, [Join(), Leave(), Pause(10)], broker=rabbitmq_broker))
    await asyncio.sleep(1.0)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, GENEROUS)
    assert time.monotonic() - started < GENEROUS
