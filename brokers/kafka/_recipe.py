"""A local single-node KRaft Kafka for tests, run from Apache Kafka's own jars with the local Java.

:class:`KafkaRecipe` checks Java and the jars (:mod:`brokers.kafka._jars`),
picks ports, writes ``server.properties`` (client, controller, fault-proxy and
SASL_SSL listeners, settings tuned for tests) and a log4j2 config, formats the
storage, and waits until a produce-and-consume round trip works
(:mod:`brokers.kafka._ready`). :mod:`brokers._local` launches and supervises it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import BrokerStartError
from message_flow_harness._message import BrokerKind
from message_flow_harness.brokers._local import LaunchPlan, free_port
from message_flow_harness.brokers.kafka._clients import MAX_MESSAGE_BYTES
from message_flow_harness.brokers.kafka._errors import describe
from message_flow_harness.brokers.kafka._jars import (
    KAFKA_VERSION,
    ensure_jars,
    jar_root,
    jars_ready,
)
from message_flow_harness.brokers.kafka._ready import await_connect, await_round_trip
from message_flow_harness.brokers.kafka._secure import (
    SecureListener,
    make_secure_listener,
    secure_info,
)

#: The broker's JVM: a bounded heap; the serial collector, since a test broker
#: on a small machine gains nothing from G1's background threads.
_BROKER_JVM = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)
#: The one-shot storage formatter: C1 only, as it exits before C2 would pay off.
_TOOL_JVM = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData")
_BROKER_MAIN = "kafka.Kafka"
#: Listeners PROXY0, PROXY1 for the fault proxy (see KafkaRecipe).
_PROXY_LISTENERS = 2
_STORAGE_TOOL = "kafka.tools.StorageTool"


_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka_request.name = kafka.request.logger
logger.kafka_request.level = warn
"""


def _java() -> str:
    """The java the broker will run with: $JAVA_HOME's, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerStartError(
            "Java is not on PATH: the local Kafka broker needs Java 17 or newer "
            "(apt-get install openjdk-17-jre-headless), or give a broker with --kafka-bootstrap"
        )
    return found


def _java_major(java: str) -> int:
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BrokerStartError(
            f"{java} -version failed ({describe(err)}): check the Java install"
        ) from err
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        raise BrokerStartError(
            f"cannot tell the version of {java} from {done.stderr.strip()!r}: "
            "install Java 17 or newer (apt-get install openjdk-17-jre-headless)"
        )
    major = int(found.group(1))
    # Java 8 and older report "1.8.0_…".
    return int(found.group(2) or 0) if major == 1 else major


def _distinct_free_ports(count: int) -> list[int]:
    """``count`` free ports, no two alike (the OS may hand out a just-released port again)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _cluster_id() -> str:
    """A fresh cluster id in Kafka's format (a UUID, URL-safe base64, unpadded).

    Never one starting with "-" (one in 64 would): the storage tool would read
    it as an option, and Kafka's own Uuid.randomUuid() avoids them too.
    """
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not found.startswith("-"):
            return found


