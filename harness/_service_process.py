"""A service under test that runs as its own OS process: any language, any client.

:func:`process` turns a command line into a ``sut``. Each instance of the
service is one process, in a process group of its own, told the run's
endpoints through its environment. Its stdout and stderr lines go to the
run's history as log records (``sut0.stdout``, ``sut0.stderr``), never to the
terminal. Entering starts it (and waits until it is ready, if told how);
exiting sends SIGTERM to its group, then SIGKILL after ``stop_grace``
seconds; a Crash calls :meth:`ServiceProcess.kill` instead (SIGKILL at once:
nothing graceful runs). A process that ends by itself with an error, or
fails to stop, is a :class:`ServiceError` on exit, with its last lines.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import os
import re
import shlex
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal

from message_flow_harness._environment import (
    check_templates,
    default_environment,
    render,
    starting_instance,
)
from message_flow_harness._errors import InvalidArgument, ServiceError
from message_flow_harness._logs import claim
from message_flow_harness._message import Endpoints
from message_flow_harness._waiting import eventually
from message_flow_harness._watch import Watch, starting_watch

#: ``ready=``: a pattern an output line must match, a TCP port on 127.0.0.1 that
#: must accept, or an async function of the endpoints that returns True once ready.
Ready = str | re.Pattern[str] | int | Callable[[Endpoints], Awaitable[bool]]
#: ``ready=`` once checked: a pattern is compiled.
ReadyCheck = re.Pattern[str] | int | Callable[[Endpoints], Awaitable[bool]]

#: How many of its last output lines an error about a process quotes.
LAST_LINES = 20
#: A longer output line is dropped (and said so), not kept whole.
MAX_LINE = 1 << 20
#: Between two tries of a port or a readiness function.
_POLL = 0.1
#: For the output still in the pipes once the process is gone (a grandchild may hold them).
_DRAIN = 1.0
#: For a SIGKILLed process to be reaped: the kernel does it at once, this is a guard.
_REAP = 5.0
#: Terminal colour and cursor codes: a program's logging colours its levels when it may.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Exit statuses that answer our SIGTERM: it ended, or the signal ended it.
_TERMINATED = frozenset({0, -signal.SIGTERM, 128 + signal.SIGTERM})

Stream = Literal["stdout", "stderr"]
_live_groups: set[int] = set()  # killed at interpreter exit, whatever happened to the run


def process(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    ready: Ready | None = None,
    stop_grace: float = 5.0,
    name: str | None = None,
) -> ProcessService:
    """A ``sut`` that runs ``argv`` as its own process, the endpoints in its environment.

    ``env`` maps variable names to templates over the endpoints' fields
    (``{"KAFKA_BOOTSTRAP": "{bootstrap_servers}", "IN_TOPIC": "{input}"}``);
    the process also inherits ``os.environ`` (with a flow's ``Flow(env=...)``)
    and gets, under ``env``, ``HARNESS_KIND``, ``HARNESS_BOOTSTRAP_SERVERS``,
    ``HARNESS_AMQP_URL``, ``HARNESS_INPUT``, ``HARNESS_OUTPUT``,
    ``HARNESS_DEAD_LETTER`` and ``HARNESS_GROUP_ID`` (those its broker has).
    ``ready`` says when it consumes: a regular expression one of its output
    lines matches, a TCP port on 127.0.0.1 it accepts on, or an async
    function of the endpoints returning True; without it, the service counts
    as started once the process is. Its output lines go to the run's history
    (loggers ``sut0.stdout``, ``sut0.stderr``). Stopping sends SIGTERM to its
    process group, then SIGKILL after ``stop_grace`` seconds; a Crash
    SIGKILLs it at once. ``name`` labels it in reports (default: the command
    line).
    """
    if isinstance(argv, str | bytes | os.PathLike) or not isinstance(argv, Sequence) or not argv:
        raise InvalidArgument(
            f"process(argv={argv!r}) is invalid: pass the command as a non-empty list,"
            ' e.g. [sys.executable, "-m", "orders.worker"]'
        )
    command = []
    for arg in argv:
        if not isinstance(arg, str | os.PathLike):
            raise InvalidArgument(
                f"process(argv=...) holds {arg!r}: every argument is a str or a path"
            )
        command.append(os.fspath(arg))
    templates = check_templates({} if env is None else env, where="process(env=...)")
    if isinstance(stop_grace, bool) or not isinstance(stop_grace, int | float):
        grace_ok = False
    else:
        grace_ok = 0 < stop_grace < math.inf
    if not grace_ok:
        raise InvalidArgument(
            f"process(stop_grace={stop_grace!r}) is invalid: give a positive number of s"
        )
    return ProcessService(
        argv=tuple(command),
        templates=templates,
        cwd=None if cwd is None else os.fspath(cwd),
        ready=_check_ready(ready),
        stop_grace=float(stop_grace),
        name=name or _label(command),
    )


def _check_ready(ready: object) -> ReadyCheck | None:
    if ready is None:
        return None
    if isinstance(ready, str):
        try:
            return re.compile(ready)
        except re.error as exc:
            raise InvalidArgument(
                f"process(ready={ready!r}) is not a regular expression: {exc}"
            ) from exc
    if isinstance(ready, re.Pattern):
        if not isinstance(ready.pattern, str):
            raise InvalidArgument(f"process(ready={ready!r}) is invalid: compile a str pattern")
        return ready
    if isinstance(ready, int) and not isinstance(ready, bool):
        if not 0 < ready < 65536:
            raise InvalidArgument(f"process(ready={ready!r}) is invalid: a TCP port is 1-65535")
        return ready
    if callable(ready):
        return ready  # its signature is the caller's promise
    raise InvalidArgument(
        f"process(ready={ready!r}) is invalid: give a regular expression an output line"
        " matches, a TCP port on 127.0.0.1, or an async function of the endpoints"
        " returning True once the service is ready"
    )


def _label(command: Sequence[str]) -> str:
    """``python3 orders.py``: the program's and paths' names, not where they live."""
    text = shlex.join([Path(arg).name if os.path.isabs(arg) else arg for arg in command])
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, kw_only=True)
class ProcessService:
    """What :func:`process` returns: called with a run's endpoints, one process to run."""

    #: Its instances run in processes of their own, where no client probe sees.
    in_process: ClassVar[bool] = False

    argv: tuple[str, ...]
    templates: Mapping[str, str]
    cwd: str | None
    ready: ReadyCheck | None
    stop_grace: float
    name: str

    @property
    def __name__(self) -> str:  # what Flow labels a service by
        return self.name

    def __call__(self, endpoints: Endpoints) -> ServiceProcess:
        return ServiceProcess(self, endpoints)


class ServiceProcess:
    """One instance of a process service: started on enter, stopped on exit or killed."""

    #: Its clients live in another process: the client probes cannot see its deliveries.
    in_process = False

    def __init__(self, spec: ProcessService, endpoints: Endpoints) -> None:
        self.spec = spec
        self.endpoints = endpoints
        # Rendered now: a template naming a field this broker lacks fails at the call.
        self.own_env = {**default_environment(endpoints), **render(spec.templates, endpoints)}
        self.lines: deque[str] = deque(maxlen=LAST_LINES)
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._matched = asyncio.Event()
        self._signalled = False  # we sent it SIGTERM or SIGKILL: its exit is ours
        self._death: ServiceError | None = None  # it exited by itself while the run went on
        self._exit_watch: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return self.spec.name

    async def __aenter__(self) -> ServiceProcess:
        instance = starting_instance.get() or "sut"
        try:
            self._process = proc = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                env={**os.environ, **self.own_env},
                cwd=self.spec.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own group: a kill reaches its children too
                limit=MAX_LINE,
            )
        except OSError as exc:
            raise ServiceError(
                f"cannot start {self.label}: {exc} (argv={list(self.spec.argv)!r},"
                f" cwd={self.spec.cwd!r})"
            ) from exc
        _live_groups.add(proc.pid)
        streams: tuple[tuple[Stream, asyncio.StreamReader | None], ...] = (
            ("stdout", proc.stdout),
            ("stderr", proc.stderr),
        )
        for stream, reader in streams:
            assert reader is not None  # PIPE above
            name = f"{instance}.{stream}"
            self._readers.append(asyncio.create_task(self._read(stream, reader, name)))
        try:
            if self.spec.ready is not None:
                await self._until_ready(self.spec.ready)
        except BaseException as exc:  # not ready, timed out or cancelled: nothing may outlive it
            if isinstance(exc, asyncio.CancelledError) and self.spec.ready is not None:
                # The start's bound ran out: the history says what was awaited.
                _log(f"{instance}.process", f"not ready: {_awaited(self.spec.ready)}")
            await self.kill()
            raise
        # Its exit, while nobody stopped it, ends the run at once (as a dead task would).
        self._exit_watch = asyncio.create_task(self._exits(starting_watch()))
        return self

    async def _exits(self, watch: Watch | None) -> None:
        assert self._process is not None
        code = await self._process.wait()
        if self._signalled:
            return
        await self._drain()
        exited = f"{self.label} exited by itself with code {code} while the run went on"
        if watch is None:  # entered outside a run: its exit tells it all
            self._death = ServiceError(exited + self._last_lines())
            return
        self._death = ServiceError(exited)
        where, lines = f"pid {self._process.pid}", self._last_lines().removeprefix("; ")
        watch.report(self._death, task="process", where=where, traceback=lines)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._process
        if proc is None:
            return
        try:
            if proc.returncode is not None and not self._signalled:
                if self._exit_watch is not None:
                    await self._exit_watch  # it has seen the exit, or sees it now
                await self._drain()  # a service runs until it is stopped, even with code 0
                # The same error its exit watch reported: the run tells it once.
                raise self._death or ServiceError(
                    f"{self.label} exited by itself with code {proc.returncode} while the"
                    f" run went on{self._last_lines()}"
                )
            self._signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.spec.stop_grace):
                    await proc.wait()
            except TimeoutError:
                await self.kill()
                raise ServiceError(
                    f"{self.label} did not exit within stop_grace={self.spec.stop_grace:g} s of"
                    f" SIGTERM and was killed: end it on SIGTERM{self._last_lines()}"
                ) from None
            await self._drain()
            if proc.returncode not in _TERMINATED:
                raise ServiceError(
                    f"{self.label} exited with code {proc.returncode} on SIGTERM"
                    f"{self._last_lines()}"
                )
        finally:
            if proc.returncode is None:  # the harness's own bound ran out first
                await self.kill()

    async def kill(self) -> None:
        """End the process group at once (SIGKILL): a crash, with no cleanup of its own."""
        proc = self._process
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(signal.SIGKILL)
            async with asyncio.timeout(_REAP):
                await proc.wait()
        await self._drain()

    def _signal(self, signum: signal.Signals) -> None:
        assert self._process is not None
        self._signalled = True
        with contextlib.suppress(ProcessLookupError):  # every process of the group ended
            os.killpg(self._process.pid, signum)
        if signum == signal.SIGKILL:
            _live_groups.discard(self._process.pid)

    async def _drain(self) -> None:
        """Let the readers take what is left in the pipes, bounded, then end them."""
        if self._process is not None and self._process.returncode is not None:
            _live_groups.discard(self._process.pid)
        readers, self._readers = self._readers, []
        if not readers:
            return
        _, pending = await asyncio.wait(readers, timeout=_DRAIN)
        for reader in pending:
            reader.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _read(self, stream: Stream, reader: asyncio.StreamReader, logger: str) -> None:
        pattern = self.spec.ready if isinstance(self.spec.ready, re.Pattern) else None
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # longer than MAX_LINE: asyncio dropped it
                raw = f"[a line longer than {MAX_LINE} bytes, dropped]\n".encode()
            if not raw:
                return
            line = _ESCAPES.sub("", raw.decode("utf-8", "replace").rstrip("\r\n"))
            self.lines.append(f"{stream}| {line}")
            _log(logger, line)
            if pattern is not None and pattern.search(line):
                self._matched.set()

    async def _until_ready(self, ready: ReadyCheck) -> None:
        """Return once ``ready`` holds; ServiceError if the process exits first."""
        assert self._process is not None
        waiting = asyncio.create_task(self._ready(ready))
        exited = asyncio.create_task(self._process.wait())
        try:
            await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, exited):
                task.cancel()
            await asyncio.gather(waiting, exited, return_exceptions=True)
        if waiting.done() and not waiting.cancelled():
            waiting.result()  # what the readiness function raised, if it did
            return
        await self._drain()
        raise ServiceError(
            f"{self.label} exited with code {self._process.returncode} before it was ready"
            f" ({_awaited(ready)}){self._last_lines()}"
        )

    async def _ready(self, ready: ReadyCheck) -> None:
        # Unbounded here: Flow(start_timeout=...) bounds the whole start.
        if isinstance(ready, re.Pattern):
            await self._matched.wait()
        elif isinstance(ready, int):
            port = ready
            await eventually(lambda: _accepts(port), within=math.inf, poll=_POLL)
        else:
            function, endpoints = ready, self.endpoints
            await eventually(lambda: function(endpoints), within=math.inf, poll=_POLL)

    def _last_lines(self) -> str:
        if not self.lines:
            return "; it wrote no output"
        shown = "\n".join(f"    {line}" for line in self.lines)
        return f"; its last {len(self.lines)} output lines:\n{shown}"


def _log(logger: str, text: str) -> None:
    """One line of the process's, as a log record: the run's history keeps it."""
    log = logging.getLogger(logger)
    record = log.makeRecord(log.name, logging.INFO, "", 0, text, (), None)
    if not claim(record):  # outside a run: where the caller's logging sends it
        log.handle(record)


def _awaited(ready: ReadyCheck) -> str:
    if isinstance(ready, re.Pattern):
        return f"awaited an output line matching {ready.pattern!r}"
    if isinstance(ready, int):
        return f"awaited a connection to 127.0.0.1:{ready}"
    return f"awaited {getattr(ready, '__name__', repr(ready))}() to return True"


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@atexit.register
def _kill_leftovers() -> None:
    """A process whose run never stopped it (an interpreter ending abruptly) ends with us."""
    for group in list(_live_groups):
        try:  # only a child of ours still running: a reaped one's id may be another's now
            running = os.waitpid(group, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            running = False
        if running:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
