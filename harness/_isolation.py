"""Fresh destinations and a fresh consumer group for every run, and their removal after.

A run must never see another run's messages, so each gets destinations with
unique names. Creating and deleting them is a broker round trip or three
(tens of milliseconds), which a campaign of hundreds of short runs feels:
``Isolation(ahead=2)`` keeps the next two runs' destinations in the making
while the current run is busy and deletes finished ones in the background,
so neither sits on a run's critical path (two, so that one slow creation
does not hold up a run: on Kafka a creation takes most of an example).

A flow with a :class:`~message_flow_harness._topology.Topology` (a service's
own destinations under fixed names) gets them isolated the way its broker
can. On Kafka each topic it names is created under a name unique to the run
(``h-<run>-orders``), with its partitions and configs, and deleted like the
default three. On RabbitMQ (an adapter with virtual hosts) the run gets a
virtual host instead, with an adapter open on it: the service's own names,
unique because the vhost is; deleting the vhost deletes all it declared. Ahead, a
finished run's vhost is emptied instead (what the service declared is
deleted) and handed to a later run: a tenth of the broker's work of a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import NamedTuple, Self

from message_flow_harness._broker import BrokerAdapter, BrokerInfo, DestinationSpec
from message_flow_harness._drivers import driver
from message_flow_harness._errors import BrokerUnavailable, DestinationError, InvalidArgument
from message_flow_harness._message import Endpoints
from message_flow_harness._topology import (
    ReusableVhost,
    Topology,
    VhostAdapter,
    vhosts_of,
)

#: How long leaving an ``Isolation`` block waits for the deletions still running:
#: longer than one deletion's own bound (Kafka's adapter waits up to 60 s for a
#: group a crashed member still holds), so those finish rather than leak.
SETTLE_S = 90.0


class Fresh(NamedTuple):
    """One run's identity and its created destinations (and vhost's adapter, if it has one)."""

    run_id: str
    endpoints: Endpoints
    #: Open on the run's own vhost (a flow with a topology): the run publishes and taps with it.
    adapter: BrokerAdapter | None = None


def new_endpoints(info: BrokerInfo, run_id: str) -> Endpoints:
    """A run's endpoints: destination names unique to the run, the broker's address."""
    prefix = f"h-{run_id}"
    return Endpoints(
        kind=info.kind,
        input=f"{prefix}-in",
        output=f"{prefix}-out",
        dead_letter=f"{prefix}-dlq",
        **driver(info.kind).address(info, prefix=prefix),
    )


def topology_endpoints(info: BrokerInfo, run_id: str, topology: Topology) -> Endpoints:
    """A run's endpoints under ``topology``: each name it gives mapped to one unique to the run."""
    prefix = f"h-{run_id}"
    names = {topic.name: f"{prefix}-{topic.name}" for topic in topology.topics()}
    input_, output, dead_letter = topology.names()
    return Endpoints(
        kind=info.kind,
        input=names[input_],
        output=names[output],
        dead_letter=names[dead_letter],
        names=names,
        **driver(info.kind).address(info, prefix=prefix),
    )


def topology_specs(endpoints: Endpoints, topology: Topology) -> list[DestinationSpec]:
    """The run's topics of ``topology``, with the partitions and configs it gives each."""
    return [
        DestinationSpec(
            name=endpoints.names[topic.name], partitions=topic.partitions, config=topic.config
        )
        for topic in topology.topics()
    ]


def destination_specs(
    endpoints: Endpoints,
    partitions: int,
    *,
    queue_type: str | None = None,
    queue_arguments: Mapping[str, object] | None = None,
) -> list[DestinationSpec]:
    """What a run needs, dead-letter destination first (the input's policy names it).

    Every queue is of ``queue_type``; the input alone gets ``queue_arguments``
    (a delivery limit belongs where the service consumes).
    """
    return [
        DestinationSpec(name=endpoints.dead_letter, queue_type=queue_type),
        DestinationSpec(name=endpoints.output, queue_type=queue_type),
        DestinationSpec(
            name=endpoints.input,
            partitions=partitions,
            dead_letter=endpoints.dead_letter,
            queue_type=queue_type,
            arguments=dict(queue_arguments or {}),
        ),
    ]


