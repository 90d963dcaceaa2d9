"""The running instances of the service under test, each behind its own fault proxy.

Instance ``n`` gets its own :class:`Endpoints` (the same destinations and
consumer group, its own broker address through proxy ``n`` where the broker
offers one) and its own probe recorder, so the history draws one lane per
instance and a crash cuts only that instance's connections.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._drivers import BrokerDriver, ProxyAddress, driver
from message_flow_harness._environment import launching
from message_flow_harness._errors import (
    BrokerError,
    BrokerUnavailable,
    HarnessError,
    InvalidArgument,
    ServiceError,
)
from message_flow_harness._flow import Flow
from message_flow_harness._history import History, Kind
from message_flow_harness._logs import attributed
from message_flow_harness._message import Endpoints
from message_flow_harness._pace import RunPace
from message_flow_harness._probes import Recorder, current_recorder
from message_flow_harness._proxy import FaultProxy
from message_flow_harness._redact import redact_url
from message_flow_harness._watch import TaskDeath, Watch, dies_of

State = Literal["running", "severed", "crashed", "stopped"]
#: How long a crashed instance's tasks get to end once cancelled: a task that swallows
#: the cancel is left behind after that, never waited on again.
CANCEL_WAIT_S = 1.0
#: Deaths of per-message tasks noted in full per run; the rest are counted.
MAX_HANDLER_DEATHS = 20


@dataclass(eq=False)
class Instance:
    number: int
    endpoints: Endpoints
    proxy: FaultProxy | None
    state: State = "stopped"
    service: AbstractAsyncContextManager[Any] | None = None
    recorder: Recorder | None = None
    watch: Watch | None = None  # over the tasks its service spawned while starting

    @property
    def name(self) -> str:
        return instance_name(self.number)


def instance_name(number: int) -> str:
    """An instance's name: its lane in the history, its probes' lanes' prefix (``sut0:``)."""
    return f"sut{number}"


def check_broker_restartable(info: BrokerInfo) -> None:
    """Raise InvalidArgument with the fix unless ``info`` is a broker a restart fault can hit."""
    if info.provider != "local":
        chosen = driver(info.kind)
        option = f"{chosen.url_option} / {chosen.url_env}"
        raise InvalidArgument(
            f"broker restart faults need a broker the harness started itself, and"
            f" {redact_url(info.url)} is provider={info.provider!r}: let the harness start"
            f" one (no {option}, provider 'local'), or drop"
            " BrokerRestart / 'broker_restart' from the faults"
        )


def _raised(exc: BaseException) -> str:
    """An exception as a finding names it: its repr, or its lines (a process's last output)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if "\n" in text else repr(exc)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _stray_cancel_fix(exc: BaseException) -> str:
    """What to do about a CancelledError out of a service's exit, by where it came from."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("aiokafka."):
            return (
                "aiokafka's stop() raised it, as it does when it meets a fetch backing off"
                " after a lost connection (aio-libs/aiokafka#647): catch it around the"
                " client's stop() unless your task is being cancelled"
            )
        tb = tb.tb_next
    return "await its cancelled tasks inside a try/except CancelledError"


def _cancel_if_swallowed() -> None:
    """Raise again a cancel of this task that the service's own code swallowed.

    A service that awaits its cancelled consume task under
    ``suppress(CancelledError)`` also swallows a cancel aimed at the harness
    while it runs that code: the run must end all the same.
    """
    if _being_cancelled():
        raise asyncio.CancelledError


