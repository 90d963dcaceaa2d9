"""Isolation's cleanup never hides what ended the block, and reports what it left behind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from message_flow_harness import BrokerInfo, DestinationSpec
from message_flow_harness._errors import BrokerUnavailable, DestinationError
from message_flow_harness._isolation import Isolation

pytestmark = pytest.mark.asyncio


class _LostBroker:
    """Creates fine until ``lost`` is set; then every deletion fails, as with a dead broker."""

    info = BrokerInfo(kind="kafka", url="127.0.0.1:9", provider="given")

    def __init__(self) -> None:
        self.lost = False
        self.deleted: list[str] = []

    async def create_all(self, specs: Sequence[DestinationSpec]) -> None:
        return None

    async def forget_group(self, group_id: str) -> None:
        return None

    async def delete_all(self, names: Sequence[str]) -> None:
        if self.lost:
            raise BrokerUnavailable("the broker is gone")
        self.deleted.extend(names)


async def _lose_the_broker_mid_campaign(adapter: _LostBroker, *, ahead: int, fail: bool) -> None:
    """Take a run's destinations, let the spares be made, lose the broker, maybe fail."""
    async with Isolation(adapter, 1, ahead=ahead) as isolation:  # type: ignore[arg-type]
        await isolation.take()
        await asyncio.sleep(0.01)  # the spares are made meanwhile
        adapter.lost = True
        if fail:
            raise RuntimeError("the run failed")


async def test_a_failed_cleanup_is_a_note_on_the_error_that_ended_the_block() -> None:
    with pytest.raises(RuntimeError, match="the run failed") as raised:
        await _lose_the_broker_mid_campaign(_LostBroker(), ahead=2, fail=True)
    # The taken one and the two spares: none could be deleted, and the error says so.
    assert any("3 run(s) could not delete" in note for note in raised.value.__notes__)


async def test_a_failed_cleanup_after_a_clean_block_is_an_error() -> None:
    with pytest.raises(DestinationError, match=r"2 run\(s\) could not delete their destinations"):
        await _lose_the_broker_mid_campaign(_LostBroker(), ahead=1, fail=False)


async def test_the_spares_and_what_was_kept_are_deleted_on_exit() -> None:
    adapter = _LostBroker()
    async with Isolation(adapter, 1, ahead=2) as isolation:  # type: ignore[arg-type]
        kept = await isolation.take()
        await asyncio.sleep(0.01)  # the two spares are made meanwhile
    assert kept.endpoints.input in adapter.deleted
    assert len(adapter.deleted) == 3 * 3  # three runs' worth of three destinations
