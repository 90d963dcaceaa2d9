"""Client-side probes: the core's half.

Broker modules patch their driver's classes once (``brokers.<kind>_probes``);
the patched methods look up the :class:`Recorder` of the run in progress
through a context variable. Only tasks started while the service under test
was starting inherit it, so the harness's own clients (taps, publisher) are
never recorded, and with no run in progress a probe costs one lookup.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from message_flow_harness._correlation import Correlation
from message_flow_harness._history import History, Kind, define_from_fields
from message_flow_harness._message import HARNESS_ID_HEADER, Message

Correlate = Callable[[Message], str | None]
_BYTES = (bytes, bytearray)  # a tuple: ``bytes | bytearray`` would build a union per call


class _ProbeRecord(Protocol):
    def __call__(self, kind: Kind, **details: Any) -> None: ...


_PROBE_RECORDING = '''
def record(self, kind, *, {details}):
    """Record a probe's event, stamped now (the hot paths call ``history.add`` directly)."""
    self.history.add(kind, "probe", {values})
'''


@dataclass(slots=True)
class Recorder:
    """Where a run's client-side probes write, and the clients they saw."""

    history: History
    # A run hands its probes a function (harness._runner): a Correlation needs the run's inputs.
    correlate: Correlate | Correlation | None = None
    prefix: str = ""  # the instance's name, so lanes read "sut0:consumer-1"
    clients: list[Any] = field(default_factory=list)
    _lanes: dict[int, str] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    #: ``record(kind, harness_id=..., lane=..., ...)``: Event's details by keyword.
    record: ClassVar[_ProbeRecord] = define_from_fields(
        _PROBE_RECORDING, owner="Recorder", scope=globals()
    )["record"]

    def lane(self, client: object, role: str) -> str:
        """A stable, readable name per client (``consumer-1``), tracked for crash faults."""
        name = self._lanes.get(id(client))
        if name is None:
            name = self._lanes[id(client)] = f"{self.prefix}{role}-{next(self._numbers)}"
            self.track(client)
        return name

    def track(self, client: object) -> None:
        """Remember a client the service opened, so the harness can close what it leaves open."""
        if all(known is not client for known in self.clients):
            self.clients.append(client)

    def harness_id(self, headers: Any, message: Callable[[], Message] | None = None) -> str | None:
        """The harness id from raw headers (list of pairs or mapping), else by ``correlate``."""
        # Once per delivered or sent record, inside the service: a plain loop, no generator.
        raw = None
        if headers:
            if isinstance(headers, dict):
                raw = headers.get(HARNESS_ID_HEADER)
            else:
                for name, value in headers:
                    if name == HARNESS_ID_HEADER:
                        raw = value
                        break
        if raw is not None:
            # aio-pika hands header values back as bytearray, aiokafka as bytes
            if isinstance(raw, _BYTES):
                return raw.decode("utf-8", "replace")
            return str(raw)
        if callable(self.correlate) and message is not None:
            return self.correlate(message())
        return None


current_recorder: ContextVar[Recorder | None] = ContextVar("harness_recorder", default=None)


def patch_method(owner: type, name: str, wrap: Callable[[Any], Any]) -> Callable[[], None]:
    """Replace ``owner.name`` by ``wrap(original)``: how broker modules install probes.

    Returns the undo: it puts back exactly what was there (or removes the
    wrapper of an inherited method).
    """
    own = vars(owner).get(name)
    setattr(owner, name, wrap(getattr(owner, name)))

    def undo() -> None:
        if own is None:
            delattr(owner, name)
        else:
            setattr(owner, name, own)

    return undo
