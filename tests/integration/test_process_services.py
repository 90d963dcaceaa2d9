"""Services run as their own OS process (``process(...)``) on the real brokers.

A Python worker on another client (confluent-kafka), and a consumer that is
not Python at all (Go, on amqp091-go): each told the run's endpoints through
environment variables of its own naming, crashed by SIGKILL, restarted as a
new process, seen by the harness through the broker alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import strategies as st

from message_flow_harness import BrokerInfo, Flow, Message, checks, fuzz, process
from message_flow_harness import strategies as hs
from message_flow_harness.schedule import Crash

pytestmark = pytest.mark.asyncio

SERVICES = Path(__file__).parent / "services"
# Orders as the field sends them: JSON with an id, and now and then something that is not.
ORDERS = hs.messages(
    keys=hs.keys(2),
    values=st.one_of(
        st.integers(0, 999).map(lambda n: json.dumps({"id": n}).encode()),
        st.just(b"not json"),
    ),
    max_size=6,
)


def is_bad(message: Message) -> bool:
    try:
        json.loads(message.value)["id"]
    except (ValueError, KeyError, TypeError):
        return True
    return False


AT_LEAST_ONCE = [
    checks.delivery("at-least-once"),
    checks.per_key_order(),
    checks.dead_lettered(when=is_bad),
]


def confluent_orders(script: str = "confluent_orders.py") -> Flow:
    worker = process(
        [sys.executable, SERVICES / script],
        env={
            "ORDERS_BOOTSTRAP": "{bootstrap_servers}",
            "ORDERS_IN": "{input}",
            "ORDERS_OUT": "{output}",
            "ORDERS_DLQ": "{dead_letter}",
            "ORDERS_GROUP": "{group_id}",
        },
        ready=r"partitions assigned: \S+\[0\]@\d+",
    )
    return Flow(sut=worker, broker="kafka", checks=AT_LEAST_ONCE, messages=ORDERS, quiet=3.0)


@pytest.mark.kafka
async def test_a_confluent_kafka_worker_keeps_the_contract(flow_check: object) -> None:
    orders = [
        Message(key=b"customer-1", value=b'{"id": 1}'),
        Message(key=b"customer-1", value=b"not json"),
        Message(key=b"customer-1", value=b'{"id": 2}'),
    ]
    result = await flow_check(confluent_orders(), orders)  # type: ignore[operator]
    outputs = [e for e in result.history.events if e.kind.name == "OUTPUT"]
    assert sorted(json.loads(e.message.value)["order"] for e in outputs) == [1, 2]
    lines = [entry.message for entry in result.history.logs if entry.logger == "sut0.stderr"]
    assert any("dead-lettering offset 1" in line for line in lines), lines


@pytest.mark.kafka
async def test_a_confluent_kafka_worker_passes_a_crash_campaign(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    report = await fuzz(
        confluent_orders(), max_examples=6, seed=11, faults=["crash"], broker=kafka_broker,
        database=None, report_dir=tmp_path,
    )  # fmt: skip
    assert report.ok, report.summary()
    assert report.examples == 6


@pytest.mark.kafka
async def test_a_crash_campaign_finds_the_commit_before_produce(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    report = await fuzz(
        confluent_orders("confluent_orders_hasty.py"), max_examples=30, seed=5,
        faults=["crash"], broker=kafka_broker, database=None, report_dir=tmp_path,
        shrink_seconds=20, reruns=2,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert report.minimal is not None
    assert any(isinstance(step, Crash) for step in report.minimal.schedule)
    assert "lost" in report.summary()
