"""Publishers: stamped inputs into a live run, as fast as possible, at a rate, closed loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from message_flow_harness._errors import HarnessTimeout
from message_flow_harness._history import Kind
from message_flow_harness._message import HARNESS_ID_HEADER, Message

if TYPE_CHECKING:
    from message_flow_harness._runner import LiveRun

#: Publishes awaiting the broker's confirm at once, when publishing as fast as possible.
PUBLISH_CONCURRENCY = 64

_POLL_S = 0.001  # closed-loop mode waits for outputs by polling the history this often
_MAX_OUTSTANDING = 10_000  # open-loop publishes in flight before the publisher waits


def inputs(count: int, *, payload_size: int, keys: int, start: int = 0) -> list[Message]:
    """``count`` inputs: ``payload_size``-byte values (numbered), keys cycling over ``keys``."""
    made = []
    for number in range(start, start + count):
        value = f"{number:012d}".encode().ljust(payload_size, b".")[:payload_size]
        key = f"key-{number % keys}".encode() if keys else None
        made.append(Message(value=value, key=key))
    return made


class Publisher:
    """Publishes stamped inputs into a live run and notices their outputs."""

    def __init__(self, live: LiveRun) -> None:
        self.live = live
        self.due_ns: dict[str, int] = {}
        self.done: set[str] = set()
        self._numbers = itertools.count(1)
        self._seen = 0

    def stamp(self, message: Message) -> tuple[str, Message]:
        harness_id = f"{self.live.run_id}-{next(self._numbers)}"
        return harness_id, message.with_headers(**{HARNESS_ID_HEADER: harness_id.encode()})

    async def publish(self, harness_id: str, message: Message) -> None:
        live = self.live
        at_ns = time.perf_counter_ns()
        receipt = await live.adapter.publish(live.endpoints.input, message)
        live.history.record(
            Kind.PUBLISHED,
            "harness",
            at_ns=at_ns,
            harness_id=harness_id,
            destination=live.endpoints.input,
            key=message.key,
            partition=receipt.partition,
            offset=receipt.offset,
            message=message,
        )
        live.published.append(message)

    def poll(self) -> set[str]:
        """Fold newly recorded outputs and dead letters into ``done``."""
        events = self.live.history.events
        for event in events[self._seen :]:
            if event.kind in (Kind.OUTPUT, Kind.DEAD_LETTERED) and event.harness_id:
                self.done.add(event.harness_id)
        self._seen = len(events)
        return self.done

    async def await_outputs(
        self, ids: Sequence[str], *, quiet: float, what: str, strict: bool = True
    ) -> None:
        """Wait until every input in ``ids`` is accounted for, or ``quiet`` s pass without
        progress: then raise HarnessTimeout (``strict``) or return."""
        waiting = set(ids) - self.poll()
        last_progress = time.monotonic()
        while waiting:
            await asyncio.sleep(_POLL_S)
            before = len(waiting)
            waiting -= self.poll()
            now = time.monotonic()
            if len(waiting) < before:
                last_progress = now
            elif now - last_progress > quiet:
                if not strict:
                    return
                raise HarnessTimeout(
                    f"{what}: {len(waiting)} of {len(ids)} inputs got no output or dead letter,"
                    f" and nothing arrived for {quiet:g} s: does the service copy the"
                    f" {HARNESS_ID_HEADER} header to its outputs (else pass Flow(correlate=...))?"
                    " Raise Flow(quiet=...) if it is just slow"
                )

    async def fastest(self, stamped: Sequence[tuple[str, Message]]) -> None:
        queue = iter(stamped)

        async def worker() -> None:
            for harness_id, message in queue:
                await self.publish(harness_id, message)

        await _all(worker() for _ in range(min(PUBLISH_CONCURRENCY, len(stamped))))

    async def at_rate(self, stamped: Sequence[tuple[str, Message]], rate: float) -> None:
        begin = time.perf_counter_ns()
        period_ns = 1e9 / rate
        slots = asyncio.Semaphore(_MAX_OUTSTANDING)
        tasks: list[asyncio.Task[None]] = []

        async def one(harness_id: str, message: Message) -> None:
            try:
                await self.publish(harness_id, message)
            finally:
                slots.release()

        try:
            for index, (harness_id, message) in enumerate(stamped):
                due = begin + round(index * period_ns)
                delay = (due - time.perf_counter_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                self.due_ns[harness_id] = due
                await slots.acquire()
                tasks.append(asyncio.create_task(one(harness_id, message)))
                if len(tasks) % 1000 == 0:
                    _raise_failed(tasks)  # a broker that refuses stops the run early
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def closed_loop(
        self, stamped: Sequence[tuple[str, Message]], in_flight: int, *, quiet: float
    ) -> None:
        queue = iter(stamped)
        waiters: dict[str, asyncio.Event] = {}

        async def watch() -> None:
            while True:
                for harness_id in self.poll() & waiters.keys():
                    waiters.pop(harness_id).set()
                await asyncio.sleep(_POLL_S)

        async def worker() -> None:
            for harness_id, message in queue:
                answered = waiters[harness_id] = asyncio.Event()
                await self.publish(harness_id, message)
                # A lost output must not stall the loop: after ``quiet`` s, move on.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(quiet):
                        await answered.wait()
                waiters.pop(harness_id, None)

        watcher = asyncio.create_task(watch())
        try:
            await _all(worker() for _ in range(min(in_flight, len(stamped))))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _raise_failed(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error


async def _all(work: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run every coroutine; the first failure cancels the rest and is raised."""
    async with asyncio.TaskGroup() as group:
        for item in work:
            group.create_task(item)
