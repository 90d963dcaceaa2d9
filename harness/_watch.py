"""The tasks a service starts, watched: one that dies while the run goes on is reported at once.

A service's consume loop usually runs in a task created in its ``__aenter__``;
if that task raises (``headers=record.headers`` on aiokafka 0.14 raises
``TypeError`` inside it), nothing awaits it until the service stops, and the
run would read as every later input lost. A task factory on the loop notes
the tasks that a starting service spawns itself (``asyncio.create_task``,
``ensure_future``, a ``TaskGroup``; not the ones asyncio makes for ``gather``
or ``wait_for``, whose errors reach the code awaiting them, nor its client
library's own tasks), and a done-callback turns such a task's exception into
a :class:`TaskDeath` that names the service's own line, with the traceback
trimmed to the service's frames and the library frames under them. A task it
spawns once running (one per message, say) is watched too: its death ends
nothing, but is the likely cause of the input it was handling going missing.

The factory tells services apart by a context variable that
:meth:`Watch.starting` sets while one instance starts: tasks copy the
context they are created in, so concurrent runs on one loop never mix.
The same variable marks every task of the instance, its client library's
included and whatever those spawn later: a crash cancels them all
(:meth:`Watch.cancel`), as a killed process leaves nothing running. The
service's own go first, before its exit runs; the library's only once its
clients are closed: cancelled before it ran, a library's callback task never
does its part (aio-pika's connection-close callback then never says it is
done, and every later close of that connection hangs).
"""

from __future__ import annotations

import asyncio
import contextvars
import linecache
import os
import sys
import sysconfig
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

