"""Brokers the harness starts itself as local processes, shared and cleaned up.

A broker module supplies a :class:`LocalRecipe` (how to prepare, launch and
check one broker); this module owns the life cycle common to all of them:

* one broker per kind per cache directory, shared by every process that
  leases it (pytest-xdist workers, the CLI, two test sessions);
* two kinds of lease: a *process* lease (a pytest session's) ends when its
  process exits or dies; a *named* lease (``harness brokers up``, named after
  the project directory unless ``--lease NAME`` says otherwise) holds until
  :func:`release` with that name ends it;
* a supervisor process per broker that stops it and deletes its data as soon
  as no lease is left, so Ctrl-C, a crashed or killed test process never
  leaves a broker behind, and a ``down`` ends only the caller's lease;
* ``brokers.env`` (mode 0600): the running brokers' settings for a shell,
  passwords included, which the terminal never shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._drivers import driver
from message_flow_harness._errors import BrokerError, BrokerStartError, InvalidArgument
from message_flow_harness._message import BrokerKind
from message_flow_harness.brokers._process import (
    NAMED,
    PINNED,
    RESTART_GRACE,
    RESTART_PROTOCOL,
    owner_alive,
    owner_token,
    read_tail,
)


@dataclass(frozen=True, kw_only=True)
class LaunchPlan:
    """Everything the supervisor needs to run one broker.

    ``companions`` are started first (in order) and stopped last, e.g. a
    private epmd for RabbitMQ. All processes run in the supervisor's process
    group, bound to 127.0.0.1, with ``env`` added to the environment.
    """

    argv: Sequence[str]
    url: str
    env: Mapping[str, str] = field(default_factory=dict)
    companions: Sequence[Sequence[str]] = ()
    extra: Mapping[str, str] = field(default_factory=dict)


class LocalRecipe(Protocol):
    """How one kind of broker is prepared, launched and checked."""

    kind: BrokerKind
    #: A bound on cold start (jar resolution excluded): wait_ready gets this long.
    start_timeout: float

    def check_prerequisites(self) -> None:
        """Raise BrokerStartError naming what is missing (Java, rabbitmq-server) and the fix."""

    def prepare(self, workdir: Path) -> LaunchPlan:
        """Pick free ports, write config into ``workdir`` (private, empty), format storage."""

    def wait_ready(self, info: BrokerInfo, timeout: float) -> None:
        """Block until a real produce-and-consume round trip succeeds, else raise.

        Called in a thread with no running event loop, so it may use asyncio.run.
        Raise BrokerStartError if ``timeout`` seconds pass first.
        """


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cache_dir() -> Path:
    """Jars and running-broker state: $HARNESS_CACHE_DIR or ~/.cache/message-flow-harness."""
    root = os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "message-flow-harness"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- leases -----------------------------------------------------------------
#
# State lives in cache_dir()/run/<slot>/, guarded by <slot>.lock, where the slot is
# the driver's (BrokerDriver.local_slot: the kind, unless the kind's recipe can start
# different brokers, such as RabbitMQ from HARNESS_RABBITMQ_ROOT):
#   plan.json    what the supervisor runs (written by the leasing process)
#   state.json   the ready broker's BrokerInfo and pids (written once ready)
#   owners/      one file per lease, named "<pid>-<start time>" (a process
#                lease) or "lease-<digest of its name>" (a named lease), holding
#                JSON that says who took it, for `status` and `down`
#   exit.json    why the broker stopped, with its log tail (kept for diagnosis)

_LOCK_TIMEOUT = 900.0  # another process may be resolving jars and starting the broker
_STOP_TIMEOUT = 30.0
#: What marks a project's root when naming its lease.
_PROJECT_MARKERS = ("pyproject.toml", "setup.cfg", "setup.py", ".git")


@dataclass(frozen=True, kw_only=True)
class Holder:
    """Who holds a lease on a local broker: a named lease or a live process."""

    #: The lease's name, or None for a process lease.
    name: str | None
    pid: int | None
    #: The directory the lease was taken in.
    directory: str | None
    #: The command that took it (a process lease's is the holding process).
    command: str | None
    since: float | None

    def describe(self) -> str:
        """One line for people: which lease, taken where, by what."""
        where = f" in {self.directory}" if self.directory else ""
        when = (
            f" since {time.strftime('%H:%M:%S', time.localtime(self.since))}" if self.since else ""
        )
        if self.name is None:
            return f"process {self.pid} ({self.command}{where}{when}; ends when it exits)"
        if self.name == PINNED:
            return "lease 'pinned' (from `harness brokers up` of an older harness)"
        return f"lease {self.name!r} (taken by `{self.command}`{where}{when})"


@dataclass(frozen=True, kw_only=True)
class Release:
    """What :func:`release` did."""

    #: Whether the caller held the lease it released.
    held: bool
    #: Whether a broker was running (or starting) before.
    was_running: bool
    #: Whether the broker was stopped, because no lease was left.
    stopped: bool
    #: The leases that keep the broker running (empty when it was stopped).
    remaining: tuple[Holder, ...]


def default_lease_name(start: Path | None = None) -> str:
    """The current project's directory: the nearest one up from ``start`` (default: the
    working directory) holding pyproject.toml, setup.cfg, setup.py or .git, else ``start``.

    So ``up`` and ``down`` run anywhere in one project name the same lease, and
    two projects sharing a cache never end each other's.
    """
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if any((directory / marker).exists() for marker in _PROJECT_MARKERS):
            return str(directory)
    return str(here)


def check_lease_name(name: str) -> str:
    """``name`` if it can name a lease, else InvalidArgument with the fix."""
    if not name.strip() or name != name.strip() or "\n" in name:
        raise InvalidArgument(
            f"lease name {name!r} is invalid: give a non-empty name without surrounding"
            " spaces or line breaks, e.g. --lease my-project"
        )
    return name


def _lease_file(name: str) -> str:
    # Names may hold "/" (a directory) or anything else: the file name is a digest.
    return NAMED + hashlib.sha256(name.encode()).hexdigest()[:24]


def _owner_file(lease: str | None) -> str:
    return owner_token(os.getpid()) if lease is None else _lease_file(check_lease_name(lease))


def _command_line() -> str:
    """This process's command, short: ``pytest tests/unit -q``."""
    words = [Path(sys.argv[0]).name or "python", *sys.argv[1:]] if sys.argv else ["python"]
    text = " ".join(words)
    return text if len(text) <= 80 else text[:77] + "..."


