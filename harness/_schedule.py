"""What one run does, step by step: publishes interleaved with faults.

A schedule is plain data (frozen dataclasses whose reprs are valid Python),
so Hypothesis can generate and shrink it and a failing one can be printed as
a ready-to-paste test. The runner carries it out (see harness._runner).
Instances are numbered from 0; instance 0 is started before the first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import Message

#: How many concurrent producers a schedule may use (numbered from 0).
MAX_PRODUCERS = 8


@dataclass(frozen=True, slots=True, repr=False)
class Publish:
    """Publish one input (stamped with a harness id by the runner).

    Consecutive publishes form a burst: each ``producer``'s messages go out
    in order, all in flight at once, and the producers of a burst publish
    concurrently (separate Kafka producers or RabbitMQ channels), so the
    broker may interleave them. Checks order a burst's publishes only within
    one producer; bursts are ordered among themselves.
    """

    message: Message
    producer: int = 0

    def __post_init__(self) -> None:
        producer = self.producer
        if isinstance(producer, bool) or not isinstance(producer, int):
            producer = -1
        if not 0 <= producer < MAX_PRODUCERS:
            raise InvalidArgument(
                f"Publish(producer={self.producer!r}) is invalid: give 0 to {MAX_PRODUCERS - 1}"
            )

    def __repr__(self) -> str:
        extra = f", producer={self.producer}" if self.producer else ""
        return f"Publish(message={self.message!r}{extra})"


@dataclass(frozen=True, slots=True)
class Pause:
    """Let ``seconds`` pass (a gap between bursts): ``Pause(0.02)`` is 20 ms."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Settle:
    """Wait until every input published so far is accounted for (bounded by Flow.quiet)."""


#: What an :class:`After` step can wait for: the history's event kinds a fault may follow.
TRIGGER_EVENTS = ("delivered", "committed", "acked", "sent", "output")


@dataclass(frozen=True, slots=True)
class After:
    """Wait for an event, so that the fault after this step lands right after it.

    ``After("committed")`` waits for instance ``instance``'s next commit (its
    probes record ``delivered``, ``committed``, ``acked`` and ``sent``);
    ``After("output")`` for the next output on the broker (any instance). A
    crash or cut that follows cuts the instance's connections from inside the
    event itself (before the service's next instruction), so a race between
    a commit or ack and an output needs no luck with a timed pause. Straight
    after publishes, it watches from when they go out. Waits at most
    ``Flow.quiet`` (stretched under latency, as the wait for progress is);
    the fault then comes anyway (the history notes it).
    """

    event: str
    instance: int = 0

    def __post_init__(self) -> None:
        if self.event not in TRIGGER_EVENTS:
            raise InvalidArgument(
                f"After(event={self.event!r}) is invalid: use one of {', '.join(TRIGGER_EVENTS)}"
            )
        if (
            isinstance(self.instance, bool)
            or not isinstance(self.instance, int)
            or self.instance < 0
        ):
            raise InvalidArgument(
                f"After(instance={self.instance!r}) is invalid: give an instance number >= 0"
            )

    def __repr__(self) -> str:
        extra = f", instance={self.instance}" if self.instance else ""
        return f"After({self.event!r}{extra})"


@dataclass(frozen=True, slots=True)
class Crash:
    """Cut the instance's connections, refuse new ones, then stop it: no graceful commit or ack."""

    instance: int = 0


@dataclass(frozen=True, slots=True)
class Restart:
    """Start a crashed instance again (crashed instances also restart after the last step)."""

    instance: int = 0


@dataclass(frozen=True, slots=True)
class Join:
    """Start one more instance of the service (Kafka rebalance, RabbitMQ competing consumer)."""


@dataclass(frozen=True, slots=True)
class Leave:
    """Stop the newest extra instance gracefully."""


@dataclass(frozen=True, slots=True)
class Latency:
    """Delay every chunk between an instance and the broker by ``seconds`` (0 removes it)."""

    seconds: float
    instance: int = 0


@dataclass(frozen=True, slots=True)
class Cut:
    """Drop an instance's connections once; it may reconnect (a network blip)."""

    instance: int = 0


@dataclass(frozen=True, slots=True)
class BrokerRestart:
    """Restart the broker itself, then wait (bounded by the run's timeout) until it is ready.

    Graceful (SIGTERM: Kafka's controlled shutdown, RabbitMQ's orderly stop) or
    ``hard`` (SIGKILL). Only for a broker the harness started itself, and every
    run sharing that broker sees it. On RabbitMQ the services are held off the
    broker until the harness has reconnected its firehose tap and reported what
    the restart kept it from seeing.
    """

    hard: bool = False


Fault = Crash | Restart | Join | Leave | Latency | Cut | BrokerRestart
#: The faults an After step carries out inside its event (the others only follow it).
AT_ONCE = (Crash, Cut, Latency)
Step = Publish | Pause | Settle | After | Fault
#: The fault kinds ``faults=True`` draws from.
FAULT_KINDS = ("crash", "join", "latency", "cut")
#: Kinds only drawn when named (``faults=["broker_restart"]``): a broker restart
#: costs seconds (a JVM start for Kafka), so it would slow a default campaign tenfold.
OPT_IN_FAULT_KINDS = ("broker_restart",)
_STEP_TYPES = (
    Publish,
    Pause,
    Settle,
    After,
    Crash,
    Restart,
    Join,
    Leave,
    Latency,
    Cut,
    BrokerRestart,
)


def as_schedule(steps: Sequence[Step | Message]) -> tuple[Step, ...]:
    """Accept plain messages as publishes; reject anything that is not a step."""
    schedule: list[Step] = []
    for step in steps:
        if isinstance(step, Message):
            schedule.append(Publish(step))
        elif isinstance(step, _STEP_TYPES):
            schedule.append(step)
        else:
            raise InvalidArgument(
                f"{step!r} is not a step: give Message, Publish, Pause, Settle, After, Crash,"
                " Restart, Join, Leave, Latency, Cut or BrokerRestart"
            )
    return tuple(schedule)


def messages_of(schedule: Sequence[Step]) -> list[Message]:
    return [step.message for step in schedule if isinstance(step, Publish)]


def faults_of(schedule: Sequence[Step]) -> list[Step]:
    return [step for step in schedule if not isinstance(step, Publish | Pause | Settle | After)]
