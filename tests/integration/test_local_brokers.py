"""`harness brokers up|status|down` on private brokers: real URLs, nothing left behind.

Each test uses its own cache directory, so it starts (and stops) brokers of
its own beside the session's shared ones; Kafka's jars are linked in from the
shared cache rather than fetched again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from message_flow_harness.brokers._local import cache_dir
from message_flow_harness.brokers.kafka import KAFKA_VERSION, ensure_jars


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes whose arguments or environment contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if text.encode() in cmdline or text.encode() in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


def harness(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "message_flow_harness._cli", "brokers", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HARNESS_CACHE_DIR": str(cache)},
        check=False,
    )


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_brokers_up_prints_working_urls_and_down_leaves_nothing(kind: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    if kind == "kafka":
        ensure_jars()
        (cache / f"kafka-{KAFKA_VERSION}").symlink_to(cache_dir() / f"kafka-{KAFKA_VERSION}")
    up = harness(cache, "up", kind)
    assert up.returncode == 0, up.stderr
    assert "export HARNESS_" in up.stdout
    workdir = next(line.split(": ", 1)[1] for line in up.stdout.splitlines() if "workdir:" in line)
    assert Path(workdir).is_dir()
    assert oct(Path(workdir).stat().st_mode & 0o777) == "0o700"
    assert processes_mentioning(workdir), "the broker should be running"

    status = harness(cache, "status", kind)
    assert "not running" not in status.stdout
    url = status.stdout.split()[1]
    assert url.startswith("127.0.0.1:") or url.startswith("amqp://guest:***@127.0.0.1:")

    down = harness(cache, "down", kind)
    assert down.returncode == 0, down.stderr
    assert f"{kind}: stopped" in down.stdout
    assert not Path(workdir).exists()
    assert processes_mentioning(workdir) == []
    assert "not running" in harness(cache, "status", kind).stdout
