"""After steps: a fault that lands right at an event the history records.

A timed fault hits a race between "commit or ack" and "publish the output"
only when a drawn pause happens to end inside a window of milliseconds. The
probes record those instants live, so an :class:`After` step arms a trigger
on the history instead: when the event is recorded (inside the probe, inside
the service's own call) the trigger carries out the following fault's first
instant at once (a crash's cut of every connection, a cut, a latency), before
the service's next instruction, and the schedule goes on from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from message_flow_harness._drivers import driver
from message_flow_harness._flow import Flow
from message_flow_harness._history import Event, History, Kind
from message_flow_harness._schedule import After

_KINDS = {
    "delivered": Kind.DELIVERED,
    "committed": Kind.COMMITTED,
    "acked": Kind.ACKED,
    "sent": Kind.SENT,
    "output": Kind.OUTPUT,
}


class Trigger:
    """Armed on ``history`` until the event ``step`` waits for is recorded (or it is disarmed)."""

    def __init__(
        self, step: After, history: History, lane_prefix: str, at_once: Callable[[], None] | None
    ) -> None:
        self.step = step
        self._kind = _KINDS[step.event]
        # Outputs are the broker's (the tap's), not one instance's: any will do.
        self._prefix = None if self._kind is Kind.OUTPUT else lane_prefix
        self._history = history
        self._at_once = at_once
        self._fired: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._error: Exception | None = None
        history.on_event = self._on_event
        history.awaited = self._kind

    def _on_event(self, event: Event) -> None:
        if event.kind is not self._kind:
            return
        if self._prefix is not None and not (event.lane or "").startswith(self._prefix):
            return
        self.disarm()
        if self._at_once is not None:
            try:
                self._at_once()
            except Exception as exc:  # never into the service's call: raised by wait()
                self._error = exc
        self._fired.set_result(event)

    @property
    def fired_at_once(self) -> bool:
        """Whether the event came and the next step's first instant was carried out with it."""
        return self._fired.done() and self._at_once is not None

    def disarm(self) -> None:
        if self._history.on_event == self._on_event:
            self._history.on_event = None
            self._history.awaited = None

    async def wait(self, bound: float) -> bool:
        """Whether the event came within ``bound`` seconds; disarmed either way."""
        try:
            async with asyncio.timeout(max(bound, 0.0)):
                await asyncio.shield(self._fired)
        except TimeoutError:
            return False
        finally:
            self.disarm()
        if self._error is not None:
            raise self._error
        return True


def events_seen(flow: Flow) -> tuple[str, ...]:
    """What After steps of ``flow``'s schedules can wait for: its probes' events, and outputs."""
    if getattr(flow.sut, "in_process", True) is False:  # a process: no probe sees inside it
        return ("output",)
    return driver(flow.broker).trigger_events
