"""A Kafka service with its own topic names runs as it is: the flow names them, runs rename them.

The fulfilment worker (tests/integration/services/kafka_fulfilment.py) reads
its topics from environment variables that default to fixed names: two
inputs, two outputs (an order is answered on both: fan-out across topics)
and a dead-letter topic. ``Flow(topology=...)`` names them, with the
partitions and configs of its own; each run creates them under names unique
to it, hands those over through ``env`` templates, and deletes them after.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from message_flow_harness import (
    BrokerInfo,
    Endpoints,
    Flow,
    Message,
    Topic,
    Topology,
    by_json_field,
    checks,
    fuzz,
    strategies,
)
from message_flow_harness._fuzz import Example
from message_flow_harness._history import Kind
from message_flow_harness._isolation import Isolation
from message_flow_harness.brokers.kafka import KafkaAdapter
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.schedule import Crash, Publish
from tests.doc_pages import page_namespace
from tests.integration.services.kafka_fulfilment import FulfilmentSettings, FulfilmentWorker

pytestmark = [pytest.mark.asyncio, pytest.mark.kafka]

PAGE = Path(__file__).resolve().parents[3] / "docs" / "pages" / "how-to" / "wire-your-service.md"

# --- the glue: the flow -----------------------------------------------------------------

TOPICS = Topology(
    input=[Topic("orders", partitions=3, config={"retention.ms": "3600000"}), "payments"],
    output=["shipments", "invoices"],
    dead_letter=Topic("fulfilment.dlq", config={"cleanup.policy": "delete"}),
)
ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "{bootstrap_servers}",
    "FULFILMENT_GROUP": "{group_id}",
    "ORDERS_TOPIC": "{names[orders]}",
    "PAYMENTS_TOPIC": "{names[payments]}",
    "SHIPMENTS_TOPIC": "{names[shipments]}",
    "INVOICES_TOPIC": "{names[invoices]}",
    "DEAD_LETTER_TOPIC": "{names[fulfilment.dlq]}",
}


def fulfilment(endpoints: Endpoints) -> FulfilmentWorker:
    return FulfilmentWorker(FulfilmentSettings.from_env())


def fulfilment_committing_payments_first(endpoints: Endpoints) -> FulfilmentWorker:
    return FulfilmentWorker(FulfilmentSettings.from_env(), commit_payments_first=True)


def order(order_id: int, items: int = 1) -> Message:
    body = {"order_id": f"o-{order_id}", "items": items}
    return Message(json.dumps(body).encode(), key=f"o-{order_id}".encode(), to="orders")


def payment(order_id: int, amount: str = "9.90") -> Message:
    body = {"order_id": f"o-{order_id}", "amount": amount}
    return Message(json.dumps(body).encode(), key=f"o-{order_id}".encode(), to="payments")


def refused(message: Message) -> bool:
    """What the worker cannot take: not JSON, an order of no items, a payment of nothing."""
    try:
        body = json.loads(message.value)
        return int(body.get("items", 1)) < 1 or float(body.get("amount", 1)) <= 0
    except ValueError:
        return True


def _numbered(drawn: list[Message]) -> list[Message]:
    """Each drawn message as an order or payment of its own order id (the draw picks the input)."""
    return [
        (order if message.to == "orders" else payment)(number, *_shape(message))
        for number, message in enumerate(drawn)
    ]


def _shape(message: Message) -> tuple[int] | tuple[str]:
    good = message.value != strategies.POISON
    return (1 if good else 0,) if message.to == "orders" else ("9.90" if good else "-1",)


# Orders and payments mixed, some refused (dead-lettered): the draw shrinks to all orders.
mixed = strategies.messages(
    inputs=["orders", "payments"], values=strategies.values(poison=True), max_size=8
).map(_numbered)


def fulfilment_flow(sut: object = fulfilment, **options: object) -> Flow:
    return Flow(
        sut=sut,  # type: ignore[arg-type]
        broker="kafka",
        topology=TOPICS,
        env=ENV,
        correlate=by_json_field("order_id"),
        messages=mixed,
        **options,  # type: ignore[arg-type]
    )


async def leftovers(adapter: KafkaAdapter) -> tuple[list[str], list[str]]:
    """Run topics and consumer groups still on the broker."""
    return await adapter.list_destinations("h-"), await adapter.list_groups("h-")


# --- the tests ---------------------------------------------------------------------------


async def test_each_run_creates_the_topics_under_names_of_its_own(adapter: KafkaAdapter) -> None:
    async with Isolation(adapter, 1) as isolation:
        fresh = await isolation.take(TOPICS)
        names = fresh.endpoints.names
        assert sorted(names) == sorted(
            ["orders", "payments", "shipments", "invoices", "fulfilment.dlq"]
        )
        assert all(run == f"h-{fresh.run_id}-{name}" for name, run in names.items())
        assert fresh.endpoints.input == names["orders"]
        assert fresh.endpoints.dead_letter == names["fulfilment.dlq"]
        admin = AIOKafkaAdminClient(bootstrap_servers=adapter.info.url)
        await admin.start()
        try:
            described = await admin.describe_topics([names["orders"], names["payments"]])
            partitions = {t["topic"]: len(t["partitions"]) for t in described}
            assert partitions == {names["orders"]: 3, names["payments"]: 1}
            [configs] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, names["orders"])]
            )
            entries = {entry[0]: entry[1] for entry in configs.resources[0][4]}
            assert entries["retention.ms"] == "3600000"
        finally:
            await admin.close()
        await isolation.give_back(fresh.endpoints)
    assert await leftovers(adapter) == ([], [])


async def test_the_worker_ships_invoices_and_dead_letters_under_its_own_names(
    flow_check: FlowCheck, adapter: KafkaAdapter
) -> None:
    flow = fulfilment_flow(
        checks=[
            checks.no_loss(),
            checks.no_duplicates(),
            checks.no_unexpected(),
            checks.per_key_order(),
            checks.dead_lettered(when=refused),
        ]
    )
    messages = [order(1, 2), payment(2), order(3, 0), Message(b"not json", to="payments")]
    messages += [order(4), payment(5, "-1"), payment(6)]
    result = await flow_check(flow, messages)
    names = result.endpoints.names
    published = {e.harness_id: e.destination for e in result.history.of(Kind.PUBLISHED)}
    assert sorted(set(published.values())) == sorted([names["orders"], names["payments"]])
    outputs = [(e.detail, e.destination) for e in result.history.of(Kind.OUTPUT)]
    # Two orders answered on both outputs (fan-out, no duplicate), two payments on invoices.
    assert sorted(outputs) == sorted(
        [("shipments", names["shipments"])] * 2 + [("invoices", names["invoices"])] * 4
    ), result.report()
    dead = result.history.of(Kind.DEAD_LETTERED)
    assert {e.destination for e in dead} == {names["fulfilment.dlq"]}
    assert len(dead) == 3, result.report()
    assert await leftovers(adapter) == ([], [])


async def test_a_crash_campaign_on_the_worker_ends_with_a_verdict_and_a_json_report(
    kafka_broker: BrokerInfo, adapter: KafkaAdapter, tmp_path: Path
) -> None:
    flow = fulfilment_flow(checks=[checks.no_loss()], quiet=1.5)
    examples: list[Example] = []
    report = await fuzz(
        flow, max_examples=12, seed=3, faults=["crash"], broker=kafka_broker,
        database=None, report_dir=tmp_path, progress=examples.append,
    )  # fmt: skip
    assert report.ok, report.summary()
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is True
    crashed = [e for e in examples if any(isinstance(s, Crash) for s in e.schedule)]
    assert crashed, [e.schedule for e in examples]
    inputs = {s.message.to for e in examples for s in e.schedule if isinstance(s, Publish)}
    assert inputs == {"orders", "payments"}  # the strategy mixes the inputs
    assert await leftovers(adapter) == ([], [])


async def test_a_crash_campaign_finds_the_worker_that_commits_payments_first(
    kafka_broker: BrokerInfo, adapter: KafkaAdapter, tmp_path: Path
) -> None:
    flow = fulfilment_flow(fulfilment_committing_payments_first, checks=[checks.no_loss()])
    report = await fuzz(
        flow, max_examples=60, seed=2, faults=["crash"], broker=kafka_broker,
        database=None, report_dir=tmp_path, shrink_seconds=60,
    )  # fmt: skip
    assert not report.ok, report.summary()
    minimal = report.minimal
    assert minimal is not None
    assert any(isinstance(step, Crash) for step in minimal.schedule)
    lost = [a for v in minimal.failures() for a in v.anomalies if a.kind == "lost"]
    assert lost, report.summary()
    published = {e.harness_id: e.destination for e in minimal.history.of(Kind.PUBLISHED)}
    payments = minimal.endpoints.names["payments"]
    assert all(published[i] == payments for a in lost for i in a.harness_ids)
    # The pasted test names the input of each message, the HTML report each topic.
    assert "to='payments'" in report.reproduction()
    assert report.report_path is not None
    assert payments in report.report_path.read_text()
    assert await leftovers(adapter) == ([], [])


async def test_the_pages_fulfilment_worker_runs_with_topics_of_its_own(
    flow_check: FlowCheck, adapter: KafkaAdapter
) -> None:
    namespace = page_namespace(PAGE)
    flow = dataclasses.replace(
        namespace["fulfilment_flow"], checks=[checks.no_loss(), checks.no_duplicates()]
    )
    no_items = Message(b'{"order_id": "o-9"}', to="orders")  # dead-lettered, key and all
    messages = [order(1), namespace["first_payment"], no_items]
    result = await flow_check(flow, messages)
    kinds = sorted(str(e.detail) for e in result.history.of(Kind.OUTPUT))
    assert kinds == ["invoices", "invoices", "shipments"], result.report()
    assert len(result.history.of(Kind.DEAD_LETTERED)) == 1, result.report()
    assert await leftovers(adapter) == ([], [])
