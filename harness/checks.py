"""Checks of a run's history: ``from message_flow_harness import checks``.

Each function returns a :class:`Check`; calling it on a :class:`History`
gives a :class:`Verdict` whose anomalies read as counterexamples.
:func:`fault_windows` says which stretch of a run each fault disturbed: the
latency checks judge the inputs in flight then apart.
"""

from message_flow_harness._checks import (
    Anomaly,
    Check,
    Facts,
    Verdict,
    all_of,
    dead_lettered,
    delivery,
    latency,
    max_deliveries,
    no_duplicates,
    no_loss,
    no_unexpected,
    per_key_order,
    per_partition_order,
    percentile,
    within,
)
from message_flow_harness._fault_windows import FaultWindow, fault_windows

__all__ = (
    "Anomaly",
    "Check",
    "Facts",
    "FaultWindow",
    "Verdict",
    "all_of",
    "dead_lettered",
    "delivery",
    "fault_windows",
    "latency",
    "max_deliveries",
    "no_duplicates",
    "no_loss",
    "no_unexpected",
    "per_key_order",
    "per_partition_order",
    "percentile",
    "within",
)
