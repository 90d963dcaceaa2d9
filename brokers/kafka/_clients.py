"""The harness's own aiokafka clients: the largest message they carry, and stopping them safely.

Every stop is bounded and never raises (:func:`bounded`), and a consumer whose
``stop()`` broke off half-way still gets its connections closed
(:func:`stop_consumer`): aiokafka's close methods can leak a CancelledError
(aio-libs/aiokafka#647, #983), and cleanup must not hang a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from message_flow_harness.brokers.kafka._probes import finish_broken_stop

#: Largest message the local broker accepts and the adapter sends (1 MiB payloads fit easily).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: How long closing waits for TLS connections' closing handshakes (loopback: a few ms).
TLS_CLOSE_S = 0.1


async def bounded(step: Awaitable[object], within: float) -> BaseException | None:
    """Run a cleanup step for at most ``within`` seconds; return what went wrong, never raise.

    A CancelledError that is not aimed at us is returned too: aiokafka's close
    methods cancel their own tasks and await them, which can leak one out
    (aio-libs/aiokafka#647, #983).
    """
    try:
        async with asyncio.timeout(within):
            await step
    except asyncio.CancelledError as err:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        return err
    except Exception as err:
        return err
    return None


async def stop_consumer(consumer: Any, within: float) -> None:
    """Stop an aiokafka consumer, bounded, and close its connections even if stop() broke off."""
    if isinstance(await bounded(consumer.stop(), within), asyncio.CancelledError):
        # stop() broke off inside Fetcher.close(), before it closed the client.
        await bounded(finish_broken_stop(consumer), within)
