"""The ``harness`` command: ``brokers up|down|status`` and ``demo``.

Exit codes: 0 success, 1 a check failed, 2 a usage or broker error.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from message_flow_harness import brokers
from message_flow_harness._bench.command import add_bench_arguments, bench_command
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._cli_args import add_broker_url_arguments, broker_url, positive_int
from message_flow_harness._drivers import BROKER_KINDS, check_kind, driver
from message_flow_harness._errors import HarnessError, InvalidArgument
from message_flow_harness._flow import Flow
from message_flow_harness._fuzz import Example, FuzzReport, check_fuzz_arguments, fuzz
from message_flow_harness._message import BrokerKind
from message_flow_harness._redact import redact_url
from message_flow_harness._schedule import faults_of, messages_of
from message_flow_harness.brokers import _local

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def _kinds(names: Sequence[str]) -> list[BrokerKind]:
    return [check_kind(name) for name in names] or list(BROKER_KINDS)


def describe(info: BrokerInfo) -> str:
    lines = [f"{info.kind}: {redact_url(info.url)}  ({info.provider})"]
    lines += [f"  {key}: {value}" for key, value in sorted(info.extra.items())]
    return "\n".join(lines)


def _brokers_up(kinds: list[BrokerKind]) -> int:
    for kind in kinds:
        print(f"starting {kind} ...", flush=True)
        info = _local.acquire(driver(kind).recipe(), pinned=True)
        print(describe(info))
    names = " and ".join(driver(kind).url_env for kind in kinds)
    print(f"stop them with: harness brokers down; or export {names}")
    return EXIT_OK


def _brokers_down(kinds: list[BrokerKind]) -> int:
    for kind in kinds:
        print(f"{kind}: {'stopped' if _local.stop(kind) else 'was not running'}")
    return EXIT_OK


def _brokers_status(kinds: list[BrokerKind]) -> int:
    for kind in kinds:
        info = _local.status(kind)
        print(describe(info) if info else f"{kind}: not running")
    return EXIT_OK


def _demo(kinds: list[BrokerKind]) -> int:
    from message_flow_harness._demo import run_demo

    return run_demo(kinds)


def load_flow(reference: str) -> Flow:
    """``package.module:NAME`` → the Flow object it names (the current directory is importable)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise InvalidArgument(
            f"{reference!r} is not MODULE:FLOW: give e.g. myservice.tests:orders_flow"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(
            f"cannot import {module_name!r} ({exc}): run from the directory that contains it,"
            " or install it"
        ) from exc
    flow = getattr(module, attribute, None)
    if not isinstance(flow, Flow):
        raise InvalidArgument(
            f"{reference} is {type(flow).__name__ if flow is not None else 'missing'}, not a"
            " harness.Flow: point at a Flow(...) defined at module level"
        )
    return flow


def _print_example(example: Example) -> None:
    mark = "ok  " if example.ok else "FAIL"
    print(
        f"  {example.phase} #{example.number:<4} {mark} {len(messages_of(example.schedule)):>2}"
        f" messages {len(faults_of(example.schedule))} faults  {example.seconds * 1000:6.0f} ms",
        flush=True,
    )


def _fuzz(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow)
    url = broker_url(args, flow.broker)
    faults: bool | list[str] = False
    if args.faults:
        faults = True if args.faults == "all" else args.faults.split(",")
    check_fuzz_arguments(
        max_examples=args.max_examples,
        faults=faults,
        producers=args.producers,
        workers=args.workers,
    )
    with brokers.provision(flow.broker, url=url) as info:
        print(f"fuzzing {flow.label} on {flow.broker} at {redact_url(info.url)}", flush=True)
        report = asyncio.run(
            fuzz(
                flow,
                max_examples=args.max_examples,
                seed=args.seed,
                faults=faults,
                producers=args.producers,
                broker=info,
                report_dir=Path(args.report_dir),
                progress=None if args.quiet else _print_example,
                flow_reference=args.flow,
                replay_only=args.replay,
                workers=args.workers,
            )
        )
    print(report.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(fuzz_json(report), indent=1))
        print(f"JSON: {args.json}")
    return EXIT_OK if report.ok else EXIT_FAILED


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
        ("up", "start local brokers (they stay up until `down`) and print their URLs"),
        ("down", "stop local brokers and delete their data"),
        ("status", "show which local brokers run, with their URLs"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument(
            "kinds", nargs="*", metavar="KIND", help=f"{', '.join(BROKER_KINDS)} (default all)"
        )

    fuzz_parser = commands.add_parser(
        "fuzz", help="search for message sequences and faults that break a flow's checks"
    )
    fuzz_parser.add_argument("flow", metavar="MODULE:FLOW", help="e.g. myservice.tests:flow")
    fuzz_parser.add_argument("--max-examples", type=positive_int, default=100, metavar="N")
    fuzz_parser.add_argument("--seed", type=int, default=None, metavar="S")
    fuzz_parser.add_argument("--json", default=None, metavar="FILE", help="write the report")
    fuzz_parser.add_argument(
        "--faults",
        nargs="?",
        const="all",
        default=None,
        metavar="KINDS",
        help="add fault schedules: all (crash,join,latency,cut), or some of those and"
        " broker_restart (brokers the harness started)",
    )
    fuzz_parser.add_argument(
        "--producers",
        type=positive_int,
        default=1,
        metavar="N",
        help="publish through N concurrent producers (default 1: one ordered publisher)",
    )
    fuzz_parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N searches at once, each with its own seed (no faults; default 1)",
    )
    fuzz_parser.add_argument(
        "--replay", action="store_true", help="only re-run failures saved by earlier runs"
    )
    fuzz_parser.add_argument("--report-dir", default="reports", metavar="DIR")
    fuzz_parser.add_argument("--quiet", action="store_true", help="no per-example progress")
    fuzz_parser.add_argument(
        "--verbose", action="store_true", help="show the drivers' and services' logs"
    )
    add_broker_url_arguments(fuzz_parser)

    bench_parser = commands.add_parser(
        "bench", help="time a flow's service: throughput, latency percentiles, lag"
    )
    add_bench_arguments(bench_parser)

    demo = commands.add_parser("demo", help="the main job, on brokers the harness starts itself")
    demo.add_argument(
        "kinds", nargs="*", metavar="KIND", help=f"{', '.join(BROKER_KINDS)} (default all)"
    )
    return parser


def _quiet_logging(verbose: bool) -> None:
    """Crashes are on purpose here: drivers' and services' tracebacks would drown the report."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO if verbose else logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_logging(bool(getattr(args, "verbose", False)))
    try:
        if args.command == "fuzz":
            return _fuzz(args)
        if args.command == "bench":
            return bench_command(load_flow(args.flow), args)
        kinds = _kinds(args.kinds)
        if args.command == "brokers":
            handler = {"up": _brokers_up, "down": _brokers_down, "status": _brokers_status}
            return handler[args.action](kinds)
        return _demo(kinds)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
