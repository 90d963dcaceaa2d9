"""``harness fuzz`` as a person runs it, on a real RabbitMQ: off a terminal it prints no bar
and no line per example, just a summary that names the seed it chose and keeps its lists
short; ``--replay`` with nothing saved says where it looked and exits 2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo

# Eight poison messages, all swallowed by the service; the check holds unless all eight
# are lost, so the minimal failure keeps them: eight "lost" anomalies to list.
FLOWS = """\
from hypothesis import strategies as st

from message_flow_harness import Flow, checks
from message_flow_harness import strategies as hs
from message_flow_harness._checks import Check, Verdict
from message_flow_harness.strategies import POISON
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_correct, rabbitmq_swallows_errors

lost = checks.no_loss()


def all_eight_lost(history):
    verdict = lost(history)
    return verdict if len(verdict.anomalies) >= 8 else Verdict(verdict.check)


swallows = Flow(
    sut=rabbitmq_swallows_errors,
    broker="rabbitmq",
    checks=[Check("no_loss()", all_eight_lost)],
    messages=hs.messages(values=st.just(POISON), min_size=8, max_size=8),
    quiet=0.5,
)
correct = Flow(sut=rabbitmq_correct, broker="rabbitmq", checks=[checks.no_loss()], quiet=0.5)
"""


@pytest.mark.rabbitmq
def test_fuzz_prints_its_seed_and_a_bounded_summary_and_replay_needs_saved_failures(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    (tmp_path / "cli_flows.py").write_text(FLOWS)
    root = Path(__file__).parents[2]
    # --amqp-url names the AMQP port only: the local node's management API is elsewhere.
    management = {"HARNESS_RABBITMQ_MANAGEMENT_URL": rabbitmq_broker.extra["management"]}

    def harness(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "message_flow_harness._cli", "fuzz", *args,
             "--amqp-url", rabbitmq_broker.url, "--report-dir", str(tmp_path / "reports")],
            capture_output=True, text=True, cwd=cwd, timeout=600,
            env={**os.environ, "PYTHONPATH": f"{root}:{tmp_path}", **management},
        )  # fmt: skip

    found = harness("cli_flows:swallows", "--max-examples", "3", "--json", "report.json")
    assert found.returncode == 1, found.stderr
    out = found.stdout
    chosen = re.search(r"^seed (\d+): re-run with --seed (\d+)$", out, re.MULTILINE)
    assert chosen is not None, out
    assert chosen[1] == chosen[2]
    assert json.loads((tmp_path / "report.json").read_text())["seed"] == int(chosen[1])
    assert "no_loss(): 8 anomalies (8 inputs, 0 outputs, 0 dead-lettered)" in out
    assert out.count("  - lost:") == 5
    assert "  … and 3 more" in out
    assert "minimal schedule has 8 messages and 0 faults:" in out
    assert "@seed" not in out + found.stderr
    assert not re.search(r"^\s+search\s+#", out, re.MULTILINE)  # no line per example
    assert "\x1b[" not in out + found.stderr  # no bar, no colours: not a terminal
    assert "skipping message" not in out + found.stderr  # the service's logs need -vv

    # The failure was saved under this directory: --replay runs it again, without search.
    again = harness("cli_flows:swallows", "--replay", "--quiet")
    assert again.returncode == 1, again.stderr
    assert "lost" in again.stdout

    # Saved failures exist, but none of this flow: said after looking, exit 2.
    other = harness("cli_flows:correct", "--replay")
    assert other.returncode == 2, other.stdout
    assert "--replay found no saved failure of cli_flows:correct in" in other.stderr
    assert "every check held" not in other.stdout

    # No saved failures at all here: said before any broker is used.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    nothing = harness("cli_flows:swallows", "--replay", cwd=elsewhere)
    assert nothing.returncode == 2
    database = elsewhere.resolve() / ".hypothesis" / "harness"
    assert f"--replay found no saved failure of cli_flows:swallows in {database}" in (
        nothing.stderr
    )
    assert "fuzzing" not in nothing.stdout
