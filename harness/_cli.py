"""The ``harness`` command: ``fuzz``, ``bench``, ``brokers up|down|status`` and ``demo``.

Exit codes: 0 success, 1 a check failed, 2 a usage or broker error. Errors read
as argparse's do (``harness fuzz: error: ...``): one message and its fix, in
the CLI's terms; ``--traceback`` shows where one was raised.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import json
import logging
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from message_flow_harness import brokers
from message_flow_harness._bench.command import add_bench_arguments, bench_command
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._cli_args import (
    Formatter,
    UsageError,
    add_broker_url_arguments,
    add_output_arguments,
    broker_url,
    fault_kinds,
    faults_asked,
    non_negative_int,
    positive_int,
    producer_count,
    shard_of,
)
from message_flow_harness._drivers import BROKER_KINDS, check_kind, driver
from message_flow_harness._errors import HarnessError, InvalidArgument
from message_flow_harness._example_database import LOCAL, open_database
from message_flow_harness._fault_model import campaign_kinds
from message_flow_harness._fuzz import FuzzReport, check_fuzz_arguments, fuzz
from message_flow_harness._logs import show_logs
from message_flow_harness._message import BrokerKind
from message_flow_harness._progress import FuzzProgress, LiveBar
from message_flow_harness._redact import is_secret_name, redact_url
from message_flow_harness._reference import load_flow as load_flow  # re-exported
from message_flow_harness._report import fuzz_summary
from message_flow_harness._shard import Shard
from message_flow_harness._text import shorten
from message_flow_harness.brokers import _local

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def _kinds(names: Sequence[str]) -> list[BrokerKind]:
    return [check_kind(name) for name in names] or list(BROKER_KINDS)


def describe(info: BrokerInfo) -> str:
    lines = [f"{info.kind}: {redact_url(info.url)}  ({info.provider})"]
    lines += [f"  {key}: {value}" for key, value in sorted(info.extra.items())]
    return "\n".join(lines)


def _lease_of(args: argparse.Namespace) -> str:
    return _local.check_lease_name(args.lease) if args.lease else _local.default_lease_name()


def _print_settings(infos: Sequence[BrokerInfo]) -> None:
    """Lines to paste into a shell; secrets only through the 0600 file, never on the terminal."""
    settings = {
        name: value
        for kind in BROKER_KINDS
        if (running := _local.status(kind)) is not None
        for name, value in driver(kind).shell_settings(running).items()
    }
    path = _local.write_env_file(settings)
    if not infos or path is None:
        return
    pairs = [(n, v) for info in infos for n, v in driver(info.kind).shell_settings(info).items()]
    shown = [
        f"export {name}={shlex.quote(value)}"
        for name, value in pairs
        if redact_url(value) == value and not is_secret_name(name)
    ]
    secret = len(shown) < len(pairs)
    print("# point the harness and your clients at them: paste these lines into your shell")
    if secret:
        print(f"# ({path} holds what contains a password, readable only by you)")
    for line in shown:
        print(line)
    if secret:
        print(f". {shlex.quote(str(path))}")


def _describe_holders(found: Sequence[_local.Holder]) -> list[str]:
    return [f"  held by {holder.describe()}" for holder in found] or ["  held by no one"]


def _brokers_up(kinds: list[BrokerKind], args: argparse.Namespace) -> int:
    lease = _lease_of(args)
    started = []
    for kind in kinds:
        print(f"starting {kind} ...", flush=True)
        started.append(_local.acquire(driver(kind).recipe(), lease=lease))
        print(describe(started[-1]))
    down = "harness brokers down" + ("" if args.lease is None else f" --lease {shlex.quote(lease)}")
    where = " in this project" if args.lease is None else ""
    print(f"lease {lease!r} taken: `{down}`{where} releases it; brokers stop when no lease is left")
    _print_settings(started)
    return EXIT_OK


def _brokers_down(kinds: list[BrokerKind], args: argparse.Namespace) -> int:
    lease = _lease_of(args)
    for kind in kinds:
        if args.force:
            stopped_for = _local.stop(kind)
            if stopped_for is None:
                print(f"{kind}: was not running")
            else:
                print(f"{kind}: stopped for everyone who leased it:")
                print("\n".join(_describe_holders(stopped_for)))
            continue
        outcome = _local.release(kind, lease=lease)
        if not outcome.was_running:
            print(f"{kind}: was not running")
        elif outcome.stopped:
            mine = f"released lease {lease!r}; " if outcome.held else ""
            print(f"{kind}: {mine}no lease was left, so it stopped")
        else:
            if outcome.held:
                print(f"{kind}: released lease {lease!r}; it keeps running for the others:")
            else:
                print(
                    f"{kind}: you hold no lease {lease!r} on it (up names a lease after its"
                    " project directory, or --lease NAME), so it keeps running:"
                )
            print("\n".join(_describe_holders(outcome.remaining)))
            print(f"  to stop it for everyone: harness brokers down --force {kind}")
    _print_settings([])
    return EXIT_OK


def _brokers_status(kinds: list[BrokerKind], args: argparse.Namespace) -> int:
    running = []
    for kind in kinds:
        info = _local.status(kind)
        if info is None:
            print(f"{kind}: not running")
            continue
        running.append(info)
        print(describe(info))
        print("\n".join(_describe_holders(_local.holders(kind))))
    _print_settings(running)
    return EXIT_OK


def _demo(kinds: list[BrokerKind]) -> int:
    from message_flow_harness._demo import run_demo

    return run_demo(kinds)


#: Where ``harness fuzz`` keeps failing examples (Hypothesis's database) between runs.
DATABASE = LOCAL


def _fuzz(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow)
    url = broker_url(args, flow.broker)
    faults = faults_asked(args.faults, flow.faults)
    kinds = campaign_kinds(flow.faults, faults, flow=f"{args.flow} (Flow(faults=...))")
    if args.workers > 1 and kinds:
        given = "--faults" if args.faults is not None else f"{args.flow}'s fault model"
        raise UsageError(
            f"--workers {args.workers} runs examples at once, which fault schedules cannot"
            f" share (a fault run holds fault proxies, and a broker restart hits every run),"
            f" and {given} draws {', '.join(kinds)}: give --workers 1, or --faults none"
        )
    where = _database_of(args.database)
    if args.replay and isinstance(where, Path) and not where.is_dir():
        raise InvalidArgument(_nothing_to_replay(args.flow, where))
    database = open_database(where)  # a Redis server that does not answer: said now
    check_fuzz_arguments(  # the library's own checks, should a new one not be in the CLI yet
        flow,
        max_examples=args.max_examples,
        faults=faults,
        producers=args.producers,
        workers=args.workers,
        shard=args.shard,
    )
    shard = args.shard or Shard()
    examples = shard.examples(args.max_examples)
    with brokers.provision(flow.broker, url=url) as info:
        if not args.quiet:
            drawn = f"faults: {', '.join(kinds)}" if kinds else "no faults"
            of = f", shard {shard}" if args.shard else ""
            print(
                f"fuzzing {flow.label} on {flow.broker} at {redact_url(info.url)} ({drawn}{of})",
                flush=True,
            )
        with LiveBar(show=not args.quiet) as bar:
            report = asyncio.run(
                fuzz(
                    flow,
                    max_examples=args.max_examples,
                    seed=args.seed,
                    faults=faults,
                    producers=args.producers,
                    broker=info,
                    database=database,
                    report_dir=Path(args.report_dir),
                    progress=FuzzProgress(bar, max_examples=examples, verbose=args.verbose > 0),
                    flow_reference=args.flow,
                    replay_only=args.replay,
                    workers=args.workers,
                    shard=(shard.index, shard.count),
                )
            )
    if args.replay and report.examples == 0:
        raise InvalidArgument(_nothing_to_replay(args.flow, args.database))
    rerun = f"--seed {report.seed}" + (f" --shard {shard}" if args.shard else "")
    print(fuzz_summary(report, rerun=rerun))
    if args.json:
        Path(args.json).write_text(json.dumps(fuzz_json(report), indent=1))
        print(f"JSON: {args.json}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _database_of(spec: str) -> Path | str:
    """``--database``: a directory (resolved from here) or a URL-like name, passed on."""
    if "://" in spec or spec.startswith("github:"):
        return spec
    return Path(spec).resolve()


def _nothing_to_replay(reference: str, database: object) -> str:
    return (
        f"--replay found no saved failure of {reference} in {database}:"
        " failures are saved there by runs without --seed that fail, run from this"
        f" directory; run `harness fuzz {reference}` first, or drop --replay"
    )


def fuzz_json(report: FuzzReport) -> dict[str, object]:
    """The fuzz report as JSON: the public contract of ``harness fuzz --json``.

    The report directory's JSON has the same schema: both are :meth:`FuzzReport.to_json`.
    """
    return report.to_json()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Test Kafka and RabbitMQ services against real brokers."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {importlib.metadata.version('message-flow-harness')}",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    brokers_parser = commands.add_parser("brokers", help="start, stop or show local brokers")
    actions = brokers_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_text in (
        ("up", "lease local brokers, starting them if needed, and print their settings"),
        ("down", "release your lease; brokers nobody leases stop and their data goes"),
        ("status", "show which local brokers run, their URLs and who leases them"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument(
            "kinds", nargs="*", metavar="KIND", help=f"{', '.join(BROKER_KINDS)} (default all)"
        )
        if action != "status":
            sub.add_argument(
                "--lease",
                default=None,
                metavar="NAME",
                help="the lease to take or release (default: the project directory, the"
                " nearest one up holding pyproject.toml, setup.cfg, setup.py or .git)",
            )
        if action == "down":
            sub.add_argument(
                "--force",
                action="store_true",
                help="stop the brokers for everyone who leases them, and say whom",
            )

    fuzz_parser = commands.add_parser(
        "fuzz", help="search for message sequences and faults that break a flow's checks"
    )
    fuzz_parser.formatter_class = Formatter
    fuzz_parser.description = (
        "Run the flow's service on a real broker again and again, with message sequences"
        " (and fault schedules) Hypothesis chooses, until one breaks a check; shrink it"
        " to a minimal schedule and print it as a pytest test. Exit 0: every check held;"
        " 1: a check failed; 2: a usage or broker error."
    )
    fuzz_parser.add_argument(
        "flow", metavar="MODULE:FLOW", help="the Flow to fuzz, e.g. myservice.tests:orders_flow"
    )
    fuzz_parser.add_argument(
        "--max-examples",
        type=positive_int,
        default=100,
        metavar="N",
        help="runs of the service to search with (shrinking and re-runs come on top)",
    )
    fuzz_parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        metavar="S",
        help="repeat the search of an earlier run, which printed its seed"
        " (default: a new seed, printed; saved failures are tried first)",
    )
    fuzz_parser.add_argument(
        "--faults",
        type=fault_kinds,
        default=None,
        metavar="KINDS",
        help="the fault kinds to draw: all (every kind the flow's Flow(faults=Faults(...))"
        " allows; for a flow without one crash,join,latency,cut), none, or a comma list of"
        " crash, join, latency, cut and broker_restart (brokers the harness started), e.g."
        " --faults crash,cut; a kind the flow's model rules out is an error naming the"
        " Faults option to change (default: the flow's model; no faults for a flow without"
        " one)",
    )
    fuzz_parser.add_argument(
        "--producers",
        type=producer_count,
        default=1,
        metavar="N",
        help="publish through N concurrent producers (1: one ordered publisher)",
    )
    fuzz_parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N searches at once, each with its own seed (not with faults)",
    )
    fuzz_parser.add_argument(
        "--replay",
        action="store_true",
        help="only re-run the failures earlier runs saved in the --database",
    )
    fuzz_parser.add_argument(
        "--database",
        default=str(DATABASE),
        metavar="DB",
        help="where failures are saved and replayed first: a directory, a Redis URL"
        " (redis://HOST:PORT/DB, shared by CI jobs and machines) or github:OWNER/REPO[/ARTIFACT]"
        " (read a CI job's uploaded directory; new failures go to .hypothesis/harness)",
    )
    fuzz_parser.add_argument(
        "--shard",
        type=shard_of,
        default=None,
        metavar="I/N",
        help="run the I-th of N independent searches that make up the campaign (one per CI"
        " job): its share of --max-examples, its own seeds, the database's failures first",
    )
    fuzz_parser.add_argument(
        "--report-dir",
        default="reports",
        metavar="DIR",
        help="where a failure's history (JSON) and timeline (SVG) are written",
    )
    fuzz_parser.add_argument(
        "--json", default=None, metavar="FILE", help="also write the report as JSON to FILE"
    )
    add_output_arguments(fuzz_parser, unit="example")
    add_broker_url_arguments(fuzz_parser)

    bench_parser = commands.add_parser(
        "bench", help="time a flow's service: throughput, latency percentiles, lag"
    )
    bench_parser.formatter_class = Formatter
    add_bench_arguments(bench_parser)
    for command, sub in commands.choices.items():
        sub.set_defaults(prog=sub.prog, usage=sub.format_usage, command_name=command)

    demo = commands.add_parser("demo", help="the main job, on brokers the harness starts itself")
    demo.add_argument(
        "kinds", nargs="*", metavar="KIND", help=f"{', '.join(BROKER_KINDS)} (default all)"
    )
    return parser


class _CurrentStderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is at each record: above the progress bar while it is
    live (rich redirects stderr meanwhile), plainly otherwise; nothing unless ``printing``."""

    def __init__(self, *, printing: bool) -> None:
        super().__init__()
        self.printing = printing

    def emit(self, record: logging.LogRecord) -> None:
        if self.printing:
            print(self.format(record), file=sys.stderr, flush=True)


