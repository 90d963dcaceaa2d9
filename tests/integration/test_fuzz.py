"""The fuzzer and the state machine find the zoo's races on the real brokers, and shrink them.

Each defective service must be found without hand-written inputs, and the
correct service must pass the same campaign.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
import pytest
from hypothesis import strategies as st

from message_flow_harness import BrokerInfo, ChecksFailed, Endpoints, Flow, Message, checks, fuzz
from message_flow_harness import strategies as hs
from message_flow_harness._fuzz import Example
from message_flow_harness.schedule import Crash, Join, Publish
from message_flow_harness.stateful import FlowMachine, rule, run_machine
from message_flow_harness.strategies import POISON
from message_flow_harness.zoo.kafka_services import (
    kafka_concurrent_batch,
    kafka_correct,
    kafka_rebalance_duplicates,
    kafka_swallows_errors,
)
from message_flow_harness.zoo.rabbitmq_services import (
    FLAKY,
    rabbitmq_ack_before_process,
    rabbitmq_correct,
    rabbitmq_retry_reorders,
    rabbitmq_swallows_errors,
)

pytestmark = pytest.mark.asyncio

ORDER = [checks.no_loss(), checks.per_key_order()]
CORRECT_SERVICES = pytest.mark.parametrize(
    ("broker", "service"),
    [
        pytest.param("kafka", kafka_correct, marks=pytest.mark.kafka, id="kafka"),
        pytest.param("rabbitmq", rabbitmq_correct, marks=pytest.mark.rabbitmq, id="rabbitmq"),
    ],
)


@pytest.mark.kafka
async def test_fuzz_finds_and_shrinks_a_reordering_race(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    flow = Flow(sut=kafka_concurrent_batch, broker="kafka", checks=ORDER, quiet=1.0)
    # The race shows in about one run of five: a shrink candidate must pass more
    # tries before it counts as passing, or shrinking stops at its first replay.
    report = await fuzz(
        flow,
        max_examples=60,
        seed=3,
        shrink_tries=8,
        broker=kafka_broker,
        database=None,
        report_dir=tmp_path,
    )
    assert not report.ok
    assert report.minimal is not None
    minimal = [s.message for s in report.minimal.schedule if isinstance(s, Publish)]
    assert 2 <= len(minimal) <= 3, report.summary()
    assert "nonmonotonic" in report.summary()
    assert len(report.reruns) == 5
    assert report.report_path is not None
    title = report.report_path.read_text().partition("</title>")[0]
    assert "FAIL - " in title
    assert "nonmonotonic" in title
    assert report.history_path is not None
    saved = json.loads(report.history_path.read_text())
    assert saved["violations"][0]["check"] == "per_key_order()"
    assert "async def test_" in report.reproduction()


@pytest.mark.rabbitmq
async def test_fuzz_with_crashes_finds_ack_before_processing(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    flow = Flow(
        sut=rabbitmq_ack_before_process, broker="rabbitmq", checks=[checks.no_loss()], quiet=1.0
    )
    report = await fuzz(
        flow,
        max_examples=150,
        seed=1,
        faults=["crash"],
        broker=rabbitmq_broker,
        database=None,
        report_dir=tmp_path,
        shrink_seconds=60,
    )
    assert not report.ok, report.summary()
    assert report.minimal is not None
    assert any(isinstance(s, Crash) for s in report.minimal.schedule)
    assert "lost" in report.summary()


@pytest.mark.kafka
async def test_fuzz_with_a_joining_instance_finds_rebalance_duplicates(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    exactly_once = [checks.no_loss(), checks.no_duplicates()]
    options = {"broker": kafka_broker, "database": None, "report_dir": tmp_path,
               "faults": ["join"], "seed": 1}  # fmt: skip
    # quiet: longer than a rebalance takes, or a slow one reads as loss.
    racy = Flow(sut=kafka_rebalance_duplicates, broker="kafka", partitions=2,
                checks=exactly_once, quiet=5.0)  # fmt: skip
    found = await fuzz(racy, max_examples=60, **options)  # type: ignore[arg-type]
    assert not found.ok, found.summary()
    assert found.minimal is not None
    assert any(isinstance(s, Join) for s in found.minimal.schedule)
    assert "duplicate" in found.summary()
    # The same campaign on the service that commits before giving partitions away.
    fixed = Flow(sut=kafka_correct, broker="kafka", partitions=2, checks=exactly_once,
                 quiet=5.0)  # fmt: skip
    cleared = await fuzz(fixed, max_examples=15, **options)  # type: ignore[arg-type]
    assert cleared.ok, cleared.summary()


@pytest.mark.rabbitmq
async def test_fuzz_finds_a_retry_path_that_reorders_a_key(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    flow = Flow(
        sut=rabbitmq_retry_reorders,
        broker="rabbitmq",
        checks=ORDER,
        messages=hs.messages(keys=hs.keys(2), values=st.sampled_from([b"", FLAKY])),
        quiet=1.0,
    )
    report = await fuzz(
        flow, max_examples=150, seed=2, broker=rabbitmq_broker, database=None,
        report_dir=tmp_path,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert report.minimal is not None
    minimal = [s.message for s in report.minimal.schedule if isinstance(s, Publish)]
    # The least the defect needs is a flaky message, then one more of its key; the race
    # depends on timing, so shrinking may keep one unrelated message that helps it.
    assert 2 <= len(minimal) <= 3, report.summary()
    flaky = next(i for i, m in enumerate(minimal) if m.value == FLAKY)
    assert any(m.key == minimal[flaky].key for m in minimal[flaky + 1 :])
    assert len(report.reruns) == 5  # how often it repeats depends on timing: reported


@CORRECT_SERVICES
async def test_correct_services_pass_a_crash_campaign(
    request: pytest.FixtureRequest, broker: str, service: object, tmp_path: Path
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    flow = Flow(
        sut=service,  # type: ignore[arg-type]
        broker=info.kind,
        checks=[checks.delivery("at-least-once"), checks.per_key_order()],
        quiet=2.0,
    )
    report = await fuzz(
        flow, max_examples=15, seed=7, faults=["crash"], broker=info, database=None,
        report_dir=tmp_path,
    )  # fmt: skip
    assert report.ok, report.summary()
    assert report.examples == 15


@pytest.mark.rabbitmq
async def test_the_next_example_starts_once_the_last_has_stopped_and_none_is_left(
    rabbitmq_broker: BrokerInfo,
) -> None:
    """The campaign starts each example's service while Hypothesis picks its schedule."""
    lifecycle: list[str] = []

    @contextlib.asynccontextmanager
    async def watched(endpoints: Endpoints) -> AsyncIterator[None]:
        lifecycle.append("start")
        try:
            async with rabbitmq_correct(endpoints):
                lifecycle.append("started")
                yield
        finally:
            lifecycle.append("stopped")

    flow = Flow(sut=watched, broker="rabbitmq", checks=ORDER)
    report = await fuzz(
        flow, max_examples=12, seed=3, broker=rabbitmq_broker, database=None, report_dir=None
    )
    assert report.ok, report.summary()
    services = len(lifecycle) // 3
    assert lifecycle == ["start", "started", "stopped"] * services  # never two at once
    # One per example, and at most one more: entered for an example that never came.
    assert report.examples <= services <= report.examples + 1


