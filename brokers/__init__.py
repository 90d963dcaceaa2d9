"""Getting a broker, and talking to it: one driver package per broker, one front for all.

Each kind of broker is a package here (``brokers.kafka``, ``brokers.rabbitmq``)
whose ``driver`` (a :class:`harness._drivers.BrokerDriver`) owns everything
kind-specific; :func:`message_flow_harness._drivers.driver` finds it by name. This front
provisions brokers the same way for every kind. Provisioning order, unless the
caller says which (``provider``):

1. an existing broker given by URL (argument, or the driver's environment
   variable: ``HARNESS_KAFKA_BOOTSTRAP`` / ``HARNESS_AMQP_URL``);
2. a broker the harness starts itself as a local process (shared, cleaned up);
3. a container via testcontainers, only when asked for (``provider="docker"``).

Driver packages import their client libraries lazily, so importing this
package (and the pytest plugin) costs nothing when a broker is not used.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, get_args

from message_flow_harness._broker import BrokerAdapter, BrokerInfo
from message_flow_harness._drivers import check_kind, driver
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import BrokerKind
from message_flow_harness.brokers import _local

Provider = Literal["auto", "url", "local", "docker"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)


def restart_local(
    info: BrokerInfo, *, hard: bool = False, timeout: float | None = None
) -> dict[str, Any]:
    """Restart a broker the harness started (blocking, bounded); see :func:`_local.restart`.

    Raises InvalidArgument (with the fix) for brokers given by URL or run in
    Docker, BrokerError naming the broker's log if it does not come back.
    """
    return _local.restart(driver(info.kind).recipe(), info, hard=hard, timeout=timeout)


def adapter(info: BrokerInfo, *, timeout: float = 10.0) -> BrokerAdapter:
    """An unopened adapter for ``info``: use it as ``async with adapter(info) as a``."""
    return driver(info.kind).adapter(info, timeout=timeout)


def info_from_url(
    kind: BrokerKind, url: str, *, settings: Mapping[str, str] | None = None
) -> BrokerInfo:
    """Describe an existing broker, rejecting URLs (and settings) of the wrong shape with the fix.

    ``settings`` are the driver's for a broker given by URL (Kafka's security
    settings; RabbitMQ's go in its URL).
    """
    return driver(kind).info_from_url(url, settings=settings)


def url_from_env(kind: BrokerKind) -> str | None:
    return os.environ.get(driver(kind).url_env) or None


def check_reachable(info: BrokerInfo, *, timeout: float = 10.0) -> None:
    """Open and close an adapter (bounded), raising BrokerUnavailable with the fix."""

    async def probe() -> None:
        async with adapter(info, timeout=timeout):
            pass

    run_sync(probe)


def run_sync(make: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Run a coroutine function to completion from sync code, even under a running loop."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(make())
        except BaseException as exc:  # handed back to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="harness-sync")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def install_client_probes(kind: BrokerKind) -> None:
    """Patch the driver of ``kind`` so runs can record what in-process services do (idempotent)."""
    driver(kind).install_client_probes()


def detach_driver_randomness(kind: BrokerKind) -> None:
    """Keep the client library of ``kind`` off the global ``random`` generator (idempotent).

    A fuzz campaign creates destinations and starts the next example's
    service while Hypothesis generates that example, and Hypothesis flags any
    change to the global random state during generation as a strategy using
    ``random``.
    """
    driver(kind).detach_randomness()


async def close_leftover_clients(
    kind: BrokerKind, clients: list[object], *, abort: bool = False
) -> int:
    """Close the driver clients a stopped service left open; how many there were.

    ``abort``: a crashed service's, closed without flushing what they buffered.
    """
    close = driver(kind).close_leftover
    closed = await asyncio.gather(*(close(c, abort=abort) for c in clients), return_exceptions=True)
    return sum(1 for outcome in closed if outcome is True)


def group_members_of(kind: BrokerKind, clients: list[object]) -> set[str]:
    """The consumer-group member ids a service's ``clients`` hold (Kafka; none elsewhere)."""
    return driver(kind).group_members_of(clients)


@contextmanager
def provision(
    kind: BrokerKind,
    *,
    url: str | None = None,
    provider: Provider = "auto",
    settings: Mapping[str, str] | None = None,
) -> Iterator[BrokerInfo]:
    """A running broker of ``kind`` for the duration of the block.

    ``settings`` (the driver's, such as Kafka's security settings) apply to a
    broker given by URL, on top of the driver's environment variables.
    """
    if provider not in PROVIDERS:
        raise InvalidArgument(f"provider={provider!r} is invalid: use one of {PROVIDERS}")
    chosen = driver(kind)
    url = url or url_from_env(kind)
    if provider == "url" or (provider == "auto" and url):
        if not url:
            raise InvalidArgument(
                f"provider='url' needs a {chosen.title} URL: pass {chosen.url_option}"
                f" or set {chosen.url_env}"
            )
        info = chosen.info_from_url(url, settings=settings)
        check_reachable(info)
        yield info
    elif settings:
        raise InvalidArgument(
            f"{chosen.settings_option or 'driver settings'} applies to a {chosen.title} broker"
            f" given with {chosen.url_option} ({chosen.url_env}); brokers the harness starts"
            " need none"
        )
    elif provider == "docker":
        info, stop = chosen.start_container()
        try:
            yield info
        finally:
            stop()
    else:
        info = _local.acquire(chosen.recipe())
        try:
            yield info
        finally:
            _local.release(kind)


__all__ = (
    "PROVIDERS",
    "Provider",
    "adapter",
    "check_kind",
    "check_reachable",
    "close_leftover_clients",
    "detach_driver_randomness",
    "group_members_of",
    "info_from_url",
    "install_client_probes",
    "provision",
    "restart_local",
    "run_sync",
    "url_from_env",
)
