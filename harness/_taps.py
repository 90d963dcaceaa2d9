"""A run's taps: what the broker shows of its destinations, recorded into the history.

Outputs and dead letters that are destinations (a queue, a topic) are tapped
before the service starts; where the broker reports deliveries, the inputs
too. Routes through a service's own exchanges (``Flow(topology=...)``) get
binding taps, made while the service starts and bound once it has declared
its exchanges.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AsyncExitStack

from message_flow_harness._broker import BrokerAdapter, TapRecord
from message_flow_harness._correlation import Correlator, Landing
from message_flow_harness._drivers import driver
from message_flow_harness._flow import Flow
from message_flow_harness._history import History, Kind
from message_flow_harness._message import Endpoints, Message
from message_flow_harness._topology import BindingTap, Named, Route, label_of, name_of, routed


def tap_to_history(
    history: History, kind: Kind, correlator: Correlator, *, via: str | None = None
) -> Callable[[TapRecord], None]:
    """Record what a tap sees as ``kind``; ``via`` names the output (of several) it taps."""
    resolvers: dict[Kind, Callable[[Message], Landing]] = {
        Kind.OUTPUT: functools.partial(correlator.of_output, via=via),
        Kind.DEAD_LETTERED: correlator.of_dead_letter,
        Kind.DELIVERED: correlator.as_delivery,
    }
    resolve = resolvers[kind]

    def on_record(record: TapRecord) -> None:
        if kind is Kind.DELIVERED and record.event != "delivered":
            return  # the input's own landing is the harness's publish, recorded already
        if kind is not Kind.DELIVERED and record.event != "landed":
            return
        landing = resolve(record.message)
        history.record_tap(landing.kind, record, landing.harness_id, landing.detail)

    return on_record


def _observed(flow: Flow, endpoints: Endpoints) -> list[tuple[Route, Kind, str | None]]:
    """What a run taps: each output (with its label when there are several), the dead letter."""
    topology = flow.topology
    if topology is None:
        return [
            (endpoints.output, Kind.OUTPUT, None),
            (endpoints.dead_letter, Kind.DEAD_LETTERED, None),
        ]
    several = len(topology.outputs) > 1
    observed: list[tuple[Route, Kind, str | None]] = [
        (_run_route(output, endpoints), Kind.OUTPUT, label_of(output) if several else None)
        for output in topology.outputs
    ]
    observed.append((_run_route(topology.dead_letter, endpoints), Kind.DEAD_LETTERED, None))
    return observed


def _run_route(entry: Named, endpoints: Endpoints) -> Route:
    """Where the run observes ``entry``: the run's name of a destination, or an exchange route."""
    if isinstance(entry, tuple):
        return entry
    name = name_of(entry)
    return endpoints.names.get(name, name)


async def tap_destinations(
    adapter: BrokerAdapter,
    flow: Flow,
    endpoints: Endpoints,
    history: History,
    correlator: Correlator,
    stack: AsyncExitStack,
) -> None:
    """Tap the outputs and dead letters that are destinations (routes wait for the service),
    and where the broker reports deliveries, the inputs."""
    taps = [
        (route, tap_to_history(history, kind, correlator, via=via))
        for route, kind, via in _observed(flow, endpoints)
        if isinstance(route, str)
    ]
    if driver(endpoints.kind).taps_deliveries:
        taps += [
            (name, tap_to_history(history, Kind.DELIVERED, correlator))
            for name, _ in flow.inputs_of(endpoints)
        ]
    for name, on_record in taps:
        await stack.enter_async_context(adapter.tap(name, on_record))


async def binding_taps(
    adapter: BrokerAdapter,
    flow: Flow,
    endpoints: Endpoints,
    history: History,
    correlator: Correlator,
    stack: AsyncExitStack,
) -> list[BindingTap]:
    """Taps for the exchanges the topology observes, entered now and bound once they exist.

    The exchanges are the service's, declared once it consumes: everything
    else a tap needs is made before it starts, off the run's critical path.
    """
    if flow.topology is None:
        return []
    taps = []
    for route, kind, via in _observed(flow, endpoints):
        if isinstance(route, str):
            continue  # a queue, tapped through the firehose from the start
        exchange, binding_key = route
        tap = routed(adapter).tap_binding(
            exchange, binding_key, tap_to_history(history, kind, correlator, via=via)
        )
        taps.append(await stack.enter_async_context(tap))
    return taps
