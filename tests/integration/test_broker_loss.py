"""A broker killed mid-campaign: fuzz ends within a stated bound, says why, keeps what it had.

Each broker kind gets one campaign (a module-scoped fixture) on a **private**
broker: its own ``HARNESS_CACHE_DIR``, started with ``harness brokers up`` as
tests/integration/test_local_brokers.py does, so the session's shared
brokers are never touched. ``harness.fuzz`` runs the zoo's correct service
with faults (so every instance sits behind a fault proxy); once the service
of the :data:`KILL_AT`-th example is up, the broker's process group is
SIGKILLed. The tests then check that the campaign:

* ends within :data:`BOUND_S` of the kill (the time is printed);
* leaves none of the harness's tasks (taps, fault proxies, runs) and no
  listening fault proxy behind, on an event loop that closes cleanly;
* raises a :class:`~harness.BrokerUnavailable` naming the broker's address
  and the fix;
* keeps the partial history (``exc.history`` and ``exc.history_path``) and a
  report in ``report_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from message_flow_harness import (
    BrokerInfo,
    BrokerUnavailable,
    Endpoints,
    Flow,
    HarnessError,
    HarnessTimeout,
    History,
    _fuzz,
    _runner,
    eventually,
    fuzz,
)
from message_flow_harness._fuzz import Example
from message_flow_harness._message import BrokerKind
from message_flow_harness._redact import redact_url
from message_flow_harness.brokers._local import cache_dir, owner_alive
from message_flow_harness.brokers.kafka import KAFKA_VERSION, ensure_jars
from message_flow_harness.zoo.kafka_services import kafka_correct
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_correct

#: The stated bound: a campaign ends at most this long after its broker died.
BOUND_S = 60.0
#: How long the campaign is awaited at all (past the bound, so a miss is measured).
WAIT_S = 180.0
#: The broker dies once the service of this example is up (earlier examples pass).
KILL_AT = 3
ROOT = Path(__file__).parents[2]
SERVICES = {"kafka": kafka_correct, "rabbitmq": rabbitmq_correct}


def _harness_cli(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "message_flow_harness._cli", "brokers", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HARNESS_CACHE_DIR": str(cache)},
        cwd=ROOT,
        check=False,
    )


class PrivateBroker:
    """A local broker of one kind for this module alone, in its own cache directory."""

    def __init__(self, kind: BrokerKind, cache: Path) -> None:
        self.kind, self.cache = kind, cache

    def start(self) -> BrokerInfo:
        self.cache.mkdir(parents=True, exist_ok=True)
        if self.kind == "kafka":
            ensure_jars()  # linked from the usual cache, not fetched again
            (self.cache / f"kafka-{KAFKA_VERSION}").symlink_to(
                cache_dir() / f"kafka-{KAFKA_VERSION}"
            )
        up = _harness_cli(self.cache, "up", self.kind)
        assert up.returncode == 0, up.stderr
        state = self._state()
        self.token: str = state["broker"]
        return BrokerInfo(kind=self.kind, url=state["url"], provider="local", extra=state["extra"])

    def _state(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            (self.cache / "run" / self.kind / "state.json").read_text()
        )
        return found

    def kill(self) -> None:
        """SIGKILL the broker's process group (RabbitMQ: the node and its epmd)."""
        os.killpg(os.getpgid(int(self.token.partition("-")[0])), signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return owner_alive(self.token)

    def stop(self) -> None:
        down = _harness_cli(self.cache, "down", self.kind)
        assert down.returncode == 0, down.stderr


def _harness_tasks() -> list[str]:
    """Tasks still running the harness's or the adapters' code (taps, proxies, runs)."""
    current = asyncio.current_task()
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = str(getattr(code, "co_filename", ""))
        if task is not current and any(p in filename for p in ("/harness/", "/brokers/")):
            found.append(repr(task.get_coro()))
    return found


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Outcome:
    """What one campaign did when its broker was killed."""

    kind: BrokerKind
    info: BrokerInfo
    reports: Path
    examples_before: int = 0
    ended_in: float = float("inf")
    error: BaseException | None = None
    runs_after: Counter[str] = field(default_factory=Counter)
    tasks_left: list[str] = field(default_factory=list)
    proxies_listening: list[int] = field(default_factory=list)
    loop_errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        error = self.error
        history = getattr(error, "history", None)
        kept = sorted(p.name for p in self.reports.glob("*")) if self.reports.exists() else []
        return (
            f"{self.kind}: broker SIGKILLed in example {KILL_AT} ({self.examples_before} done);"
            f" fuzz ended {self.ended_in:.1f} s later (bound {BOUND_S:g} s),"
            f" after {sum(self.runs_after.values())} more runs {dict(self.runs_after)}\n"
            f"  raised {type(error).__name__}: {str(error).splitlines()[0] if error else None}\n"
            f"  partial history: {len(history) if isinstance(history, History) else None} events,"
            f" path {getattr(error, 'history_path', None)}; report dir: {kept}\n"
            f"  left: tasks {self.tasks_left}, listening proxies {self.proxies_listening},"
            f" loop errors {self.loop_errors}"
        )


async def _campaign(private: PrivateBroker, outcome: Outcome) -> None:
    info, kind = outcome.info, outcome.kind
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: outcome.loop_errors.append(context["message"]))
    killed: list[float] = []
    started = 0

    @contextlib.asynccontextmanager
    async def service(endpoints: Endpoints) -> AsyncIterator[None]:
        """The zoo's correct service; its KILL_AT-th start kills the broker under it."""
        nonlocal started
        async with SERVICES[kind](endpoints):
            started += 1
            if started == KILL_AT and not killed:
                private.kill()
                killed.append(time.monotonic())
            yield

    runs: list[tuple[float, str]] = []
    original = _runner.run_flow  # what _fuzz calls by that name

    async def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await original(*args, **kwargs)
        except BaseException as exc:
            runs.append((time.monotonic(), type(exc).__name__))
            raise
        runs.append((time.monotonic(), "passed" if result.ok else "failed"))
        return result

    examples: list[Example] = []
    flow = Flow(sut=service, broker=kind, quiet=1.0, name=f"{kind}_correct")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_fuzz, "run_flow", counted)
        campaign = asyncio.ensure_future(
            fuzz(
                flow,
                max_examples=1000,
                seed=0,
                faults=True,
                broker=info,
                database=None,
                report_dir=outcome.reports,
                progress=examples.append,
            )
        )
        try:
            async with asyncio.timeout(WAIT_S):
                await campaign
        except TimeoutError:
            outcome.error = TimeoutError(f"fuzz was still running {WAIT_S:g} s after the kill")
            campaign.cancel()
            await asyncio.gather(campaign, return_exceptions=True)
        except Exception as exc:
            outcome.error = exc
        ended = time.monotonic()
    assert killed, f"the campaign ended before example {KILL_AT} started its service"
    outcome.ended_in = ended - killed[0]
    outcome.examples_before = sum(1 for at, _ in runs if at < killed[0])
    outcome.runs_after = Counter(how for at, how in runs if at >= killed[0])
    # A task the campaign left behind would still be running: allow a moment to finish.
    with contextlib.suppress(HarnessTimeout):
        await eventually(lambda: not _harness_tasks(), within=5.0)
    outcome.tasks_left = _harness_tasks()
    proxies = [int(v.rpartition(":")[2]) for k, v in info.extra.items() if k.endswith("advertised")]
    outcome.proxies_listening = [port for port in proxies if _listening(port)]


