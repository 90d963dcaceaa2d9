"""Services run as their own OS process (``process(...)``) on the real brokers.

A Python worker on another client (confluent-kafka), and a consumer that is
not Python at all (Go, on amqp091-go): each told the run's endpoints through
environment variables of its own naming, crashed by SIGKILL, restarted as a
new process, seen by the harness through the broker alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import strategies as st

from message_flow_harness import BrokerInfo, Flow, Message, checks, fuzz, process
from message_flow_harness import strategies as hs
from message_flow_harness._fuzz import Example
from message_flow_harness._history import Kind
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.schedule import After, Crash, Join, Publish, Restart
from tests.doc_pages import page_namespace

pytestmark = pytest.mark.asyncio

SERVICES = Path(__file__).parent / "services"
# Orders as the field sends them: JSON with an id, and now and then something that is not.
ORDERS = hs.messages(
    keys=hs.keys(2),
    values=st.one_of(
        st.integers(0, 999).map(lambda n: json.dumps({"id": n}).encode()),
        st.just(b"not json"),
    ),
    max_size=6,
)


def is_bad(message: Message) -> bool:
    try:
        json.loads(message.value)["id"]
    except (ValueError, KeyError, TypeError):
        return True
    return False


AT_LEAST_ONCE = [
    checks.delivery("at-least-once"),
    checks.per_key_order(),
    checks.dead_lettered(when=is_bad),
]


def crashes(examples: list[Example]) -> int:
    """How many of a campaign's examples crashed the service at least once."""
    return sum(any(isinstance(step, Crash) for step in e.schedule) for e in examples)


def confluent_orders(script: str = "confluent_orders.py") -> Flow:
    worker = process(
        [sys.executable, SERVICES / script],
        env={
            "ORDERS_BOOTSTRAP": "{bootstrap_servers}",
            "ORDERS_IN": "{input}",
            "ORDERS_OUT": "{output}",
            "ORDERS_DLQ": "{dead_letter}",
            "ORDERS_GROUP": "{group_id}",
        },
        ready=r"partitions assigned: \S+\[0\]@\d+",
    )
    return Flow(sut=worker, broker="kafka", checks=AT_LEAST_ONCE, messages=ORDERS, quiet=3.0)


@pytest.mark.kafka
async def test_a_confluent_kafka_worker_keeps_the_contract(flow_check: FlowCheck) -> None:
    orders = [
        Message(key=b"customer-1", value=b'{"id": 1}'),
        Message(key=b"customer-1", value=b"not json"),
        Message(key=b"customer-1", value=b'{"id": 2}'),
    ]
    result = await flow_check(confluent_orders(), orders)
    outputs = [e for e in result.history.events if e.kind.name == "OUTPUT"]
    assert sorted(json.loads(e.message.value)["order"] for e in outputs) == [1, 2]
    lines = [entry.message for entry in result.history.logs if entry.logger == "sut0.stderr"]
    assert any("dead-lettering offset 1" in line for line in lines), lines


