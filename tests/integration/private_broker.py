"""A private broker of the harness's own recipe, for tests that need a listener the
session's broker may lack (one started by an older harness, or an external one).

It runs under its own cache directory through ``harness brokers up``, like
``test_local_brokers.py``; Kafka's jars are linked in from the shared cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from message_flow_harness import BrokerInfo
from message_flow_harness._drivers import driver
from message_flow_harness._message import BrokerKind
from message_flow_harness.brokers._local import cache_dir


def _harness(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "message_flow_harness._cli", "brokers", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "HARNESS_CACHE_DIR": str(cache)},
        check=False,
    )


@contextmanager
def private_broker(kind: BrokerKind, directory: Path) -> Iterator[BrokerInfo]:
    """Start a broker of ``kind`` under ``directory``; stop it (and delete its data) after."""
    cache = directory / "cache"
    cache.mkdir(parents=True)
    if kind == "kafka":
        from message_flow_harness.brokers.kafka import KAFKA_VERSION, ensure_jars

        ensure_jars()
        (cache / f"kafka-{KAFKA_VERSION}").symlink_to(cache_dir() / f"kafka-{KAFKA_VERSION}")
    up = _harness(cache, "up", kind)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        slot = driver(kind).local_slot()  # HARNESS_RABBITMQ_ROOT's node has a slot of its own
        state = json.loads((cache / "run" / slot / "state.json").read_text())
        yield BrokerInfo(kind=kind, url=state["url"], provider="local", extra=state["extra"])
    finally:
        _harness(cache, "down", kind)