def _take(kind: BrokerKind, lease: str | None) -> None:
    """Write the caller's owner file (a new lease, or the same one again)."""
    owners = run_dir(kind) / "owners"
    owners.mkdir(exist_ok=True)
    record = {
        "name": lease,
        "pid": os.getpid(),
        "directory": os.getcwd(),
        "command": _command_line(),
        "since": time.time(),
    }
    (owners / _owner_file(lease)).write_text(json.dumps(record))


def _holders_in(owners: Path) -> list[Holder]:
    found = []
    for entry in sorted(owners.glob("*")) if owners.is_dir() else ():
        if not owner_alive(entry.name):
            continue
        record = _read_json(entry) or {}
        named = entry.name == PINNED or entry.name.startswith(NAMED)
        pid = record.get("pid") or (None if named else int(entry.name.partition("-")[0]))
        found.append(
            Holder(
                name=(record.get("name") or entry.name) if named else None,
                pid=pid,
                directory=record.get("directory"),
                command=record.get("command"),
                since=record.get("since"),
            )
        )
    return found


def holders(kind: BrokerKind) -> list[Holder]:
    """The live leases on the local broker of ``kind`` (none when it does not run)."""
    if _running_state(kind) is None:
        return []
    return _holders_in(run_dir(kind) / "owners")


def run_dir(kind: BrokerKind) -> Path:
    """The state of the local broker of ``kind`` that this process's settings ask for."""
    path = cache_dir() / "run" / driver(kind).local_slot()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lock_of(directory: Path, *, timeout: float = _LOCK_TIMEOUT) -> FileLock:
    return FileLock(str(directory.parent / f"{directory.name}.lock"), timeout=timeout)


def _lock(kind: BrokerKind) -> FileLock:
    return _lock_of(run_dir(kind))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _info_from_state(state: dict[str, Any]) -> BrokerInfo:
    return BrokerInfo(
        kind=state["kind"], url=state["url"], provider="local", extra=dict(state["extra"])
    )