@pytest.mark.kafka
async def test_a_confluent_kafka_worker_passes_a_crash_campaign(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    examples: list[Example] = []
    report = await fuzz(
        confluent_orders(), max_examples=8, seed=11, faults=["crash"], broker=kafka_broker,
        database=None, report_dir=tmp_path, progress=examples.append,
    )  # fmt: skip
    assert report.ok, report.summary()
    assert report.examples == 8
    assert crashes(examples) >= 2  # the campaign did kill the worker


@pytest.mark.kafka
async def test_a_killed_worker_alone_in_its_group_gives_its_partition_up_at_once(
    flow_check: FlowCheck,
) -> None:
    # No probe sees a process's group member: with no other instance running, every
    # member is the killed one's, and its 30 s session is ended instead of waited out.
    session_s = 30
    flow = replace(
        confluent_orders(),
        env={"ORDERS_SESSION_TIMEOUT_MS": str(session_s * 1000)},
        checks=[checks.delivery("at-least-once")],
    )
    orders = [Message(key=b"customer-1", value=json.dumps({"id": n}).encode()) for n in (1, 2)]
    steps = [Publish(orders[0]), After("output"), Crash(0), Restart(0), Publish(orders[1])]
    result = await flow_check(flow, steps)
    [crash] = [e for e in result.history.of(Kind.FAULT) if e.detail == "crash"]
    last = max(e.at_ns for e in result.history.of(Kind.OUTPUT))
    assert (last - crash.at_ns) / 1e9 < session_s / 2  # held, it would be after the session


@pytest.mark.kafka
async def test_a_crash_campaign_finds_the_commit_before_produce(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    report = await fuzz(
        confluent_orders("confluent_orders_hasty.py"), max_examples=30, seed=5,
        faults=["crash"], broker=kafka_broker, database=None, report_dir=tmp_path,
        shrink_seconds=20, reruns=2,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert report.minimal is not None
    assert any(isinstance(step, Crash) for step in report.minimal.schedule)
    assert "lost" in report.summary()
    # The worker's own lines are in the failing run's history and report.
    assert report.history_path is not None
    assert report.report_path is not None
    saved = json.loads(report.history_path.read_text())
    loggers = {entry["logger"] for entry in saved["minimal_history"]["logs"]}
    assert "sut0.stderr" in loggers, loggers
    assert "sut0.stderr" in report.report_path.read_text()


# --- a consumer that is not Python ----------------------------------------------------


@pytest.fixture(scope="module")
def go_orders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go consumer, built from its source (Go's module and build caches keep reruns fast)."""
    # go.dev's installer puts Go in /usr/local/go, which a CI shell may not have on PATH.
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        pytest.fail(
            "these tests build a Go consumer and found no `go` on PATH nor in /usr/local/go/bin:"
            " install Go 1.20 or newer (https://go.dev/doc/install)"
        )
    binary = tmp_path_factory.mktemp("go") / "go_orders"
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=SERVICES / "go_orders",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, f"go build failed:\n{built.stdout}{built.stderr}"
    return binary


def go_flow(binary: Path) -> Flow:
    consumer = process(
        [binary],
        env={
            "ORDERS_AMQP_URL": "{amqp_url}",
            "ORDERS_QUEUE": "{input}",
            "ORDERS_RESULTS_QUEUE": "{output}",
        },
        ready=r"consuming ",
    )
    return Flow(sut=consumer, broker="rabbitmq", checks=AT_LEAST_ONCE, messages=ORDERS)


@pytest.mark.rabbitmq
async def test_a_go_consumer_keeps_the_contract(go_orders: Path, flow_check: FlowCheck) -> None:
    orders = [
        Message(key=b"customer-1", value=b'{"id": 1}'),
        Message(key=b"customer-1", value=b"not json"),
        Message(key=b"customer-1", value=b'{"id": 2}'),
    ]
    result = await flow_check(go_flow(go_orders), orders)
    outputs = [e for e in result.history.events if e.kind.name == "OUTPUT"]
    assert sorted(json.loads(e.message.value)["order"] for e in outputs) == [1, 2]
    lines = [entry.message for entry in result.history.logs if entry.logger == "sut0.stderr"]
    assert any("rejecting bad order" in line for line in lines), lines


@pytest.mark.rabbitmq
async def test_a_crashed_go_consumer_is_killed_restarted_and_joined_without_loss(
    go_orders: Path, flow_check: FlowCheck
) -> None:
    orders = [Message(key=b"a", value=json.dumps({"id": n}).encode()) for n in range(8)]
    steps = [
        *(Publish(m) for m in orders[:3]),
        Crash(0),
        *(Publish(m) for m in orders[3:6]),
        Restart(0),
        Join(),  # a second process, competing for the queue
        *(Publish(m) for m in orders[6:]),
    ]
    flow = replace(go_flow(go_orders), checks=[checks.delivery("at-least-once")])
    result = await flow_check(flow, steps)
    faults = [e.detail for e in result.history.events if e.kind.name == "FAULT"]
    assert faults == ["crash", "restart"]
    logs = [(entry.logger, entry.message) for entry in result.history.logs]
    started = [logger for logger, message in logs if "consuming" in message]
    assert started == ["sut0.stderr", "sut0.stderr", "sut1.stderr"]  # three processes
    # SIGKILL: the crashed process never logged its graceful stop; the other two did.
    stopped = [logger for logger, message in logs if message.endswith("stopping")]
    assert sorted(stopped) == ["sut0.stderr", "sut1.stderr"]
    outputs = {e.harness_id for e in result.history.events if e.kind.name == "OUTPUT"}
    assert len(outputs) == 8


@pytest.mark.rabbitmq
async def test_a_go_consumer_passes_a_crash_campaign(
    go_orders: Path, rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    examples: list[Example] = []
    report = await fuzz(
        go_flow(go_orders), max_examples=25, seed=3, faults=["crash"], broker=rabbitmq_broker,
        database=None, report_dir=tmp_path, progress=examples.append,
    )  # fmt: skip
    assert report.ok, report.summary()
    assert report.examples == 25
    assert crashes(examples) >= 5


# --- the how-to's service configured by its environment ---------------------------------

PAGE = Path(__file__).resolve().parents[2] / "docs" / "pages" / "how-to" / "wire-your-service.md"


@pytest.mark.rabbitmq
async def test_the_pages_service_configured_by_its_environment_keeps_its_contract(
    flow_check: FlowCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERS_QUEUE", raising=False)
    page = page_namespace(PAGE)
    # Twice: the second run has queues of its own, which its cached settings must see.
    for _ in range(2):
        result = await flow_check.run(page["configured_flow"], page["orders"])
        assert result.ok, result.report()
        assert page["get_settings"]().orders_queue == result.endpoints.input
        outputs = [e for e in result.history.events if e.kind.name == "OUTPUT"]
        assert len(outputs) == 2, result.report()
    assert "ORDERS_QUEUE" not in os.environ  # the run's values were set only while it started


@pytest.mark.rabbitmq
async def test_a_process_that_dies_during_the_run_is_a_finding(flow_check: FlowCheck) -> None:
    code = "import sys\nprint('consuming', flush=True)\nsys.exit('lost my connection')\n"
    dies = process([sys.executable, "-c", code], ready="consuming", name="dies")
    flow = Flow(sut=dies, broker="rabbitmq", quiet=1.0)
    result = await flow_check.run(flow, [Message(value=b'{"id": 1}')])
    assert not result.ok
    report = result.report()
    assert "dies exited by itself with code 1 while the run went on" in report, report
    assert "stderr| lost my connection" in report, report
