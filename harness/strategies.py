"""Hypothesis strategies for message flows: ``from message_flow_harness import strategies``.

What to generate, kept apart from what runs it (the runner): message lists
with few keys (so keys collide and orderings matter), payloads a flow can
extend (poison values, sizes, headers), publish timing (bursts and gaps),
and fault schedules interleaved with the publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hypothesis import strategies as st

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._fault_model import Faults, campaign_kinds
from message_flow_harness._message import Message
from message_flow_harness._schedule import (
    AT_ONCE,
    MAX_PRODUCERS,
    TRIGGER_EVENTS,
    After,
    BrokerRestart,
    Crash,
    Cut,
    Join,
    Latency,
    Leave,
    Pause,
    Publish,
    Restart,
    Settle,
    Step,
)
from message_flow_harness._triggers import events_seen

if TYPE_CHECKING:
    from message_flow_harness._flow import Flow

POISON = b"poison"


def keys(count: int = 3) -> st.SearchStrategy[bytes]:
    """One of ``count`` short keys (``b"a"``, ``b"b"``...): few, so that keys collide."""
    if not isinstance(count, int) or not 1 <= count <= 26:
        raise InvalidArgument(f"keys(count={count!r}) is invalid: give 1 to 26 keys")
    return st.sampled_from([bytes([ord("a") + i]) for i in range(count)])


def values(*, poison: bool = False, max_size: int = 8) -> st.SearchStrategy[bytes]:
    """Small binary payloads; with ``poison=True`` some are ``b"poison"``.

    Poison comes second in the choice so that shrinking moves away from it
    unless the failure needs it.
    """
    if not isinstance(max_size, int) or max_size < 0:
        raise InvalidArgument(f"values(max_size={max_size!r}) is invalid: give a size >= 0")
    # A map, not a filter: Hypothesis re-reads a filter's source on every draw
    # (to rewrite it into bounds), a fifth of the search's own CPU here.
    plain = st.binary(max_size=max_size).map(_harmless)
    return st.one_of(plain, st.just(POISON)) if poison else plain


def _harmless(value: bytes) -> bytes:
    """``value``, unless it starts with ``POISON``: then with its first letter changed."""
    return b"P" + value[1:] if value.startswith(POISON) else value


def messages(
    *,
    keys: st.SearchStrategy[bytes | None] | None = None,
    values: st.SearchStrategy[bytes] | None = None,
    headers: st.SearchStrategy[dict[str, bytes]] | None = None,
    inputs: Sequence[str] = (),
    min_size: int = 1,
    max_size: int = 10,
) -> st.SearchStrategy[list[Message]]:
    """Lists of messages; every part can be replaced to suit a flow.

    ``inputs`` are the names of a flow's inputs (its ``Topology``): each
    message goes to one of them (``Message.to``), so a list mixes them; the
    draw shrinks towards the first. Empty: the flow's only input.
    """
    if (
        not isinstance(min_size, int)
        or not isinstance(max_size, int)
        or not (0 <= min_size <= max_size)
    ):
        raise InvalidArgument(
            f"messages(min_size={min_size!r}, max_size={max_size!r}) is invalid:"
            " give 0 <= min_size <= max_size"
        )
    key_strategy = keys if keys is not None else globals()["keys"]()
    value_strategy = values if values is not None else globals()["values"]()
    header_strategy = headers if headers is not None else st.just({})
    if isinstance(inputs, str) or not all(isinstance(n, str) and n for n in inputs):
        raise InvalidArgument(
            f"messages(inputs={inputs!r}) is invalid: give the names of the flow's inputs,"
            " e.g. inputs=['orders', 'payments']"
        )
    to = st.sampled_from(list(inputs)) if inputs else st.none()
    one = st.builds(Message, value=value_strategy, key=key_strategy, headers=header_strategy, to=to)
    return st.lists(one, min_size=min_size, max_size=max_size)


def _faults(kinds: Sequence[str], max_instances: int) -> st.SearchStrategy[list[Step]] | None:
    """One fault, as the steps that make it up; None when ``kinds`` leave nothing to draw."""
    options: list[st.SearchStrategy[list[Step]]] = []
    for kind in kinds:
        if kind == "crash":
            options.append(st.just([Crash(0)]))
            options.append(st.just([Crash(0), Restart(0)]))
        elif kind == "join" and max_instances > 1:
            options.append(st.just([Join()]))
            options.append(st.just([Join(), Settle(), Leave()]))
        elif kind == "latency":
            options.append(st.sampled_from([0.005, 0.05, 0.2]).map(lambda s: [Latency(s)]))
        elif kind == "cut":
            options.append(st.just([Cut(0)]))
        elif kind == "broker_restart":  # graceful first: shrinking prefers it
            options.append(st.sampled_from([False, True]).map(lambda hard: [BrokerRestart(hard)]))
    return st.one_of(options) if options else None


_FAULT_LEADS: tuple[Step | None, ...] = (None, Settle(), Pause(0.005), Pause(0.02), Pause(0.001))


def _leads(events: Sequence[str]) -> st.SearchStrategy[Step | None]:
    """What leads up to a fault: an event it lands right after, or a timed lead.

    Events first: shrinking moves towards the first choices, and a fault at an
    event fails every time where a timed one fails by luck.
    """
    return st.sampled_from((*(After(event) for event in events), *_FAULT_LEADS))


@st.composite
def _schedule(
    draw: st.DrawFn,
    message_lists: st.SearchStrategy[list[Message]],
    kinds: Sequence[str],
    max_faults: int,
    max_instances: int,
    pauses: bool,
    producers: int,
    events: Sequence[str],
) -> list[Step]:
    steps: list[Step] = []
    budget = max_faults
    fault = _faults(kinds, max_instances)
    leads, timed_leads = _leads(events), _leads(())
    # Once max_instances run at once, a fault is drawn without Join (no more instances
    # than the deployment runs); the same draws as before until then.
    fault_at_most = _faults([kind for kind in kinds if kind != "join"], max_instances)
    extra = 0  # instances running beside instance 0
    for message in draw(message_lists):
        # A gap before about one publish in three: none (a burst), about one
        # message's handling (1-5 ms here), or several (20 ms). Longer waits
        # are what Settle is for. The draw shrinks to no pause.
        if pauses and draw(st.integers(0, 2)) == 2:
            steps.append(Pause(draw(st.sampled_from([0.001, 0.005, 0.02]))))
        # Which producer publishes it; shrinks to producer 0 (one ordered publisher).
        producer = draw(st.integers(0, producers - 1)) if producers > 1 else 0
        steps.append(Publish(message, producer))
        drawn_from = fault if extra + 1 < max_instances else fault_at_most
        if drawn_from is None:
            continue
        if budget and draw(st.integers(0, 3)) == 3:  # a fault after about one publish in four
            # What leads up to it: nothing (it hits as the publishes land), a
            # Settle (between messages, once processing has caught up), a
            # pause that lands it inside a message's handling (5 ms here: a
            # fetch and a commit or ack; shrinking prefers it to 20 and 1), or
            # an event it lands right after (After("committed")), where a
            # race's window opens whatever the timing.
            drawn = draw(drawn_from)
            extra += sum(isinstance(s, Join) for s in drawn) - sum(
                isinstance(s, Leave) for s in drawn
            )
            lead = draw(leads if isinstance(drawn[0], AT_ONCE) else timed_leads)
            if lead is not None:
                steps.append(lead)
            steps.extend(drawn)
            budget -= 1
    return steps


def schedules(
    *,
    messages: st.SearchStrategy[list[Message]] | None = None,
    faults: bool | Sequence[str] | Faults | None = None,
    flow: Flow | None = None,
    max_faults: int = 2,
    max_instances: int | None = None,
    pauses: bool = True,
    producers: int = 1,
    events: Sequence[str] | None = None,
) -> st.SearchStrategy[list[Step]]:
    """Publishes of ``messages`` interleaved with pauses and faults.

    Publishes with no pause or fault between them form a burst, all in
    flight at once. With ``producers`` > 1, each message goes out through one
    of that many concurrent producers, so the broker may interleave a
    burst's publishes of different producers (checks allow for it).

    ``flow`` lends its ``messages`` and its fault model (``Flow(faults=...)``):
    then only the faults its deployment can suffer are drawn, and at most its
    ``instances`` run at once. ``faults`` is a :class:`Faults` model, or the
    kinds to draw within the flow's model: True (every kind it allows; for a
    flow without one, all of ``crash``, ``join``, ``latency``, ``cut``), False,
    or a list of kinds, which may also name ``broker_restart`` (a restart of a
    broker the harness started: not in True because each costs seconds).
    Left out, it is the flow's model, or True.

    A fault may follow an :class:`~message_flow_harness.schedule.After` step,
    landing right after one of ``events`` (of ``TRIGGER_EVENTS``): left out,
    those the flow's probes record, or all of them without a flow; () draws
    timed faults only. Shrinking removes faults, pauses and messages until
    only what the failure needs is left.
    """
    model = faults if isinstance(faults, Faults) else flow.faults if flow is not None else None
    asked = None if isinstance(faults, Faults) else faults
    kinds = campaign_kinds(
        model,
        True if asked is None and model is None else asked,
        flow=f"flow {flow.label}" if flow is not None else "the model",
    )
    if max_instances is None:
        max_instances = model.instances if model is not None else 2
    if not isinstance(max_faults, int) or max_faults < 0:
        raise InvalidArgument(f"max_faults={max_faults!r} is invalid: give a count >= 0")
    if (
        isinstance(producers, bool)
        or not isinstance(producers, int)
        or not 1 <= producers <= MAX_PRODUCERS
    ):
        raise InvalidArgument(f"producers={producers!r} is invalid: give 1 to {MAX_PRODUCERS}")
    if events is None:
        events = events_seen(flow) if flow is not None else TRIGGER_EVENTS
    unknown_events = [e for e in events if e not in TRIGGER_EVENTS]
    if isinstance(events, str) or unknown_events:
        raise InvalidArgument(
            f"events={events!r} is invalid: give a sequence of {', '.join(TRIGGER_EVENTS)}"
        )
    if messages is None and flow is not None:
        messages = flow.messages
    if messages is None:  # to each of the flow's inputs when it has several
        topology = flow.topology if flow is not None else None
        inputs = topology.input_names() if topology is not None else ()
        messages = globals()["messages"](inputs=inputs if len(inputs) > 1 else ())
    message_lists = messages
    return _schedule(
        message_lists,
        kinds,
        max_faults if kinds else 0,
        max_instances,
        pauses,
        producers,
        tuple(events),
    )


__all__ = ("POISON", "keys", "messages", "schedules", "values")
