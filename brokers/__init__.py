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
import random
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
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


def restart_local(
    info: BrokerInfo, *, hard: bool = False, timeout: float | None = None
) -> dict[str, Any]:
    """Restart a broker the harness started (blocking, bounded); see :func:`_local.restart`.

    Raises InvalidArgument (with the fix) for brokers given by URL or run in
    Docker, BrokerError naming the broker's log if it does not come back.
    """
    return _local.restart(recipe(info.kind), info, hard=hard, timeout=timeout)


def adapter(info: BrokerInfo, *, timeout: float = 10.0) -> BrokerAdapter:
    """An unopened adapter for ``info``: use it as ``async with adapter(info) as a``."""
    if info.kind == "kafka":
        from brokers.kafka import KafkaAdapter

        return KafkaAdapter(info, timeout=timeout)
    from brokers.rabbitmq import RabbitAdapter

    return RabbitAdapter(info, timeout=timeout)


#: Kafka security settings for a broker given by URL, each also an environment
#: variable (``HARNESS_KAFKA_<NAME>``) and a ``--kafka-option NAME=VALUE``.
KAFKA_SETTINGS: dict[str, str] = {
    name: f"HARNESS_KAFKA_{name.upper()}"
    for name in (
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
    )
}
KAFKA_OPTION = "--kafka-option"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: Query options of an amqps:// URL that name files (aiormq reads them).
_AMQP_FILE_OPTIONS = ("cafile", "capath", "certfile", "keyfile")
_AMQP_TLS_OPTIONS = (*_AMQP_FILE_OPTIONS, "cadata", "no_verify_ssl")


def _setting(name: str) -> str:
    return f"{name} ({KAFKA_SETTINGS[name]} or {KAFKA_OPTION} {name}=...)"


def kafka_settings_from_env() -> dict[str, str]:
    """The Kafka security settings given in ``HARNESS_KAFKA_*`` environment variables."""
    return {name: os.environ[env] for name, env in KAFKA_SETTINGS.items() if os.environ.get(env)}


def parse_kafka_settings(items: Sequence[str]) -> dict[str, str]:
    """``["security_protocol=SASL_SSL", ...]`` (``--kafka-option`` values) as settings."""
    settings: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not sep or name not in KAFKA_SETTINGS:
            shown = f"{name}=..." if sep else name  # never echo a value: it may be a secret
            raise InvalidArgument(
                f"{KAFKA_OPTION} {shown!r} is invalid: give NAME=VALUE with NAME one of"
                f" {', '.join(KAFKA_SETTINGS)}"
            )
        settings[name] = value.strip()
    return settings


