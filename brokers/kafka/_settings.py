"""Kafka's security settings for a broker given by URL, and the URL itself.

Each setting is also an environment variable (``HARNESS_KAFKA_<NAME>``) and a
``--kafka-option NAME=VALUE``; :func:`kafka_client_options` turns them into
aiokafka's keyword arguments, checking that they fit together first.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping, Sequence

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import InvalidArgument

URL_ENV = "HARNESS_KAFKA_BOOTSTRAP"
URL_OPTION = "--kafka-bootstrap"
_HOST_PORT = re.compile(r"^\[?[A-Za-z0-9.\-:]+\]?:\d{1,5}$")

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


def info_from_url(url: str, *, settings: Mapping[str, str] | None = None) -> BrokerInfo:
    """Describe an existing Kafka broker, rejecting bootstrap servers of the wrong shape.

    The security settings are the ``HARNESS_KAFKA_*`` environment variables
    overridden by ``settings`` (see :data:`KAFKA_SETTINGS`).
    """
    url = url.strip()
    servers = [s for s in url.split(",") if s]
    if not servers or not all(_HOST_PORT.match(s) for s in servers):
        raise InvalidArgument(
            f"{URL_OPTION}={url!r} is invalid: give host:port[,host:port...],"
            " e.g. 127.0.0.1:9092 (no scheme; security goes in HARNESS_KAFKA_SECURITY_PROTOCOL"
            f" and friends or {KAFKA_OPTION})"
        )
    options = kafka_client_options({**kafka_settings_from_env(), **(settings or {})})
    return BrokerInfo(kind="kafka", url=",".join(servers), provider="url", client_options=options)
