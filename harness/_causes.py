"""Why inputs went missing: the likely causes a verdict with lost inputs carries as notes.

A check says *what* happened (input #3 was never output); these say the
probable *why*, from what the run saw: a service that consumed nothing (it
started at ``latest``, or on a group of its own), a first deploy's offset
reset, the per-message tasks the service spawned that died, or the errors
its own loggers logged.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable

from message_flow_harness._checks import Verdict
from message_flow_harness._flow import Flow
from message_flow_harness._history import History, Kind
from message_flow_harness._instances import Instances
from message_flow_harness._logs import SOURCES
from message_flow_harness._message import Endpoints
from message_flow_harness._readiness import consumed_nothing, skipped_on_first_deploy
from message_flow_harness._text import plural, shorten

_ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
#: Loggers that are not the service's: its clients', the harness's, asyncio's.
_NOT_THE_SERVICE = frozenset({*SOURCES, "asyncio"})


def with_causes(
    verdicts: tuple[Verdict, ...],
    flow: Flow,
    endpoints: Endpoints,
    history: History,
    *,
    probed: bool = True,
    handler_deaths: str | None = None,
) -> tuple[Verdict, ...]:
    """The verdicts, with the likely cause of lost inputs noted on those that report any.

    ``handler_deaths`` and the errors the service logged are in the history
    already (noted as each task died; its logs); the other causes are noted.
    """
    found = (
        consumed_nothing(flow, endpoints, history, probed=probed),
        skipped_on_first_deploy(flow, endpoints, history),
    )
    for cause in found:
        if cause is not None:
            history.record(Kind.NOTE, "harness", detail=cause)
    causes = tuple(
        cause for cause in (*found, handler_deaths, errors_logged(history)) if cause is not None
    )
    if not causes:
        return verdicts
    return tuple(
        dataclasses.replace(v, notes=(*v.notes, *causes))
        if any(a.kind == "lost" for a in v.anomalies)
        else v
        for v in verdicts
    )


def handlers_died(instances: Instances) -> str | None:
    """What the tasks the service spawned once running died of, if any did (a lost input's cause).

    One line per distinct error and place, most frequent first, with how often.
    """
    if not instances.handler_deaths_seen:
        return None
    shown = _most_common(death.cause for death in instances.handler_deaths)
    seen = instances.handler_deaths_seen
    return (
        f"{plural(seen, 'task')} the service spawned while running died"
        f" (what each was handling is lost unless retried): {shown}"
    )


def errors_logged(history: History) -> str | None:
    """The errors the service's own loggers logged during the run, if any (the first few).

    A handler that catches what went wrong, logs it and moves on (acking or
    committing) loses the input as surely as one that dies, and says why only
    in its log. The client libraries' records (and asyncio's) are left out:
    under faults they log errors a correct service recovers from.
    """
    errors = [
        entry
        for entry in history.logs
        if entry.level in _ERROR_LEVELS and entry.logger.partition(".")[0] not in _NOT_THE_SERVICE
    ]
    if not errors:
        return None
    shown = _most_common(f"{entry.logger}: {shorten(entry.message, limit=200)}" for entry in errors)
    return f"the service logged {plural(len(errors), 'error')} while running: {shown}"


def _most_common(lines: Iterable[str]) -> str:
    """The three most frequent of ``lines``, most frequent first, each with how often if twice+."""
    counts = Counter(lines).most_common(3)
    return "; ".join(f"{line}{f' ({count} times)' if count > 1 else ''}" for line, count in counts)
