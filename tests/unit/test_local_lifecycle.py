"""The lease/supervisor life cycle of local brokers, with a tiny HTTP server standing in.

Real processes, no broker: checks that brokers are shared, stopped when the
last lease holder goes (also when it is SIGKILLed) and leave no data behind;
that a named lease ends only by its name and ``stop`` says whom it stopped
the broker for; and that the shell's env file is private.
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
from contextlib import contextmanager
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, BrokerStartError, InvalidArgument
from message_flow_harness._cli import main
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


def test_a_named_lease_survives_its_process_until_released_by_name() -> None:
    info = _local.acquire(HttpRecipe(), lease="mine")
    assert [h.name for h in _local.holders("kafka")] == ["mine"]  # not the starting process
    outcome = _local.release("kafka")  # this process holds no process lease
    assert not outcome.held
    assert _local.status("kafka") == info
    outcome = _local.release("kafka", lease="mine")
    assert (outcome.held, outcome.stopped, outcome.remaining) == (True, True, ())
    assert _gone(_pid(info))


def test_down_of_one_lease_leaves_the_broker_to_the_others() -> None:
    info = _local.acquire(HttpRecipe(), lease="/home/ann/orders")
    _local.acquire(HttpRecipe(), lease="bob")
    outcome = _local.release("kafka", lease="/home/ann/orders")
    assert outcome.held
    assert not outcome.stopped
    [other] = outcome.remaining
    assert other.name == "bob"
    assert other.directory == os.getcwd()
    assert "lease 'bob'" in other.describe()
    assert _local.status("kafka") == info
    again = _local.release("kafka", lease="/home/ann/orders")  # twice: nothing more happens
    assert (again.held, again.stopped) == (False, False)
    assert _local.status("kafka") == info


def test_force_stop_names_whom_it_stopped_the_broker_for() -> None:
    info = _local.acquire(HttpRecipe(), lease="ann")
    _local.acquire(HttpRecipe())  # and this process
    stopped_for = _local.stop("kafka")
    assert stopped_for is not None
    assert sorted(str(h.name) for h in stopped_for) == ["None", "ann"]
    [process] = [h for h in stopped_for if h.name is None]
    assert process.pid == os.getpid()
    assert f"process {os.getpid()}" in process.describe()
    assert _gone(_pid(info))
    assert _local.stop("kafka") is None


def test_a_leasing_process_is_listed_and_its_death_ends_only_its_lease(tmp_path: Path) -> None:
    with _child_holding_a_lease(tmp_path) as (pid, child):
        info = _local.acquire(HttpRecipe(), lease="ann")
        found = {h.name: h for h in _local.holders("kafka")}
        assert found.keys() == {None, "ann"}
        assert found[None].pid == child.pid
        assert found[None].directory == str(tmp_path)
        outcome = _local.release("kafka", lease="ann")
        assert [h.pid for h in outcome.remaining] == [child.pid]
        assert _local.status("kafka") == info
        child.send_signal(signal.SIGKILL)
    assert _gone(pid), "the broker outlived its last lease holder"


def test_the_default_lease_is_the_project_directory(tmp_path: Path) -> None:
    project = tmp_path / "orders"
    (project / "src" / "deep").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    assert _local.default_lease_name(project / "src" / "deep") == str(project)
    assert _local.default_lease_name(tmp_path) == str(tmp_path)  # no marker: the directory


@pytest.mark.parametrize("name", ["", " padded", "two\nlines"])
def test_a_bad_lease_name_is_refused_with_the_fix(name: str) -> None:
    with pytest.raises(InvalidArgument, match="--lease my-project"):
        _local.acquire(HttpRecipe(), lease=name)


def test_cli_down_releases_only_the_callers_lease_and_says_who_holds_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "orders"
    project.mkdir()
    (project / ".git").mkdir()
    monkeypatch.chdir(project)
    info = _local.acquire(HttpRecipe(), lease=_local.default_lease_name())
    _local.acquire(HttpRecipe(), lease="bob")

    assert main(["brokers", "status", "kafka"]) == 0
    shown = capsys.readouterr().out
    assert f"held by lease {str(project)!r}" in shown
    assert "held by lease 'bob'" in shown
    assert f"export HARNESS_KAFKA_BOOTSTRAP={info.url}" in shown

    assert main(["brokers", "down", "kafka"]) == 0
    said = capsys.readouterr().out
    assert f"released lease {str(project)!r}; it keeps running" in said
    assert "held by lease 'bob'" in said
    assert "harness brokers down --force kafka" in said
    assert _local.status("kafka") == info

    assert main(["brokers", "down", "--force", "kafka"]) == 0
    said = capsys.readouterr().out
    assert "kafka: stopped for everyone who leased it:" in said
    assert "held by lease 'bob'" in said
    assert _gone(_pid(info))
    assert not _local.env_file().exists()  # no broker left: no settings to paste


def test_the_env_file_is_private_and_sh_reads_its_values_back() -> None:
    secret = "amqp://guest:p'a ss$word@127.0.0.1:5672/"
    path = _local.write_env_file({"HARNESS_AMQP_URL": secret, "OTHER": "x"})
    assert path is not None
    assert path.stat().st_mode & 0o777 == 0o600
    echoed = subprocess.run(
        ["sh", "-c", f'. "{path}" && printf %s "$HARNESS_AMQP_URL"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert echoed.stdout == secret
    path.chmod(0o644)  # an old file with a looser mode is tightened on rewrite
    assert _local.write_env_file({"OTHER": "y"}) == path
    assert path.stat().st_mode & 0o777 == 0o600
    assert _local.write_env_file({}) is None
    assert not path.exists()


@contextmanager
def _child_holding_a_lease(cwd: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A process (in ``cwd``) that leases the stand-in broker: yields the broker's pid, itself."""
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
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=cwd
    ) as child:
        try:
            assert child.stdout is not None
            pid, _ = child.stdout.readline().split()
            yield int(pid), child
        finally:
            child.kill()


def test_broker_stops_when_the_leasing_process_is_killed(tmp_path: Path) -> None:
    with _child_holding_a_lease(tmp_path) as (pid, child):
        info = _local.status("kafka")
        assert info is not None
        workdir = info.extra["workdir"]
        child.send_signal(signal.SIGKILL)
    assert _gone(pid), "the broker outlived its only lease holder"
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