#: Packages whose frames are the harness's own: trimmed from a service's traceback.
_HARNESS = "message_flow_harness"
#: Except the zoo's: example services, the code under test when the demo runs them.
_SERVICE_INSIDE_HARNESS = "message_flow_harness.zoo"
#: Client libraries whose own background tasks are theirs to handle, not the service's.
_LIBRARIES = frozenset({"aiokafka", "aio_pika", "aiormq", "pamqp", "asyncio", "anyio"})
#: asyncio functions that spawn a task the caller owns; any other asyncio caller
#: (gather, wait_for, shield...) awaits the task it made and gets its error.
_SPAWNS = frozenset({"create_task", "ensure_future"})
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
_STDLIB_DIR = sysconfig.get_paths()["stdlib"]
_SITE_DIRS = tuple({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
#: Bounds on what a report quotes: an exception's text, and a traceback's frames.
_MAX_TEXT = 300
_MAX_FRAMES = 12

_watching: contextvars.ContextVar[Watch | None] = contextvars.ContextVar(
    "harness_watch", default=None
)


@dataclass(frozen=True, slots=True)
class TaskDeath:
    """A task the service started that ended with an exception while the run went on."""

    instance: str  # ``sut0``
    task: str  # the task's name
    error: BaseException
    where: str  # ``orders/service.py:42``: the service's own line nearest the raise
    traceback: str  # the service's frames and the library frames under them

    @property
    def cause(self) -> str:
        """``TypeError: Expected list, got tuple at orders/service.py:42``."""
        return f"{_describe(self.error)} at {self.where}"

    @property
    def summary(self) -> str:
        """``service task died: TypeError: Expected list, got tuple at orders/service.py:42``."""
        return f"service task died: {self.cause}"

    def __str__(self) -> str:
        lines = [f"{self.summary} ({self.instance}, task {self.task!r})"]
        lines += [f"    {line}" for line in self.traceback.splitlines()]
        return "\n".join(lines)


class Watch:
    """One service instance's watch over the tasks it spawns (while it starts, and after)."""

    def __init__(
        self,
        instance: str,
        on_death: Callable[[TaskDeath], None],
        on_handler_death: Callable[[TaskDeath], None] | None = None,
    ) -> None:
        self.instance = instance
        self._on_death = on_death
        self._on_handler_death = on_handler_death
        self._armed = True
        self._quiet = False
        self._starting = False
        # Every task created in this instance's context, watched or not, and those of
        # them running the service's own code (weak: done tasks go away with their
        # last reference).
        self._tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._own: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    @contextmanager
    def starting(self) -> Iterator[None]:
        """While the service starts: the tasks it spawns are watched."""
        _install(asyncio.get_running_loop())
        token = _watching.set(self)
        self._starting = True
        try:
            yield
        finally:
            self._starting = False
            _watching.reset(token)

    def disarm(self, *, crashed: bool = False) -> None:
        """The service is being stopped or crashed: its tasks may end as they will.

        After a crash, nothing of the process is left to say anything: a task
        that dies of the cut connections is not reported at all (asyncio's
        "Task exception was never retrieved" included).
        """
        self._armed = False
        self._quiet = crashed

    async def cancel(self, *, within: float, own_only: bool = False) -> int:
        """Cancel the instance's tasks still running; how many did not end ``within`` s.

        ``own_only``: those running the service's code, not its client library's.
        Bounded, and never waiting again on a task that swallows its cancel: a
        crashed process runs nothing, so such a task is only left behind (and
        its count noted by the caller). What the cancelled tasks end with is
        retrieved here, so asyncio prints nothing about them either.
        """
        current = asyncio.current_task()
        chosen = self._own if own_only else self._tasks
        tasks = [task for task in chosen if not task.done() and task is not current]
        for task in tasks:
            task.cancel()
        if not tasks:
            return 0
        done, pending = await asyncio.wait(tasks, timeout=within)
        for task in done:
            if not task.cancelled():
                task.exception()
        return len(pending)

    def report(self, error: BaseException, *, task: str, where: str, traceback: str) -> None:
        """A death the service saw itself (its own process exiting): reported as a task's."""
        if self._armed:
            self._on_death(TaskDeath(self.instance, task, error, where, traceback))

    def _adopt(self, task: asyncio.Task[Any]) -> None:
        if self._starting:
            task.add_done_callback(self._ended)
        elif self._on_handler_death is not None:
            task.add_done_callback(self._handler_ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        death = self._death_of(task)
        if death is not None:
            self._on_death(death)

    def _handler_ended(self, task: asyncio.Task[Any]) -> None:
        """A task spawned once running (one per message, say): its death is one input's cause."""
        death = self._death_of(task)
        if death is not None and self._on_handler_death is not None:
            self._on_handler_death(death)

    def _death_of(self, task: asyncio.Task[Any]) -> TaskDeath | None:
        if task.cancelled() or not (self._armed or self._quiet):
            return None
        error = task.exception()  # retrieved: asyncio will not print it when it is collected
        if error is None or not self._armed:
            return None
        where, trimmed = _locate(error)
        return TaskDeath(self.instance, task.get_name(), error, where, trimmed)


def starting_watch() -> Watch | None:
    """The watch of the instance starting now, for a service that reports its own death."""
    return _watching.get()


def dies_of(error: BaseException, deaths: list[TaskDeath]) -> TaskDeath | None:
    """The death whose error ``error`` is or carries: a stop re-raising it says nothing new."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for death in deaths:
            if death.error is current:
                return death
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
    return None


# --- the task factory -----------------------------------------------------------------


def _install(loop: asyncio.AbstractEventLoop) -> None:
    """Put the watching factory on ``loop`` once, in front of any factory it already has."""
    previous = loop.get_task_factory()
    if getattr(previous, "_harness_watch", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> asyncio.Future[Any]:
        if previous is not None:
            task = previous(loop, coro, **options)
        else:
            task = asyncio.Task(coro, loop=loop, **options)
        context = options.get("context")
        watch = context.get(_watching) if context is not None else _watching.get()
        if watch is None or not isinstance(task, asyncio.Task):
            return task
        watch._tasks.add(task)  # for a crash to cancel
        if not _is_library(coro):
            watch._own.add(task)
            if _spawned_by_caller():
                watch._adopt(task)
        return task

    factory._harness_watch = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


def _is_library(coro: Any) -> bool:
    frame = getattr(coro, "cr_frame", None)
    module = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    return module.partition(".")[0] in _LIBRARIES or _is_harness(module)


def _is_harness(module: str) -> bool:
    return module.partition(".")[0] == _HARNESS and not module.startswith(_SERVICE_INSIDE_HARNESS)


def _spawned_by_caller() -> bool:
    """Whether the task being made was asked for by the caller itself (not by gather & co.)."""
    frame: FrameType | None = sys._getframe(2)  # above this function and the factory
    outermost = None
    while frame is not None and frame.f_code.co_filename.startswith(_ASYNCIO_DIR):
        outermost = frame.f_code.co_name
        frame = frame.f_back
    return outermost in _SPAWNS or outermost is None


# --- where it died ------------------------------------------------------------------------


def _describe(error: BaseException) -> str:
    text = str(error)
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _frames(tb: TracebackType | None) -> Iterator[tuple[str, str, int, str]]:
    """(module, file, line, function) of each frame, outermost first."""
    while tb is not None:
        code = tb.tb_frame.f_code
        yield (
            str(tb.tb_frame.f_globals.get("__name__", "")),
            code.co_filename,
            tb.tb_lineno,
            code.co_name,
        )
        tb = tb.tb_next


def _is_service_file(module: str, filename: str) -> bool:
    """The service's own code: not the harness, the standard library or an installed library."""
    if module.startswith(_SERVICE_INSIDE_HARNESS):
        return True
    if _is_harness(module) or module.partition(".")[0] in _LIBRARIES:
        return False
    if not os.path.isabs(filename):  # ``<string>``, or a compiled extension's (Cython's .pyx)
        return False
    return not filename.startswith((*_SITE_DIRS, _STDLIB_DIR))


def _shown(filename: str) -> str:
    """A path relative to the working directory when it is inside it."""
    try:
        return Path(filename).resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return filename


def _format(frames: list[tuple[str, str, int, str]]) -> list[str]:
    lines = []
    for _, filename, line, function in frames:
        lines.append(f'  File "{_shown(filename)}", line {line}, in {function}')
        source = linecache.getline(filename, line).strip()
        if source:
            lines.append(f"    {source}")
    return lines


def _locate(error: BaseException) -> tuple[str, str]:
    """The service's line nearest the raise, and the traceback without the harness's frames.

    The line is the innermost frame of the service's own code; a service
    installed as a library has none, and then it is the task's outermost frame.
    """
    frames = [
        frame
        for frame in _frames(error.__traceback__)
        if not _is_harness(frame[0]) and not frame[1].startswith(_ASYNCIO_DIR)
    ]
    own = [frame for frame in frames if _is_service_file(frame[0], frame[1])]
    anchor = own[-1] if own else (frames[0] if frames else None)
    where = f"{_shown(anchor[1])}:{anchor[2]}" if anchor else "an unknown line"
    lines = ["Traceback (the service's frames, and the libraries' under them):"]
    if len(frames) > _MAX_FRAMES:  # the service's end and the raising end say the most
        half = _MAX_FRAMES // 2
        lines += _format(frames[:half])
        lines.append(f"  ... {len(frames) - 2 * half} frames ...")
        lines += _format(frames[-half:])
    else:
        lines += _format(frames)
    lines.append(_describe(error))
    return where, "\n".join(lines)
