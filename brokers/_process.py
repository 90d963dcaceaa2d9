"""What the lease logic and the supervisor process both need: owners, logs, the restart protocol.

:mod:`brokers._local` (in the processes that lease a broker) and
:mod:`brokers._supervisor` (the detached process that runs it) talk through
files and signals; this module holds what both sides must agree on, so
neither imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The owner name of the one pinned lease of harnesses before named leases (still honoured).
PINNED = "pinned"
#: Owner names of named leases (``harness brokers up --lease NAME``) start with this;
#: such a lease holds until ``down`` releases it, whatever process took it.
NAMED = "lease-"
#: A graceful restart waits this long for the broker to exit before killing it.
RESTART_GRACE = 30.0
#: launched.json's ``restartable``: the restart signals this supervisor understands.
RESTART_PROTOCOL = 1


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse), or None if it is gone.

    A zombie (dead, not yet reaped by its parent) counts as gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ")"
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def owner_token(pid: int) -> str:
    """``pid`` as a lease owner: ``"<pid>-<start time>"``, so a reused pid is not the owner."""
    return f"{pid}-{process_start_time(pid)}"


def owner_alive(token: str) -> bool:
    """Whether the process an owner token names still runs (a named lease always does)."""
    if token == PINNED or token.startswith(NAMED):
        return True
    pid, _, started = token.partition("-")
    return pid.isdigit() and process_start_time(int(pid)) == started


def read_tail(path: Path, limit: int = 3000) -> str:
    """The last ``limit`` bytes of a log, decoded; empty if it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
