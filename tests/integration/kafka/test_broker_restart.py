"""Broker restarts as a fault: ``BrokerRestart`` steps and ``faults=["broker_restart"]``.

All on a **private** Kafka broker (its own ``HARNESS_CACHE_DIR``, see
``private_broker.py``): a restart drops every connection to the broker, so the
session's shared broker is never restarted. The zoo's correct service must
lose nothing across a graceful and a hard restart, and the harness's own taps
must carry on from where they were (every output offset seen exactly once).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from message_flow_harness import BrokerInfo, Flow, Message, checks, fuzz
from message_flow_harness._fuzz import Example
from message_flow_harness._history import Kind
from message_flow_harness._runner import run_flow
from message_flow_harness.schedule import BrokerRestart, Publish, Settle, Step
from message_flow_harness.zoo.kafka_services import kafka_correct
from tests.integration.private_broker import private_broker

pytestmark = pytest.mark.kafka

#: A run holds one restart (a JVM start: ~5 s alone, ~30 s on a loaded 2-core box).
RUN_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def restartable_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    with private_broker("kafka", tmp_path_factory.mktemp("kafka-restart")) as info:
        yield info


def _flow() -> Flow:
    return Flow(
        sut=kafka_correct,
        broker="kafka",
        checks=[checks.no_loss(), checks.delivery("at-least-once")],
        timeout=RUN_TIMEOUT_S,
        quiet=10.0,  # the service reconnects and rejoins its group after the restart
    )


def _messages(prefix: str, count: int) -> list[Step]:
    return [Publish(Message(key=b"k", value=f"{prefix}{i}".encode())) for i in range(count)]


def _tap_saw_each_offset_once(result_events: list[tuple[int | None, int | None]]) -> None:
    offsets = sorted(offset for _, offset in result_events if offset is not None)
    assert offsets == list(range(len(offsets))), f"output offsets seen by the tap: {offsets}"


@pytest.mark.asyncio
@pytest.mark.parametrize("hard", [False, True], ids=["graceful", "hard"])
async def test_a_restart_mid_run_loses_nothing(restartable_kafka: BrokerInfo, hard: bool) -> None:
    # Graceful: after a Settle, so the service is idle; hard: with inputs in flight.
    schedule = [
        *_messages("before-", 5),
        *([] if hard else [Settle()]),
        BrokerRestart(hard=hard),
        *_messages("after-", 5),
    ]
    began = time.monotonic()
    result = await run_flow(_flow(), schedule, broker=restartable_kafka)
    took = time.monotonic() - began
    how = "hard" if hard else "graceful"
    faults = [e for e in result.history.events if e.kind is Kind.FAULT]
    notes = [
        e.detail or "" for e in result.history.events if e.kind is Kind.NOTE and e.lane == "broker"
    ]
    print(f"{how} restart run: {took:.1f} s; {notes}")
    assert [e.detail for e in faults] == [f"broker restart ({how})"]
    assert faults[0].lane == "broker"
    assert len(notes) == 1, notes
    assert notes[0].startswith("broker ready again after"), notes
    assert result.ok, result.report()
    outputs = [e for e in result.history.events if e.kind is Kind.OUTPUT]
    _tap_saw_each_offset_once([(e.partition, e.offset) for e in outputs])
    assert len({e.harness_id for e in outputs}) == 10


@pytest.mark.asyncio
async def test_a_fuzz_campaign_with_restarts_passes_the_correct_service(
    restartable_kafka: BrokerInfo,
) -> None:
    seen: list[Example] = []
    report = await fuzz(
        _flow(),
        max_examples=2,
        seed=3,
        faults=["broker_restart"],
        broker=restartable_kafka,
        database=None,
        report_dir=None,
        progress=seen.append,
    )
    restarts = sum(isinstance(step, BrokerRestart) for e in seen for step in e.schedule)
    print(report.summary(), f"\n{restarts} broker restarts in {len(seen)} examples")
    assert report.ok, report.summary()
    assert restarts >= 1
