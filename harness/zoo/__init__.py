"""A zoo of example services under test: a correct one per broker and ones with known defects.

Shipped in the package (``message_flow_harness.zoo``): ``harness demo`` runs
two of them, and they are examples of services written the way users write
them. Each broker's services import its client library, so this front
loads ``kafka_services`` or ``rabbitmq_services`` only when asked (an
install with one broker's extra can still run that broker's demo).

Each service is ``Callable[[Endpoints], AbstractAsyncContextManager[None]]``:
entering starts it (it returns once the service consumes), exiting stops it.
``DEFECTS`` names the check that catches each one (None for the correct ones);
``NEEDS_CRASH`` lists those whose defect shows only when a crash fault hits them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from message_flow_harness import Endpoints

Service = Callable[[Endpoints], AbstractAsyncContextManager[None]]


def __getattr__(name: str) -> dict[str, Service]:
    """``KAFKA_SERVICES``, ``RABBITMQ_SERVICES`` and ``SERVICES`` (both), loaded on first use."""
    if name == "KAFKA_SERVICES":
        from .kafka_services import KAFKA_SERVICES

        return KAFKA_SERVICES
    if name == "RABBITMQ_SERVICES":
        from .rabbitmq_services import RABBITMQ_SERVICES

        return RABBITMQ_SERVICES
    if name == "SERVICES":
        return {**__getattr__("KAFKA_SERVICES"), **__getattr__("RABBITMQ_SERVICES")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Service name -> the check that catches its defect (None: the service is correct).
#: ``totals_add_up`` is not the harness's: it is the zoo's own (harness/zoo/totals.py).
DEFECTS: dict[str, str | None] = {
    "kafka_correct": None,
    "kafka_concurrent_batch": "per_key_order",
    "kafka_commit_before_process": "no_loss",
    "kafka_swallows_errors": "dead_lettered",
    "kafka_duplicate_output": "no_duplicates",
    "kafka_slow": "within",
    "kafka_rebalance_duplicates": "no_duplicates",
    "kafka_lost_update": "totals_add_up",
    "kafka_locked_totals": None,
    "kafka_transactional": None,
    "kafka_offsets_outside_transaction": "no_duplicates",
    "kafka_outputs_outside_transaction": "no_duplicates",
    "rabbitmq_correct": None,
    "rabbitmq_robust": None,
    "rabbitmq_concurrent": "per_key_order",
    "rabbitmq_ack_before_process": "no_loss",
    "rabbitmq_requeue_forever": "max_deliveries",
    "rabbitmq_quorum_retry": None,
    "rabbitmq_swallows_errors": "dead_lettered",
    "rabbitmq_duplicate_output": "no_duplicates",
    "rabbitmq_slow": "within",
    "rabbitmq_retry_reorders": "per_key_order",
    "rabbitmq_lost_update": "totals_add_up",
    "rabbitmq_locked_totals": None,
}

#: Services that behave correctly unless they crash between two steps.
NEEDS_CRASH: frozenset[str] = frozenset(
    {
        "kafka_commit_before_process",
        "kafka_offsets_outside_transaction",
        "kafka_outputs_outside_transaction",
        "rabbitmq_ack_before_process",
    }
)

__all__ = (
    "DEFECTS",
    "KAFKA_SERVICES",
    "NEEDS_CRASH",
    "RABBITMQ_SERVICES",
    "SERVICES",
    "Service",
)
