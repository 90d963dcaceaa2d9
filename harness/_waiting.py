"""Bounded waiting: awaitility-style ``eventually`` instead of fixed sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

from message_flow_harness._errors import HarnessTimeout

Condition = Callable[[], bool | Awaitable[bool]]


async def eventually(
    condition: Condition,
    *,
    within: float,
    poll: float = 0.005,
    what: str | None = None,
) -> None:
    """Return as soon as ``condition()`` is true; raise HarnessTimeout after ``within`` s.

    Polling (not an event) because the condition is usually over state that
    other tasks and broker callbacks change without telling us.
    """
    deadline = time.monotonic() + within
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            described = what or getattr(condition, "__name__", "the condition")
            raise HarnessTimeout(f"{described} did not hold within {within:g} s")
        await asyncio.sleep(poll)
