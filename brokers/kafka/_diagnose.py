"""Why connecting to a Kafka broker failed, when it is a TLS or SASL mismatch.

aiokafka reports every bootstrap failure as "Unable to bootstrap". When the
adapter cannot connect, :func:`diagnose` opens one bare connection (and, if
needed, one TLS handshake) to the first bootstrap server to tell a wrong CA,
a wrong password, a missing SASL or TLS against a plain port apart, and says
which setting to change. What the broker said is stated as fact; what that
suggests about its listener is worded as a guess ("it looks like ...; if so,
..."), since a proxy or another service on the port can answer the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest

from message_flow_harness._broker import BrokerInfo
from message_flow_harness.brokers.kafka._clients import bounded
from message_flow_harness.brokers.kafka._errors import describe

_SETTINGS_FIX = "HARNESS_KAFKA_* or --kafka-option, see README 'Brokers: yours or ours'"


async def diagnose(info: BrokerInfo, *, within: float) -> str | None:
    """Why connecting failed, when it is a TLS or SASL mismatch; None when it is not that.

    aiokafka reports every bootstrap failure as "Unable to bootstrap": one bare
    connection (bounded by ``within``) to the first bootstrap server tells
    a wrong CA, a wrong password or TLS against a plain port apart.
    """
    options = info.client_options
    protocol = str(options.get("security_protocol", "PLAINTEXT"))
    host, _, port_text = info.url.split(",")[0].strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    where = f"{host}:{port_text}"
    try:
        async with asyncio.timeout(within):
            conn = await create_conn(
                host,
                int(port_text),
                client_id="harness-diagnose",
                request_timeout_ms=int(within * 1000),
                **options,
            )
            try:
                await conn.send(MetadataRequest([]))
            finally:
                # close() hands back a future: a TLS connection closes only after its
                # shutdown round trip, which a loop that ends first would cut off,
                # leaving the socket open until the garbage collector finds it.
                await bounded(conn.close(), within)
    except ssl.SSLCertVerificationError as err:
        message = err.verify_message or str(err)
        if "mismatch" in message:
            return (
                f"the TLS certificate of {where} does not name {host!r} ({message}): connect"
                " by a name the certificate holds, or set ssl_check_hostname=false"
            )
        return (
            f"the TLS certificate of {where} is not trusted ({message}): set ssl_cafile"
            f" ({_SETTINGS_FIX}) to the PEM file of the CA that signed it"
        )
    except (kafka_errors.SaslAuthenticationFailed, kafka_errors.AuthenticationFailedError) as err:
        return (
            f"SASL {options.get('sasl_mechanism')} login as {options.get('sasl_plain_username')!r}"
            f" was refused ({describe(err)}): check sasl_username, sasl_password and"
            f" sasl_mechanism ({_SETTINGS_FIX})"
        )
    except kafka_errors.UnsupportedSaslMechanismError as err:
        return (
            f"{where} does not offer SASL mechanism {options.get('sasl_mechanism')}"
            f" ({describe(err)}): set sasl_mechanism to one it enables"
        )
    except (TimeoutError, kafka_errors.KafkaError, OSError) as err:
        if protocol.endswith("SSL"):
            if isinstance(err, ssl.SSLError) or not await _speaks_tls(host, port_text, within):
                return (
                    f"{where} did not complete a TLS handshake ({describe(err)}): it looks"
                    " like a PLAINTEXT or SASL_PLAINTEXT listener; if so, set that"
                    " security_protocol, or connect to the broker's TLS port"
                )
            if not protocol.startswith("SASL_"):
                return (
                    f"{where} completed a TLS handshake, then closed the connection"
                    f" ({describe(err)}): it looks like a listener that wants SASL; if so, set"
                    f" security_protocol=SASL_SSL with sasl_username and sasl_password"
                    f" ({_SETTINGS_FIX})"
                )
            return None
        if await _speaks_tls(host, port_text, within):
            sasl = protocol.startswith("SASL_")
            return (
                f"{where} answered a TLS handshake and security_protocol is {protocol}:"
                " it looks like a TLS listener; if so, set"
                f" security_protocol={'SASL_SSL' if sasl else 'SSL or SASL_SSL'}"
                f" and ssl_cafile ({_SETTINGS_FIX})"
            )
        if not protocol.startswith("SASL_") and isinstance(err, kafka_errors.KafkaConnectionError):
            return (
                f"{where} closed the connection ({describe(err)}): the listener may want SASL;"
                f" if so, set security_protocol=SASL_PLAINTEXT with sasl_username and"
                f" sasl_password ({_SETTINGS_FIX})"
            )
    return None


async def _speaks_tls(host: str, port: str, within: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificate not checked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(host, int(port), ssl=context)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