def kafka_client_options(settings: Mapping[str, str]) -> dict[str, object]:
    """aiokafka keyword arguments for Kafka security ``settings`` (see :data:`KAFKA_SETTINGS`).

    Checks that the settings fit together and that the files exist, and builds
    the ``ssl_context`` (as ``aiokafka.helpers.create_ssl_context`` would).
    Raises InvalidArgument naming the setting and the fix.
    """
    unknown = sorted(set(settings) - set(KAFKA_SETTINGS))
    if unknown:
        raise InvalidArgument(
            f"unknown Kafka setting {unknown[0]!r}: use one of {', '.join(KAFKA_SETTINGS)}"
        )
    given = {name: value for name, value in settings.items() if value != ""}
    protocol = given.get("security_protocol", "").upper().replace("-", "_")
    if not protocol:
        if given:
            raise InvalidArgument(
                f"Kafka settings {', '.join(sorted(given))} need {_setting('security_protocol')}:"
                f" one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        return {}
    if protocol not in SECURITY_PROTOCOLS:
        raise InvalidArgument(
            f"security_protocol={given['security_protocol']!r} is invalid: use one of"
            f" {', '.join(SECURITY_PROTOCOLS)} ({KAFKA_SETTINGS['security_protocol']})"
        )
    sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    misplaced = [
        name
        for name in given
        if (name.startswith("sasl_") and not sasl) or (name.startswith("ssl_") and not tls)
    ]
    if misplaced:
        raise InvalidArgument(
            f"{misplaced[0]} does not apply to security_protocol={protocol}: use"
            f" {'SASL_SSL' if tls or misplaced[0].startswith('ssl_') else 'SASL_PLAINTEXT'}"
            f" or drop {KAFKA_SETTINGS[misplaced[0]]}"
        )
    options: dict[str, object] = {"security_protocol": protocol}
    if sasl:
        mechanism = given.get("sasl_mechanism", "PLAIN").upper()
        if mechanism not in SASL_MECHANISMS:
            raise InvalidArgument(
                f"sasl_mechanism={given['sasl_mechanism']!r} is invalid: use one of"
                f" {', '.join(SASL_MECHANISMS)} ({KAFKA_SETTINGS['sasl_mechanism']})"
            )
        for name in ("sasl_username", "sasl_password"):
            if name not in given:
                raise InvalidArgument(
                    f"security_protocol={protocol} needs {_setting(name)}"
                    + (": prefer the environment variable" if name == "sasl_password" else "")
                )
        options |= {
            "sasl_mechanism": mechanism,
            "sasl_plain_username": given["sasl_username"],
            "sasl_plain_password": given["sasl_password"],
        }
    if tls:
        options["ssl_context"] = _ssl_context(given)
    return options


def _ssl_context(given: Mapping[str, str]) -> ssl.SSLContext:
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if name in given and not os.path.isfile(given[name]):
            raise InvalidArgument(f"{name}={given[name]!r} is not a file: fix {_setting(name)}")
    if "ssl_keyfile" in given and "ssl_certfile" not in given:
        raise InvalidArgument(f"ssl_keyfile needs its certificate: set {_setting('ssl_certfile')}")
    check = given.get("ssl_check_hostname", "true").lower()
    if check not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidArgument(
            f"ssl_check_hostname={given['ssl_check_hostname']!r} is invalid: use true or false"
        )
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=given.get("ssl_cafile")
        )
    except (ssl.SSLError, OSError) as exc:
        raise InvalidArgument(
            f"ssl_cafile={given['ssl_cafile']!r} holds no usable CA certificate ({exc}):"
            f" give the PEM file of the CA that signed the broker's certificate"
        ) from exc
    if "ssl_certfile" in given:
        try:
            context.load_cert_chain(
                given["ssl_certfile"], given.get("ssl_keyfile"), given.get("ssl_password")
            )
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument(
                f"ssl_certfile={given['ssl_certfile']!r} / ssl_keyfile="
                f"{given.get('ssl_keyfile')!r} cannot be loaded ({exc}): give a PEM certificate"
                " and its private key (and ssl_password if the key is encrypted)"
            ) from exc
    if check in ("false", "0", "no"):
        context.check_hostname = False
    return context


def info_from_url(
    kind: BrokerKind, url: str, *, kafka_settings: Mapping[str, str] | None = None
) -> BrokerInfo:
    """Describe an existing broker, rejecting URLs (and settings) of the wrong shape with the fix.

    For Kafka, the security settings are the ``HARNESS_KAFKA_*`` environment
    variables overridden by ``kafka_settings`` (see :data:`KAFKA_SETTINGS`); an
    AMQP URL carries its own (``amqps://user:pass@host:5671/vhost?cafile=...``).
    """
    url = url.strip()
    if kind == "kafka":
        servers = [s for s in url.split(",") if s]
        if not servers or not all(_HOST_PORT.match(s) for s in servers):
            raise InvalidArgument(
                f"{URL_OPTION[kind]}={url!r} is invalid: give host:port[,host:port...],"
                " e.g. 127.0.0.1:9092 (no scheme; security goes in HARNESS_KAFKA_SECURITY_PROTOCOL"
                f" and friends or {KAFKA_OPTION})"
            )
        options = kafka_client_options({**kafka_settings_from_env(), **(kafka_settings or {})})
        return BrokerInfo(kind=kind, url=",".join(servers), provider="url", client_options=options)
    if kafka_settings:
        raise InvalidArgument(
            f"{KAFKA_OPTION} applies to Kafka only: give RabbitMQ's TLS settings in the URL"
            " (amqps://user:pass@host:5671/vhost?cafile=/path/ca.pem)"
        )
    if not re.match(r"^amqps?://[^/]+", url):
        raise InvalidArgument(
            f"{URL_OPTION[kind]}={redact_url(url)!r} is invalid:"
            " give amqp://user:password@host:port/vhost (or amqps://)"
        )
    _check_amqp_tls(url)
    return BrokerInfo(kind=kind, url=url, provider="url")


