"""Where a RabbitMQ broker is: its AMQP URL's parts, its management API's URL, its TLS.

Reads an ``amqp://`` or ``amqps://`` URL the way aiormq does (vhost,
credentials, the TLS query options), checks it has the shape the adapter
needs, derives the management HTTP API's base URL and a started node's
``amqps://`` URL from it, builds the SSL context its TLS options describe, and
probes whether a port speaks TLS. Standard library only: no client library.
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.parse
from typing import Final

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._redact import redact_url

_URL_FIX: Final = "check the option --amqp-url / the environment variable HARNESS_AMQP_URL"
_MANAGEMENT_ENV: Final = "HARNESS_RABBITMQ_MANAGEMENT_URL"


def _check_url(url: str) -> None:
    """Raise InvalidArgument unless ``url`` is ``amqp(s)://`` with a host and a valid port."""
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError as exc:
        raise InvalidArgument(
            f"url={redact_url(url)!r} has an invalid port ({exc}); " + _URL_FIX
        ) from exc
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise InvalidArgument(
            f"url={redact_url(url)!r} is invalid: use amqp://user:pass@host:port/vhost; " + _URL_FIX
        )


def _vhost_of(url: str) -> str:
    # Same rule as aiormq: no path or "/" is the default vhost, else the unquoted path.
    path = urllib.parse.urlsplit(url).path
    if path in ("", "/"):
        return "/"
    return urllib.parse.unquote(path[1:])


def with_vhost(url: str, vhost: str) -> str:
    """``url`` pointing into ``vhost`` (percent-encoded: a "/" in a name is ``%2F``)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, safe="")))


def _credentials(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username) if parts.username is not None else "guest"
    password = urllib.parse.unquote(parts.password) if parts.password is not None else "guest"
    return user, password


def management_url(info: BrokerInfo) -> str:
    """The management HTTP API base URL for ``info``.

    $HARNESS_RABBITMQ_MANAGEMENT_URL wins, then ``info.extra["management"]``,
    else ``http://<amqp host>:15672/`` (``https://<amqp host>:15671/`` for an
    ``amqps://`` URL: the management plugin's usual TLS port). Credentials may
    be given in the URL; without them the AMQP URL's are used. An https API is
    checked with the AMQP URL's TLS options (``cafile``, ``no_verify_ssl``...).
    """
    configured = os.environ.get(_MANAGEMENT_ENV) or info.extra.get("management")
    if configured:
        return configured
    parts = urllib.parse.urlsplit(info.url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    if parts.scheme == "amqps":
        return f"https://{host}:15671/"
    return f"http://{host}:15672/"


def secure_url(info: BrokerInfo, *, client_cert: bool = False) -> str | None:
    """The ``amqps://`` URL of a node the harness started (None if it has no TLS listener).

    Same user, password and vhost as ``info.url``, trusting the node's CA
    (``cafile=``); with ``client_cert`` it also presents a client certificate.
    """
    extra = info.extra
    if "amqps_port" not in extra:
        return None
    parts = urllib.parse.urlsplit(info.url)
    userinfo = parts.netloc.rpartition("@")[0]
    query = {"cafile": extra["tls.ca"]}
    if client_cert:
        query |= {"certfile": extra["tls.client_cert"], "keyfile": extra["tls.client_key"]}
    netloc = (
        f"{userinfo}@127.0.0.1:{extra['amqps_port']}"
        if userinfo
        else f"127.0.0.1:{extra['amqps_port']}"
    )
    return urllib.parse.urlunsplit(
        ("amqps", netloc, parts.path or "/", urllib.parse.urlencode(query, safe="/"), "")
    )


def _tls_options(url: str) -> dict[str, str]:
    """The TLS query options of an AMQP URL (the ones aiormq reads)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    names = ("cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl")
    return {name: query[name][-1] for name in names if name in query}


def _ssl_context(url: str) -> ssl.SSLContext:
    """An SSL context built from an AMQP URL's query the way aiormq builds its own."""
    options = _tls_options(url)
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=options.get("cafile"), capath=options.get("capath")
    )
    if "certfile" in options:
        context.load_cert_chain(options["certfile"], options.get("keyfile"))
    if options.get("no_verify_ssl", "0") != "0":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _speaks_tls(host: str, port: int, within: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificate not checked), blocking."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=within) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except OSError:
        return False
