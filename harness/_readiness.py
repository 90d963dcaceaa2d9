"""Readiness: publish only once the service consumes, and say so when it consumed nothing.

A service's ``__aenter__`` may return before its consumer can receive
anything: a Kafka consumer joins its group in the background, a RabbitMQ
consumer may be started by a task a moment later. A consumer that starts at
the end of its input (Kafka's ``auto_offset_reset="latest"``) never sees what
was published before that. So after the run's first instance starts, the run
waits (bounded by ``Flow.start_timeout``) until the service can consume: by
default until the broker shows it (the driver's check,
:meth:`BrokerAdapter.unready`: a Kafka group holding every input partition, a
RabbitMQ input queue with a consumer), or until the flow's own
``ready`` check says so; ``ready=False`` does not wait.

Only the run's first start waits. A restart or a join rebalances a Kafka
group, which can take a crashed member's whole session timeout: holding the
schedule until then would close the very windows the faults are there to
open. With committed offsets (the default), a restarted consumer resumes
where its group left off, and a RabbitMQ queue keeps what arrives meanwhile.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from message_flow_harness._drivers import driver
from message_flow_harness._errors import InvalidArgument, ServiceError
from message_flow_harness._history import History, Kind
from message_flow_harness._message import Endpoints

if TYPE_CHECKING:
    from message_flow_harness._broker import BrokerAdapter
    from message_flow_harness._flow import Flow
    from message_flow_harness._watch import TaskDeath

#: A readiness check of the flow's own: True once the service consumes its input.
ReadyCheck = Callable[[Endpoints], Awaitable[bool]]
#: ``Flow(ready=...)``: None (the broker's check), False (no wait) or a check of one's own.
Ready = bool | ReadyCheck | None

_POLL_S = 0.02


def check_ready(ready: object) -> None:
    """Raise InvalidArgument with the fix unless ``ready`` is a valid ``Flow(ready=...)``."""
    if ready is None or ready is False or (callable(ready) and not isinstance(ready, bool)):
        return
    raise InvalidArgument(
        f"ready={ready!r} is invalid: pass None (wait until the broker shows a consumer of the"
        " input), False (do not wait) or an async function of Endpoints that returns True once"
        " the service consumes"
    )


def _label(check: object) -> str:
    return str(getattr(check, "__name__", repr(check)))


async def _ask(check: ReadyCheck, endpoints: Endpoints) -> str | None:
    """Run the flow's own check once: None when it says ready, else what is awaited."""
    try:
        answer: object = check(endpoints)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as exc:
        raise ServiceError(f"Flow(ready={_label(check)}) raised: {exc!r}") from exc
    if not isinstance(answer, bool):
        raise InvalidArgument(
            f"Flow(ready={_label(check)}) returned {answer!r}: return True once the service"
            " consumes, False until then"
        )
    return None if answer else f"Flow(ready={_label(check)}) returned False"


async def await_ready(
    flow: Flow, endpoints: Endpoints, adapter: BrokerAdapter, *, deaths: Sequence[TaskDeath]
) -> str | None:
    """Wait until the service consumes its input; what was awaited (None: no wait).

    Bounded by ``flow.start_timeout``: a service never ready is a
    ServiceError naming what was awaited and the likely fix. A task of the
    service that dies meanwhile ends the wait: the run goes on to report it.
    """
    ready = flow.ready
    if ready is False:
        return None
    if callable(ready):
        check = ready

        async def unready() -> str | None:
            return await _ask(check, endpoints)

        fix = "make it return True once the service consumes, or pass Flow(ready=False)"
    else:

        async def unready() -> str | None:
            for name, partitions in flow.inputs_of(endpoints):  # each input, in turn
                missing = await adapter.unready(
                    name, group_id=endpoints.group_id, partitions=partitions
                )
                if missing is not None:
                    return missing
            return None

        fix = driver(endpoints.kind).readiness_fix(endpoints)
    began = time.monotonic()
    awaited = "the first check"
    bound = asyncio.timeout(flow.start_timeout)
    try:
        async with bound:
            while not deaths:
                missing = await unready()
                if missing is None:
                    waited = time.monotonic() - began
                    return f"ready to consume after {waited * 1000:.0f} ms"
                awaited = missing
                await asyncio.sleep(_POLL_S)
    except TimeoutError:
        if not bound.expired():
            raise
        raise ServiceError(
            f"service {flow.label} started but was not ready to consume: {awaited} after"
            f" {flow.start_timeout:g} s: {fix}"
        ) from None
    return None


def consumed_nothing(
    flow: Flow, endpoints: Endpoints, history: History, *, probed: bool = True
) -> str | None:
    """Why a run whose service consumed none of its inputs lost them all, if it did.

    Only where deliveries can be seen at all (a broker that reports them, or
    client probes that saw the service's clients: ``probed`` is False for a
    service in a process of its own): otherwise a service that consumed and
    produced nothing looks the same as one that consumed nothing.
    """
    chosen = driver(endpoints.kind)
    if not (chosen.taps_deliveries or (flow.probes and probed)):
        return None
    published = False
    for event in history:
        if event.kind in (Kind.DELIVERED, Kind.OUTPUT, Kind.DEAD_LETTERED):
            return None
        published = published or (event.kind is Kind.PUBLISHED and event.harness_id is not None)
    if not published:
        return None
    note = f"the service consumed nothing: {chosen.consumed_nothing_causes(endpoints)}"
    if flow.first_deploy and chosen.first_deploy_note is not None:
        note += f"; {chosen.first_deploy_note}"
    return note


def skipped_on_first_deploy(flow: Flow, endpoints: Endpoints, history: History) -> str | None:
    """Why inputs never delivered, behind later records that were, got lost on a first deploy.

    A consumer with no committed position starts where its reset policy
    says; ``latest`` skips what is already there. An input that no consumer
    ever received while a later record of its partition was received is
    exactly that (seen by the client probes' offsets).
    """
    note = driver(endpoints.kind).first_deploy_note
    if not flow.first_deploy or note is None:
        return None
    delivered_ids: set[str] = set()
    latest: dict[int, int] = {}  # partition -> the highest offset delivered
    answered: set[str] = set()
    for event in history:
        if event.kind is Kind.DELIVERED and event.destination == endpoints.input:
            if event.harness_id is not None:
                delivered_ids.add(event.harness_id)
            if event.partition is not None and event.offset is not None:
                latest[event.partition] = max(latest.get(event.partition, -1), event.offset)
        elif event.kind in (Kind.OUTPUT, Kind.DEAD_LETTERED) and event.harness_id is not None:
            answered.add(event.harness_id)
    skipped = [
        number
        for number, event in enumerate(history.inputs().values(), start=1)
        if event.harness_id not in answered
        and event.harness_id not in delivered_ids
        and event.partition is not None
        and event.offset is not None
        and latest.get(event.partition, -1) > event.offset
    ]
    if not skipped:
        return None
    listed = ", ".join(f"#{n}" for n in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
    inputs = "input" if len(skipped) == 1 else "inputs"
    return (
        f"{len(skipped)} lost {inputs} ({listed}) never reached the service while later records"
        f" of their partition did: {note}"
    )
