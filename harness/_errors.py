"""The harness's exceptions: one root, each subclass also the built-in it refines.

Driver errors (aiokafka, aiormq) are translated into these at the broker
boundary, so checks, reports and users never see driver types.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error the harness raises on purpose.

    An error that ends a run carries what the run recorded until then in
    ``history`` (and ``history_path`` once written), so nothing is lost.
    """

    history: object = None  # harness.History; typed loosely to keep this module a leaf
    history_path: object = None


class InvalidArgument(HarnessError, ValueError):
    """A value given to the harness is malformed; the message names it and the fix."""


class BrokerError(HarnessError):
    """The broker refused or failed an operation."""


class BrokerUnavailable(BrokerError, ConnectionError):
    """No broker answers at the given address (wrong URL, port, or it died)."""


class BrokerStartError(BrokerError, RuntimeError):
    """A broker the harness starts itself failed to come up."""


class DestinationError(BrokerError):
    """Creating, using or deleting a topic, queue or exchange failed."""


class HarnessTimeout(HarnessError, TimeoutError):
    """A bounded wait ran out; the message says what was awaited and for how long."""


class ServiceError(HarnessError):
    """The service under test raised or hung while starting or stopping."""


class DatabaseUnavailable(HarnessError, ConnectionError):
    """The example database named for a campaign does not answer (a Redis server down)."""
