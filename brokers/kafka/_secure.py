"""The SASL_SSL listener of a local Kafka broker, and how clients reach it.

:func:`make_secure_listener` makes the listener's certificates (the test CA of
:mod:`brokers._tls`) and SASL password; a :class:`SecureListener` gives the
broker's properties, the storage formatter's SCRAM credentials and the entries
of ``BrokerInfo.extra`` that describe it. :func:`secure_settings` and
:func:`secure_info` read those entries back for clients and tests. It imports
no aiokafka.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from message_flow_harness._broker import BrokerInfo
from message_flow_harness.brokers._tls import make_pki, openssl_available
from message_flow_harness.brokers.kafka._settings import kafka_client_options

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PASSWORD_FILE = "sasl-password"


@dataclass(frozen=True, kw_only=True)
class SecureListener:
    """The SASL_SSL listener of a local broker: TLS with the test CA, SASL PLAIN and SCRAM."""

    port: int
    keystore: Path
    ca: Path
    username: str
    password: str

    def properties(self) -> dict[str, object]:
        """The broker's ``server.properties`` entries for this listener."""
        prefix = "listener.name.sasl_ssl."
        settings: dict[str, object] = {
            f"{prefix}sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
            f"{prefix}plain.sasl.jaas.config": (
                f'{_PLAIN_LOGIN} required user_{self.username}="{self.password}";'
            ),
            f"{prefix}ssl.keystore.type": "PEM",
            f"{prefix}ssl.keystore.location": self.keystore,
            f"{prefix}ssl.truststore.type": "PEM",
            f"{prefix}ssl.truststore.location": self.ca,
            # A client certificate is checked when given (mutual TLS), not required.
            f"{prefix}ssl.client.auth": "requested",
        }
        for mechanism in SCRAM_MECHANISMS:
            settings[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = f"{_SCRAM_LOGIN} required;"
        return settings

    def format_options(self) -> list[str]:
        """The storage formatter's options that store the SCRAM credentials."""
        options = []
        for mechanism in SCRAM_MECHANISMS:
            scram = f"name={self.username},password={self.password}"
            options += ["--add-scram", f"{mechanism}=[{scram}]"]
        return options

    def extra(self) -> dict[str, str]:
        """The ``BrokerInfo.extra`` entries that :func:`secure_settings` reads back."""
        tls = self.keystore.parent
        return {
            "sasl_ssl": f"127.0.0.1:{self.port}",
            "sasl_ssl.ca": str(self.ca),
            "sasl_ssl.username": self.username,
            "sasl_ssl.password_file": str(tls / _PASSWORD_FILE),
            "sasl_ssl.client_cert": str(tls / "client.pem"),
            "sasl_ssl.client_key": str(tls / "client.key"),
        }


def make_secure_listener(workdir: Path, port: int) -> SecureListener | None:
    """Certificates and a SASL password for the SASL_SSL listener (None without openssl)."""
    if not openssl_available():
        return None
    tls = workdir / "tls"
    pki = make_pki(tls)
    password = secrets.token_hex(16)
    password_file = tls / _PASSWORD_FILE
    password_file.write_text(password)
    password_file.chmod(0o600)
    return SecureListener(
        port=port, keystore=pki.server_keystore, ca=pki.ca, username="harness", password=password
    )


def secure_settings(info: BrokerInfo, *, mechanism: str = "PLAIN") -> dict[str, str] | None:
    """Settings (``brokers.KAFKA_SETTINGS``) for the SASL_SSL listener of a broker the harness
    started, or None when it has none (an older or external broker, or no openssl).

    ``mechanism`` is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512: the listener takes each.
    """
    extra = info.extra
    if "sasl_ssl" not in extra:
        return None
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_username": extra["sasl_ssl.username"],
        "sasl_password": Path(extra["sasl_ssl.password_file"]).read_text().strip(),
        "ssl_cafile": extra["sasl_ssl.ca"],
    }


def secure_info(info: BrokerInfo, *, mechanism: str = "PLAIN") -> BrokerInfo | None:
    """``info`` as seen through its SASL_SSL listener (see :func:`secure_settings`), or None."""
    settings = secure_settings(info, mechanism=mechanism)
    if settings is None:
        return None
    return BrokerInfo(
        kind="kafka",
        url=info.extra["sasl_ssl"],
        provider=info.provider,
        client_options=kafka_client_options(settings),
    )
