"""A Kafka service whose consume task dies on aiokafka 0.14's ``headers=record.headers``
(a tuple where the producer wants a list): the run ends at once and says so, at the
service's line, in ``flow_check`` and in a fuzz report, before the inputs it lost.
Its log records and aiokafka's are in the run's history, and none is printed."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from message_flow_harness import BrokerInfo, Endpoints, Flow, Message, checks, fuzz
from message_flow_harness.pytest_plugin import FlowCheck

pytestmark = [pytest.mark.asyncio, pytest.mark.kafka]

HERE = Path(__file__).relative_to(Path.cwd()).as_posix()
BUG = "headers=record.headers"

# The service configures its logging at import, as services do: its own stream.
PRINTED = io.StringIO()
log = logging.getLogger("orders.service")
log.setLevel(logging.INFO)
log.addHandler(logging.StreamHandler(PRINTED))


@contextlib.asynccontextmanager
async def copies_headers_as_they_come(endpoints: Endpoints) -> AsyncIterator[None]:
    consumer = AIOKafkaConsumer(
        endpoints.input,
        bootstrap_servers=endpoints.bootstrap_servers,
        group_id=endpoints.group_id,
        auto_offset_reset="earliest",
        session_timeout_ms=1000,
        heartbeat_interval_ms=300,
    )
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.bootstrap_servers)
    await consumer.start()
    await producer.start()
    log.warning("orders service started on %s", endpoints.input)

    async def consume() -> None:
        out = endpoints.output
        async for record in consumer:
            log.info("forwarding offset %d", record.offset)
            await producer.send_and_wait(out, record.value, headers=record.headers)

    task = asyncio.create_task(consume(), name="consume orders")
    try:
        yield
    finally:
        task.cancel()
        try:
            await task  # the dead loop's TypeError comes out here again
        finally:
            await producer.stop()
            await consumer.stop()


def _bug_line() -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if BUG in line and "send_and_wait" in line)


DIED = f"service task died: TypeError: Expected list, got tuple at {HERE}:{_bug_line()}"
FLOW = Flow(
    sut=copies_headers_as_they_come,
    broker="kafka",
    checks=[checks.no_loss()],
    quiet=30.0,  # long: the run must end on the death, not on the silence
)
INPUTS = [Message(key=b"k", value=str(n).encode()) for n in range(5)]


async def test_flow_check_names_the_dead_task_at_its_line_first(flow_check: FlowCheck) -> None:
    result = await flow_check.run(FLOW, INPUTS)

    assert result.ended_by == f"{DIED} (sut0)"
    died, lost = result.failures()
    assert died.check == "service tasks kept running"
    [anomaly] = died.anomalies
    assert anomaly.kind == "task-died"
    assert anomaly.text.startswith(f"{DIED} (sut0, task 'consume orders')")
    # The traceback is the service's frame and aiokafka's under it, not the harness's.
    assert "in consume\n        await producer.send_and_wait(out, record.value" in anomaly.text
    assert "aiokafka/producer/producer.py" in anomaly.text
    assert "message_flow_harness" not in anomaly.text
    # What followed from it is still reported; its exit re-raising it is not news.
    assert lost.check == "no_loss()"
    assert {a.kind for a in lost.anomalies} == {"lost"}
    assert "raised-on-stop" not in {a.kind for v in result.failures() for a in v.anomalies}

    # What the service and aiokafka logged is in the history, not on its stream.
    logs = [(entry.logger, entry.message) for entry in result.history.logs]
    assert ("orders.service", f"orders service started on {result.endpoints.input}") in logs
    assert ("orders.service", "forwarding offset 0") in logs
    assert any(logger.startswith("aiokafka.") for logger, _ in logs), logs
    assert result.history.to_json()["logs"]
    assert PRINTED.getvalue() == ""

    with pytest.raises(pytest.fail.Exception) as failed:
        await flow_check(FLOW, INPUTS)
    report = str(failed.value)
    assert report.index(DIED) < report.index("no_loss()")


async def test_a_fuzz_report_names_the_dead_task(kafka_broker: BrokerInfo, tmp_path: Path) -> None:
    report = await fuzz(
        FLOW,
        max_examples=5,
        seed=0,
        broker=kafka_broker,
        shrink_seconds=30.0,
        reruns=1,
        database=None,
        report_dir=tmp_path,
    )
    assert not report.ok
    assert DIED in report.violations[0]
    assert DIED in report.summary()
    [violation, *_] = report.to_json()["violations"]
    assert violation["check"] == "service tasks kept running"
    assert DIED in violation["anomalies"][0]["text"]