def _logging(verbosity: int) -> None:
    """Logs only at ``-vv``: crashes are on purpose here, and the drivers' and services'
    tracebacks would drown the report. ``-vvv`` adds debug records (Hypothesis's own)."""
    handler = _CurrentStderr(printing=verbosity >= 2)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # Below -vv nothing prints, but the handler still takes every record: a run
    # keeps the service's own in its history (see _logs), and its lost inputs
    # name the errors it logged. (A level above CRITICAL would keep them from it.)
    logging.basicConfig(handlers=[handler])
    levels = {0: logging.WARNING, 1: logging.WARNING, 2: logging.INFO}
    logging.getLogger().setLevel(levels.get(verbosity, logging.DEBUG))
    show_logs(verbosity >= 2)


def _error(prog: str, exc: BaseException, *, show_traceback: bool) -> None:
    """One clean message and its fix, what was noted on the way out below it."""
    if show_traceback:
        traceback.print_exception(exc)
    print(f"{prog}: error: {shorten(str(exc), limit=2000)}", file=sys.stderr)
    for note in getattr(exc, "__notes__", ()):
        print(f"  {shorten(str(note), limit=500)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbosity = getattr(args, "verbose", 0)
    _logging(int(verbosity))
    prog = getattr(args, "prog", "harness")
    show_traceback = bool(getattr(args, "traceback", False))
    try:
        if args.command == "fuzz":
            return _fuzz(args)
        if args.command == "bench":
            return bench_command(load_flow(args.flow), args)
        kinds = _kinds(args.kinds)
        if args.command == "brokers":
            handler = {"up": _brokers_up, "down": _brokers_down, "status": _brokers_status}
            return handler[args.action](kinds, args)
        return _demo(kinds)
    except UsageError as exc:
        print(args.usage(), end="", file=sys.stderr)
        _error(prog, exc, show_traceback=show_traceback)
        return EXIT_ERROR
    except HarnessError as exc:
        _error(prog, exc, show_traceback=show_traceback)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        # Not one of the harness's errors: a bug here, or a service that escaped its
        # run. Its repr may run to pages: the message, shortened, and how to see more.
        if show_traceback:
            traceback.print_exception(exc)
        print(
            f"{prog}: internal error: {type(exc).__name__}: {shorten(str(exc))}\n"
            "  re-run with --traceback to see where it was raised, and report it",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
