"""Isolation on real brokers: fresh destinations per run, created ahead, deleted behind.

Names are checked one by one (not by counting a prefix), so other runs on the
same broker cannot disturb these tests.
"""

from __future__ import annotations

import asyncio

import pytest

from message_flow_harness import BrokerAdapter, BrokerInfo, Flow, brokers, checks
from message_flow_harness._fuzz import fuzz
from message_flow_harness._isolation import Fresh, Isolation, destination_specs
from message_flow_harness._message import Endpoints
from message_flow_harness.zoo.kafka_services import kafka_correct
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_correct

pytestmark = pytest.mark.asyncio


def _names(endpoints: Endpoints) -> set[str]:
    return {spec.name for spec in destination_specs(endpoints, 1)}


async def _existing(adapter: BrokerAdapter, fresh: list[Fresh]) -> set[str]:
    wanted = set().union(*(_names(f.endpoints) for f in fresh))
    return wanted & set(await adapter.list_destinations("h-"))


async def _groups(adapter: BrokerAdapter, fresh: list[Fresh]) -> set[str]:
    wanted = {f.endpoints.group_id for f in fresh if f.endpoints.group_id is not None}
    return wanted & set(await adapter.list_groups("h-"))


async def test_inline_isolation_creates_on_take_and_deletes_on_give_back(
    any_adapter: BrokerAdapter,
) -> None:
    isolation = Isolation(any_adapter, 1)
    fresh = await isolation.take()
    assert await _existing(any_adapter, [fresh]) == _names(fresh.endpoints)
    assert fresh.endpoints.input.startswith(f"h-{fresh.run_id}")
    await isolation.give_back(fresh.endpoints)
    assert await _existing(any_adapter, [fresh]) == set()


async def test_ahead_isolation_keeps_spares_and_leaves_nothing_on_exit(
    any_adapter: BrokerAdapter,
) -> None:
    taken: list[Fresh] = []
    async with Isolation(any_adapter, 1, ahead=2) as isolation:
        for _ in range(3):
            fresh = await isolation.take()
            taken.append(fresh)
            assert await _existing(any_adapter, [fresh]) == _names(fresh.endpoints)
            await isolation.give_back(fresh.endpoints)
        assert len({f.run_id for f in taken}) == 3, "every run gets its own destinations"
        kept = await isolation.take()  # one made ahead, ready at once; not given back
        taken.append(kept)
        assert await _existing(any_adapter, [kept]) == _names(kept.endpoints)
    # Leaving waits for the deletions behind and removes the spares made ahead
    # and what was taken but not given back.
    assert await _existing(any_adapter, taken) == set()


async def test_a_cancel_while_taking_leaves_nothing(any_adapter: BrokerAdapter) -> None:
    made: list[Fresh] = []
    for delay in (0.0, 0.005, 0.02):
        async with Isolation(any_adapter, 1, ahead=2) as isolation:
            made.append(await isolation.take())
            task = asyncio.create_task(isolation.take())
            await asyncio.sleep(delay)
            task.cancel()
            outcome = await asyncio.gather(task, return_exceptions=True)
            if isinstance(outcome[0], Fresh):
                made.append(outcome[0])
                await isolation.give_back(outcome[0].endpoints)
    assert await _existing(any_adapter, made) == set()


@pytest.mark.parametrize(
    ("kind", "service"),
    [
        pytest.param("kafka", kafka_correct, marks=pytest.mark.kafka, id="kafka"),
        pytest.param("rabbitmq", rabbitmq_correct, marks=pytest.mark.rabbitmq, id="rabbitmq"),
    ],
)
async def test_a_fuzz_campaign_leaves_no_destination_or_group(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, kind: str, service: object
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{kind}_broker")
    taken: list[Fresh] = []
    take = Isolation.take

    async def spy(self: Isolation) -> Fresh:
        fresh = await take(self)
        taken.append(fresh)
        return fresh

    monkeypatch.setattr(Isolation, "take", spy)
    flow = Flow(sut=service, broker=info.kind, checks=[checks.no_loss()])  # type: ignore[arg-type]
    report = await fuzz(flow, max_examples=8, seed=1, broker=info, database=None, report_dir=None)
    assert report.ok, report.summary()
    assert report.examples == 8
    # One more may have been taken: the run entered for an example that never came.
    assert 8 <= len(taken) <= 9
    async with brokers.adapter(info) as adapter:
        assert await _existing(adapter, taken) == set()
        assert await _groups(adapter, taken) == set()