def _running_state(kind: BrokerKind) -> dict[str, Any] | None:
    """The state of a ready broker whose supervisor and broker are both alive, else None."""
    state = _read_json(run_dir(kind) / "state.json")
    if state is None:
        return None
    if not (owner_alive(state["supervisor"]) and owner_alive(state["broker"])):
        return None
    return state


def status(kind: BrokerKind) -> BrokerInfo | None:
    """The running local broker of ``kind``, or None."""
    state = _running_state(kind)
    return None if state is None else _info_from_state(state)


def acquire(recipe: LocalRecipe, *, lease: str | None = None) -> BrokerInfo:
    """Lease the local broker of ``recipe.kind``, starting it if none runs.

    Without ``lease`` the lease is this process's and ends when it exits or
    dies; with one it is the named lease ``lease`` (taking it again is a no-op)
    and only :func:`release` with that name ends it. The broker stops when no
    lease is left.
    """
    kind = recipe.kind
    with _lock(kind):
        state = _running_state(kind)
        if state is None:
            _stop_locked(kind)  # a dead or half-started broker: clear its remains
            state = _start_locked(recipe)
        _take(kind, lease)
        if lease is not None:  # the starter's own process lease served only the start
            (run_dir(kind) / "owners" / owner_token(os.getpid())).unlink(missing_ok=True)
        return _info_from_state(state)


def release(kind: BrokerKind, *, lease: str | None = None) -> Release:
    """End the caller's lease (this process's, or the one named ``lease``).

    The broker stops if that was the last live lease; otherwise it keeps
    running and :attr:`Release.remaining` says for whom.
    """
    with _lock(kind):
        was_running = _running_state(kind) is not None
        owners = run_dir(kind) / "owners"
        mine = owners / _owner_file(lease)
        held = mine.exists()
        mine.unlink(missing_ok=True)
        remaining = tuple(_holders_in(owners)) if was_running else ()
        if not remaining:
            _stop_locked(kind)
        return Release(
            held=held,
            was_running=was_running,
            stopped=was_running and not remaining,
            remaining=remaining,
        )


def stop(kind: BrokerKind) -> list[Holder] | None:
    """Stop the local broker of ``kind`` whoever leases it.

    Returns the leases it was stopped for (possibly none), or None if no
    broker was running.
    """
    with _lock(kind):
        running = _running_state(kind) is not None
        stopped_for = _holders_in(run_dir(kind) / "owners") if running else []
        _stop_locked(kind)
        return stopped_for if running else None


# --- the shell's settings ---------------------------------------------------


def env_file() -> Path:
    """Where the running local brokers' settings are kept for a shell: ``. brokers.env``."""
    return cache_dir() / "brokers.env"


def write_env_file(settings: Mapping[str, str]) -> Path | None:
    """Write ``export NAME=VALUE`` lines to :func:`env_file`, readable by the owner only.

    Values may be secrets (an AMQP URL's password), so the file is created
    with mode 0600 before anything is written to it. With no settings the file
    is deleted and None returned.
    """
    path = env_file()
    if not settings:
        path.unlink(missing_ok=True)
        return None
    text = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in settings.items())
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an older file of this name may have had another mode
        handle.write(text)
    temporary.replace(path)
    return path


def last_exit(kind: BrokerKind) -> dict[str, Any] | None:
    """Why the last local broker of ``kind`` stopped (return code, log tail), if recorded."""
    return _read_json(run_dir(kind) / "exit.json")


def _restart_dir(info: BrokerInfo) -> Path:
    """The run directory of the local broker ``info`` describes (InvalidArgument if none)."""
    if info.provider != "local":
        raise InvalidArgument(
            f"a broker restart needs a broker the harness started itself, and the {info.kind}"
            f" broker at {info.url} is provider={info.provider!r}: let the harness start one"
            " (provider='local', or no --kafka-bootstrap / --amqp-url and no"
            " HARNESS_KAFKA_BOOTSTRAP / HARNESS_AMQP_URL), or leave broker restarts out"
        )
    known = info.extra.get("run_dir")
    directory = Path(known) if known else run_dir(info.kind)
    state = _read_json(directory / "state.json")
    if state is None or state.get("url") != info.url:
        raise InvalidArgument(
            f"no local {info.kind} broker at {info.url} is recorded in {directory}: a broker"
            " restart needs one started by this harness (started by an older version? stop it"
            f" with `harness brokers down {info.kind}` and let the harness start it again)"
        )
    return directory


