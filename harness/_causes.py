"""Why inputs went missing: the likely causes a verdict with lost inputs carries as notes.

A check says *what* happened (input #3 was never output); these say the
probable *why*, from what the run saw: a service that consumed nothing (it
started at ``latest``, or on a group of its own), a first deploy's offset
reset, or the per-message tasks the service spawned that died.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from message_flow_harness._checks import Verdict
from message_flow_harness._flow import Flow
from message_flow_harness._history import History, Kind
from message_flow_harness._instances import Instances
from message_flow_harness._message import Endpoints
from message_flow_harness._readiness import consumed_nothing, skipped_on_first_deploy
from message_flow_harness._text import plural


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

    ``handler_deaths`` is already in the history (noted as each task died).
    """
    found = (
        consumed_nothing(flow, endpoints, history, probed=probed),
        skipped_on_first_deploy(flow, endpoints, history),
    )
    for cause in found:
        if cause is not None:
            history.record(Kind.NOTE, "harness", detail=cause)
    causes = tuple(cause for cause in (*found, handler_deaths) if cause is not None)
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
    counts = Counter(death.cause for death in instances.handler_deaths)
    shown = "; ".join(
        f"{cause}{f' ({count} times)' if count > 1 else ''}"
        for cause, count in counts.most_common(3)
    )
    seen = instances.handler_deaths_seen
    return (
        f"{plural(seen, 'task')} the service spawned while running died"
        f" (what each was handling is lost unless retried): {shown}"
    )