def _server_properties(
    *,
    data: Path,
    client: int,
    controller: int,
    proxies: Mapping[str, tuple[int, int]],
    secure: SecureListener | None = None,
) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{client}", f"CONTROLLER://127.0.0.1:{controller}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{client}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    for name, (listen, advertise) in proxies.items():
        listeners.append(f"{name}://127.0.0.1:{listen}")
        # Clients that bootstrap here are sent to the fault proxy's port.
        advertised.append(f"{name}://127.0.0.1:{advertise}")
        protocols.append(f"{name}:PLAINTEXT")
    if secure is not None:
        listeners.append(f"SASL_SSL://127.0.0.1:{secure.port}")
        advertised.append(f"SASL_SSL://127.0.0.1:{secure.port}")
        protocols.append("SASL_SSL:SASL_SSL")
    settings: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocols),
        "log.dirs": data,
        # Tests create their topics explicitly; a typo must fail, not create one.
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        # The first group join would otherwise wait 3 s.
        "group.initial.rebalance.delay.ms": 0,
        # Services under test use 1-2 s session timeouts so crashes cost little.
        "group.min.session.timeout.ms": 500,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "share.coordinator.state.topic.num.partitions": 4,
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "replica.fetch.max.bytes": MAX_MESSAGE_BYTES,
        # Small segments, but a batch must fit in one: Kafka rejects batches
        # larger than the segment, so twice the largest message.
        "log.segment.bytes": 2 * MAX_MESSAGE_BYTES,
        "log.index.size.max.bytes": 1024 * 1024,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 4,
    }
    if secure is not None:
        settings |= secure.properties()
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaRecipe:
    """A single-node KRaft Kafka (broker and controller in one JVM) for tests.

    Besides the client listener it has two listeners for a fault proxy:
    ``PROXY<i>`` listens on ``extra["proxy<i>.listen"]`` but is advertised as
    ``extra["proxy<i>.advertised"]``, a port a TCP proxy binds and forwards to
    the listen port, so clients that bootstrap through the proxy stay on it.
    """

    kind: BrokerKind = "kafka"
    #: Cold start with cached jars takes about 6 s on 2 cores: format ~1.5 s, then
    #: JVM start, KRaft election and the first round trip ~4.5 s.
    start_timeout: float = 60.0

    def check_prerequisites(self) -> None:
        """Java >= 17, and Maven if Kafka's jars are not cached yet."""
        java = _java()
        major = _java_major(java)
        if major < 17:
            raise BrokerStartError(
                f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java 17 or newer: "
                "apt-get install openjdk-17-jre-headless (or set JAVA_HOME)"
            )
        if not jars_ready() and shutil.which("mvn") is None:
            raise BrokerStartError(
                f"Kafka {KAFKA_VERSION}'s jars are not cached in {jar_root()} and Maven (mvn) "
                "is not on PATH to fetch them: apt-get install maven, then run "
                '`python -c "from message_flow_harness.brokers.kafka import ensure_jars; '
                'ensure_jars()"`'
            )

    def prepare(self, workdir: Path) -> LaunchPlan:
        """Write server.properties and a log4j2 config into ``workdir`` and format storage."""
        workdir = workdir.resolve()  # the broker resolves relative paths against its own cwd
        libs = ensure_jars()
        java = _java()
        classpath = str(libs / "*")
        data = workdir / "data"
        log = workdir / "kafka.log"
        properties = workdir / "server.properties"
        log_config = workdir / "log4j2.properties"

        ports = _distinct_free_ports(3 + 2 * _PROXY_LISTENERS)
        client, controller = ports[0], ports[1]
        proxies = {
            f"PROXY{i}": (ports[2 + 2 * i], ports[3 + 2 * i]) for i in range(_PROXY_LISTENERS)
        }
        secure = make_secure_listener(workdir, ports[-1])
        properties.write_text(
            _server_properties(
                data=data, client=client, controller=controller, proxies=proxies, secure=secure
            )
        )
        log_config.write_text(_LOG4J2.format(log=log))
        log_option = f"-Dlog4j2.configurationFile={log_config}"

        fmt = [java, *_TOOL_JVM, log_option, "-cp", classpath, _STORAGE_TOOL, "format"]
        fmt += ["--cluster-id", _cluster_id(), "--config", str(properties)]
        if secure is not None:
            fmt += secure.format_options()
        try:
            done = subprocess.run(
                fmt, cwd=workdir, capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise BrokerStartError(
                f"formatting Kafka storage in {data} took over 60 s: is the machine overloaded?"
            ) from err
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise BrokerStartError(
                f"formatting Kafka storage in {data} failed (exit {done.returncode}); "
                f"check {properties}. The tool said:\n{tail}"
            )

        extra = {"log": str(log), "data": str(workdir)}
        for i, (listen, advertise) in enumerate(proxies.values()):
            extra[f"proxy{i}.listen"] = f"127.0.0.1:{listen}"
            extra[f"proxy{i}.advertised"] = f"127.0.0.1:{advertise}"
        if secure is not None:
            extra |= secure.extra()
        return LaunchPlan(
            argv=[java, *_BROKER_JVM, log_option, "-cp", classpath, _BROKER_MAIN, str(properties)],
            url=f"127.0.0.1:{client}",
            extra=extra,
        )

    def wait_ready(self, info: BrokerInfo, timeout: float) -> None:
        """Retry create, publish, tap and delete of a scratch topic until it works or time is up.

        Then connect once through the SASL_SSL listener, so a broken TLS set-up
        fails here rather than in a test.
        """
        started = time.monotonic()
        asyncio.run(await_round_trip(info, within=timeout))
        secure = secure_info(info)
        if secure is not None:
            left = max(1.0, timeout - (time.monotonic() - started))
            asyncio.run(await_connect(secure, within=left))
