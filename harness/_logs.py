"""Log records of a run's drivers and service: into the run's history, not the terminal.

While a run is open (:func:`capturing`), a record belongs to it when it is
logged in the run's context (:func:`attributed`: the harness's own steps and
the service's code, including every task the service starts, which copy
that context) or by a client library or the harness's drivers
(:data:`SOURCES`) from anywhere, say a client shared by a campaign's runs;
such a record goes to every run open then. A record that belongs to a run
is kept in its history (:meth:`History.add_log`) and, unless
:func:`show_logs` asks for them, is not printed: while a run is open every
handler drops it (``logging.Handler.handle`` is wrapped, so handlers
configured at any time count: pytest's, a service's ``basicConfig`` at
import, a framework's own made as the service starts, and
``logging.lastResort``, what prints when nothing is configured).
The client libraries' loggers log from INFO while a run is open, so the
history tells what they were doing; the service's loggers keep their levels.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from message_flow_harness._history import History, LogEntry

#: Loggers whose records belong to the open runs wherever they are logged.
SOURCES = ("aiokafka", "aio_pika", "aiormq", "message_flow_harness")
#: A record's text in the history is cut at this many characters (reprs can be huge).
MAX_MESSAGE = 2000
_CLAIMED = "_harness_claimed"  # set on a record once decided: many handlers ask

_current: contextvars.ContextVar[History | None] = contextvars.ContextVar(
    "harness_logs", default=None
)
_lock = threading.Lock()
_open: tuple[History, ...] = ()  # replaced whole, so readers on other threads need no lock
_show = False
_saved_levels: dict[str, int] = {}


def show_logs(enabled: bool = True) -> None:
    """Print the records a run captures as well (a CLI's verbose mode); they are kept either way."""
    global _show
    _show = enabled


@contextmanager
def capturing(history: History) -> Iterator[None]:
    """Keep the records that belong to this run in ``history`` until the block exits."""
    global _open
    with _lock:
        if not _open:
            _install()
        _open = (*_open, history)
    try:
        yield
    finally:
        with _lock:
            _open = tuple(h for h in _open if h is not history)
            if not _open:
                _uninstall()


@contextmanager
def attributed(history: History) -> Iterator[None]:
    """Records logged in this block, and in tasks created in it, belong to ``history``'s run."""
    token = _current.set(history)
    try:
        yield
    finally:
        _current.reset(token)


def claim(record: logging.LogRecord) -> bool:
    """Keep ``record`` in the histories it belongs to; whether it belongs to any (asked once)."""
    decided: bool | None = getattr(record, _CLAIMED, None)
    if decided is not None:
        return decided
    history = _current.get()
    if history is not None:
        owners: tuple[History, ...] = (history,)
    elif record.name.partition(".")[0] in SOURCES:
        owners = _open
    else:
        owners = ()
    if owners:
        entry = _entry(record)
        for owner in owners:
            owner.add_log(entry)
    setattr(record, _CLAIMED, bool(owners))
    return bool(owners)


def _entry(record: logging.LogRecord) -> LogEntry:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string is the logger's bug; keep what there is
        message = f"{record.msg!r} % {record.args!r}"
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        message += f" [{type(error).__name__}: {error}]"
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return LogEntry(time.perf_counter_ns(), record.levelname, record.name, message)


_unwrapped_handle = logging.Handler.handle


def _handle(self: logging.Handler, record: logging.LogRecord) -> bool:
    """``Handler.handle`` while runs are open: a record a run keeps is not printed."""
    if claim(record) and not _show:  # kept either way
        return False
    return _unwrapped_handle(self, record)


class _CaptureHandler(logging.Handler):
    """On the source loggers: keeps their records when no other handler is configured."""

    def emit(self, record: logging.LogRecord) -> None:
        claim(record)


_handler = _CaptureHandler()


def _install() -> None:
    logging.Handler.handle = _handle  # type: ignore[method-assign]
    for name in SOURCES:
        source = logging.getLogger(name)
        source.addHandler(_handler)
        if source.level == logging.NOTSET:
            _saved_levels[name] = source.level
            source.setLevel(logging.INFO)


def _uninstall() -> None:
    for name in SOURCES:
        logging.getLogger(name).removeHandler(_handler)
    for name, level in _saved_levels.items():
        logging.getLogger(name).setLevel(level)
    _saved_levels.clear()
    logging.Handler.handle = _unwrapped_handle  # type: ignore[method-assign]
