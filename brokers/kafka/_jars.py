"""Apache Kafka's own jars from Maven Central: which version, and resolving them once per cache.

:func:`ensure_jars` runs Maven once per cache directory (under a file lock, into
a staging directory renamed into place when complete) and returns the ``libs``
folder the local broker's classpath points at. It imports no aiokafka, so
``make`` and the benchmarks can fetch the jars without a client library.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from message_flow_harness._errors import BrokerStartError
from message_flow_harness.brokers._local import cache_dir

#: Broker and tools share one version: Maven Central has kafka-tools only up to 4.3.1.
KAFKA_VERSION = "4.3.1"
#: The log4j-core version kafka-server 4.3.1 brings in; its SLF4J binding must match it.
LOG4J_VERSION = "2.25.4"


_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.harness</groupId>
  <artifactId>kafka-jars</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <!-- Kafka {KAFKA_VERSION} logs through SLF4J 1.7 (slf4j-api 1.7.36) to log4j2:
         log4j-slf4j-impl is the SLF4J 1.x binding (log4j-slf4j2-impl would be ignored). -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

_EXPECTED_JARS = (
    f"kafka_2.13-{KAFKA_VERSION}.jar",
    f"kafka-tools-{KAFKA_VERSION}.jar",
    f"kafka-clients-{KAFKA_VERSION}.jar",
    f"log4j-core-{LOG4J_VERSION}.jar",
    f"log4j-slf4j-impl-{LOG4J_VERSION}.jar",
)
_COMPLETE = ".complete"


def jar_root() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}"


def jars_ready() -> bool:
    return (jar_root() / _COMPLETE).is_file()


def ensure_jars(*, timeout: float = 900.0) -> Path:
    """Kafka's jars, resolved from Maven Central once per cache directory; returns the libs dir.

    Safe to call from several processes at once: one resolves while the others
    wait on a file lock, and a half-finished download is never used because it
    is built in a temporary directory and renamed into place when complete.
    """
    from filelock import FileLock, Timeout

    root = jar_root()
    if jars_ready():
        return root / "libs"
    lock = FileLock(str(root.with_name(root.name + ".lock")))
    try:
        with lock.acquire(timeout=timeout):
            if not jars_ready():
                _resolve_jars(root, timeout=timeout)
    except Timeout as err:
        raise BrokerStartError(
            f"waited {timeout:g} s for another process resolving Kafka jars into {root}: "
            f"if none is running, delete {lock.lock_file}"
        ) from err
    return root / "libs"


def _resolve_jars(root: Path, *, timeout: float) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerStartError(
            f"Maven (mvn) is needed once to fetch Kafka {KAFKA_VERSION}'s jars into {root}: "
            "install it (apt-get install maven) or fill the cache on a machine that has it"
        )
    # Holding the lock, any partial directory is a leftover of a killed process.
    for leftover in root.parent.glob(f"{root.name}.*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{root.name}.", suffix=".partial", dir=root.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the jars from other users of the cache
    try:
        (staging / "pom.xml").write_text(_POM)
        argv = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(staging / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging / 'libs'}",
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise BrokerStartError(
                f"Maven did not resolve Kafka {KAFKA_VERSION}'s jars within {timeout:g} s: "
                "check access to Maven Central (proxy settings in ~/.m2/settings.xml)"
            ) from err
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise BrokerStartError(
                f"Maven failed to resolve Kafka {KAFKA_VERSION}'s jars (exit {done.returncode}): "
                f"check access to Maven Central. Its output ends with:\n{tail}"
            )
        missing = [jar for jar in _EXPECTED_JARS if not (staging / "libs" / jar).is_file()]
        if missing:
            raise BrokerStartError(
                f"Maven resolved Kafka {KAFKA_VERSION} without {', '.join(missing)}: "
                f"LOG4J_VERSION={LOG4J_VERSION} must match the log4j-core that Kafka brings in"
            )
        (staging / _COMPLETE).write_text(f"kafka {KAFKA_VERSION}, log4j {LOG4J_VERSION}\n")
        if root.exists():  # a layout from an older harness without the marker
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