def restart(
    recipe: LocalRecipe, info: BrokerInfo, *, hard: bool = False, timeout: float | None = None
) -> dict[str, Any]:
    """Restart the local broker ``info`` and wait until it is ready again.

    Graceful (SIGTERM, SIGKILL after a bound) or ``hard`` (SIGKILL); the broker
    comes back with the same command, ports, node name and data directory, so
    topics, queues and committed offsets survive. Holds the broker's lock
    meanwhile, so nobody else leases it half-started. Bounded by ``timeout``
    (default: the recipe's start bound plus the stop grace), give or take 10 s.
    Returns what the supervisor reported (``stop_seconds``, ``forced``...) and
    ``seconds``, the whole restart. Raises InvalidArgument for brokers the
    harness did not start, BrokerError (naming the broker's log) if it does not
    come back.
    """
    began = time.monotonic()
    directory = _restart_dir(info)
    budget = recipe.start_timeout + RESTART_GRACE if timeout is None else timeout
    deadline = began + budget
    log = info.extra.get("log") or str(Path(info.extra.get("workdir", directory)) / "broker.out")
    lock = _lock_of(directory, timeout=max(budget, 1.0))
    with lock:
        state = _read_json(directory / "state.json")
        launched = _read_json(directory / "launched.json")
        if state is None or launched is None or not owner_alive(state["supervisor"]):
            raise BrokerError(
                f"the local {info.kind} broker at {info.url} is not running any more, so it"
                f" cannot be restarted; its log: {log}"
            )
        if launched.get("restartable") != RESTART_PROTOCOL:
            raise InvalidArgument(
                f"the local {info.kind} broker at {info.url} was started by an older harness"
                " whose supervisor cannot restart it: stop it with"
                f" `harness brokers down {info.kind}` and let the harness start it again"
            )
        before = int(launched.get("restarts", 0))
        supervisor = state["supervisor"]
        os.kill(int(supervisor.partition("-")[0]), signal.SIGUSR2 if hard else signal.SIGUSR1)
        while True:
            launched = _read_json(directory / "launched.json") or {}
            if int(launched.get("restarts", 0)) > before:
                break
            if not owner_alive(supervisor):
                failure = _read_json(directory / "exit.json") or {}
                raise BrokerError(
                    f"the local {info.kind} broker's supervisor ended during a restart"
                    f" ({failure.get('reason', 'unknown reason')}); see the log {log}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the local {info.kind} broker at {info.url} was not relaunched within"
                    f" {budget:g} s of a {'hard' if hard else 'graceful'} restart request;"
                    f" see the log {log}"
                )
            time.sleep(0.02)
        state["broker"] = launched["broker"]
        state["extra"] = {**state["extra"], "pid": launched["broker"].partition("-")[0]}
        temporary = directory / "state.json.tmp"
        temporary.write_text(json.dumps(state))
        temporary.replace(directory / "state.json")
        relaunched = time.monotonic()
        try:
            _await_ready(recipe, info, directory, supervisor, max(1.0, deadline - time.monotonic()))
        except BrokerStartError as exc:
            raise BrokerStartError(
                f"the local {info.kind} broker at {info.url} did not come back after a"
                f" {'hard' if hard else 'graceful'} restart: {exc}\nIts log: {log}"
            ) from exc
    report = dict(launched.get("last_restart") or {})
    return report | {
        "ready_seconds": round(time.monotonic() - relaunched, 3),
        "seconds": round(time.monotonic() - began, 3),
    }


