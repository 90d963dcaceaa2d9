"""Latency bounds under faults, on a real Kafka: a crash's recovery is judged apart.

A crashed consumer's group waits out its session (1 s for the zoo's services)
before the restarted instance consumes again, so inputs in flight then are late
on a correct service. ``within`` leaves them out (or gives them a bound of their
own) and still judges every other input: a slow path on ordinary inputs is found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from hypothesis import strategies as st

from message_flow_harness import BrokerInfo, Endpoints, Flow, History, Message, checks, fuzz
from message_flow_harness._message import BrokerKind
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.schedule import Crash, Pause, Publish, Restart, Settle
from message_flow_harness.zoo.kafka_services import _consuming, kafka_correct
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_correct

pytestmark = pytest.mark.asyncio


# --- a pricing service with a slow path ---------------------------------------------------


@dataclass(frozen=True)
class PricingSettings:
    """What the service reads from its environment, as deployed."""

    unit_price_cents: int = int(os.environ.get("PRICING_UNIT_PRICE_CENTS", "250"))
    # Bulk orders ask the (slow) warehouse for a quote: this long per order.
    bulk_quote_seconds: float = float(os.environ.get("PRICING_BULK_QUOTE_SECONDS", "0.8"))
    bulk_from_items: int = int(os.environ.get("PRICING_BULK_FROM_ITEMS", "100"))


async def _warehouse_quote(items: int, settings: PricingSettings) -> int:
    """The warehouse's quote for a bulk order: a slow call to another service."""
    await asyncio.sleep(settings.bulk_quote_seconds)
    return items * settings.unit_price_cents * 9 // 10


async def price(order: dict[str, object], settings: PricingSettings) -> dict[str, object]:
    items = int(str(order["items"]))
    if items >= settings.bulk_from_items:
        total = await _warehouse_quote(items, settings)
    else:
        total = items * settings.unit_price_cents
    return {"order": order["order"], "total_cents": total}


@contextlib.asynccontextmanager
async def pricing_service(endpoints: Endpoints) -> AsyncIterator[None]:
    """Prices each order (JSON) and produces the priced order, then commits the batch."""
    settings = PricingSettings()

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        sent = []
        for record in records:
            priced = await price(json.loads(record.value), settings)
            body = json.dumps(priced).encode()
            sent.append(
                await producer.send(
                    endpoints.output, body, key=record.key, headers=list(record.headers)
                )
            )
        for delivery in sent:
            await delivery
        await consumer.commit()

    async with _consuming(endpoints, handle):
        yield


def order(number: int, items: int) -> Message:
    body = json.dumps({"order": f"o-{number}", "items": items}).encode()
    return Message(key=f"customer-{number % 3}".encode(), value=body)


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.kafka
async def test_a_crash_is_late_by_its_recovery_and_within_leaves_it_out(
    flow_check: FlowCheck,
) -> None:
    """Inputs published while the service is down are over any sub-second bound; the same run
    passes ``within(0.5)``, and saying so counts them."""
    schedule = [
        *(Publish(order(n, 1)) for n in range(3)),
        Settle(),
        Crash(),
        *(Publish(order(n, 1)) for n in range(3, 6)),
        Pause(0.6),
        Restart(),
        Settle(),
        *(Publish(order(n, 1)) for n in range(6, 9)),
    ]
    judged_apart = checks.within(0.5)
    judged_alike = checks.within(0.5, under_faults=0.5)
    flow = Flow(sut=kafka_correct, broker="kafka", checks=[judged_apart, judged_alike], quiet=2.0)
    result = await flow_check.run(flow, schedule)
    apart, alike = result.verdicts
    assert apart.ok, result.report()
    assert "3 inputs touched by faults not judged" in apart.summary
    late = {a.harness_ids[0] for a in alike.anomalies}
    published = list(result.history.inputs())
    assert late >= set(published[3:6]), result.report()  # the ones the crash held up
    assert all("in flight during crash of sut0" in a.text for a in alike.anomalies)


@pytest.mark.kafka
async def test_a_slow_path_on_an_ordinary_input_is_found_after_a_crash(
    flow_check: FlowCheck,
) -> None:
    schedule = [
        Publish(order(1, 2)),
        Settle(),
        Crash(),
        Publish(order(2, 3)),
        Restart(),
        Settle(),
        Publish(order(3, 500)),  # a bulk order, long after the recovery
        Publish(order(4, 1)),
    ]
    flow = Flow(sut=pricing_service, broker="kafka", checks=[checks.within(0.5)], quiet=2.0)
    result = await flow_check.run(flow, schedule)
    [verdict] = result.verdicts
    bulk = list(result.history.inputs())[2]
    assert bulk in {a.harness_ids[0] for a in verdict.anomalies}, result.report()
    assert all("no fault touched it" in a.text for a in verdict.anomalies)


@pytest.mark.parametrize(
    ("kind", "service"),
    [
        pytest.param("kafka", kafka_correct, marks=pytest.mark.kafka, id="kafka"),
        pytest.param("rabbitmq", rabbitmq_correct, marks=pytest.mark.rabbitmq, id="rabbitmq"),
    ],
)
async def test_a_crash_campaign_passes_a_correct_service_with_a_latency_bound(
    request: pytest.FixtureRequest,
    kind: BrokerKind,
    service: Callable[[Endpoints], contextlib.AbstractAsyncContextManager[None]],
    tmp_path: Path,
) -> None:
    broker: BrokerInfo = request.getfixturevalue(f"{kind}_broker")
    summaries: list[str] = []
    bound = checks.within(0.5)
    naive = checks.within(0.5, under_faults=0.5)  # every input judged alike, as before
    naive_late: list[str] = []

    def watched(history: History) -> checks.Verdict:
        verdict = bound(history)
        summaries.append(verdict.summary)
        naive_late.extend(a.text for a in naive(history).anomalies)
        return verdict

    flow = Flow(
        sut=service,
        broker=kind,
        checks=[checks.no_loss(), checks.Check(bound.name, watched)],
        quiet=2.0,
    )
    report = await fuzz(
        flow, max_examples=8, seed=5, faults=["crash"], broker=broker, database=None,
        report_dir=tmp_path,
    )  # fmt: skip
    assert report.ok, report.summary()
    assert any("touched by faults not judged" in s for s in summaries), summaries
    # The campaign's crashes made inputs late: judged alike, a correct service would fail.
    if kind == "kafka":  # a RabbitMQ crash returns its unacked messages at once
        assert any("in flight during crash of sut0" in text for text in naive_late), summaries


@pytest.mark.kafka
async def test_a_crash_campaign_finds_the_slow_path(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    orders = st.builds(order, st.integers(1, 999), st.sampled_from([1, 2, 5, 500]))
    flow = Flow(
        sut=pricing_service,
        broker="kafka",
        checks=[checks.no_loss(), checks.within(0.5)],
        messages=st.lists(orders, min_size=1, max_size=6),
        quiet=2.0,
    )
    report = await fuzz(
        flow, max_examples=20, seed=5, faults=["crash"], broker=kafka_broker, database=None,
        report_dir=tmp_path, shrink_seconds=30, shrink_tries=1, reruns=1,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert "late" in report.summary()
    assert report.minimal is not None
    published = [s.message for s in report.minimal.schedule if isinstance(s, Publish)]
    assert any(json.loads(m.value)["items"] == 500 for m in published), report.summary()
