"""`harness brokers up|status|down` on private brokers: real URLs, nothing left behind.

What ``up`` prints to paste is pasted into ``sh``, and a client connects with
it; a second lease keeps the broker up through the first one's ``down``.

Each test uses its own cache directory, so it starts (and stops) brokers of
its own beside the session's shared ones; Kafka's jars are linked in from the
shared cache rather than fetched again.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from message_flow_harness.brokers._local import cache_dir
from message_flow_harness.brokers.kafka import KAFKA_VERSION, ensure_jars

#: The repository: `up` and `down` run here, so their lease is named after it.
ROOT = Path(__file__).resolve().parents[2]


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
        cwd=ROOT,
        check=False,
    )


#: Run in a shell after the pasted lines: connects with what they set, and nothing else.
_CLIENT = """
import sys
from message_flow_harness import brokers

async def connect(info):
    async with brokers.adapter(info) as adapter:
        await adapter.list_destinations("no-such-prefix-")

with brokers.provision(sys.argv[1]) as info:
    assert info.provider == "url", info
    brokers.run_sync(lambda: connect(info))
print("connected")
"""


def paste_into_sh(lines: str, kind: str) -> subprocess.CompletedProcess[str]:
    """``lines`` as a user pastes them into ``sh``, then a client of ``kind`` in that shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    script = f"{lines}\nexec {shlex.quote(sys.executable)} -c {shlex.quote(_CLIENT)} {kind}\n"
    return subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=120, env=clean, check=False
    )


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_brokers_up_prints_working_settings_and_down_leaves_nothing(
    kind: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    if kind == "kafka":
        ensure_jars()
        (cache / f"kafka-{KAFKA_VERSION}").symlink_to(cache_dir() / f"kafka-{KAFKA_VERSION}")
    up = harness(cache, "up", kind)
    assert up.returncode == 0, up.stderr
    workdir = next(line.split(": ", 1)[1] for line in up.stdout.splitlines() if "workdir:" in line)
    assert Path(workdir).is_dir()
    assert oct(Path(workdir).stat().st_mode & 0o777) == "0o700"
    assert processes_mentioning(workdir), "the broker should be running"

    # What `up` says to paste works in a shell, and keeps the password off the terminal.
    pasted = up.stdout.split("paste these lines into your shell\n", 1)[1]
    assert all(line.startswith(("export ", ". ", "# ")) for line in pasted.splitlines())
    env_file = cache / "brokers.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    client = paste_into_sh(pasted, kind)
    assert client.returncode == 0, client.stdout + client.stderr
    assert client.stdout.strip() == "connected"
    state = json.loads((cache / "run" / kind / "state.json").read_text())
    assert state["url"] in env_file.read_text()
    if kind == "rabbitmq":
        assert f". {env_file}" in pasted.splitlines()
        assert state["url"] not in up.stdout  # amqp://guest:<password>@...
    else:
        assert f"export HARNESS_KAFKA_BOOTSTRAP={state['url']}" in pasted.splitlines()

    status = harness(cache, "status", kind)
    assert "not running" not in status.stdout
    url = status.stdout.split()[1]
    assert url.startswith("127.0.0.1:") or url.startswith("amqp://guest:***@127.0.0.1:")
    assert f"held by lease {str(ROOT)!r}" in status.stdout  # `up` ran in this project

    # Another lease keeps the broker up through this project's `down`.
    assert harness(cache, "up", kind, "--lease", "ci-job").returncode == 0
    down = harness(cache, "down", kind)
    assert down.returncode == 0, down.stderr
    assert f"{kind}: released lease {str(ROOT)!r}; it keeps running" in down.stdout
    assert "held by lease 'ci-job'" in down.stdout
    assert processes_mentioning(workdir), "the broker should still run for ci-job"

    down = harness(cache, "down", kind, "--lease", "ci-job")
    assert down.returncode == 0, down.stderr
    assert f"{kind}: released lease 'ci-job'; no lease was left, so it stopped" in down.stdout
    assert not Path(workdir).exists()
    assert processes_mentioning(workdir) == []
    assert not env_file.exists()
    assert "not running" in harness(cache, "status", kind).stdout
