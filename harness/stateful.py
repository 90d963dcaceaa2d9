"""Asyncio-aware rule-based state machines for message flows.

Hypothesis's ``RuleBasedStateMachine`` has no async support (its
issue #4107). Here rules and invariants may be ``async def``: the machine runs in
a worker thread and every coroutine is carried out on the caller's event
loop, where the broker connections live. Each machine instance is one run of
its ``flow`` (fresh destinations, consumer group and service); the flow's
checks run when Hypothesis tears the machine down.

    class Orders(FlowMachine):
        flow = orders_flow

        @rule(message=st.builds(Message, key=hs.keys(2)))
        async def publish(self, message):
            await self.live.do(message)

        @rule()
        async def crash(self):
            await self.live.do(Crash(0))

        @invariant()
        def nothing_unexpected(self):
            assert checks.no_unexpected()(self.history).ok

    await run_machine(Orders, broker=info, max_examples=20)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import stateful as hypothesis_stateful
from hypothesis.errors import Flaky
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from message_flow_harness import brokers
from message_flow_harness._broker import BrokerAdapter, BrokerInfo
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._flow import Flow, RunResult
from message_flow_harness._fuzz import ChecksFailed, checks_failed_in
from message_flow_harness._history import History
from message_flow_harness._runner import LiveRun

T = TypeVar("T")


@dataclass(frozen=True)
class _Session:
    loop: asyncio.AbstractEventLoop
    broker: BrokerInfo
    adapter: BrokerAdapter


_session: ContextVar[_Session | None] = ContextVar("harness_machine_session", default=None)


def _call(coroutine: Coroutine[Any, Any, T]) -> T:
    session = _session.get()
    if session is None:
        coroutine.close()
        raise InvalidArgument(
            "a FlowMachine runs through harness.stateful.run_machine (or the flow_machine"
            " fixture), which gives it a broker and an event loop"
        )
    return asyncio.run_coroutine_threadsafe(coroutine, session.loop).result()


def _synchronous(function: Callable[..., Any]) -> Callable[..., Any]:
    """Make an ``async def`` rule callable from Hypothesis's (synchronous) machine."""
    if not inspect.iscoroutinefunction(function):
        return function

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        return _call(function(*args, **kwargs))

    return run


def rule(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like hypothesis.stateful.rule, for ``async def`` rules too."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        decorated: Callable[..., Any] = hypothesis_stateful.rule(**kwargs)(  # type: ignore[no-untyped-call]
            _synchronous(function)
        )
        return decorated

    return decorate


def invariant(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like hypothesis.stateful.invariant, for ``async def`` invariants too."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        return hypothesis_stateful.invariant(**kwargs)(_synchronous(function))

    return decorate


def precondition(condition: Callable[[Any], bool]) -> Callable[[Callable[..., Any]], Any]:
    """hypothesis.stateful.precondition, re-exported so one import serves a machine."""
    return hypothesis_stateful.precondition(condition)


class FlowMachine(RuleBasedStateMachine):
    """A state machine whose every instance is one live run of ``flow``."""

    flow: ClassVar[Flow]
    result: RunResult | None = None

    def __init__(self) -> None:
        super().__init__()
        flow = getattr(type(self), "flow", None)
        if not isinstance(flow, Flow):
            raise InvalidArgument(
                f"{type(self).__name__}.flow is {flow!r}: set the class attribute flow = Flow(...)"
            )
        session = _session.get()
        if session is None:
            raise InvalidArgument(
                f"{type(self).__name__} runs through harness.stateful.run_machine"
                " (or the flow_machine fixture), which gives it a broker and an event loop"
            )
        self.live = LiveRun(flow, broker=session.broker, adapter=session.adapter)
        _call(self.live.__aenter__())

    @property
    def history(self) -> History:
        """The run's history so far (events keep arriving from the broker)."""
        return self.live.history

    def teardown(self) -> None:
        self.result = _call(self.live.finish())
        if not self.result.ok:
            raise ChecksFailed(self.result)


async def run_machine(
    machine: type[FlowMachine],
    *,
    broker: BrokerInfo | None = None,
    max_examples: int = 20,
    steps: int = 10,
    seed: int | None = None,
) -> None:
    """Run ``machine`` as a Hypothesis test on a real broker; raise on a failing run.

    A failure raises :class:`ChecksFailed` (or the invariant's AssertionError)
    after Hypothesis has shrunk the rule sequence; it prints the steps.
    """
    if not (isinstance(machine, type) and issubclass(machine, FlowMachine)):
        raise InvalidArgument(f"machine={machine!r} is invalid: pass a FlowMachine subclass")
    flow = machine.flow
    if broker is None:
        with brokers.provision(flow.broker) as info:
            return await run_machine(
                machine, broker=info, max_examples=max_examples, steps=steps, seed=seed
            )
    config = settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=seed is not None,
    )
    if flow.probes:  # imported here, not first in the worker thread (see harness._fuzz)
        brokers.install_client_probes(broker.kind)
    async with brokers.adapter(broker) as adapter:
        token = _session.set(_Session(asyncio.get_running_loop(), broker, adapter))
        try:
            await asyncio.to_thread(run_state_machine_as_test, machine, settings=config)
        except Flaky as flaky:
            # Real brokers are not deterministic: the failure did not repeat on replay.
            # Raise what was seen, not a flakiness error.
            found = checks_failed_in(flaky)
            if found is None:
                raise
            found.add_note("the failing run did not repeat when replayed (a race)")
            raise found from flaky
        finally:
            _session.reset(token)


__all__ = ("FlowMachine", "invariant", "precondition", "rule", "run_machine")
