"""Checks of a run's history: ``from message_flow_harness import checks``.

Each function returns a :class:`Check`; calling it on a :class:`History`
gives a :class:`Verdict` whose anomalies read as counterexamples.
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

__all__ = (
    "Anomaly",
    "Check",
    "Facts",
    "Verdict",
    "all_of",
    "dead_lettered",
    "delivery",
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