def _check_amqp_tls(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    tls_options = [name for name in _AMQP_TLS_OPTIONS if name in query]
    if parts.scheme == "amqp" and tls_options:
        raise InvalidArgument(
            f"{URL_OPTION['rabbitmq']}={redact_url(url)!r}: {tls_options[0]} only applies to TLS:"
            " use amqps:// (and the broker's TLS port, usually 5671)"
        )
    for name in _AMQP_FILE_OPTIONS:
        for path in query.get(name, []):
            exists = os.path.isdir(path) if name == "capath" else os.path.isfile(path)
            if not exists:
                raise InvalidArgument(
                    f"{URL_OPTION['rabbitmq']}={redact_url(url)!r}: {name}={path!r} does not"
                    " exist: give the path of a PEM file readable here"
                )


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


def uninstall_client_probes(kind: BrokerKind) -> None:
    """Undo :func:`install_client_probes`: the driver's own methods, unwrapped."""
    if kind == "kafka":
        from brokers.kafka_probes import uninstall
    else:
        from brokers.rabbitmq_probes import uninstall
    uninstall()


def detach_driver_randomness(kind: BrokerKind) -> None:
    """Keep the driver of ``kind`` off the global ``random`` generator (idempotent).

    aiokafka picks nodes and shuffles fetches with the global ``random``, and
    aiormq draws consumer tags and message ids from it. A fuzz campaign
    creates destinations and starts the next example's service while
    Hypothesis generates that example, and Hypothesis flags any change to the
    global random state during generation as a strategy using ``random``.
    """
    private = random.Random()
    if kind == "rabbitmq":
        import aiormq.channel

        if getattr(aiormq.channel, "getrandbits", None) is random.getrandbits:
            aiormq.channel.getrandbits = private.getrandbits  # type: ignore[attr-defined]
        return
    import aiokafka.client
    import aiokafka.conn
    import aiokafka.consumer.fetcher
    import aiokafka.partitioner

    for module in (aiokafka.client, aiokafka.conn, aiokafka.consumer.fetcher, aiokafka.partitioner):
        if getattr(module, "random", None) is random:
            module.random = private


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
    kind: BrokerKind,
    *,
    url: str | None = None,
    provider: Provider = "auto",
    kafka_settings: Mapping[str, str] | None = None,
) -> Iterator[BrokerInfo]:
    """A running broker of ``kind`` for the duration of the block.

    ``kafka_settings`` (security settings, see :data:`KAFKA_SETTINGS`) apply to
    a Kafka broker given by URL, on top of the ``HARNESS_KAFKA_*`` variables.
    """
    if provider not in PROVIDERS:
        raise InvalidArgument(f"provider={provider!r} is invalid: use one of {PROVIDERS}")
    url = url or url_from_env(kind)
    if provider == "url" or (provider == "auto" and url):
        if not url:
            raise InvalidArgument(
                f"provider='url' needs a {kind} URL: pass {URL_OPTION[kind]} or set {URL_ENV[kind]}"
            )
        info = info_from_url(kind, url, kafka_settings=kafka_settings)
        check_reachable(info)
        yield info
    elif kafka_settings:
        raise InvalidArgument(
            f"{KAFKA_OPTION} applies to a Kafka broker given with {URL_OPTION['kafka']}"
            f" ({URL_ENV['kafka']}); brokers the harness starts need none"
        )
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
    "KAFKA_OPTION",
    "KAFKA_SETTINGS",
    "PROVIDERS",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "URL_ENV",
    "URL_OPTION",
    "Provider",
    "adapter",
    "check_kind",
    "check_reachable",
    "close_leftover_clients",
    "info_from_url",
    "install_client_probes",
    "kafka_client_options",
    "kafka_settings_from_env",
    "parse_kafka_settings",
    "provision",
    "recipe",
    "restart_local",
    "run_sync",
)
