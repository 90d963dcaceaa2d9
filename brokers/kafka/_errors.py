"""Kafka failures in words a user can act on, and as the harness's own errors.

:func:`describe` puts one exception in a line; :func:`translate` turns an
aiokafka error (or a deadline) into the :mod:`harness._errors` type a caller
can act on, naming the broker and the fix, so checks and reports never see
aiokafka's types.
"""

from __future__ import annotations

from aiokafka import errors as kafka_errors

from message_flow_harness._errors import BrokerUnavailable, DestinationError, HarnessError
from message_flow_harness.brokers.kafka._clients import MAX_MESSAGE_BYTES

#: What to check when nobody answers at the bootstrap servers.
URL_FIX = "check --kafka-bootstrap / HARNESS_KAFKA_BOOTSTRAP"


def describe(err: BaseException) -> str:
    """``err`` in one line: its type, then its message."""
    name, text = type(err).__name__, str(err).strip()
    if not text:
        return name
    # aiokafka's messages often start with the class name already.
    return text if name in text.split(":")[0] else f"{name}: {text}"


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.NoBrokersAvailable,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.ProducerClosed,
    OSError,
)


def translate(err: BaseException, doing: str, *, url: str, timeout: float) -> HarnessError:
    """A driver error (or our own deadline) as the harness error a caller can act on.

    ``doing`` says what failed ("publishing to topic 'x'"), ``url`` on which
    broker, and ``timeout`` the bound a deadline had.
    """
    if isinstance(err, TimeoutError):
        return BrokerUnavailable(
            f"Kafka at {url} did not finish {doing} within {timeout:g} s: "
            f"is the broker alive? ({URL_FIX})"
        )
    if isinstance(err, _CONNECTION_ERRORS):
        return BrokerUnavailable(
            f"lost Kafka at {url} while {doing} ({describe(err)}): is the broker alive? ({URL_FIX})"
        )
    if isinstance(err, kafka_errors.MessageSizeTooLargeError | kafka_errors.RecordTooLargeError):
        return DestinationError(
            f"Kafka at {url} refused {doing} ({describe(err)}): keep a message "
            f"under {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB with its key and headers "
            "(and the broker's message.max.bytes)"
        )
    return DestinationError(
        f"Kafka at {url} refused {doing} ({describe(err)}): see the message and the broker's log"
    )
