"""``Flow``: one message flow under test, and the result of running it once."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from message_flow_harness._broker import Publishing, check_publishing
from message_flow_harness._checks import Check, Verdict, no_loss
from message_flow_harness._correlation import (
    Correlation,
    HarnessIdOf,
    OutputKinds,
    SideEvents,
    check_flow_options,
)
from message_flow_harness._drivers import BROKER_KINDS, driver
from message_flow_harness._environment import check_templates, destinations_named
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._fault_model import Faults, check_fault_model
from message_flow_harness._history import History
from message_flow_harness._message import BrokerKind, Endpoints, Message
from message_flow_harness._readiness import Ready, check_ready
from message_flow_harness._schedule import Step
from message_flow_harness._text import plural
from message_flow_harness._topology import Topology

Service = Callable[[Endpoints], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True, kw_only=True)
class Flow:
    """One message flow under test: the service, its broker, and what must hold.

    ``sut`` is called with the run's :class:`Endpoints` and entered to start
    the service, exited to stop it; if what it returns also has a ``kill()``
    coroutine method, a Crash calls that instead of its exit, to end the
    service at once (a :func:`process` service is SIGKILLed). ``correlate``
    links outputs to inputs for services that do not copy the
    ``x-harness-id`` header: a business key
    (:func:`by_json_field`, :func:`by_key`), or a function of an output
    returning the harness id of its input. ``output_kinds`` (a JSON field or
    a function) names each output's kind, so one input may yield outputs of
    several kinds (fan-out) and a duplicate is a second output of one kind;
    ``side_events`` (kinds, or a predicate of the output) are outputs that
    answer nothing: recorded, never a duplicate nor unexpected.

    A run ends once every input has an output or a dead letter, nothing at
    all has happened for ``settle`` seconds, and every delivery has been
    answered (an output or dead letter of that input after it) or given
    twice the slowest handling of an input seen (delivery to output): late
    acks and commits still count, and a message delivered again gets time to
    come out twice at the service's pace;
    ``quiet`` ends a run whose inputs are not all accounted for after that
    long without a new output; ``timeout`` bounds a run.

    ``env`` maps environment variables to templates over the run's endpoints
    (``{"RABBITMQ_URL": "{amqp_url}", "ORDERS_QUEUE": "{input}"}``): they are
    set in ``os.environ`` while each instance starts (the ``sut`` call and its
    ``__aenter__``), and passed on to a :func:`process` service under its own.

    Inputs are published once the service consumes: after its first start
    the run waits (within ``start_timeout``) for ``ready``: None, the broker's
    view (a Kafka ``group_id`` holding every input partition, a RabbitMQ input
    queue with a consumer); an async function of the Endpoints, polled until
    it returns True; False, no wait. A Kafka run's group starts with offset 0
    committed on every input partition, as a deployed service's group has a
    committed position; ``first_deploy=True`` leaves it without one, so the
    service's ``auto_offset_reset`` decides where it starts.

    A crashed Kafka member would hold its partitions until its session times
    out (``session_timeout_ms``, 10 s by default in aiokafka), and every crash
    example would wait that out. The harness instead removes the crashed
    instance's members from the group once it is dead, as the timeout would
    later, so the restarted instance (or another) takes the partitions at
    once; ``crash_keeps_session=True`` keeps the production wait (slower, but
    it shows what the wait does to latency). A process service's members are
    unknown to the harness: they are removed only when no other instance
    runs.

    ``queue_type`` is the type of the queues a RabbitMQ run creates (input,
    output, dead letter): ``"classic"`` (the broker's default) or
    ``"quorum"``; ``queue_arguments`` are the input queue's arguments, as the
    service declares them (``{"x-delivery-limit": 5}``), beside the
    dead-lettering to ``endpoints.dead_letter`` the harness wires itself.

    ``topology`` (a :class:`Topology`) is for a service with destinations of
    its own under fixed names: several inputs and outputs, a dead letter, on
    Kafka partitions and topic configs per topic (:class:`Topic`). Each run
    isolates them: on Kafka every topic is created under a name unique to the
    run and deleted after (``endpoints.names`` maps the service's name to the
    run's; ``env={"ORDERS_TOPIC": "{names[orders]}"}`` hands it over); on
    RabbitMQ the run gets a virtual host of its own (created through the
    management API with permissions for the broker's user and firehose
    tracing on, deleted after the run with everything the service declared
    in it; ``endpoints.amqp_url`` points into it). The topology says what the
    service consumes (awaited for readiness; a message names its input with
    ``Message(to=...)``), where inputs are published (RabbitMQ: that queue,
    or an exchange with a routing key) and where outputs and dead letters
    are observed (a queue or topic, or an exchange with a binding key:
    ``Topology(input="payments.requests", publish=("payments",
    "payment.requested"), output=("payments", "payment.completed"),
    dead_letter=("payments.dlx", "#"))``); several outputs are fan-out, each
    output recorded with the destination it came out of. Without it (the
    default) the harness creates the run's three destinations itself under
    unique names.

    ``publishing`` is how the harness's own producer publishes the inputs:
    ``"plain"`` (the default; acked by all in-sync replicas), ``"idempotent"``
    (Kafka: ``enable_idempotence=True``, so a retried send is never written
    twice) or ``"transactional"`` (Kafka: a transactional producer; the inputs
    a Publish step or burst sends to one input go out in one committed
    transaction, as an upstream exactly-once service writes them, so a
    ``read_committed`` consumer sees them and its partitions hold transaction
    markers between them). RabbitMQ takes ``"plain"`` only.

    ``faults`` (a :class:`Faults`) says which faults the deployment can
    suffer: :func:`fuzz` draws those by default, and never a fault it rules
    out (``Faults(crash=True, network=True)``: one instance, so no competing
    consumer). None (the default) declares nothing: ``fuzz`` then draws only
    the faults it is asked for.
    """

    sut: Service
    broker: BrokerKind
    checks: Sequence[Check] = field(default_factory=lambda: (no_loss(),))
    messages: Any = None  # a Hypothesis strategy of list[Message], for fuzz()
    partitions: int = 1
    correlate: Correlation | HarnessIdOf | None = None
    output_kinds: OutputKinds | None = None
    side_events: SideEvents = ()
    probes: bool = True
    settle: float = 0.01
    quiet: float = 2.0
    start_timeout: float = 15.0
    stop_timeout: float = 10.0
    timeout: float = 60.0
    ready: Ready = None
    first_deploy: bool = False
    crash_keeps_session: bool = False
    name: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    queue_type: str | None = None
    queue_arguments: Mapping[str, object] = field(default_factory=dict)
    topology: Topology | None = None
    faults: Faults | None = None
    publishing: Publishing = "plain"

    def __post_init__(self) -> None:
        if not callable(self.sut):
            raise InvalidArgument(
                f"Flow(sut={self.sut!r}) is invalid: pass a function of Endpoints returning an"
                " async context manager (e.g. decorated with @contextlib.asynccontextmanager)"
            )
        if self.broker not in BROKER_KINDS:
            raise InvalidArgument(
                f"Flow(broker={self.broker!r}) is invalid: use one of {', '.join(BROKER_KINDS)}"
            )
        broker_driver = driver(self.broker)
        if (
            not isinstance(self.partitions, int)
            or isinstance(self.partitions, bool)
            or self.partitions < 1
        ):
            raise InvalidArgument(
                f"partitions={self.partitions!r} is invalid: a topic needs at least one partition"
            )
        broker_driver.check_flow(partitions=self.partitions)
        broker_driver.check_publishing(check_publishing(self.publishing))
        checked = broker_driver.check_queues(
            queue_type=self.queue_type, queue_arguments=self.queue_arguments
        )
        object.__setattr__(self, "queue_arguments", checked)
        for name in ("settle", "quiet", "start_timeout", "stop_timeout", "timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                value_ok = False
            else:
                value_ok = 0 < value < math.inf
            if not value_ok:
                raise InvalidArgument(f"{name}={value!r} is invalid: give a positive number of s")
        check_flow_options(self.correlate, self.output_kinds, self.side_events)
        object.__setattr__(self, "env", check_templates(self.env, where="Flow(env=...)"))
        check_ready(self.ready)
        check_fault_model(self.faults)
        if not isinstance(self.first_deploy, bool):
            raise InvalidArgument(
                f"first_deploy={self.first_deploy!r} is invalid: pass True or False"
            )
        if not isinstance(self.crash_keeps_session, bool):
            raise InvalidArgument(
                f"crash_keeps_session={self.crash_keeps_session!r} is invalid: pass True or False"
            )
        if self.crash_keeps_session and not broker_driver.group_sessions:
            raise InvalidArgument(
                f"crash_keeps_session=True is invalid for {broker_driver.title}: its consumers"
                " hold no group session (drop crash_keeps_session)"
            )
        if self.first_deploy and broker_driver.first_deploy_note is None:
            raise InvalidArgument(
                f"first_deploy=True is invalid for {broker_driver.title}: its consumers have no"
                " committed positions to leave out (drop first_deploy)"
            )
        if self.topology is not None:
            self._check_topology(self.topology)
        for check in self.checks:
            if not isinstance(check, Check):
                raise InvalidArgument(
                    f"checks contains {check!r}: use the functions of harness.checks,"
                    " e.g. checks.no_loss()"
                )

    def _check_topology(self, topology: object) -> None:
        if not isinstance(topology, Topology):
            raise InvalidArgument(
                f"topology={topology!r} is invalid: pass a Topology(input=...,"
                " output=..., dead_letter=...) or None"
            )
        driver(self.broker).check_topology(topology)
        if self.queue_type is not None or self.queue_arguments:
            raise InvalidArgument(
                "queue_type and queue_arguments are invalid with topology=...: they shape"
                " the queues the harness creates, and under a topology the service declares"
                " its own (drop them)"
            )
        if self.partitions != 1:
            raise InvalidArgument(
                f"partitions={self.partitions!r} is invalid with topology=...: give each"
                " topic its own, Topic('orders', partitions=3), and drop partitions="
            )
        named = {*topology.input_names(), *topology.output_names(), topology.names()[2]}
        for destination, variable in destinations_named(self.env).items():
            if destination not in named:
                raise InvalidArgument(
                    f"Flow(env=...) maps {variable!r} to {{names[{destination}]}}, which the"
                    f" topology does not name: use one of {', '.join(map(repr, sorted(named)))}"
                )

    def inputs_of(self, endpoints: Endpoints) -> list[tuple[str, int]]:
        """A run's input destinations and their partitions (one input without a topology)."""
        topology = self.topology
        if topology is None:
            return [(endpoints.input, self.partitions)]
        return [
            (endpoints.names.get(name, name), topology.partitions_of(name))
            for name in topology.input_names()
        ]

    def input_name(self, message: Message) -> str | None:
        """The topology's name of the input ``message`` goes to (None: the flow's one input);
        InvalidArgument naming the fix for a ``to`` the flow has no input of."""
        if self.topology is not None:
            return self.topology.input_for(message)
        if message.to is not None:
            raise InvalidArgument(
                f"Message(to={message.to!r}) is invalid for flow {self.label}: it has one input;"
                " name several with Flow(topology=Topology(input=[...], ...)), or drop to="
            )
        return None

    def input_of(self, endpoints: Endpoints, message: Message) -> str:
        """The run's destination ``message`` is published to."""
        name = self.input_name(message)
        return endpoints.input if name is None else endpoints.names.get(name, name)

    @property
    def label(self) -> str:
        return self.name or str(getattr(self.sut, "__name__", repr(self.sut)))


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What one run of a flow produced: its history and the checks' verdicts."""

    flow: Flow
    endpoints: Endpoints
    messages: tuple[Message, ...]
    schedule: tuple[Step, ...]
    history: History
    verdicts: tuple[Verdict, ...]
    ended_by: str
    history_path: Path | None = None
    #: Harness errors after the checks ran (a cleanup that failed): the finding stands.
    errors: tuple[str, ...] = ()
    #: Inputs (harness ids) with no output nor dead letter in the history the checks
    #: read, of a run that ended before every input was accounted for (no progress,
    #: the deadline, a task of the service that died); empty otherwise.
    unaccounted: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def headline(self) -> str:
        """The report's first line: what the checks found, and how the run ended.

        Checks that held over inputs that never came out are no pass: the
        checks given cannot see them (no ``no_loss()``), and the headline says so.
        """
        ended = f"run ended: {self.ended_by}"
        if not self.ok:
            verdict = "CHECKS FAILED"
        elif self.unaccounted:
            return (
                f"flow {self.flow.label} on {self.endpoints.kind}: no check failed, yet"
                f" {len(self.unaccounted)} of {plural(len(self.messages), 'input')} never came"
                f" out ({ended})"
            )
        else:
            verdict = "all checks held"
        return (
            f"flow {self.flow.label} on {self.endpoints.kind}: {verdict}"
            f" ({plural(len(self.messages), 'message')}, {ended})"
        )

    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    def report(self) -> str:
        """The text a person reads: verdicts with counterexamples and where the history is."""
        lines = [self.headline()]
        lines += [str(v) for v in self.verdicts]
        if self.errors:
            lines.append("the harness failed after this run (the finding stands):")
            lines += [f"  - {error}" for error in self.errors]
        if self.history_path is not None:
            lines.append(f"full history: {self.history_path}")
        return "\n".join(lines)