@dataclass(eq=False)
class Instances:
    """Start, crash, restart and stop instances of a flow's service."""

    flow: Flow
    info: BrokerInfo
    endpoints: Endpoints
    history: History
    proxied: bool = True  # False: connect straight to the broker (no faults planned)
    instances: list[Instance] = field(default_factory=list)
    stop_errors: list[str] = field(default_factory=list)  # what services raised on stop
    probed: bool = True  # its clients are within the probes' reach (not a process of its own)
    deaths: list[TaskDeath] = field(default_factory=list)  # service tasks that died running
    # Those whose instance still runs as it was when they died: nothing more comes out of
    # it, so the run ends at once. A crash or stop of the instance lifts that (a restart
    # begins anew); ``deaths`` keeps them all for the verdict.
    stalled: list[TaskDeath] = field(default_factory=list)
    # Tasks it spawned once running (per message) that died: the first few, and how many.
    handler_deaths: list[TaskDeath] = field(default_factory=list)
    handler_deaths_seen: int = 0
    pace: RunPace = field(default_factory=RunPace)  # what the faults do to when the run ends
    _free_proxies: list[ProxyAddress] = field(default_factory=list)
    _driver: BrokerDriver = field(init=False)

    def __post_init__(self) -> None:
        self._driver = driver(self.info.kind)
        self._free_proxies = self._driver.proxy_addresses(self.info) if self.proxied else []

    async def add(self) -> Instance:
        """Start one more instance."""
        number = len(self.instances)
        proxy = None
        endpoints = self.endpoints
        if self._free_proxies:
            listen, host, port = self._free_proxies.pop(0)
            candidate = FaultProxy(listen, host, port)
            try:
                await candidate.start()
            except BrokerUnavailable as exc:
                # A Kafka proxy's port is fixed by the broker's advertised listener,
                # so a concurrent run may hold it: go direct, faults will say so.
                self.history.record(Kind.NOTE, "harness", detail=f"no fault proxy: {exc}")
            else:
                proxy = candidate
                endpoints = self._driver.through_proxy(self.endpoints, self.info, listen)
        instance = Instance(number, endpoints, proxy)
        self.instances.append(instance)
        await self.start(instance)
        return instance

    def _needs_proxy(self, instance: Instance, fault: str) -> FaultProxy:
        if instance.proxy is None:
            raise InvalidArgument(
                f"{fault} needs a fault proxy in front of {instance.name}, and there is none:"
                f" the broker {redact_url(self.info.url)} offers none (use a broker the"
                " harness starts itself), or another run holds its Kafka proxy ports (run fault"
                " schedules"
                " on one Kafka broker one at a time)"
            )
        return instance.proxy

    async def start(self, instance: Instance) -> None:
        with attributed(self.history):  # its logs, and its tasks', are the run's
            async with launching(instance.name, self.flow.env, instance.endpoints):
                await self._start(instance)
        self.history.record(Kind.NOTE, "harness", lane=instance.name, detail="started")
        _cancel_if_swallowed()  # running: the run's teardown stops it

    async def _start(self, instance: Instance) -> None:
        flow = self.flow
        try:
            service = flow.sut(instance.endpoints)
        except Exception as exc:
            raise ServiceError(f"sut={flow.label} raised when called: {exc!r}") from exc
        recorder = Recorder(self.history, correlate=flow.correlate, prefix=f"{instance.name}:")
        instance.recorder = recorder
        token = current_recorder.set(recorder if flow.probes else None)
        instance.watch = watch = Watch(instance.name, self._died, self._handler_died)
        bound = asyncio.timeout(flow.start_timeout)
        try:
            with watch.starting():
                async with bound:
                    await service.__aenter__()
        except TimeoutError as exc:
            watch.disarm()
            if not bound.expired():  # its own (a connect timeout): it raised, not hung
                raise ServiceError(f"service {flow.label} raised on start: {exc!r}") from exc
            raise ServiceError(
                f"service {flow.label} did not finish starting within {flow.start_timeout:g} s:"
                " its __aenter__ must return once its clients are started (the run itself"
                " waits for it to consume); raise Flow(start_timeout=...) if it is just slow"
            ) from exc
        except Exception as exc:
            watch.disarm()
            raise ServiceError(f"service {flow.label} raised on start: {exc!r}") from exc
        finally:
            current_recorder.reset(token)
        instance.service, instance.state = service, "running"
        if getattr(service, "in_process", True) is False:  # see _service_process
            self.probed = False

    async def stop(self, instance: Instance) -> None:
        """Stop gracefully, bounded; a service that hangs on exit is an error."""
        if instance.state == "severed":  # a crash begun at an event: it ends as one
            await self.crash(instance)
        if instance.state != "running" or instance.service is None:
            return
        service, instance.service, instance.state = instance.service, None, "stopped"
        self._disarm(instance)
        bound = asyncio.timeout(self.flow.stop_timeout)
        try:
            with attributed(self.history):
                async with bound:
                    await service.__aexit__(None, None, None)
        except TimeoutError as exc:
            if not bound.expired():
                # Its own TimeoutError (aio-pika's queue.get while reconnecting, say):
                # the service raised on stop, a finding like any other exception.
                self._raised_on_stop(instance, exc, f"raised on stop: {_raised(exc)}")
            else:
                raise ServiceError(
                    f"service {self.flow.label} did not stop within"
                    f" {self.flow.stop_timeout:g} s: cancel its consume loop on exit (and"
                    " bound its final commit or close)"
                ) from exc
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            # A stray cancel out of its exit: its consume task, cancelled (or killed
            # by its driver when a connection dropped), awaited without a guard.
            self._stopped_badly(instance, f"raised on stop: {exc!r}: {_stray_cancel_fix(exc)}")
        except Exception as exc:
            self._raised_on_stop(instance, exc, f"raised on stop: {_raised(exc)}")
        finally:
            await self._close_leftovers(instance)
            self._gone(instance)
        self.history.record(Kind.NOTE, "harness", lane=instance.name, detail="stopped")
        _cancel_if_swallowed()

    def _stopped_badly(self, instance: Instance, detail: str) -> None:
        """The service's own failure (say, a consume loop that died with its connection,
        surfacing on exit): a finding about it, judged with the run's checks, not an
        error of the harness's."""
        self.history.record(Kind.NOTE, "harness", lane=instance.name, detail=detail)
        self.stop_errors.append(f"{instance.name} {detail}")

    def _raised_on_stop(self, instance: Instance, exc: BaseException, detail: str) -> None:
        """A stop that raised: a finding, unless it re-raises the error a task died of."""
        death = dies_of(exc, self.deaths)
        if death is None:
            self._stopped_badly(instance, detail)
        else:  # its exit awaited the dead task: reported already, where it happened
            self.history.record(
                Kind.NOTE,
                "harness",
                lane=instance.name,
                detail=f"raised on stop what its task {death.task!r} died of: {exc!r}",
            )

    def _died(self, death: TaskDeath) -> None:
        """A task the service started died while the run went on: note it (the run ends)."""
        self.deaths.append(death)
        self.stalled.append(death)
        self._note_death(death)

    def _gone(self, instance: Instance) -> None:
        """``instance`` has ended: its dead tasks no longer stall the run."""
        self.stalled = [death for death in self.stalled if death.instance != instance.name]

    def _handler_died(self, death: TaskDeath) -> None:
        """A task it spawned once running died (the run goes on): note the first few."""
        self.handler_deaths_seen += 1
        if len(self.handler_deaths) < MAX_HANDLER_DEATHS:
            self.handler_deaths.append(death)
            self._note_death(death, "; the run goes on")

    def _note_death(self, death: TaskDeath, more: str = "") -> None:
        detail = f"{death.summary} (task {death.task!r}{more})"
        self.history.record(Kind.NOTE, "harness", lane=death.instance, detail=detail)

    @staticmethod
    def _disarm(instance: Instance, *, crashed: bool = False) -> None:
        """Stopping or crashing: how its tasks end from now on is no longer news."""
        if instance.watch is not None:
            instance.watch.disarm(crashed=crashed)

    def sever(self, instance: Instance) -> None:
        """A crash's first instant: cut and refuse its connections (synchronous).

        Called from inside an event (an After step's trigger) it lands before the
        service's next instruction; :meth:`crash` then stops what is left.
        """
        if instance.state != "running" or instance.service is None:
            return
        proxy = self._needs_proxy(instance, "Crash")
        self._disarm(instance, crashed=True)  # its tasks fail with the cut connections
        proxy.crash()
        self.history.record(Kind.FAULT, "harness", lane=instance.name, detail="crash")
        instance.state = "severed"

    async def crash(self, instance: Instance) -> None:
        """Cut and refuse its connections, then stop it: nothing graceful reaches the broker."""
        self.sever(instance)
        if instance.state != "severed" or instance.service is None:
            return
        service, instance.service, instance.state = instance.service, None, "crashed"
        # First, before its exit runs: its clients end where they stand, so nothing
        # they buffered goes out, now or once a Restart heals the proxy.
        await self._abort_clients(instance)
        # A service with a kill() coroutine (a process) ends at once through it.
        # Otherwise its own tasks end where they stand (a killed process runs nothing
        # more: an exit that waits for the message in hand would wait out a handler
        # stuck on a cut connection), and then its exit releases what it holds, failing
        # against refused connections. Drivers may even raise a stray CancelledError
        # (aiokafka does when its broker vanishes): swallowed unless we are cancelled.
        kill = getattr(service, "kill", None)
        if not inspect.iscoroutinefunction(kill):
            await self._cancel_tasks(instance, own_only=True)
        bound = asyncio.timeout(self.flow.stop_timeout)
        try:
            with attributed(self.history):
                async with bound:
                    if inspect.iscoroutinefunction(kill):
                        await kill()
                    else:
                        await service.__aexit__(None, None, None)
        except asyncio.CancelledError:
            if _being_cancelled():
                raise
        except Exception as exc:
            # Only our own bound running out is a hang; its own TimeoutError is what it raised.
            detail = (
                f"exit after crash did not end within {self.flow.stop_timeout:g} s"
                if isinstance(exc, TimeoutError) and bound.expired()
                else f"exit after crash: {exc!r}"
            )
            self.history.record(Kind.NOTE, "harness", lane=instance.name, detail=detail)
        # A client its exit left, or a task (one its exit started, say), would run on (and
        # reconnect once the proxy heals): a crashed process keeps nothing alive. The
        # clients first, closed by their library, which needs its own tasks for that.
        await self._close_leftovers(instance)
        await self._cancel_tasks(instance)
        self._gone(instance)
        _cancel_if_swallowed()
        await self._end_sessions(instance)

    async def _end_sessions(self, instance: Instance) -> None:
        """End the crashed instance's group sessions: it is dead, as they would say later.

        A process's members are unknown (no probe sees them): they go only when
        no other instance runs, so that the group's every member is the crash's.
        """
        alone = not any(i.state == "running" for i in self.instances)
        try:
            async with asyncio.timeout(self.flow.stop_timeout):
                await self.pace.end_crashed(whole_group=not self.probed and alone)
        except (HarnessError, TimeoutError) as exc:
            detail = f"the crashed members keep their group sessions until they time out: {exc}"
            self.history.record(Kind.NOTE, "harness", lane=instance.name, detail=detail)

    async def _abort_clients(self, instance: Instance) -> None:
        """End a crashed instance's driver clients without a flush, a commit or a goodbye."""
        recorder = instance.recorder
        if recorder is None or not recorder.clients:
            return
        from message_flow_harness.brokers import (
            close_leftover_clients,
            group_members_of,
        )  # the driver side, loaded only when used

        # Its group members hold their partitions until their session expires.
        self.pace.note_crash(group_members_of(self.info.kind, recorder.clients))
        try:
            async with asyncio.timeout(self.flow.stop_timeout):
                await close_leftover_clients(self.info.kind, recorder.clients, abort=True)
        except TimeoutError:
            detail = f"its clients did not end within {self.flow.stop_timeout:g} s of the crash"
            self.history.record(Kind.NOTE, "harness", lane=instance.name, detail=detail)

    async def _cancel_tasks(self, instance: Instance, *, own_only: bool = False) -> None:
        """Cancel the tasks the crashed instance still runs (bounded: see Watch.cancel)."""
        if instance.watch is None:
            return
        left = await instance.watch.cancel(within=CANCEL_WAIT_S, own_only=own_only)
        if left:
            detail = f"{left} of its tasks did not end within {CANCEL_WAIT_S:g} s of a cancel"
            self.history.record(Kind.NOTE, "harness", lane=instance.name, detail=detail)

    async def _close_leftovers(self, instance: Instance) -> None:
        """Close driver clients the instance left open (bounded), and say so in the history."""
        recorder, instance.recorder = instance.recorder, None
        if recorder is None or not recorder.clients:
            return
        from message_flow_harness.brokers import (
            close_leftover_clients,
        )  # the driver side, loaded only when used

        try:
            async with asyncio.timeout(self.flow.stop_timeout):
                left = await close_leftover_clients(self.info.kind, recorder.clients)
        except TimeoutError:
            left = -1
        if left:
            detail = "left clients open: closed them" if left > 0 else "left clients hanging"
            self.history.record(Kind.NOTE, "harness", lane=instance.name, detail=detail)

    async def restart(self, instance: Instance) -> None:
        if instance.state == "severed":
            await self.crash(instance)
        if instance.state != "crashed":
            return
        if instance.proxy is not None:
            instance.proxy.heal()
        self.history.record(Kind.FAULT, "harness", lane=instance.name, detail="restart")
        await self.start(instance)

    async def restart_broker(self, *, hard: bool, deadline: float) -> None:
        """Restart the broker (every instance's connections drop) and wait until it is ready.

        Bounded by ``deadline`` (time.monotonic), the run's. The services are
        left to reconnect by themselves, as they would in production.

        Where the driver says so (its taps live on the broker, like RabbitMQ's
        firehose queue), the running instances are held off the broker (their
        proxies cut and refusing) from before the stop until the harness's
        own clients have reconnected and reported what their taps missed; only
        then may the services reconnect. Taps that read a log (Kafka's) miss
        nothing: there the instances are not held.
        """
        check_broker_restartable(self.info)
        how = "hard" if hard else "graceful"
        left = deadline - time.monotonic()
        if left < 1.0:
            raise BrokerError(
                f"no time left in the run's {self.flow.timeout:g} s for a {how} broker restart:"
                " raise Flow(timeout=...) (a restart takes a broker start, seconds)"
            )
        from message_flow_harness.brokers import (
            restart_local,
        )  # the broker side, loaded only when used

        around = self._driver.broker_restart(self.info)
        held = (
            [
                (instance, self._needs_proxy(instance, "BrokerRestart"))
                for instance in self.instances
                if instance.state == "running"
            ]
            if around.holds_services
            else []
        )
        self.history.record(Kind.FAULT, "harness", lane="broker", detail=f"broker restart ({how})")
        await around.before()
        for _, proxy in held:
            proxy.hold()
        report = await asyncio.to_thread(
            restart_local, self.info, hard=hard, timeout=max(deadline - time.monotonic(), 1.0)
        )
        self.history.record(
            Kind.NOTE,
            "harness",
            lane="broker",
            detail=(
                f"broker ready again after {report['seconds']:.1f} s"
                f" (stopped in {report.get('stop_seconds', 0):.1f} s"
                + (", killed" if report.get("forced") else "")
                + ")"
            ),
        )
        if not around.holds_services:
            return
        missed = await around.after()
        for instance, proxy in held:
            if instance.state == "running":  # a crashed one stays cut off
                proxy.release()
        self.history.record(
            Kind.NOTE,
            "harness",
            lane="broker",
            detail="taps reconnected, services let through; "
            + ("; ".join(missed) or "no tapped queue to reconcile"),
        )

    def latency(self, instance: Instance, seconds: float) -> None:
        self._needs_proxy(instance, "Latency").latency = seconds
        self.pace.note_latency(seconds)
        detail = f"latency {seconds * 1000:g} ms"
        self.history.record(Kind.FAULT, "harness", lane=instance.name, detail=detail)

    def cut(self, instance: Instance) -> None:
        self._needs_proxy(instance, "Cut").cut()
        self.history.record(Kind.FAULT, "harness", lane=instance.name, detail="cut")

    def get(self, number: int) -> Instance | None:
        return self.instances[number] if 0 <= number < len(self.instances) else None

    def newest_extra(self) -> Instance | None:
        running = [i for i in self.instances[1:] if i.state == "running"]
        return running[-1] if running else None

    async def restart_crashed(self) -> None:
        for instance in self.instances:
            await self.restart(instance)

    async def close(self) -> None:
        """Stop every running instance, then the proxies; raise the first stop error.

        Runs to the end even when cancelled: a proxy left listening would hold
        the port a later run's Kafka listener is advertised at.
        """
        errors: list[BaseException] = []
        for instance in reversed(self.instances):
            try:
                await self.stop(instance)
            except BaseException as exc:  # collected, re-raised below
                errors.append(exc)
        for instance in self.instances:
            if instance.proxy is not None:
                try:
                    await instance.proxy.close()
                except BaseException as exc:  # collected, re-raised below
                    errors.append(exc)
        if errors:
            raise errors[0]
