"""A crash leaves nothing of the instance running: no task, and no buffered send delivered later.

A killed process's unsent producer buffer is gone with it. Closing a crashed
aiokafka producer with ``stop()`` would flush that buffer instead: its
background sender retries against the refused proxy and delivers the batch
once ``Restart`` heals it, so a fire-and-forget send before a commit (a real
loss) read as delivered. The harness aborts a crashed instance's clients
before its exit runs, and cancels every task the instance still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from message_flow_harness import BrokerInfo, Endpoints, Flow, Kind, Message, checks
from message_flow_harness._runner import run_flow
from message_flow_harness.schedule import After, Crash, Restart

pytestmark = [pytest.mark.asyncio, pytest.mark.kafka]

TRIES = 3
#: Far longer than a run: a record sent is only delivered by a flush (or a stop's).
LINGER_MS = 500
#: How long the service's exit waits for each client to stop.
STOP_S = 2.0


class FireAndForget:
    """A service that sends without awaiting the delivery, then commits: a loss on a crash.

    Its consume loop also spawns an audit task that its exit forgets (a leak a
    graceful stop would have to mind, and a crash must end).
    """

    def __init__(self) -> None:
        self.audits: list[asyncio.Task[None]] = []

    async def _audit(self) -> None:
        await asyncio.Event().wait()  # runs for as long as the process does

    @contextlib.asynccontextmanager
    async def __call__(self, endpoints: Endpoints) -> AsyncIterator[None]:
        consumer = AIOKafkaConsumer(
            endpoints.input,
            bootstrap_servers=endpoints.bootstrap_servers,
            group_id=endpoints.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=1000,
            heartbeat_interval_ms=300,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=endpoints.bootstrap_servers, linger_ms=LINGER_MS
        )

        async def consume() -> None:
            self.audits.append(asyncio.create_task(self._audit(), name="audit"))
            async for record in consumer:
                # The defect: the delivery future is never awaited before the commit.
                await producer.send(
                    endpoints.output, record.value, key=record.key, headers=list(record.headers)
                )
                await consumer.commit()

        await consumer.start()
        await producer.start()
        task = asyncio.create_task(consume(), name="consume")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait([task])
            # Bounded, as services stop their clients: a flush that cannot reach the
            # broker is given up after a while.
            for client in (producer, consumer):
                await asyncio.wait_for(client.stop(), STOP_S)


async def test_a_crashed_producers_buffer_is_lost_and_its_tasks_cancelled(
    kafka_broker: BrokerInfo,
) -> None:
    service = FireAndForget()
    flow = Flow(sut=service, broker="kafka", checks=[checks.no_loss()], name="fire_and_forget")
    delivered, running, reports = 0, 0, []
    try:
        for attempt in range(TRIES):
            message = Message(key=b"k", value=f"order-{attempt}".encode())
            # Crash right after the commit: the send before it sits in the buffer.
            schedule = [message, After("committed"), Crash(0), Restart(0)]
            result = await run_flow(flow, schedule, broker=kafka_broker)
            reports.append(result.report())
            [published] = result.history.of(Kind.PUBLISHED)
            delivered += any(e.harness_id for e in result.history.of(Kind.OUTPUT))
            # Each run starts the service twice: the crashed start, then its restart.
            running += not service.audits[2 * attempt].cancelled()
            assert result.unaccounted == (published.harness_id,), result.report()
    finally:
        for audit in service.audits:  # the restarted instances' leaks: the test's to end
            audit.cancel()
        await asyncio.gather(*service.audits, return_exceptions=True)
    assert delivered == 0, f"buffered records delivered after the crash in {delivered} of {TRIES}"
    assert running == 0, f"the crashed instance's task ran on in {running} of {TRIES}"
    assert all("CHECKS FAILED" in report for report in reports), reports  # the loss is found
