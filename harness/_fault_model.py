"""``Faults``: which faults a flow's deployment can suffer, and so which a campaign draws.

A flow that declares its fault model (``Flow(faults=Faults(crash=True,
network=True))``) is fuzzed with those faults by default, and a fault it
rules out is never drawn nor run: a second competing consumer on a service
that runs as one instance is a deployment fact, not a finding. What a
campaign asks for (``fuzz(faults=...)``, ``harness fuzz --faults``) narrows
the model; asking for a kind it rules out is an error naming the option that
would allow it. A flow that declares nothing draws what the campaign asks
for, as before.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import InitVar, dataclass, field

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._schedule import (
    FAULT_KINDS,
    OPT_IN_FAULT_KINDS,
    BrokerRestart,
    Crash,
    Cut,
    Join,
    Latency,
    Leave,
    Restart,
    Step,
)

#: Every fault kind, in the order a campaign draws them (shrinking prefers the first).
KNOWN_KINDS = (*FAULT_KINDS, *OPT_IN_FAULT_KINDS)

#: The kind of each fault step; steps not named here (publishes, pauses) are no fault.
_KIND_OF_STEP: dict[type, str] = {
    Crash: "crash",
    Restart: "crash",
    Join: "join",
    Leave: "join",
    Latency: "latency",
    Cut: "cut",
    BrokerRestart: "broker_restart",
}

#: The Faults option that allows each kind, for the errors that name it.
_OPTION_OF_KIND = {
    "crash": "crash=True",
    "join": "instances=2",
    "latency": "network=True",
    "cut": "network=True",
    "broker_restart": "broker_restart=True",
}


@dataclass(frozen=True, kw_only=True, repr=False)
class Faults:
    """The faults a flow's deployment can suffer: what ``fuzz`` draws for it.

    ``crash``: an instance dies (OOM kill, node loss) and restarts.
    ``instances``: how many instances may run at once; above 1, a deploy or
    an autoscaler adds one and removes it again (a Kafka rebalance, a
    competing RabbitMQ consumer). ``network``: latency on an instance's
    connections and cut connections (``latency`` and ``cut`` name the two
    apart). ``broker_restart``: the broker itself restarts (only on a broker
    the harness started; each costs a broker start).

    ``Faults.of("crash", "cut")`` reads the same kinds as ``harness fuzz
    --faults``. ``Faults()`` is a deployment that suffers no fault.
    """

    crash: bool = False
    instances: int = 1
    latency: bool = False
    cut: bool = False
    broker_restart: bool = False
    network: InitVar[bool] = False
    kinds: tuple[str, ...] = field(init=False)

    def __post_init__(self, network: bool) -> None:
        for name in ("crash", "latency", "cut", "broker_restart"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(
                    f"Faults({name}={getattr(self, name)!r}) is invalid: pass True or False"
                )
        if not isinstance(network, bool):
            raise InvalidArgument(f"Faults(network={network!r}) is invalid: pass True or False")
        instances = self.instances
        if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
            raise InvalidArgument(
                f"Faults(instances={instances!r}) is invalid: give how many instances may run"
                " at once, 1 or more"
            )
        if network:
            object.__setattr__(self, "latency", True)
            object.__setattr__(self, "cut", True)
        allowed = {
            "crash": self.crash,
            "join": instances > 1,
            "latency": self.latency,
            "cut": self.cut,
            "broker_restart": self.broker_restart,
        }
        object.__setattr__(self, "kinds", tuple(k for k in KNOWN_KINDS if allowed[k]))

    @classmethod
    def of(cls, *kinds: str) -> Faults:
        """The model that allows exactly these kinds (``join`` allows two instances)."""
        unknown = [kind for kind in kinds if kind not in KNOWN_KINDS]
        if unknown:
            raise InvalidArgument(
                f"Faults.of({', '.join(map(repr, unknown))}) is invalid: name fault kinds,"
                f" some of {', '.join(KNOWN_KINDS)}"
            )
        return cls(
            crash="crash" in kinds,
            instances=2 if "join" in kinds else 1,
            latency="latency" in kinds,
            cut="cut" in kinds,
            broker_restart="broker_restart" in kinds,
        )

    def __repr__(self) -> str:
        shown = [f"crash={self.crash}"] if self.crash else []
        if self.instances != 1:
            shown.append(f"instances={self.instances}")
        if self.latency and self.cut:
            shown.append("network=True")
        else:
            shown += [f"{name}=True" for name in ("latency", "cut") if getattr(self, name)]
        if self.broker_restart:
            shown.append("broker_restart=True")
        return f"Faults({', '.join(shown)})"


def check_fault_model(value: object) -> None:
    """Refuse a flow's ``faults`` that is not a :class:`Faults` (nor None), naming the forms."""
    if value is None or isinstance(value, Faults):
        return
    hint = ""
    if isinstance(value, Collection) and not isinstance(value, str | bytes):
        hint = f" (for kinds: faults=Faults.of({', '.join(map(repr, value))}))"
    raise InvalidArgument(
        f"Flow(faults={value!r}) is invalid: pass Faults(crash=..., instances=..., network=...,"
        f" broker_restart=...), Faults.of(KIND, ...) or None{hint}"
    )


