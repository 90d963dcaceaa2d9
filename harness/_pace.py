"""What a run's faults do to its pace: how long "no progress" has to last before a run ends.

A run ends once it makes no progress for ``Flow.quiet`` seconds (see
``harness._runner._await_quiescence``). That bound is the service's own pace;
faults slow it down: a latency fault stretches every round trip the service
makes, and a crashed Kafka member holds its partitions until its session
times out, so nothing of them can come out before. :class:`RunPace` keeps what
the run's faults did so far, and the wait follows it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from message_flow_harness._errors import HarnessError

#: Round trips one step of progress (a new output) may take, each under latency:
#: measured through the fault proxy at 100 and 200 ms (every chunk delayed both
#: ways, so a round trip costs twice the latency), on the zoo's Kafka services:
#: consume-produce-commit (``kafka_correct``) takes 2 round trips per output once
#: running, 6.1-6.6 for the first (metadata of the output topic, a fetch in
#: flight); transactional (``kafka_transactional``) 4.2 once running, 6.6 from
#: publish to the first output and 6.0 between two partitions' transactions
#: (AddPartitions, Produce, AddOffsets, TxnOffsetCommit, EndTxn). A recovery after
#: a cut takes more: reconnect, find the coordinator, join and sync the group, fetch
#: offsets, fetch, produce, commit (the README's service under Latency(0.2) + Cut
#: was read as lost after 10). 12 covers that.
ROUND_TRIPS_PER_STEP = 12
#: How often the group of a crashed member is asked whether it is still there.
GROUP_POLL_S = 0.2

GroupMembers = Callable[[], Awaitable[frozenset[str]]]
EndSessions = Callable[[frozenset[str]], Awaitable[None]]


@dataclass(eq=False)
class RunPace:
    """The faults of one run so far, as far as when it ends is concerned.

    ``members`` lists the members of the service's consumer group (Kafka's
    admin API); None where the broker has no groups (RabbitMQ), and then a
    crash holds nothing up. ``end_sessions`` removes members from the group
    now (None: a crashed member keeps its session, ``Flow.crash_keeps_session``).
    """

    members: GroupMembers | None = None
    end_sessions: EndSessions | None = None
    latency: float = 0.0  # the largest latency a fault set in this run, seconds
    crashed: set[str] = field(default_factory=set)  # group members of crashed instances
    left_ns: int = 0  # perf_counter_ns when the last of them was found gone
    _asked_at: float = -1.0
    _held: bool = False

    def note_latency(self, seconds: float) -> None:
        self.latency = max(self.latency, seconds)

    def note_crash(self, members: set[str]) -> None:
        """A crashed instance's group members: they hold their partitions until they expire."""
        if self.members is not None:
            self.crashed |= members

    async def end_crashed(self, *, whole_group: bool = False) -> None:
        """End the crashed members' sessions now, as their timing out would later.

        ``whole_group``: no instance runs any more, so every member the group
        lists is a crashed one's (the way to find a process's members, which no
        probe sees). Raises HarnessError if the broker cannot do it: the
        members then hold their partitions until their sessions end.
        """
        if self.members is None or self.end_sessions is None:
            return
        if whole_group:
            self.crashed |= await self.members()
        if self.crashed:
            await self.end_sessions(frozenset(self.crashed))
            self.crashed.clear()
            self.left_ns = time.perf_counter_ns()

    def quiet(self, quiet: float) -> float:
        """``quiet`` stretched by the round trips one step of progress takes under latency."""
        return quiet + ROUND_TRIPS_PER_STEP * 2 * self.latency

    def stretched(self, quiet: float) -> str:
        """How a stretched wait reads in ``ended_by``: ``5.2 s (quiet 2 s, 200 ms latency)``."""
        if not self.latency:
            return f"{quiet:g} s"
        return f"{self.quiet(quiet):.3g} s (quiet {quiet:g} s, {self.latency * 1000:g} ms latency)"

    async def held(self) -> bool:
        """Whether a crashed member is still in the group (asked every ``GROUP_POLL_S``).

        Its partitions are reassigned only once it leaves (its session timing
        out), so until then the service cannot make progress on them. An
        answer the broker cannot give ends the wait: the run's own checks say
        the rest.
        """
        if not self.crashed or self.members is None:
            return False
        now = time.monotonic()
        if now - self._asked_at < GROUP_POLL_S:
            return self._held
        self._asked_at = now
        try:
            self.crashed &= await self.members()
        except HarnessError:
            self.crashed.clear()
        self._held = bool(self.crashed)
        if not self._held:
            self.left_ns = time.perf_counter_ns()
        return self._held
