"""Getting a broker, and talking to it: one module per broker, one front for all.

Provisioning order, unless the caller says which (``provider``):

1. an existing broker given by URL (argument, or ``HARNESS_KAFKA_BOOTSTRAP`` /
   ``HARNESS_AMQP_URL``);
2. a broker the harness starts itself as a local process (shared, cleaned up);
3. a container via testcontainers, only when asked for (``provider="docker"``).

Driver modules are imported lazily so that importing this package (and the
pytest plugin) costs nothing when a broker is not used.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Literal, get_args

from brokers import _local
from brokers._local import LocalRecipe
from harness._broker import BrokerAdapter, BrokerInfo
from harness._errors import InvalidArgument
from harness._message import BROKER_KINDS, BrokerKind
from harness._redact import redact_url

Provider = Literal["auto", "url", "local", "docker"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)

#: Environment variables naming an existing broker, per kind.
URL_ENV: dict[BrokerKind, str] = {
    "kafka": "HARNESS_KAFKA_BOOTSTRAP",
    "rabbitmq": "HARNESS_AMQP_URL",
}
#: The pytest/CLI option naming an existing broker, per kind.
URL_OPTION: dict[BrokerKind, str] = {"kafka": "--kafka-bootstrap", "rabbitmq": "--amqp-url"}

_HOST_PORT = re.compile(r"^\[?[A-Za-z0-9.\-:]+\]?:\d{1,5}$")


def check_kind(kind: str) -> BrokerKind:
    for known in BROKER_KINDS:
        if kind == known:
            return known
    raise InvalidArgument(f"broker={kind!r} is invalid: use one of {', '.join(BROKER_KINDS)}")


def recipe(kind: BrokerKind) -> LocalRecipe:
    """How to start a local broker of ``kind``."""
    if kind == "kafka":
        from brokers.kafka import KafkaRecipe

        return KafkaRecipe()
    from brokers.rabbitmq import RabbitRecipe

    return RabbitRecipe()


def adapter(info: BrokerInfo, *, timeout: float = 10.0) -> BrokerAdapter:
    """An unopened adapter for ``info``: use it as ``async with adapter(info) as a``."""
    if info.kind == "kafka":
        from brokers.kafka import KafkaAdapter

        return KafkaAdapter(info, timeout=timeout)
    from brokers.rabbitmq import RabbitAdapter

    return RabbitAdapter(info, timeout=timeout)


def info_from_url(kind: BrokerKind, url: str) -> BrokerInfo:
    """Describe an existing broker, rejecting URLs of the wrong shape with the fix."""
    url = url.strip()
    if kind == "kafka":
        servers = [s for s in url.split(",") if s]
        if not servers or not all(_HOST_PORT.match(s) for s in servers):
            raise InvalidArgument(
                f"{URL_OPTION[kind]}={url!r} is invalid: give host:port[,host:port...],"
                " e.g. 127.0.0.1:9092 (no scheme)"
            )
        return BrokerInfo(kind=kind, url=",".join(servers), provider="url")
    if not re.match(r"^amqps?://[^/]+", url):
        raise InvalidArgument(
            f"{URL_OPTION[kind]}={redact_url(url)!r} is invalid:"
            " give amqp://user:password@host:port/vhost (or amqps://)"
        )
    return BrokerInfo(kind=kind, url=url, provider="url")


def url_from_env(kind: BrokerKind) -> str | None:
    return os.environ.get(URL_ENV[kind]) or None


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
    if kind == "kafka":
        from brokers.kafka_probes import install
    else:
        from brokers.rabbitmq_probes import install
    install()


async def close_leftover_clients(kind: BrokerKind, clients: list[object]) -> int:
    """Close the driver clients a stopped service left open; how many there were."""
    if kind == "kafka":
        from brokers.kafka_probes import close_leftover
    else:
        from brokers.rabbitmq_probes import close_leftover
    closed = await asyncio.gather(*(close_leftover(c) for c in clients), return_exceptions=True)
    return sum(1 for outcome in closed if outcome is True)


def _start_container(kind: BrokerKind) -> tuple[BrokerInfo, Callable[[], None]]:
    if kind == "kafka":
        from brokers.kafka import start_container

        return start_container()
    from brokers.rabbitmq import start_container as start_rabbit

    return start_rabbit()


@contextmanager
def provision(
    kind: BrokerKind, *, url: str | None = None, provider: Provider = "auto"
) -> Iterator[BrokerInfo]:
    """A running broker of ``kind`` for the duration of the block."""
    if provider not in PROVIDERS:
        raise InvalidArgument(f"provider={provider!r} is invalid: use one of {PROVIDERS}")
    url = url or url_from_env(kind)
    if provider == "url" or (provider == "auto" and url):
        if not url:
            raise InvalidArgument(
                f"provider='url' needs a {kind} URL: pass {URL_OPTION[kind]} or set {URL_ENV[kind]}"
            )
        info = info_from_url(kind, url)
        check_reachable(info)
        yield info
    elif provider == "docker":
        info, stop = _start_container(kind)
        try:
            yield info
        finally:
            stop()
    else:
        info = _local.acquire(recipe(kind))
        try:
            yield info
        finally:
            _local.release(kind)


__all__ = (
    "PROVIDERS",
    "URL_ENV",
    "URL_OPTION",
    "Provider",
    "adapter",
    "check_kind",
    "check_reachable",
    "close_leftover_clients",
    "info_from_url",
    "install_client_probes",
    "provision",
    "recipe",
    "run_sync",
)