def _start_locked(recipe: LocalRecipe) -> dict[str, Any]:
    kind = recipe.kind
    recipe.check_prerequisites()
    directory = run_dir(kind)
    (directory / "exit.json").unlink(missing_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"harness-{kind}-"))  # mode 0700: private data
    try:
        plan = recipe.prepare(workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    extra = {**plan.extra, "workdir": str(workdir)}
    plan_data: dict[str, Any] = {
        "kind": kind,
        "url": plan.url,
        "argv": list(plan.argv),
        "env": dict(plan.env),
        "companions": [list(c) for c in plan.companions],
        "extra": extra,
        "workdir": str(workdir),
        "launcher": owner_token(os.getpid()),
    }
    (directory / "plan.json").write_text(json.dumps(plan_data))
    # The starter owns the broker from the first moment, so the supervisor
    # never sees an empty owner list while we wait for readiness.
    _take(kind, None)
    # The supervisor daemonizes (forks and leaves our session): it must outlive
    # us when others share the broker, and Ctrl-C in a terminal must not reach it.
    with open(directory / "supervisor.log", "wb") as log:
        subprocess.run(
            [sys.executable, "-m", "message_flow_harness.brokers._supervisor", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=str(Path(__file__).resolve().parent.parent),
            check=True,
            timeout=30,
        )
    info = BrokerInfo(kind=kind, url=plan.url, provider="local", extra=extra)
    try:
        launched = _await_launch(directory, timeout=30.0)
        _await_ready(recipe, info, directory, launched["supervisor"])
    except BaseException:
        _stop_locked(kind)
        raise
    state = {
        "kind": kind,
        "url": plan.url,
        "extra": {**extra, "pid": launched["broker"].partition("-")[0], "run_dir": str(directory)},
        "supervisor": launched["supervisor"],
        "broker": launched["broker"],
    }
    (directory / "state.json").write_text(json.dumps(state))
    return state


def _await_launch(directory: Path, *, timeout: float) -> dict[str, str]:
    """Wait for the supervisor to report its own and the broker's process tokens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        launched = _read_json(directory / "launched.json")
        if launched is not None:
            return {"supervisor": str(launched["supervisor"]), "broker": str(launched["broker"])}
        time.sleep(0.05)
    log = (directory / "supervisor.log").read_text(errors="replace")
    raise BrokerStartError(
        f"the broker supervisor did not launch the broker within {timeout:.0f} s: {log[-2000:]}"
    )


def _raise_if_exited(directory: Path, supervisor: str) -> None:
    if owner_alive(supervisor):
        return
    failure = _read_json(directory / "exit.json") or {}
    log = failure.get("log_tail") or (directory / "supervisor.log").read_text(errors="replace")
    raise BrokerStartError(
        f"the local broker exited during start-up ({failure.get('reason', 'unknown reason')})."
        f" Last log lines:\n{log[-3000:]}"
    )


def _await_ready(
    recipe: LocalRecipe,
    info: BrokerInfo,
    directory: Path,
    supervisor: str,
    timeout: float | None = None,
) -> None:
    """Run the recipe's round-trip check, failing fast if the broker dies meanwhile."""
    outcome: list[BaseException | None] = []
    timeout = recipe.start_timeout if timeout is None else timeout

    def check() -> None:
        try:
            recipe.wait_ready(info, timeout)
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=check, name=f"{recipe.kind}-ready", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout + 10.0
    while thread.is_alive() and time.monotonic() < deadline:
        _raise_if_exited(directory, supervisor)
        thread.join(0.1)
    if not outcome:
        raise BrokerStartError(
            f"the local {recipe.kind} broker was not ready within {timeout:.0f} s;"
            f" see its log at {info.extra.get('log', info.extra.get('workdir'))}"
        )
    if outcome[0] is not None:
        log_tail = read_tail(Path(info.extra["log"])) if "log" in info.extra else ""
        raise BrokerStartError(
            f"the local {recipe.kind} broker did not become ready: {outcome[0]}"
            + (f"\nLast log lines:\n{log_tail}" if log_tail else "")
        ) from outcome[0]


def _stop_locked(kind: BrokerKind) -> None:
    """Stop the supervisor (which stops the broker and deletes its data) and clear state."""
    directory = run_dir(kind)
    plan = _read_json(directory / "plan.json")
    state = _read_json(directory / "state.json")
    launched = _read_json(directory / "launched.json")
    supervisor = (state or {}).get("supervisor") or (launched or {}).get("supervisor")
    if supervisor and owner_alive(supervisor):
        pid = int(supervisor.partition("-")[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while owner_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.05)
        if owner_alive(supervisor):  # a wedged supervisor: take its whole group down
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    if launched and owner_alive(launched["broker"]):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(launched["broker"].partition("-")[0]), signal.SIGKILL)
    if plan is not None:
        shutil.rmtree(plan["workdir"], ignore_errors=True)
    for name in ("state.json", "plan.json", "launched.json"):
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / "owners", ignore_errors=True)
