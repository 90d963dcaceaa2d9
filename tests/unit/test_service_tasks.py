"""A task the service started that dies while the run goes on: reported at once, at its line.

Stand-in services, no broker: the instances are started without fault proxies,
so nothing here connects anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from message_flow_harness import Endpoints, Flow, Kind, eventually
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._causes import handlers_died
from message_flow_harness._history import History
from message_flow_harness._instances import MAX_HANDLER_DEATHS, Instances
from message_flow_harness._proxy import FaultProxy
from message_flow_harness._runner import _await_quiescence, _kept_running
from message_flow_harness._watch import TaskDeath, Watch, dies_of
from message_flow_harness.brokers._local import free_port

pytestmark = pytest.mark.asyncio
HERE = Path(__file__).relative_to(Path.cwd()).as_posix()
ENDPOINTS = Endpoints(
    kind="kafka", input="in", output="out", dead_letter="dlq", bootstrap_servers="nowhere:9"
)


def _line_of(function: Callable[..., Any], text: str) -> int:
    """The line of ``function`` (in this file) that contains ``text``."""
    code = function.__code__
    lines = Path(code.co_filename).read_text().splitlines()
    return next(n for n in range(code.co_firstlineno, len(lines) + 1) if text in lines[n - 1])


async def _send(headers: object) -> None:
    """Stands for a client library that rejects a tuple where it wants a list."""
    await asyncio.sleep(0)
    if not isinstance(headers, list):
        raise TypeError(f"Expected list, got {type(headers).__name__}")


async def _consume(ready: asyncio.Event) -> None:
    await ready.wait()
    record = {"headers": (("x-harness-id", b"r-1"),)}
    json.dumps(record)  # the service's bug: bytes in a JSON document


def _service(
    ready: asyncio.Event,
) -> Callable[[Endpoints], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def service(endpoints: Endpoints) -> AsyncIterator[None]:
        task = asyncio.create_task(_consume(ready), name=f"consume {endpoints.input}")
        try:
            yield
        finally:
            task.cancel()
            await task  # a dead loop's error surfaces here, on stop

    return service


def _instances(service: Callable[[Endpoints], Any], history: History) -> Instances:
    flow = Flow(sut=service, broker="kafka", stop_timeout=5.0)
    info = BrokerInfo(kind="kafka", url="nowhere:9", provider="url")
    return Instances(flow, info, ENDPOINTS, history, proxied=False)


async def _until(condition: Callable[[], object]) -> None:
    await eventually(lambda: bool(condition()), within=10)


async def test_a_consume_task_that_dies_is_reported_at_its_line_with_a_trimmed_traceback() -> None:
    ready = asyncio.Event()
    history = History()
    instances = _instances(_service(ready), history)
    await instances.add()
    assert instances.deaths == []
    ready.set()
    await _until(lambda: instances.deaths)

    [death] = instances.deaths
    where = f"{HERE}:{_line_of(_consume, 'the service')}"
    error = "TypeError: Object of type bytes is not JSON serializable"
    assert death.summary == f"service task died: {error} at {where}"
    assert (death.instance, death.task) == ("sut0", "consume in")
    # The service's frames and the library's under them, none of the harness's or asyncio's.
    assert "in _consume" in death.traceback
    assert "json.dumps(record)" in death.traceback
    assert "json/encoder.py" in death.traceback
    assert "_instances.py" not in death.traceback
    assert "asyncio" not in death.traceback
    assert death.traceback.endswith(error)
    notes = [e.detail for e in history.of(Kind.NOTE)]
    assert f"{death.summary} (task 'consume in')" in notes

    # Its exit re-raises the same error: said once, where it happened, not as a stop error.
    await instances.close()
    assert instances.stop_errors == []
    assert history.of(Kind.NOTE)[-2].detail == (
        "raised on stop what its task 'consume in' died of:"
        " TypeError('Object of type bytes is not JSON serializable')"
    )


async def test_the_verdict_and_the_end_of_the_wait_name_the_death() -> None:
    ready = asyncio.Event()
    history = History()
    instances = _instances(_service(ready), history)
    await instances.add()
    ready.set()
    await _until(lambda: instances.deaths)
    [death] = instances.deaths

    flow = Flow(sut=_service(ready), broker="kafka", quiet=60.0)
    # An input never answered would keep the wait open until the deadline, a minute away.
    history.record(Kind.PUBLISHED, "harness", harness_id="r-1")
    ended_by = await _await_quiescence(
        flow, history, deadline=time.monotonic() + 60, deaths=instances.deaths
    )
    assert ended_by == f"{death.summary} (sut0)"

    verdict = _kept_running(instances.deaths)
    assert not verdict.ok
    [anomaly] = verdict.anomalies
    assert anomaly.kind == "task-died"
    assert anomaly.text.startswith(f"{death.summary} (sut0, task 'consume in')\n")
    assert "in _consume" in str(verdict)
    await instances.close()


@contextlib.asynccontextmanager
async def _awaits_what_it_spawns(endpoints: Endpoints) -> AsyncIterator[None]:
    """Starts with helpers whose errors it handles: those tasks are not left to die alone."""

    async def probe_database() -> None:
        raise ConnectionRefusedError("not yet")

    for attempt in range(2):
        with contextlib.suppress(ConnectionRefusedError):
            await asyncio.gather(probe_database())
        with contextlib.suppress(ConnectionRefusedError):
            await asyncio.wait_for(probe_database(), timeout=5)
        with contextlib.suppress(ConnectionRefusedError):
            await asyncio.shield(probe_database())
        del attempt
    yield


async def test_tasks_made_by_gather_or_wait_for_are_their_awaiters_business() -> None:
    history = History()
    instances = _instances(_awaits_what_it_spawns, history)
    await instances.add()
    await asyncio.sleep(0.01)
    await instances.close()
    assert instances.deaths == []
    assert instances.stop_errors == []


async def test_a_task_ending_as_the_service_stops_is_a_stop_error_not_a_death() -> None:
    started = asyncio.Event()

    @contextlib.asynccontextmanager
    async def dies_when_stopped(endpoints: Endpoints) -> AsyncIterator[None]:
        stopping = asyncio.Event()

        async def consume() -> None:
            started.set()
            await stopping.wait()
            raise ConnectionResetError("closed under the loop")

        task = asyncio.create_task(consume())
        yield
        stopping.set()
        await task

    history = History()
    instances = _instances(dies_when_stopped, history)
    await instances.add()
    await _until(started.is_set)
    await instances.close()
    assert instances.deaths == []
    [error] = instances.stop_errors
    assert "ConnectionResetError('closed under the loop')" in error


async def test_a_task_cancelled_at_stop_or_finishing_quietly_is_no_death() -> None:
    @contextlib.asynccontextmanager
    async def tidy(endpoints: Endpoints) -> AsyncIterator[None]:
        forever = asyncio.create_task(asyncio.Event().wait())
        done = asyncio.create_task(asyncio.sleep(0))
        yield
        forever.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forever
        await done

    history = History()
    instances = _instances(tidy, history)
    await instances.add()
    await asyncio.sleep(0.01)
    await instances.close()
    assert instances.deaths == []
    assert instances.stop_errors == []


async def test_the_harness_frames_are_trimmed_and_the_line_is_the_services() -> None:
    # A function that runs as harness code (a probe wrapping the client's send).
    scope: dict[str, Any] = {"__name__": "message_flow_harness.brokers.kafka._probes"}
    exec(
        "async def wrapped_send(send, headers):\n    return await send(headers)\n",
        scope,
    )
    wrapped_send: Callable[[Callable[[object], Awaitable[None]], object], Awaitable[None]] = scope[
        "wrapped_send"
    ]
    deaths: list[TaskDeath] = []

    @contextlib.asynccontextmanager
    async def probed(endpoints: Endpoints) -> AsyncIterator[None]:
        async def consume() -> None:
            await asyncio.sleep(0)
            await wrapped_send(_send, ("a", "tuple"))  # through the probe

        task = asyncio.create_task(consume(), name="probed")
        yield
        del task

    history = History()
    instances = _instances(probed, history)
    instances.deaths = deaths
    await instances.add()
    await _until(lambda: deaths)
    [death] = deaths
    assert death.where == f"{HERE}:{_line_of(_send, 'raise TypeError')}"
    assert "in wrapped_send" not in death.traceback
    assert "<string>" not in death.traceback
    assert "in consume" in death.traceback
    assert "in _send" in death.traceback
    await instances.close()


async def test_a_death_the_service_saw_itself_is_reported_until_it_is_stopped() -> None:
    deaths: list[TaskDeath] = []
    watch = Watch("sut0", deaths.append)
    exited = RuntimeError("worker exited by itself with code 1")
    watch.report(exited, task="process", where="pid 42", traceback="its last 1 output lines: ...")
    [death] = deaths
    assert (
        death.summary
        == "service task died: RuntimeError: worker exited by itself with code 1 at pid 42"
    )
    assert dies_of(exited, deaths) is death  # its stop re-raising it says nothing new
    watch.disarm()
    watch.report(
        RuntimeError("killed by the harness"), task="process", where="pid 43", traceback=""
    )
    assert len(deaths) == 1


def _handle(body: bytes) -> None:
    json.loads(body)  # the service's bug: a body that is not JSON


def _per_message_service(
    bodies: asyncio.Queue[bytes],
) -> Callable[[Endpoints], contextlib.AbstractAsyncContextManager[None]]:
    """Spawns one task per message once running, as consumer callbacks often do."""

    @contextlib.asynccontextmanager
    async def service(endpoints: Endpoints) -> AsyncIterator[None]:
        async def handle(body: bytes) -> None:
            await asyncio.sleep(0)
            _handle(body)

        async def consume() -> None:
            handlers = set()
            while True:
                task = asyncio.create_task(handle(await bodies.get()), name="handle")
                handlers.add(task)
                task.add_done_callback(handlers.discard)

        loop = asyncio.create_task(consume(), name="consume")
        try:
            yield
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    return service


async def test_a_task_spawned_per_message_that_dies_is_a_cause_not_the_end() -> None:
    bodies: asyncio.Queue[bytes] = asyncio.Queue()
    history = History()
    instances = _instances(_per_message_service(bodies), history)
    await instances.add()
    for body in (b"{}", b"not json", b"[]", b"<xml/>"):
        bodies.put_nowait(body)
    await _until(lambda: instances.handler_deaths_seen == 2)

    assert instances.deaths == []  # the run goes on: the loop is alive
    where = f"{HERE}:{_line_of(_handle, 'the service')}"
    error = "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
    assert [d.cause for d in instances.handler_deaths] == [f"{error} at {where}"] * 2
    notes = [e.detail for e in history.of(Kind.NOTE)]
    assert f"service task died: {error} at {where} (task 'handle'; the run goes on)" in notes
    assert handlers_died(instances) == (
        "2 tasks the service spawned while running died (what each was handling is lost"
        f" unless retried): {error} at {where} (2 times)"
    )
    await instances.close()
    assert instances.stop_errors == []


async def test_per_message_deaths_are_noted_up_to_a_bound_and_counted() -> None:
    bodies: asyncio.Queue[bytes] = asyncio.Queue()
    history = History()
    instances = _instances(_per_message_service(bodies), history)
    await instances.add()
    for _ in range(MAX_HANDLER_DEATHS + 5):
        bodies.put_nowait(b"not json")
    await _until(lambda: instances.handler_deaths_seen == MAX_HANDLER_DEATHS + 5)
    assert len(instances.handler_deaths) == MAX_HANDLER_DEATHS
    assert len(history.of(Kind.NOTE)) == 1 + MAX_HANDLER_DEATHS  # "started", then the deaths
    assert (handlers_died(instances) or "").startswith(f"{MAX_HANDLER_DEATHS + 5} tasks")
    await instances.close()


class _GracefulService:
    """Its exit waits for the message in hand; a client library's task runs beside it.

    ``asyncio.sleep`` stands for the library's background task (asyncio's own
    code is library code to the watch, as aio-pika's is).
    """

    def __init__(self) -> None:
        self.seen_at_exit: tuple[bool, bool] | None = None  # (handler done, library done)

    async def __aenter__(self) -> _GracefulService:
        self.handler = asyncio.create_task(self._handle(), name="handle")
        self.library = asyncio.ensure_future(asyncio.sleep(3600))
        return self

    async def _handle(self) -> None:
        await asyncio.Event().wait()  # a publish on a cut connection, say

    async def __aexit__(self, *exc_info: object) -> None:
        self.seen_at_exit = (self.handler.done(), self.library.done())
        await asyncio.wait({self.handler}, timeout=5.0)  # the message in hand, gracefully


async def test_a_crash_cancels_the_services_tasks_before_its_exit_and_the_librarys_after() -> None:
    service = _GracefulService()
    instances = _instances(lambda endpoints: service, History())
    instance = await instances.add()
    instance.proxy = FaultProxy(free_port(), "127.0.0.1", 9)  # never started: nothing to cut
    began = time.monotonic()
    await instances.crash(instance)
    # A killed process waits for nothing: the exit found its handler ended, and did
    # not wait out its bound. The library's task was still there for the exit (and
    # for closing the clients left open) to use, and is ended after.
    assert service.seen_at_exit == (True, False)
    assert time.monotonic() - began < 2.0
    assert service.handler.cancelled()
    assert service.library.cancelled()


async def test_a_death_stalls_the_run_only_until_its_instance_crashes() -> None:
    """A crashed (or stopped) instance's dead task no longer ends the wait: a restart may
    consume what comes next. The verdict still names the death."""
    ready = asyncio.Event()
    history = History()
    instances = _instances(_service(ready), history)
    instance = await instances.add()
    ready.set()
    await _until(lambda: instances.deaths)
    assert instances.stalled == instances.deaths
    instance.proxy = FaultProxy(free_port(), "127.0.0.1", 9)  # never started: nothing to cut
    await instances.crash(instance)
    assert instances.stalled == []
    assert len(instances.deaths) == 1

    flow = Flow(sut=_service(ready), broker="kafka", quiet=0.2)
    history.record(Kind.PUBLISHED, "harness", harness_id="r-1")
    ended_by = await _await_quiescence(
        flow, history, deadline=time.monotonic() + 60, deaths=instances.stalled
    )
    assert ended_by == "no progress for 0.2 s with 1 inputs unaccounted for"
    await instances.close()