@pytest.mark.rabbitmq
async def test_two_workers_run_examples_at_once_and_the_first_failure_stops_both(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    running = [0]
    most = [0]

    def counted(service: Callable[[Endpoints], Any]) -> Callable[[Endpoints], Any]:
        @contextlib.asynccontextmanager
        async def watched(endpoints: Endpoints) -> AsyncIterator[None]:
            async with service(endpoints):
                running[0] += 1
                most[0] = max(most[0], running[0])
                try:
                    yield
                finally:
                    running[0] -= 1

        return watched

    good = Flow(sut=counted(rabbitmq_correct), broker="rabbitmq", checks=ORDER)
    report = await fuzz(
        good, max_examples=30, seed=4, workers=2, broker=rabbitmq_broker, database=None,
        report_dir=None,
    )  # fmt: skip
    assert report.ok, report.summary()
    assert report.examples == 30
    assert most[0] >= 2, "the two searches never ran an example at the same time"

    poison = hs.messages(values=st.sampled_from([b"fine", b"fine too", POISON]))
    lossy = Flow(sut=rabbitmq_swallows_errors, broker="rabbitmq", checks=ORDER, messages=poison)
    seen: list[Example] = []
    report = await fuzz(
        lossy, max_examples=200, seed=4, workers=2, broker=rabbitmq_broker, database=None,
        report_dir=tmp_path, progress=seen.append, reruns=2,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert report.minimal is not None
    assert [s.message.value for s in report.minimal.schedule if isinstance(s, Publish)] == [POISON]
    # Once one search found it, the other finished at most the example it had in hand.
    assert report.first_failure_at is not None
    late = [e for e in seen if e.phase == "search" and e.number > report.first_failure_at]
    assert len(late) <= 1, late
    assert report.examples < 200


@CORRECT_SERVICES
async def test_concurrent_producers_are_no_reordering_of_a_correct_service(
    request: pytest.FixtureRequest, broker: str, service: object, tmp_path: Path
) -> None:
    # Producers of one burst race each other at the broker: the checks must not
    # call the broker's interleaving a reordering by the service.
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    flow = Flow(sut=service, broker=info.kind, checks=ORDER)  # type: ignore[arg-type]
    seen: list[Example] = []
    report = await fuzz(
        flow, max_examples=25, seed=5, producers=3, broker=info, database=None,
        report_dir=tmp_path, progress=seen.append,
    )  # fmt: skip
    assert report.ok, report.summary()
    producers = {s.producer for e in seen for s in e.schedule if isinstance(s, Publish)}
    assert producers == {0, 1, 2}


@pytest.mark.kafka
async def test_failing_examples_are_replayed_first_from_the_database(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    # A deterministic defect (a poison message vanishes), so replaying it must fail again.
    flow = Flow(
        sut=kafka_swallows_errors,
        broker="kafka",
        checks=[checks.no_loss()],
        messages=hs.messages(values=hs.values(poison=True), max_size=4),
        quiet=0.5,
        name="db-replay",
    )
    options = {"broker": kafka_broker, "database": tmp_path / "db", "report_dir": tmp_path,
               "reruns": 0, "shrink_seconds": 20.0}  # fmt: skip
    # No seed: Hypothesis keeps no database for seeded runs.
    first = await fuzz(flow, max_examples=60, **options)  # type: ignore[arg-type]
    assert not first.ok
    # Replaying only (no search): just the database can bring the failure back.
    second = await fuzz(flow, replay_only=True, **options)  # type: ignore[arg-type]
    assert not second.ok, "the saved failure is tried first"
    assert second.minimal is not None
    assert first.minimal is not None
    assert second.minimal.schedule == first.minimal.schedule
    without = await fuzz(flow, replay_only=True, **{**options, "database": None})  # type: ignore[arg-type]
    assert without.ok
    assert without.examples == 0


class EarlyAck(FlowMachine):
    flow = Flow(
        sut=rabbitmq_ack_before_process, broker="rabbitmq", checks=[checks.no_loss()], quiet=1.0
    )

    @rule(key=hs.keys(2))
    async def publish(self, key: bytes) -> None:
        await self.live.do(Message(key=key))

    @rule()
    async def crash(self) -> None:
        await self.live.do(Crash(0))


class CorrectAck(EarlyAck):
    flow = Flow(sut=rabbitmq_correct, broker="rabbitmq", checks=[checks.no_loss()], quiet=1.0)


@pytest.mark.rabbitmq
async def test_async_state_machine_finds_the_lost_message(rabbitmq_broker: BrokerInfo) -> None:
    with pytest.raises(ChecksFailed, match="lost"):
        await run_machine(EarlyAck, broker=rabbitmq_broker, max_examples=80, steps=6, seed=1)


@pytest.mark.rabbitmq
async def test_async_state_machine_passes_the_correct_service(
    rabbitmq_broker: BrokerInfo,
) -> None:
    await run_machine(CorrectAck, broker=rabbitmq_broker, max_examples=5, steps=6, seed=1)


@pytest.mark.kafka
async def test_cli_exit_codes_and_json(kafka_broker: BrokerInfo, tmp_path: Path) -> None:
    module = tmp_path / "cli_flows.py"
    module.write_text(
        "from message_flow_harness import Flow, checks\n"
        "from message_flow_harness.zoo.kafka_services import"
        " kafka_concurrent_batch, kafka_correct\n"
        "racy = Flow(sut=kafka_concurrent_batch, broker='kafka',"
        " checks=[checks.per_key_order()], quiet=1.0)\n"
        "good = Flow(sut=kafka_correct, broker='kafka', checks=[checks.no_loss()], quiet=1.0)\n"
    )
    root = Path(__file__).parents[2]

    def harness(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "message_flow_harness._cli", "fuzz", *args, "--quiet",
             "--kafka-bootstrap", kafka_broker.url, "--report-dir", str(tmp_path)],
            capture_output=True, text=True, cwd=tmp_path, timeout=600,
            env={**os.environ, "PYTHONPATH": f"{root}:{tmp_path}"},
        )  # fmt: skip

    failed = harness("cli_flows:racy", "--max-examples", "40", "--seed", "1",
                     "--json", str(tmp_path / "racy.json"))  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    data = json.loads((tmp_path / "racy.json").read_text())
    assert data["ok"] is False
    assert data["violations"][0]["check"] == "per_key_order()"
    assert data["minimal_example"]
    assert "from cli_flows import racy as flow" in data["reproduction"]

    passed = harness("cli_flows:good", "--max-examples", "6", "--producers", "2",
                     "--workers", "2", "--json", str(tmp_path / "ok.json"))  # fmt: skip
    assert passed.returncode == 0, passed.stderr
    data = json.loads((tmp_path / "ok.json").read_text())
    assert data["ok"] is True
    assert data["examples"] == 6  # shared between the two searches

    bad = harness("cli_flows:good", "--producers", "0")
    assert bad.returncode == 2
    assert "--producers" in bad.stderr

    usage = harness("cli_flows:missing")
    assert usage.returncode == 2
    assert "cli_flows has no 'missing': its flows are good, racy" in usage.stderr


@pytest.mark.rabbitmq
async def test_a_failure_that_does_not_repeat_on_replay_is_still_shrunk(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    # Hypothesis replays a failure before shrinking it and used to give up on
    # shrinking when the replay passed (as a rare race's replay often does).
    armed = [True]

    @contextlib.asynccontextmanager
    async def loses_a_message_once(endpoints: Endpoints) -> AsyncIterator[None]:
        connection = await aio_pika.connect(endpoints.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(endpoints.input)

            async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                if armed[0] and message.body:  # the first non-empty one is lost
                    armed[0] = False
                else:
                    answer = aio_pika.Message(message.body, headers=dict(message.headers))
                    await channel.default_exchange.publish(answer, routing_key=endpoints.output)
                await message.ack()

            tag = await queue.consume(handle)
            yield
            await queue.cancel(tag)

    flow = Flow(
        sut=loses_a_message_once,
        broker="rabbitmq",
        checks=[checks.no_loss()],
        messages=hs.messages(min_size=2, max_size=2),
    )
    seen: list[Example] = []
    report = await fuzz(
        flow, max_examples=20, seed=0, broker=rabbitmq_broker, database=None, report_dir=tmp_path,
        progress=seen.append, shrink_tries=1, shrink_seconds=5, reruns=2,
    )  # fmt: skip
    assert not report.ok
    assert not report.flaky
    [first] = [e.schedule for e in seen if not e.ok]
    candidates = [e for e in seen if e.phase == "shrink"]
    assert any(e.schedule != first for e in candidates), "shrinking stopped at the replay"
    assert all(e.ok for e in candidates)  # it never failed again
    assert report.reruns == [False, False]