def campaign_kinds(
    model: Faults | None, asked: bool | Sequence[str] | None, *, flow: str = "the flow"
) -> tuple[str, ...]:
    """The fault kinds a campaign draws: what it ``asked`` for, within the flow's ``model``.

    ``asked`` None: the model's kinds (none if the flow declares no model).
    True: every kind the model allows (without a model, ``FAULT_KINDS``:
    broker restarts only when named). False: none. A list: those kinds, each
    allowed by the model, or an error naming the option that allows it.
    """
    if asked is None:
        return model.kinds if model is not None else ()
    if asked is False:
        return ()
    if asked is True:
        return model.kinds if model is not None else FAULT_KINDS
    kinds = tuple(dict.fromkeys(asked))
    unknown = [kind for kind in kinds if kind not in KNOWN_KINDS]
    if unknown:
        raise InvalidArgument(
            f"faults={unknown!r} is invalid: use some of {', '.join(KNOWN_KINDS)}"
        )
    if model is not None:
        ruled_out = [kind for kind in kinds if kind not in model.kinds]
        if ruled_out:
            raise InvalidArgument(ruled_out_message(ruled_out, model, flow=flow))
    return kinds


def ruled_out_message(kinds: Sequence[str], model: Faults, *, flow: str) -> str:
    """Why ``kinds`` cannot be drawn for a flow whose model is ``model``, and the fix."""
    options = ", ".join(dict.fromkeys(_OPTION_OF_KIND[kind] for kind in kinds))
    allowed = ", ".join(model.kinds) or "none"
    return (
        f"{flow} declares faults={model!r}, which rules out {', '.join(kinds)}: its deployment"
        f" cannot suffer them (allowed: {allowed}); set {options} in the flow's Faults(...)"
        " if it can, or ask for fewer fault kinds"
    )


def kind_of(step: Step) -> str | None:
    """The fault kind of ``step`` (``Restart`` is a crash's), None for a publish or a pause."""
    return _KIND_OF_STEP.get(type(step))


def check_suffered(model: Faults | None, step: Step, *, flow: str) -> None:
    """Refuse a fault step the flow's ``model`` rules out, before it runs."""
    kind = kind_of(step)
    if model is None or kind is None or kind in model.kinds:
        return
    raise InvalidArgument(f"{step!r} cannot run: {ruled_out_message([kind], model, flow=flow)}")


def instances_at_once(schedule: Sequence[Step]) -> int:
    """The most instances ``schedule`` runs at once: instance 0, its joins less its leaves."""
    running = most = 1
    for step in schedule:
        if isinstance(step, Join):
            running += 1
        elif isinstance(step, Leave) and running > 1:
            running -= 1
        most = max(most, running)
    return most


def within_model(model: Faults | None, schedule: Sequence[Step]) -> bool:
    """Whether the deployment ``model`` describes can suffer all of ``schedule``.

    The strategies draw only such schedules, but deleting steps while shrinking
    can make one it cannot: taking out a ``Leave`` between two joins runs three
    instances where the flow allows two.
    """
    if model is None:
        return True
    kinds = (kind_of(step) for step in schedule)
    if any(kind is not None and kind not in model.kinds for kind in kinds):
        return False
    return instances_at_once(schedule) <= model.instances
