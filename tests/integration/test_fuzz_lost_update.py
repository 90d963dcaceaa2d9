"""The fuzzer finds a lost update with a check of one's own, and the locked service passes.

The services keep per-key running totals in a shared store (harness/zoo/totals.py):
the racy one read-modify-writes a key from concurrent handlers, the correct one
locks per key. No inputs are written by hand: ``amounts()`` generates deposits,
and ``totals_add_up()`` (a user-defined check) reads the totals the outputs report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, Flow, checks, fuzz
from message_flow_harness.schedule import Publish
from message_flow_harness.zoo import SERVICES
from message_flow_harness.zoo.totals import amounts, totals_add_up

pytestmark = pytest.mark.asyncio

CHECKS = [checks.no_loss(), totals_add_up()]


def by_broker() -> list[object]:
    return [
        pytest.param("kafka", marks=pytest.mark.kafka, id="kafka"),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq, id="rabbitmq"),
    ]


def flow_of(service: str, info: BrokerInfo) -> Flow:
    return Flow(
        sut=SERVICES[service], broker=info.kind, checks=CHECKS, messages=amounts(), quiet=1.0
    )


@pytest.mark.parametrize("broker", by_broker())
async def test_fuzz_finds_a_lost_update_and_the_lock_clears_it(
    request: pytest.FixtureRequest, broker: str, tmp_path: Path
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{broker}_broker")
    options = {"broker": info, "database": None, "report_dir": tmp_path, "seed": 1}
    found = await fuzz(
        flow_of(f"{broker}_lost_update", info),
        max_examples=200,
        shrink_seconds=30,
        **options,  # type: ignore[arg-type]
    )
    assert not found.ok, found.summary()
    assert found.minimal is not None
    minimal = [s.message for s in found.minimal.schedule if isinstance(s, Publish)]
    # The least the defect needs: two deposits to one key, handled at once. Timing
    # decides whether they overlap, so shrinking may keep one more message that helps.
    assert 2 <= len(minimal) <= 3, found.summary()
    assert any(sum(m.key == other.key for other in minimal) >= 2 for m in minimal), found.summary()
    assert "lost-update" in found.summary()
    assert "updates lost" in found.summary()
    assert len(found.reruns) == 5  # how often it repeats depends on timing: reported

    # The same campaign (fewer examples) on the service that locks per key.
    cleared = await fuzz(flow_of(f"{broker}_locked_totals", info), max_examples=15, **options)  # type: ignore[arg-type]
    assert cleared.ok, cleared.summary()
    assert cleared.examples == 15
