"""The lease/supervisor life cycle of local brokers, with a tiny HTTP server standing in.

Real processes, no broker: checks that brokers are shared, stopped when the
last lease holder goes (also when it is SIGKILLed) and leave no data behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, BrokerStartError
from message_flow_harness._message import BrokerKind
from message_flow_harness.brokers import _local
from message_flow_harness.brokers._local import LaunchPlan, free_port


class HttpRecipe:
    """A 'broker' that is python's http.server; ready when it answers a GET."""

    kind: BrokerKind = "kafka"
    start_timeout = 10.0

    def __init__(self, *, argv: list[str] | None = None, fail_ready: bool = False) -> None:
        self.argv = argv
        self.fail_ready = fail_ready

    def check_prerequisites(self) -> None:
        pass

    def prepare(self, workdir: Path) -> LaunchPlan:
        port = free_port()
        (workdir / "marker").write_text("data")
        argv = self.argv or [
            sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
        ]  # fmt: skip
        return LaunchPlan(argv=argv, url=f"http://127.0.0.1:{port}/", extra={"port": str(port)})

    def wait_ready(self, info: BrokerInfo, timeout: float) -> None:
        if self.fail_ready:
            raise RuntimeError("round trip refused")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(info.url, timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    yield
    _local.stop("kafka")


def _pid(info: BrokerInfo) -> int:
    return int(info.extra["pid"])


def _gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_acquire_starts_and_release_stops_and_deletes_data() -> None:
    info = _local.acquire(HttpRecipe())
    workdir = Path(info.extra["workdir"])
    assert (workdir / "marker").exists()
    assert _local.status("kafka") == info
    _local.release("kafka")
    assert _gone(_pid(info))
    assert not workdir.exists()
    assert _local.status("kafka") is None
    exit_record = _local.last_exit("kafka")
    assert exit_record is not None
    assert exit_record["reason"] == "stopped on request"


def test_second_acquire_shares_the_running_broker() -> None:
    first = _local.acquire(HttpRecipe())
    second = _local.acquire(HttpRecipe())
    assert first.url == second.url
    _local.release("kafka")
    assert _local.status("kafka") is None  # both leases were this process's one token


def test_pinned_lease_survives_release_until_stop() -> None:
    info = _local.acquire(HttpRecipe(), pinned=True)
    _local.release("kafka")
    assert _local.status("kafka") == info
    assert _local.stop("kafka") is True
    assert _gone(_pid(info))
    assert _local.stop("kafka") is False


def test_broker_stops_when_the_leasing_process_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from message_flow_harness.brokers import _local
        from test_local_lifecycle import HttpRecipe
        info = _local.acquire(HttpRecipe())
        print(info.extra["pid"], info.extra["workdir"], flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        pid, workdir = child.stdout.readline().split()
        child.send_signal(signal.SIGKILL)
    assert _gone(int(pid)), "the broker outlived its only lease holder"
    assert _gone_path(Path(workdir))
    record = _local.last_exit("kafka")
    assert record is not None
    assert record["reason"] == "no process holds a lease on it any more"


def _gone_path(path: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def test_broker_that_exits_during_start_reports_its_output() -> None:
    recipe = HttpRecipe(
        argv=[sys.executable, "-c", "print('boom: port in use'); raise SystemExit(3)"]
    )
    with pytest.raises(BrokerStartError, match="boom: port in use"):
        _local.acquire(recipe)
    assert _local.status("kafka") is None


def test_failed_readiness_stops_the_broker_and_says_why() -> None:
    with pytest.raises(BrokerStartError, match="round trip refused"):
        _local.acquire(HttpRecipe(fail_ready=True))
    assert _local.status("kafka") is None
    assert not list(Path(_local.run_dir("kafka")).glob("owners/*"))


def test_a_kafka_cluster_id_never_starts_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from message_flow_harness.brokers.kafka import _recipe as kafka

    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # encodes as "-AAA..."
    plain = uuid.UUID(int=1)
    drawn = iter([dashed, plain])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(drawn))
    assert kafka._cluster_id() == "AAAAAAAAAAAAAAAAAAAAAQ"
