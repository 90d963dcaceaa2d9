"""A crashed member that holds its group for its 30 s session costs no finding and leaks nothing.

The service keeps its production session (30 s). By default the harness ends a
crashed member's session at once; with ``crash_keeps_session=True`` a member
killed by a crash fault holds the run's consumer group until the broker drops
it, and deleting the group fails until then. The campaign must still end with
its finding (issue 19: it used to end with exit 2, no report, and the groups
leaked).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import strategies as st

from message_flow_harness import BrokerInfo, Endpoints, Flow, Message, checks, fuzz
from message_flow_harness import strategies as hs
from message_flow_harness._history import Kind
from message_flow_harness.brokers.kafka import KafkaAdapter
from message_flow_harness.brokers.kafka import _adapter as kafka_adapter
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.schedule import After, Crash, Publish, Restart

pytestmark = pytest.mark.kafka


# --- the service, as its team wrote it ------------------------------------------------


@dataclass(frozen=True)
class PricingSettings:
    """What the pricing worker reads from its environment (PRICING_* variables)."""

    bootstrap_servers: str
    orders_topic: str
    prices_topic: str
    group_id: str
    session_timeout_ms: int = 30_000  # production's: a redeploy must not rebalance
    tax_lookup_s: float = 0.2
    close_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PricingSettings:
        return cls(
            bootstrap_servers=env["PRICING_KAFKA"],
            orders_topic=env.get("PRICING_ORDERS_TOPIC", "orders"),
            prices_topic=env.get("PRICING_PRICES_TOPIC", "prices"),
            group_id=env.get("PRICING_GROUP", "pricing"),
            session_timeout_ms=int(env.get("PRICING_SESSION_MS", "30000")),
        )


class PricingWorker:
    """Prices each order (JSON) and publishes the price, keyed and with the order's headers.

    Its defect: it commits an order's offset before publishing the price ("so a
    bad order is never retried forever"): a crash in between loses the order.
    """

    def __init__(self, settings: PricingSettings) -> None:
        self.settings = settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.session_timeout_ms // 10,
        )
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        self._loop: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PricingWorker:
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe([self.settings.orders_topic])  # joins in the background
        self._loop = asyncio.create_task(self._consume(), name="pricing: consume")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        # A deploy must not hang on a rebalance: the clients get a few seconds to close.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.close_s):
                await self._consumer.stop()
        await self._producer.stop()

    async def _consume(self) -> None:
        async for record in self._consumer:
            order = json.loads(record.value)
            partition = TopicPartition(record.topic, record.partition)
            await self._consumer.commit({partition: record.offset + 1})
            await asyncio.sleep(self.settings.tax_lookup_s)
            price = {"order_id": order["order_id"], "cents": order["quantity"] * order["unit"]}
            await self._producer.send_and_wait(
                self.settings.prices_topic,
                json.dumps(price).encode(),
                key=record.key,
                headers=list(record.headers),
            )


# --- the glue: the run's endpoints as the worker's environment ---------------------------


def pricing(endpoints: Endpoints) -> PricingWorker:
    env = {
        **os.environ,
        "PRICING_KAFKA": str(endpoints.bootstrap_servers),
        "PRICING_ORDERS_TOPIC": endpoints.input,
        "PRICING_PRICES_TOPIC": endpoints.output,
        "PRICING_GROUP": str(endpoints.group_id),
    }
    return PricingWorker(PricingSettings.from_env(env))


ORDERS = hs.messages(
    keys=hs.keys(2),
    values=st.builds(
        lambda n, quantity: json.dumps(
            {"order_id": f"o-{n}", "quantity": quantity, "unit": 250}
        ).encode(),
        st.integers(0, 999),
        st.integers(1, 5),
    ),
    max_size=4,
)

# Kept as in production (crash_keeps_session), the restarted worker waits for the
# dead member's session (30 s) before it gets the partitions, so a crash run ends
# (quiet) with the group still held.
PRICING = Flow(
    sut=pricing,
    broker="kafka",
    checks=[checks.no_loss()],
    messages=ORDERS,
    crash_keeps_session=True,
)


async def _leftovers(adapter: KafkaAdapter) -> tuple[list[str], list[str]]:
    return await adapter.list_destinations("h-"), await adapter.list_groups("h-")


@pytest.mark.asyncio
async def test_a_campaign_whose_crashed_member_holds_its_group_keeps_its_finding(
    kafka_broker: BrokerInfo, adapter: KafkaAdapter, tmp_path: Path
) -> None:
    before = await _leftovers(adapter)
    report = await fuzz(
        PRICING, max_examples=12, seed=3, faults=["crash"], broker=kafka_broker,
        database=None, report_dir=tmp_path, shrink_seconds=15, shrink_tries=1, reruns=1,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert report.minimal is not None
    assert any(isinstance(step, Crash) for step in report.minimal.schedule)
    assert "lost" in report.summary()
    assert report.errors == []  # the held groups were deleted once let go of, not reported
    assert report.history_path is not None
    assert json.loads(report.history_path.read_text())["ok"] is False
    assert await _leftovers(adapter) == before


@pytest.mark.asyncio
async def test_a_group_still_held_after_the_bound_is_reported_beside_the_finding(
    kafka_broker: BrokerInfo, adapter: KafkaAdapter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, with the wait for a held group cut to 1 s: the finding stands, the
    groups left behind are named with the command that deletes them."""
    topics, groups = await _leftovers(adapter)
    monkeypatch.setattr(kafka_adapter, "GROUP_HELD_S", 1.0)
    report = await fuzz(
        PRICING, max_examples=12, seed=3, faults=["crash"], broker=kafka_broker,
        database=None, report_dir=tmp_path, shrink_seconds=5, shrink_tries=1, reruns=0,
    )  # fmt: skip
    monkeypatch.setattr(kafka_adapter, "GROUP_HELD_S", 60.0)
    held = sorted(set(await adapter.list_groups("h-")) - set(groups))
    await asyncio.gather(*map(adapter.forget_group, held))  # the test's own cleanup
    assert held, "no crashed member held a group at the end: nothing was tested"
    assert not report.ok, report.summary()
    [error] = report.errors
    assert "still had members after 1 s" in error
    assert f"kafka-consumer-groups.sh --bootstrap-server {kafka_broker.url} --delete" in error
    assert "the harness failed after finding this (the finding stands):" in report.summary()
    assert "reproduce it with this test:" in report.summary()
    assert report.history_path is not None
    saved = json.loads(report.history_path.read_text())  # written again, with the error
    assert saved["ok"] is False
    assert saved["errors"] == [error]
    assert await _leftovers(adapter) == (topics, groups)


@pytest.mark.asyncio
async def test_a_crashed_members_session_ends_with_it_by_default(flow_check: FlowCheck) -> None:
    """The worker's 30 s session is not waited out: its restart takes the partition at once."""
    orders = [
        Message(
            key=b"c", value=json.dumps({"order_id": f"o-{n}", "quantity": 1, "unit": 9}).encode()
        )
        for n in range(2)
    ]
    flow = dataclasses.replace(PRICING, crash_keeps_session=False)
    steps = [Publish(orders[0]), After("output"), Crash(0), Restart(0), Publish(orders[1])]
    result = await flow_check(flow, steps)
    [crash] = [e for e in result.history.of(Kind.FAULT) if e.detail == "crash"]
    last = max(e.at_ns for e in result.history.of(Kind.OUTPUT))
    # Held, the second output would come after the 30 s session; a wide margin for noise.
    assert (last - crash.at_ns) / 1e9 < PricingSettings.session_timeout_ms / 2000
    notes = [e.detail for e in result.history.of(Kind.NOTE)]
    assert not [n for n in notes if "keep their group sessions" in str(n)], notes
