"""A flow's fault model on real brokers: ``harness fuzz`` draws it without a flag, never
a fault it rules out; and a campaign split in shards that share a Redis example database
finds what the whole campaign finds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, Faults, Flow, checks, fuzz
from message_flow_harness._fuzz import Example
from message_flow_harness.schedule import Crash, Cut, Join, Latency, Leave
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_robust
from tests.integration.private_redis import private_redis

#: ``harness fuzz ARGS`` in a project of its own: how it ended.
Harness = Callable[..., subprocess.CompletedProcess[str]]

FLOWS = """\
from message_flow_harness import Faults, Flow, checks
from message_flow_harness.zoo import SERVICES
from message_flow_harness.zoo.totals import amounts, totals_add_up

# Acks on receipt: a crash between the ack and the output loses the message.
acks_early = Flow(
    sut=SERVICES["rabbitmq_ack_before_process"],
    broker="rabbitmq",
    checks=[checks.no_loss()],
    quiet=1.0,
    faults=Faults(crash=True),  # one instance, which may crash; a reliable network
)
# Concurrent read-modify-writes of a key's total: two deposits of one key lose one.
lost_update = Flow(
    sut=SERVICES["rabbitmq_lost_update"],
    broker="rabbitmq",
    checks=[checks.no_loss(), totals_add_up()],
    messages=amounts(),
    quiet=1.0,
)
"""


@pytest.fixture
def harness(rabbitmq_broker: BrokerInfo, tmp_path: Path) -> Harness:
    """``harness fuzz ARGS`` in a project holding FLOWS, on the session's RabbitMQ."""
    (tmp_path / "model_flows.py").write_text(FLOWS)
    root = Path(__file__).parents[2]
    # --amqp-url names the AMQP port only: the local node's management API is elsewhere.
    management = {"HARNESS_RABBITMQ_MANAGEMENT_URL": rabbitmq_broker.extra["management"]}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "message_flow_harness._cli", "fuzz", *args, "--quiet",
             "--amqp-url", rabbitmq_broker.url, "--report-dir", str(tmp_path / "reports")],
            capture_output=True, text=True, cwd=tmp_path, timeout=600,
            env={**os.environ, "PYTHONPATH": f"{root}:{tmp_path}", **management},
        )  # fmt: skip

    return run


@pytest.mark.rabbitmq
def test_a_crash_only_model_finds_its_crash_race_without_a_flag(harness: Harness) -> None:
    found = harness("model_flows:acks_early", "--max-examples", "150", "--seed", "1")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "Crash(instance=0)" in found.stdout
    assert "lost:" in found.stdout
    # Asking for a fault the deployment cannot suffer is an error naming the option.
    refused = harness("model_flows:acks_early", "--faults", "crash,join")
    assert refused.returncode == 2
    assert "set instances=2 in the flow's Faults(...)" in refused.stderr


@pytest.mark.rabbitmq
@pytest.mark.asyncio
async def test_a_single_instance_flow_never_draws_join(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    flow = Flow(
        sut=rabbitmq_robust,
        broker="rabbitmq",
        checks=[checks.delivery("at-least-once")],
        quiet=5.0,
        faults=Faults(crash=True, network=True),  # one instance: no competing consumer
    )
    seen: list[Example] = []
    await fuzz(
        flow, max_examples=25, seed=3, broker=rabbitmq_broker, database=None,
        report_dir=tmp_path, progress=seen.append, shrink_seconds=10, reruns=0,
    )  # fmt: skip
    steps = [type(step) for example in seen for step in example.schedule]
    assert Join not in steps
    assert Leave not in steps
    assert {Crash, Latency, Cut} & set(steps)  # faults are on without being asked for


def _found(done: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    at = re.search(r"first failure at example (\d+)", done.stdout)
    assert done.returncode == 1, done.stdout + done.stderr
    assert at is not None, done.stdout
    return int(at[1]), done.stdout


@pytest.mark.rabbitmq
def test_two_shards_sharing_redis_find_what_the_whole_campaign_finds(
    harness: Harness, tmp_path: Path
) -> None:
    run = harness
    _, whole = _found(run("model_flows:lost_update", "--max-examples", "20", "--seed", "1"))
    assert "totals_add_up()" in whole
    assert "lost-update" in whole
    with private_redis(tmp_path / "redis") as url:
        shard = ("model_flows:lost_update", "--max-examples", "20", "--database", url)
        _, first = _found(run(*shard, "--shard", "1/2"))
        assert "lost-update" in first
        # The second shard replays what the first saved before its own search.
        at, second = _found(run(*shard, "--shard", "2/2"))
        assert at == 1, second
        assert "lost-update" in second
        assert "--shard 2/2" in second  # how to repeat this shard's search
