"""Broker restarts: the step, the fault kind, the supervisor's restart path, the refusals.

Brokers given by URL or run in Docker are refused up front, on both brokers;
a RabbitMQ the harness started is accepted (tests/integration/rabbitmq/
test_rabbitmq_restart.py restarts a real one).

The supervisor part runs real processes with a stand-in broker (python's
http.server started from a shell that leaves a SIGTERM-proof child behind)
and a stand-in companion, under a private cache directory: no broker.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from message_flow_harness import (
    BrokerInfo,
    BrokerStartError,
    BrokerUnavailable,
    Flow,
    InvalidArgument,
    Message,
    brokers,
    fuzz,
)
from message_flow_harness import strategies as hs
from message_flow_harness._instances import check_broker_restartable
from message_flow_harness._proxy import FaultProxy
from message_flow_harness._runner import run_flow
from message_flow_harness.brokers import _local
from message_flow_harness.brokers._local import LaunchPlan, free_port
from message_flow_harness.schedule import (
    FAULT_KINDS,
    OPT_IN_FAULT_KINDS,
    BrokerRestart,
    Publish,
    Step,
)
from message_flow_harness.schedule import __all__ as schedule_names
from tests.unit.test_local_lifecycle import HttpRecipe, _gone
from tests.unit.test_strategies import _collect


def _restarts(schedules: list[object]) -> list[BrokerRestart]:
    return [s for schedule in schedules for s in schedule if isinstance(s, BrokerRestart)]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the step


def test_broker_restart_is_a_step_whose_repr_replays() -> None:
    from message_flow_harness._schedule import as_schedule

    steps = as_schedule([Message(b"x"), BrokerRestart(), BrokerRestart(hard=True)])
    assert steps[1:] == (BrokerRestart(hard=False), BrokerRestart(hard=True))
    assert eval(repr(steps[2]), {"BrokerRestart": BrokerRestart}) == BrokerRestart(hard=True)
    assert "BrokerRestart" in schedule_names


def test_broker_restart_is_opt_in() -> None:
    assert "broker_restart" in OPT_IN_FAULT_KINDS
    assert "broker_restart" not in FAULT_KINDS
    assert not _restarts(_collect(hs.schedules(faults=True), examples=100))


def test_broker_restart_faults_are_generated_when_named() -> None:
    schedules = _collect(hs.schedules(faults=["broker_restart"], max_faults=2), examples=150)
    restarts = _restarts(schedules)
    assert {r.hard for r in restarts} == {False, True}
    for schedule in schedules:
        steps: list[Step] = schedule  # type: ignore[assignment]
        assert sum(isinstance(s, BrokerRestart) for s in steps) <= 2
        allowed = {"Publish", "Pause", "Settle", "BrokerRestart"}
        assert all(type(s).__name__ in allowed for s in steps)


def test_unknown_fault_kinds_name_broker_restart_in_the_fix() -> None:
    with pytest.raises(InvalidArgument, match="broker_restart"):
        hs.schedules(faults=["broker_crash"])


# --------------------------------------------------------------------------- refusals


def _flow(kind: str) -> Flow:
    async def sut(endpoints: object) -> None:  # never started
        raise AssertionError("the run must be refused before the service starts")

    return Flow(sut=sut, broker=kind)  # type: ignore[arg-type]


URL_KAFKA = BrokerInfo(kind="kafka", url="127.0.0.1:1", provider="url")
URL_RABBIT = BrokerInfo(kind="rabbitmq", url="amqp://u:secret@127.0.0.1:1/", provider="url")
LOCAL_RABBIT = BrokerInfo(kind="rabbitmq", url="amqp://guest:guest@127.0.0.1:1/", provider="local")
DOCKER_RABBIT = BrokerInfo(
    kind="rabbitmq", url="amqp://u:secret@127.0.0.1:1/", provider="docker", extra={}
)


def test_a_restart_on_a_broker_given_by_url_is_refused_with_the_fix() -> None:
    steps: list[Step] = [Publish(Message(b"x")), BrokerRestart()]
    with pytest.raises(InvalidArgument, match="broker the harness started itself") as caught:
        asyncio.run(run_flow(_flow("kafka"), steps, broker=URL_KAFKA))
    assert "provider='url'" in str(caught.value)
    with pytest.raises(InvalidArgument, match="broker the harness started itself"):
        brokers.restart_local(URL_KAFKA)


def test_a_restart_on_rabbitmq_by_url_or_docker_is_refused_before_anything_runs() -> None:
    for info in (URL_RABBIT, DOCKER_RABBIT):
        with pytest.raises(InvalidArgument, match="broker the harness started itself") as caught:
            asyncio.run(run_flow(_flow("rabbitmq"), [BrokerRestart(hard=True)], broker=info))
        assert f"provider={info.provider!r}" in str(caught.value)
        assert "--amqp-url / HARNESS_AMQP_URL" in str(caught.value)  # the fix, for RabbitMQ
        assert "secret" not in str(caught.value)
    with pytest.raises(InvalidArgument, match="broker the harness started itself"):
        asyncio.run(
            fuzz(_flow("rabbitmq"), faults=["broker_restart"], broker=URL_RABBIT, database=None)
        )


def test_a_restart_on_a_local_rabbitmq_is_accepted() -> None:
    check_broker_restartable(LOCAL_RABBIT)  # no InvalidArgument: the harness started it
    # Accepted up front, so the run goes on to the broker (none listens on port 1).
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1/"):
        asyncio.run(run_flow(_flow("rabbitmq"), [BrokerRestart()], broker=LOCAL_RABBIT))


# ------------------------------------------------------------ holding services off


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _echoes(port: int) -> bool:
    """Whether a round trip through 127.0.0.1:``port`` comes back (False: cut or refused)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(4), 5)
        writer.close()
    except (ConnectionError, asyncio.IncompleteReadError):
        return False
    return got == b"ping"