class Isolation:
    """Hands each run fresh, created destinations, and removes them after.

    Inline (the default, ``ahead=0``): ``take`` creates and ``give_back``
    deletes, both awaited, so a run that has returned has left nothing
    behind. Ahead (``ahead=n``, for campaigns): ``n`` runs' worth are kept
    created or in the making, and ``give_back`` deletes in a background task.
    Leaving the ``async with`` block removes the spares and whatever was
    taken and not given back, and waits for every deletion (bounded), so a
    campaign that has returned has left nothing behind either. A deletion that
    cannot finish in its bound (a group a crashed member holds until its
    session expires, a lost broker) is reported by name when the block ends:
    a note on the error that ended it, else a :class:`DestinationError` (a
    campaign with a finding keeps the finding and reports it as a note).
    """

    def __init__(
        self,
        adapter: BrokerAdapter,
        partitions: int,
        *,
        ahead: int = 0,
        queue_type: str | None = None,
        queue_arguments: Mapping[str, object] | None = None,
    ) -> None:
        if not isinstance(ahead, int) or ahead < 0:
            raise InvalidArgument(f"ahead={ahead!r} is invalid: give a count >= 0")
        self._adapter, self._partitions, self._ahead = adapter, partitions, ahead
        self._queue_type, self._queue_arguments = queue_type, queue_arguments
        self._spares: deque[asyncio.Task[Fresh]] = deque()  # oldest first
        self._topology: Topology | None = None  # what the spares are made for
        self._stale: list[asyncio.Task[Fresh]] = []  # spares made for another topology
        self._vhosts: dict[str, tuple[str, BrokerAdapter]] = {}  # amqp_url -> (vhost, adapter)
        self._emptied: list[tuple[str, BrokerAdapter]] = []  # vhosts cleared for another run
        self._lent: list[Endpoints] = []  # taken, not given back yet
        self._behind: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []
        self._again: list[Endpoints] = []  # deletions behind that met the broker away
        self._closed = False

    async def take(self, topology: Topology | None = None) -> Fresh:
        """Destinations and a group nobody used before, created and ready.

        With ``topology``: a virtual host nobody used before, and an adapter open on it.
        """
        if topology != self._topology:  # a campaign has one flow: this is rare
            self._stale.extend(self._spares)
            self._spares.clear()
            self._topology = topology
        spare = self._spares.popleft() if self._spares else None
        # Awaiting the spare's task: a cancel here cancels it too, and it removes
        # what it had created.
        try:
            fresh = await (spare if spare is not None else self._prepare())
        except BrokerUnavailable:
            if spare is None:
                raise
            # Made while the broker was away (a BrokerRestart fault): make them now.
            fresh = await self._prepare()
        self._lent.append(fresh.endpoints)
        while len(self._spares) < self._ahead:
            self._spares.append(
                asyncio.create_task(self._prepare(), name="harness: destinations ahead")
            )
        return fresh

    async def give_back(self, endpoints: Endpoints) -> None:
        """Delete a run's destinations and group: now, or in the background when ahead."""
        if endpoints in self._lent:
            self._lent.remove(endpoints)
        if not self._ahead or self._closed:  # nobody would wait for a task after closing
            await self._remove(endpoints)
            return
        task = asyncio.create_task(self._remove_behind(endpoints), name="harness: delete behind")
        self._behind.add(task)
        task.add_done_callback(self._settled)

    async def _remove_behind(self, endpoints: Endpoints) -> None:
        try:
            await self._remove(endpoints)
        except BrokerUnavailable:
            # Away for a moment (a later run's BrokerRestart fault): again on exit.
            self._again.append(endpoints)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._behind.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failures.append(task.exception())  # type: ignore[arg-type]

    async def _prepare(self) -> Fresh:
        run_id = uuid.uuid4().hex[:10]
        topology = self._topology
        if topology is not None and isinstance(self._adapter, VhostAdapter):
            return await self._prepare_vhost(run_id, topology)
        if topology is not None:
            endpoints = topology_endpoints(self._adapter.info, run_id, topology)
            specs = topology_specs(endpoints, topology)
        else:
            endpoints = new_endpoints(self._adapter.info, run_id)
            specs = destination_specs(
                endpoints,
                self._partitions,
                queue_type=self._queue_type,
                queue_arguments=self._queue_arguments,
            )
        try:
            await self._adapter.create_all(specs)
        except BaseException:
            # Whatever a failed or cancelled create made must not stay behind.
            with contextlib.suppress(Exception):
                await self._remove(endpoints)
            raise
        return Fresh(run_id, endpoints)

    async def _prepare_vhost(self, run_id: str, topology: Topology) -> Fresh:
        vhosts = vhosts_of(self._adapter)
        if self._emptied:
            name, adapter = self._emptied.pop()
        else:
            name = f"h-{run_id}"
            adapter = await vhosts.open_vhost(name)  # removes what it made if it fails
        input_, output, dead_letter = topology.names()
        endpoints = Endpoints(
            kind=self._adapter.info.kind,
            input=input_,
            output=output,
            dead_letter=dead_letter,
            amqp_url=adapter.info.url,
            # The service's own names: unique because the vhost is.
            names={topic.name: topic.name for topic in topology.topics()},
        )
        self._vhosts[adapter.info.url] = (name, adapter)
        return Fresh(run_id, endpoints, adapter)

    async def _remove(self, endpoints: Endpoints) -> None:
        """Delete a run's destinations and its group at once (each bounded by the adapter).

        At once, so a group a crashed member still holds (the adapter waits for
        it to empty) keeps neither the topics nor a lost broker's second timeout
        waiting. A run's vhost goes whole, with its adapter.
        """
        vhost = self._vhosts.pop(endpoints.amqp_url or "", None)
        if vhost is not None:
            await self._remove_vhost(*vhost)
            return
        specs = destination_specs(endpoints, self._partitions)
        names = [spec.name for spec in reversed(specs)]
        names += [name for name in endpoints.names.values() if name not in names]
        removals = [self._adapter.delete_all(names)]
        if endpoints.group_id is not None:
            removals.append(self._adapter.forget_group(endpoints.group_id))
        outcomes = await asyncio.gather(*removals, return_exceptions=True)
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failed:
            raise failed[0]

    async def _remove_vhost(self, name: str, adapter: BrokerAdapter) -> None:
        """Empty a run's vhost for the next run (ahead), else delete it, with its adapter.

        Emptying (deleting what the service declared) costs a few calls;
        creating a vhost, connecting to it and deleting it cost the broker
        about ten times as much. A vhost that cannot be emptied is deleted.
        """
        if self._ahead and not self._closed and isinstance(adapter, ReusableVhost):
            cleared = True
            try:
                await adapter.clear_vhost()
            except Exception:
                cleared = False  # deleted below instead: nothing stays behind
            if cleared and not self._closed:
                self._emptied.append((name, adapter))
                return
        try:
            await adapter.close()
        finally:
            await vhosts_of(self._adapter).delete_vhost(name)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        spares, self._spares = [*self._stale, *self._spares], deque()
        self._stale = []
        for spare in spares:
            spare.cancel()
        if spares:
            await asyncio.wait(spares)
        for spare in spares:
            if not spare.cancelled() and spare.exception() is None:
                self._lent.append(spare.result().endpoints)
        # The spares, and anything a caller kept: at once, each bounded by the
        # adapter (a lost broker fails them all in one timeout, not one after another).
        lent, self._lent = list(self._lent), []
        removed = await asyncio.gather(*map(self._remove, lent), return_exceptions=True)
        self._failures.extend(outcome for outcome in removed if outcome is not None)
        if self._behind:
            # Each deletion is bounded by the adapter; this bounds them all.
            _, pending = await asyncio.wait(list(self._behind), timeout=SETTLE_S)
            for task in pending:
                task.cancel()
                self._failures.append(TimeoutError(f"deleting took longer than {SETTLE_S:g} s"))
        again, self._again = self._again, []
        removed = await asyncio.gather(*map(self._remove, again), return_exceptions=True)
        self._failures.extend(outcome for outcome in removed if outcome is not None)
        emptied, self._emptied = self._emptied, []  # after the deletions behind: they add some
        removed = await asyncio.gather(
            *(self._remove_vhost(name, adapter) for name, adapter in emptied),
            return_exceptions=True,
        )
        self._failures.extend(outcome for outcome in removed if outcome is not None)
        if not self._failures:
            return
        failed = leftovers(self._failures)
        if exc is not None:  # what ended the block comes first; the leftovers are a note
            exc.add_note(failed)
            return
        raise DestinationError(failed) from self._failures[0]


def leftovers(failures: list[BaseException]) -> str:
    """What runs could not delete, each failure naming what it left and how to delete it."""
    shown = "; ".join(str(failure) for failure in failures[:3])
    more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
    return (
        f"{len(failures)} run(s) could not delete their destinations or consumer group"
        f" ({shown}{more}): list them with the broker's admin tools"
    )
