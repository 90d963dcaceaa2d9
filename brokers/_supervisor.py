"""Runs one local broker and stops it when nobody leases it any more.

Started detached by :func:`brokers._local.acquire` as
``python -m brokers._supervisor RUN_DIR``; never imported by user code. It
outlives the process that started it (so pytest-xdist workers and the CLI can
share the broker) but not the last lease holder: when every owner in
``RUN_DIR/owners`` is dead, or on SIGTERM, it stops the broker's process
group, deletes the broker's private data directory and records why in
``RUN_DIR/exit.json``.
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

from brokers._local import _tail, owner_alive, owner_token

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

    def on_term(signum: int, frame: FrameType | None) -> None:
        stopping.append("stopped on request")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    output = open(workdir / "broker.out", "ab")  # noqa: SIM115 - children write to it until the end
    processes: list[subprocess.Popen[bytes]] = []
    group = 0  # the first process founds the group, the rest join it: one killpg stops all
    for argv in [*plan["companions"], plan["argv"]]:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            process_group=group,
        )
        group = group or process.pid
        processes.append(process)
    broker = processes[-1]
    (directory / "launched.json").write_text(
        json.dumps({"broker": owner_token(broker.pid), "supervisor": owner_token(os.getpid())})
    )

    reason = ""
    while not reason:
        if stopping:
            reason = stopping[0]
        elif broker.poll() is not None:
            reason = f"the broker exited on its own with code {broker.returncode}"
        elif not _any_owner_alive(directory / "owners"):
            reason = "no process holds a lease on it any more"
        else:
            time.sleep(_POLL)

    _stop_group(group, processes)
    log = Path(plan["extra"].get("log", workdir / "broker.out"))
    (directory / "exit.json").write_text(
        json.dumps(
            {
                "reason": reason,
                "returncode": broker.returncode,
                "log_tail": _tail(log) or _tail(workdir / "broker.out"),
            }
        )
    )
    output.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


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
