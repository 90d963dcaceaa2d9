"""What ``harness fuzz`` and ``harness bench`` show while they run.

On a terminal, one live rich bar: the phase, how many done, how fast, failures
so far. ``-v`` adds a line per example (or per bench round), on a terminal or
not. Elsewhere (a pipe, a CI log) nothing until the summary: a log is read
once at the end, and a line per example buries it.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from message_flow_harness._schedule import faults_of, messages_of
from message_flow_harness._text import plural

if TYPE_CHECKING:
    from message_flow_harness._bench.run import BenchStatus
    from message_flow_harness._fuzz import Example


def example_line(example: Example) -> str:
    """One example as ``-v`` prints it."""
    mark = "ok  " if example.ok else "FAIL"
    schedule = example.schedule
    return (
        f"  {example.phase:<7} #{example.number:<4} {mark}"
        f" {plural(len(messages_of(schedule)), 'message'):>12}"
        f" {plural(len(faults_of(schedule)), 'fault'):>9}  {example.seconds * 1000:6.0f} ms"
    )


def bench_line(status: BenchStatus) -> str:
    """A finished bench round as ``-v`` prints it."""
    return (
        f"  round {status.round} of {status.rounds}:"
        f" {status.accounted} of {plural(status.messages, 'input')} accounted for,"
        f" {status.rate:,.0f}/s"
    )


class LiveBar:
    """A rich progress bar on ``console`` while entered, if ``console`` is a terminal.

    ``show`` is False for ``--quiet``; not being on a terminal turns it off
    too. Lines printed meanwhile (``-v``) go above the bar: rich redirects
    stdout and stderr while the bar is live.
    """

    def __init__(self, *, show: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.shown = show and self.console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.fields[phase]:<8}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[done]}"),
            TextColumn("[dim]{task.fields[rate]}"),
            TextColumn("{task.fields[failures]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,  # the summary replaces it
        )
        self._task = self._progress.add_task(
            "", total=None, phase="", done="", rate="", failures="", start=False
        )

    def __enter__(self) -> LiveBar:
        if self.shown:
            self._progress.start()
            self._progress.start_task(self._task)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.shown:
            self._progress.stop()

    def update(
        self,
        *,
        phase: str,
        completed: float,
        total: float | None,
        done: str,
        rate: str,
        failures: str,
    ) -> None:
        if self.shown:
            self._progress.update(
                self._task,
                completed=completed,
                total=total,
                phase=phase,
                done=done,
                rate=rate,
                failures=failures,
            )


class FuzzProgress:
    """A campaign's ``progress`` callback: counts examples by phase and shows them."""

    def __init__(self, bar: LiveBar, *, max_examples: int, verbose: bool = False) -> None:
        self.bar, self.max_examples, self.verbose = bar, max_examples, verbose
        self.started = time.monotonic()
        self.counts = {"search": 0, "shrink": 0, "re-run": 0}
        self.failures = 0  # examples that failed, in any phase
        bar.update(  # while the first example's service starts
            phase="search",
            completed=0.0,
            total=float(max_examples),
            done=f"0/{plural(max_examples, 'example')}",
            rate="",
            failures="",
        )

    @property
    def examples(self) -> int:
        return sum(self.counts.values())

    def __call__(self, example: Example) -> None:
        self.counts[example.phase] = self.counts.get(example.phase, 0) + 1
        self.failures += not example.ok
        if self.verbose:
            print(example_line(example), flush=True)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        phase = example.phase
        searched = self.counts["search"]
        if phase == "search":
            completed, total = float(searched), float(self.max_examples)
            done = f"{searched}/{plural(self.max_examples, 'example')}"
        else:  # shrinking and re-runs have no fixed count: the bar pulses
            completed, total = float(self.counts[phase]), None
            done = f"{plural(self.counts[phase], phase)} after {searched} searched"
        self.bar.update(
            phase=phase,
            completed=completed,
            total=total,
            done=done,
            rate=f"{self.examples / elapsed:.1f} examples/s",
            failures=plural(self.failures, "failure") if self.failures else "no failures",
        )


class BenchProgress:
    """A bench's ``progress`` callback: the round, its phase, inputs accounted for."""

    def __init__(self, bar: LiveBar, *, verbose: bool = False) -> None:
        self.bar, self.verbose = bar, verbose
        self.lost = 0  # measured inputs without output, in the rounds finished

    def __call__(self, status: BenchStatus) -> None:
        if status.phase == "done":
            self.lost += status.messages - status.accounted
            if self.verbose:
                print(bench_line(status), flush=True)
        total = status.messages * status.rounds
        completed = status.messages * (status.round - 1) + status.accounted
        self.bar.update(
            phase=f"{status.phase} {status.round}/{status.rounds}",
            completed=float(completed),
            total=float(total),
            done=f"{completed}/{plural(total, 'input')}",
            rate=f"{status.rate:,.0f} inputs/s",
            failures=f"{self.lost} lost" if self.lost else "none lost",
        )
