"""A builder of hand-made histories for unit tests of the history model and the checks.

Every event gets an explicit time (``at=`` in ms from the start of the run, or
one ``step_ms`` after the previous event), so the texts checks write are
deterministic::

    history = (
        Script()
        .publish("a", key=b"k", at=0)
        .output("a", at=5)
        .crash()
        .deliver("a", redelivered=True)
        .build()
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from message_flow_harness._history import Event, History, Kind
from message_flow_harness._message import HARNESS_ID_HEADER, Message

MS = 1_000_000  # ns per ms


class Script:
    """Appends events one call at a time; ``build()`` makes the history."""

    def __init__(
        self,
        *,
        started_ns: int = 0,
        step_ms: float = 1.0,
        input: str = "in",
        output: str = "out",
        dead_letter: str = "dlq",
    ) -> None:
        self.started_ns = started_ns
        self.step_ns = round(step_ms * MS)
        self.input = input
        self.output_name = output
        self.dead_letter_name = dead_letter
        self.events: list[Event] = []
        self.published: dict[str, Event] = {}
        self._now_ns = started_ns

    # --- time -------------------------------------------------------------------

    def _stamp(self, at: float | None) -> int:
        self._now_ns = (
            self._now_ns + self.step_ns if at is None else self.started_ns + round(at * MS)
        )
        return self._now_ns

    def event(self, kind: Kind, *, at: float | None = None, **details: Any) -> Self:
        """Any event; ``source`` defaults to ``"script"``."""
        details.setdefault("source", "script")
        self.events.append(Event(kind=kind, at_ns=self._stamp(at), **details))
        return self

    # --- what the harness does ------------------------------------------------------

    def publish(
        self,
        harness_id: str | None,
        *,
        key: bytes | None = None,
        value: bytes = b"",
        headers: Mapping[str, bytes] | None = None,
        destination: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        producer: int = 0,
        at: float | None = None,
    ) -> Self:
        """The harness publishes an input stamped with ``harness_id`` (None: unstamped).

        Publishes of one burst share their ``at``; ``producer`` > 0 is the lane
        of a concurrent producer, as the runner records it.
        """
        stamped = dict(headers or {})
        if harness_id is not None:
            stamped[HARNESS_ID_HEADER] = harness_id.encode()
        message = Message(value=value, key=key, headers=stamped)
        self.event(
            Kind.PUBLISHED,
            at=at,
            source="harness",
            harness_id=harness_id,
            destination=self.input if destination is None else destination,
            key=key,
            partition=partition,
            offset=offset,
            lane=f"producer{producer}" if producer else None,
            message=message,
        )
        if harness_id is not None:
            self.published.setdefault(harness_id, self.events[-1])
        return self

    def crash(self, lane: str = "c1", *, at: float | None = None) -> Self:
        """The harness kills consumer ``lane`` (a fault on the timeline)."""
        return self.event(Kind.FAULT, at=at, source="harness", lane=lane, detail=f"crash {lane}")

    def note(self, text: str, *, at: float | None = None) -> Self:
        return self.event(Kind.NOTE, at=at, source="harness", detail=text)

    def fault(self, detail: str, lane: str = "sut0", *, at: float | None = None) -> Self:
        """A fault as the harness records it: ``fault("crash")``, ``fault("latency 200 ms")``."""
        return self.event(Kind.FAULT, at=at, source="harness", lane=lane, detail=detail)

    def instance(self, detail: str, lane: str = "sut0", *, at: float | None = None) -> Self:
        """What the harness notes of an instance: ``instance("started")``, ``"stopped"``."""
        return self.event(Kind.NOTE, at=at, source="harness", lane=lane, detail=detail)

    # --- what the consumers do -------------------------------------------------------

    def _about(self, harness_id: str | None) -> dict[str, Any]:
        """Key, partition and message of the input ``harness_id``, as a consumer sees them."""
        found = None if harness_id is None else self.published.get(harness_id)
        if found is None:
            return {}
        return {"key": found.key, "partition": found.partition, "message": found.message}

    def deliver(
        self,
        harness_id: str,
        *,
        redelivered: bool = False,
        lane: str = "c1",
        source: str = "tap",
        at: float | None = None,
    ) -> Self:
        """The broker hands input ``harness_id`` to consumer ``lane``, as ``source`` saw it."""
        return self.event(
            Kind.DELIVERED,
            at=at,
            source=source,
            harness_id=harness_id,
            destination=self.input,
            lane=lane,
            redelivered=redelivered,
            **self._about(harness_id),
        )

    def ack(self, harness_id: str, *, lane: str = "c1", at: float | None = None) -> Self:
        return self.event(Kind.ACKED, at=at, source="probe", harness_id=harness_id, lane=lane)

    def nack(
        self, harness_id: str, *, requeue: bool = True, lane: str = "c1", at: float | None = None
    ) -> Self:
        return self.event(
            Kind.NACKED, at=at, source="probe", harness_id=harness_id, lane=lane, requeue=requeue
        )

    def commit(
        self, partition: int, offset: int, *, lane: str = "c1", at: float | None = None
    ) -> Self:
        return self.event(
            Kind.COMMITTED, at=at, source="probe", partition=partition, offset=offset, lane=lane
        )

    def handle(self, harness_id: str, *, lane: str = "c1", at: float | None = None) -> Self:
        """The handler runs for ``harness_id``: start, then end one step later."""
        self.event(Kind.HANDLER_START, at=at, source="probe", harness_id=harness_id, lane=lane)
        return self.event(Kind.HANDLER_END, source="probe", harness_id=harness_id, lane=lane)

    # --- what lands ------------------------------------------------------------------

    def _landed(
        self,
        kind: Kind,
        destination: str,
        harness_id: str | None,
        lane: str,
        at: float | None,
        detail: str | None = None,
    ) -> Self:
        about = self._about(harness_id)
        original: Message | None = about.pop("message", None)
        about.pop("partition", None)  # outputs land on partitions of their own
        headers = {} if harness_id is None else {HARNESS_ID_HEADER: harness_id.encode()}
        value = b"" if original is None else b"done:" + original.value
        message = Message(value=value, key=about.get("key"), headers=headers)
        return self.event(
            kind,
            at=at,
            source="tap",
            harness_id=harness_id,
            destination=destination,
            lane=lane,
            message=message,
            detail=detail,
            **about,
        )

    def output(
        self,
        harness_id: str | None,
        *,
        lane: str = "c1",
        at: float | None = None,
        on: str | None = None,
    ) -> Self:
        """A message answering ``harness_id`` (None: carrying no id) lands on the output.

        ``on`` names one output of several (a Topology's): its destination and its kind.
        """
        destination = self.output_name if on is None else on
        return self._landed(Kind.OUTPUT, destination, harness_id, lane, at, detail=on)

    def dead_letter(
        self, harness_id: str | None, *, lane: str = "c1", at: float | None = None
    ) -> Self:
        """Input ``harness_id`` (None: a message carrying no id) lands on the dead-letter queue."""
        return self._landed(Kind.DEAD_LETTERED, self.dead_letter_name, harness_id, lane, at)

    def build(self) -> History:
        return History.of_events(self.events, started_ns=self.started_ns)