@pytest.mark.asyncio
async def test_a_held_proxy_refuses_until_released_and_keeps_its_latency() -> None:
    """What a RabbitMQ broker restart does to the running instances' proxies."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = FaultProxy(free_port(), "127.0.0.1", server.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        proxy.latency = 0.01  # a latency fault from before the restart
        proxy.hold()
        writer.write(b"b")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):  # cut
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
        assert not await _echoes(proxy.listen_port)  # refused while held
        assert proxy.connections == 1
        proxy.release()
        assert await _echoes(proxy.listen_port)
        assert proxy.latency == 0.01  # unlike heal(), release() leaves a latency fault on
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- the supervisor


class RestartableRecipe(HttpRecipe):
    """http.server with a child that ignores SIGTERM, and a companion (like RabbitMQ's epmd)."""

    def prepare(self, workdir: Path) -> LaunchPlan:
        port = free_port()
        script = (
            "(trap '' TERM; exec sleep 600) & echo $! >> children;"
            f" exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
        )
        return LaunchPlan(
            argv=["sh", "-c", script],
            url=f"http://127.0.0.1:{port}/",
            companions=[["sh", "-c", "echo $$ > companion; exec sleep 600"]],
        )


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    yield
    _local.stop("kafka")


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


@pytest.mark.usefixtures("private_cache")
@pytest.mark.parametrize("hard", [False, True], ids=["graceful", "hard"])
def test_the_supervisor_restarts_only_the_broker(hard: bool) -> None:
    recipe = RestartableRecipe()
    info = _local.acquire(recipe)
    workdir = Path(info.extra["workdir"])
    [companion] = _pids(workdir / "companion")
    old = int(info.extra["pid"])

    began = time.monotonic()
    report = _local.restart(recipe, info, hard=hard, timeout=20)
    print(f"stand-in restart ({'hard' if hard else 'graceful'}): {report}")
    assert time.monotonic() - began < 20
    assert report["hard"] is hard
    assert report["returncode"] == (-9 if hard else -15)
    assert not report["forced"] or hard  # the stand-in stops at once on SIGTERM
    assert _gone(old, timeout=5)
    first_child, second_child = _pids(workdir / "children")
    assert _gone(first_child, timeout=5)  # ignored SIGTERM: killed with its group
    assert not _gone(second_child, timeout=0.2)  # the new broker's own child
    assert not _gone(companion, timeout=0.2)  # companions are not restarted

    now = _local.status("kafka")  # the lease logic sees the new broker as the running one
    assert now is not None
    assert now.url == info.url
    assert now.extra["pid"] != str(old)
    assert _local.restart(recipe, now, timeout=20)["returncode"] == -15  # and again

    children = _pids(workdir / "children")
    _local.release("kafka")
    for pid in (companion, *children):
        assert _gone(pid, timeout=20)
    assert not workdir.exists()


@pytest.mark.usefixtures("private_cache")
def test_a_broker_that_does_not_come_back_is_a_clear_error() -> None:
    recipe = RestartableRecipe()
    info = _local.acquire(recipe)
    recipe.fail_ready = True
    with pytest.raises(BrokerStartError, match="did not come back after a hard restart") as caught:
        _local.restart(recipe, info, hard=True, timeout=5)
    assert "Its log:" in str(caught.value)


@pytest.mark.usefixtures("private_cache")
def test_an_old_supervisor_is_never_signalled() -> None:
    info = _local.acquire(HttpRecipe())
    launched = Path(info.extra["run_dir"]) / "launched.json"
    launched.write_text(launched.read_text().replace('"restartable": 1', '"restartable": 0'))
    with pytest.raises(InvalidArgument, match="started by an older harness"):
        _local.restart(HttpRecipe(), info)
    assert _local.status("kafka") == info
    assert os.path.exists(info.extra["workdir"])
