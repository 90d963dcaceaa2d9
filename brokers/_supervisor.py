"""Runs one local broker and stops it when nobody leases it any more.

Started detached by :func:`brokers._local.acquire` as
``python -m brokers._supervisor RUN_DIR``; never imported by user code. It
outlives the process that started it (so pytest-xdist workers and the CLI can
share the broker) but not the last lease holder: when every owner in
``RUN_DIR/owners`` is dead, or on SIGTERM, it stops the broker's process
group, deletes the broker's private data directory and records why in
``RUN_DIR/exit.json``.

It also restarts the broker on request (:func:`brokers._local.restart`):
SIGUSR1 stops it gracefully (SIGTERM, bounded), SIGUSR2 kills it (SIGKILL);
either way the broker's own process group goes (the broker and its
children, not its companions such as RabbitMQ's epmd), the same command runs
again in the same work directory, and ``RUN_DIR/launched.json`` gets the new
broker's token and a higher ``restarts`` count.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from message_flow_harness.brokers._process import (
    RESTART_GRACE,
    RESTART_PROTOCOL,
    owner_alive,
    owner_token,
    read_tail,
)

_POLL = 0.2
_TERM_GRACE = 15.0


def daemonize() -> None:
    """Fork into a new session so the caller returns at once and we outlive it."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def main(directory: Path) -> int:
    plan = json.loads((directory / "plan.json").read_text())
    workdir = Path(plan["workdir"])
    env = {**os.environ, **plan["env"]}
    stopping: list[str] = []
    restarts: list[bool] = []  # one entry per request: True for a hard one

    def on_term(signum: int, frame: FrameType | None) -> None:
        stopping.append("stopped on request")

    def on_restart(signum: int, frame: FrameType | None) -> None:
        restarts.append(signum == signal.SIGUSR2)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, on_restart)
    signal.signal(signal.SIGUSR2, on_restart)

    output = open(workdir / "broker.out", "ab")  # noqa: SIM115 - children write to it until the end

    def launch(argv: list[str], group: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            process_group=group,
        )

    # Companions share one group (the first founds it); the broker gets a group of
    # its own, so a restart stops the broker and its children and nothing else.
    companions: list[subprocess.Popen[bytes]] = []
    for argv in plan["companions"]:
        companions.append(launch(argv, companions[0].pid if companions else 0))
    broker = launch(plan["argv"], 0)
    count = 0
    _write_launched(directory, broker, count, None)

    reason = ""
    while not reason:
        if stopping:
            reason = stopping[0]
        elif restarts:
            hard = restarts.pop(0)
            began = time.monotonic()
            forced = _stop_broker(broker, hard=hard)
            stopped = time.monotonic() - began
            report = {
                "hard": hard,
                "forced": forced,
                "returncode": broker.returncode,
                "stop_seconds": round(stopped, 3),
            }
            output.write(
                f"\n--- harness: broker {'killed' if hard else 'stopped'} for a restart"
                f" (exit {broker.returncode}), starting it again ---\n".encode()
            )
            output.flush()
            broker = launch(plan["argv"], 0)
            count += 1
            _write_launched(directory, broker, count, report)
        elif broker.poll() is not None:
            reason = f"the broker exited on its own with code {broker.returncode}"
        elif not _any_owner_alive(directory / "owners"):
            reason = "no process holds a lease on it any more"
        else:
            time.sleep(_POLL)

    _stop_broker(broker, hard=False, grace=_TERM_GRACE)
    if companions:
        _stop_group(companions[0].pid, companions)
    log = Path(plan["extra"].get("log", workdir / "broker.out"))
    (directory / "exit.json").write_text(
        json.dumps(
            {
                "reason": reason,
                "returncode": broker.returncode,
                "log_tail": read_tail(log) or read_tail(workdir / "broker.out"),
            }
        )
    )
    output.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _write_launched(
    directory: Path,
    broker: subprocess.Popen[bytes],
    restarts: int,
    last_restart: dict[str, object] | None,
) -> None:
    """Publish the broker's and our own process tokens (atomically: readers poll the file)."""
    data = {
        "broker": owner_token(broker.pid),
        "supervisor": owner_token(os.getpid()),
        "restartable": RESTART_PROTOCOL,
        "restarts": restarts,
        "last_restart": last_restart,
    }
    temporary = directory / "launched.json.tmp"
    temporary.write_text(json.dumps(data))
    temporary.replace(directory / "launched.json")


def _stop_broker(
    broker: subprocess.Popen[bytes], *, hard: bool, grace: float = RESTART_GRACE
) -> bool:
    """Stop the broker's process group: SIGTERM (then SIGKILL after ``grace``) or SIGKILL.

    Returns True if it had to be killed. Whatever is left in the group (a child
    the broker started) is killed too, so nothing holds its ports or data.
    """
    group = broker.pid  # the broker founded its own group
    forced = hard
    if not hard:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            broker.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            forced = True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    broker.wait()
    deadline = time.monotonic() + 5.0
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.02)  # orphaned children are reaped by init
    return forced


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _any_owner_alive(owners: Path) -> bool:
    alive = False
    for entry in owners.glob("*") if owners.is_dir() else ():
        if owner_alive(entry.name):
            alive = True
        else:
            entry.unlink(missing_ok=True)  # a lease holder that died without releasing
    return alive


def _stop_group(group: int, processes: list[subprocess.Popen[bytes]]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + _TERM_GRACE
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    for process in processes:
        process.wait()


if __name__ == "__main__":
    daemonize()
    sys.exit(main(Path(sys.argv[1])))