@pytest.fixture(scope="module")
def killed_campaign(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Outcome:
    kind: BrokerKind = request.param
    root = tmp_path_factory.mktemp(f"broker-loss-{kind}")
    private = PrivateBroker(kind, root / "cache")
    info = private.start()
    outcome = Outcome(kind=kind, info=info, reports=root / "reports")
    try:
        asyncio.run(_campaign(private, outcome))  # a loop of its own, closed at the end
        deadline = time.monotonic() + 10.0  # the supervisor reaps it within its poll
        while private.alive and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not private.alive, "the broker survived its SIGKILL"
    finally:
        private.stop()
    print(f"\n{outcome.describe()}")
    return outcome


KAFKA = pytest.param("kafka", marks=pytest.mark.kafka, id="kafka")
RABBITMQ = pytest.param("rabbitmq", marks=pytest.mark.rabbitmq, id="rabbitmq")
BOTH = [KAFKA, RABBITMQ]


@pytest.mark.parametrize("killed_campaign", BOTH, indirect=True)
def test_fuzz_ends_within_the_bound_after_its_broker_is_killed(killed_campaign: Outcome) -> None:
    outcome = killed_campaign
    assert outcome.ended_in < BOUND_S, outcome.describe()
    assert outcome.error is not None, outcome.describe()
    assert not isinstance(outcome.error, TimeoutError), outcome.describe()


@pytest.mark.parametrize("killed_campaign", BOTH, indirect=True)
def test_a_killed_broker_leaves_no_task_nor_proxy_behind(killed_campaign: Outcome) -> None:
    outcome = killed_campaign
    assert outcome.tasks_left == [], outcome.describe()
    assert outcome.proxies_listening == [], outcome.describe()
    assert outcome.loop_errors == [], outcome.describe()


@pytest.mark.parametrize("killed_campaign", BOTH, indirect=True)
def test_the_error_names_the_broker_and_the_fix(killed_campaign: Outcome) -> None:
    outcome = killed_campaign
    error = outcome.error
    assert isinstance(error, HarnessError), outcome.describe()
    assert isinstance(error, BrokerUnavailable), outcome.describe()
    text = str(error)
    assert redact_url(outcome.info.url).rstrip("/") in text, text
    assert "broker" in text, text
    assert "check" in text or "restart" in text, text


@pytest.mark.parametrize("killed_campaign", BOTH, indirect=True)
def test_the_partial_history_and_report_are_kept(killed_campaign: Outcome) -> None:
    outcome = killed_campaign
    error = outcome.error
    assert isinstance(error, HarnessError), outcome.describe()
    assert isinstance(error.history, History), outcome.describe()
    assert error.history_path is not None, outcome.describe()
    assert Path(str(error.history_path)).is_file(), outcome.describe()
    assert outcome.reports.is_dir(), outcome.describe()
    assert any(outcome.reports.iterdir()), outcome.describe()
