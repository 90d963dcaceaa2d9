"""A throw-away certificate authority for the TLS listeners of brokers the harness starts.

:func:`make_pki` writes, into a private directory, a self-signed CA and a
server and a client certificate signed by it, for ``127.0.0.1`` and
``localhost``, with ``openssl`` (run with argument lists, never a shell). The
keys are unencrypted PKCS#8 PEM, which Kafka's PEM key store, Erlang's ssl and
Python's ssl all read.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from message_flow_harness._errors import BrokerStartError

_DAYS = "3650"
_TIMEOUT = 60.0
#: A new unencrypted P-256 key (fast to make; Kafka, Erlang and Python all take it).
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True, kw_only=True, slots=True)
class Pki:
    """Where the files are: PEM certificates and keys, and a key store for Kafka."""

    ca: Path
    server_cert: Path
    server_key: Path
    #: The server's key followed by its certificate chain (Kafka's PEM key store).
    server_keystore: Path
    client_cert: Path
    client_key: Path


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _run(argv: list[str], directory: Path) -> None:
    try:
        done = subprocess.run(
            argv, cwd=directory, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerStartError(
            f"`{' '.join(argv[:2])}` failed ({exc}): install openssl (apt-get install openssl)"
        ) from exc
    if done.returncode != 0:
        raise BrokerStartError(
            f"`{' '.join(argv[:2])}` failed with exit code {done.returncode}: "
            f"{(done.stdout + done.stderr).strip()[-1000:]}"
        )


def _leaf(openssl: str, directory: Path, name: str, usage: str) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        f"extendedKeyUsage = {usage}\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
    )
    request = [openssl, "req", "-new", *_EC_KEY, "-keyout", str(key), "-out", str(csr)]
    _run([*request, "-subj", f"/CN=harness-{name}"], directory)
    sign = [openssl, "x509", "-req", "-in", str(csr), "-CA", "ca.pem", "-CAkey", "ca.key"]
    sign += ["-CAcreateserial", "-days", _DAYS, "-sha256", "-extfile", str(ext)]
    _run([*sign, "-out", str(cert)], directory)
    csr.unlink()
    ext.unlink()
    return cert, key


def make_pki(directory: Path) -> Pki:
    """Create the CA, server and client certificates in ``directory`` (made mode 0700)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BrokerStartError("openssl is not on PATH: apt-get install openssl")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = [openssl, "req", "-x509", *_EC_KEY, "-keyout", "ca.key", "-out", "ca.pem"]
    ca += ["-days", _DAYS, "-sha256", "-subj", "/CN=message-flow-harness test CA"]
    ca += ["-addext", "basicConstraints=critical,CA:TRUE"]
    _run([*ca, "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
    server_cert, server_key = _leaf(openssl, directory, "server", "serverAuth")
    client_cert, client_key = _leaf(openssl, directory, "client", "clientAuth")
    keystore = directory / "server-keystore.pem"
    keystore.write_text(server_key.read_text() + server_cert.read_text())
    for path in directory.iterdir():
        path.chmod(0o600)
    return Pki(
        ca=directory / "ca.pem",
        server_cert=server_cert,
        server_key=server_key,
        server_keystore=keystore,
        client_cert=client_cert,
        client_key=client_key,
    )
