"""Ctrl-C in the middle of a fuzz campaign ends it promptly and cleans up after it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, brokers

ROOT = Path(__file__).parents[2]


def _as_in_a_terminal() -> None:
    """Ctrl-C's default in the campaign's process: a shell without job control (CI's
    ``cmd &``) starts its background jobs with SIGINT ignored, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _destinations(info: BrokerInfo) -> set[str]:
    async with brokers.adapter(info) as adapter:
        return set(await adapter.list_destinations("h-"))


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_ctrl_c_stops_a_fuzz_run_within_bounds_and_leaves_nothing(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path
) -> None:
    info: BrokerInfo = request.getfixturevalue(f"{kind}_broker")
    service = "kafka_correct" if kind == "kafka" else "rabbitmq_correct"
    (tmp_path / "flows.py").write_text(
        "from message_flow_harness import Flow\n"
        f"from message_flow_harness.zoo.{kind}_services import {service}\n"
        f"flow = Flow(sut={service}, broker={kind!r}, quiet=1.0)\n"
    )
    before = asyncio.run(_destinations(info))
    option = "--kafka-bootstrap" if kind == "kafka" else "--amqp-url"
    # stderr to a file: a pipe nobody reads until the end could fill and stall the campaign.
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr_file, subprocess.Popen(
        [sys.executable, "-m", "message_flow_harness._cli", "fuzz", "flows:flow",
         "--max-examples", "1000", "-v", option, info.url, "--report-dir", str(tmp_path)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr_file, text=True,
        preexec_fn=_as_in_a_terminal,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}",
             "HARNESS_RABBITMQ_MANAGEMENT_URL": info.extra.get("management", "")},
    ) as fuzzing:  # fmt: skip
        assert fuzzing.stdout is not None
        for _ in range(3):  # wait until examples are running (-v: a line per example)
            if not fuzzing.stdout.readline().strip():
                pytest.fail(f"the campaign ended before Ctrl-C: {errors.read_text()}")
        fuzzing.send_signal(signal.SIGINT)
        started = time.monotonic()
        try:
            stdout, _ = fuzzing.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            fuzzing.kill()
            stdout, _ = fuzzing.communicate()
            pytest.fail(
                f"still running 60 s after Ctrl-C;\nstdout (end): {stdout[-3000:]}"
                f"\nstderr (end): {errors.read_text()[-5000:]}"
            )
        stopped_in = time.monotonic() - started
    stderr = errors.read_text()
    print(f"\n{kind}: stopped {stopped_in:.1f} s after Ctrl-C")
    assert fuzzing.returncode == 2, stderr
    assert "interrupted" in stderr
    assert asyncio.run(_destinations(info)) <= before
