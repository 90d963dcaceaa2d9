"""A search thread never outlives a cancelled campaign: it stops waiting once the loop is gone."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from message_flow_harness._flow import RunResult
from message_flow_harness._fuzz import Campaign, _Stopped


def _campaign_on(loop: asyncio.AbstractEventLoop, *, stopped: bool) -> Campaign:
    campaign = object.__new__(Campaign)  # only what _outcome reads
    campaign.stop = threading.Event()
    campaign.loop = loop
    if stopped:
        campaign.stop.set()
    return campaign


def test_a_run_submitted_as_ctrl_c_ended_the_loop_stops_the_thread() -> None:
    """Its future never resolves: waiting it out would hold the process's exit for minutes."""
    loop = asyncio.new_event_loop()  # not running: the campaign's asyncio.run is over
    try:
        future: Future[RunResult] = Future()
        with pytest.raises(_Stopped):
            _campaign_on(loop, stopped=True)._outcome(future, within=120)
        assert future.cancelled()
    finally:
        loop.close()


def test_a_run_s_own_timeout_error_is_its_outcome() -> None:
    loop = asyncio.new_event_loop()
    try:
        future: Future[RunResult] = Future()
        future.set_exception(TimeoutError("the service's own"))
        with pytest.raises(TimeoutError, match="the service's own"):
            _campaign_on(loop, stopped=False)._outcome(future, within=120)
    finally:
        loop.close()


def test_a_running_campaign_waits_for_the_run_however_many_slices_it_takes() -> None:
    loop = asyncio.new_event_loop()
    try:
        future: Future[RunResult] = Future()
        sentinel = object.__new__(RunResult)
        threading.Timer(0.6, future.set_result, [sentinel]).start()  # a few slices later
        assert _campaign_on(loop, stopped=False)._outcome(future, within=120) is sentinel
    finally:
        loop.close()
