"""``harness bench MODULE:FLOW``: its options, and the command that runs, prints and compares."""

from __future__ import annotations

import argparse
import asyncio
import sys

from message_flow_harness import brokers
from message_flow_harness._bench.compare import SettingDifference, compare, setting_differences
from message_flow_harness._bench.result import BenchResult
from message_flow_harness._bench.run import bench
from message_flow_harness._cli_args import (
    add_broker_url_arguments,
    add_output_arguments,
    broker_url,
    non_negative_int,
    positive_int,
    positive_rate,
)
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._flow import Flow
from message_flow_harness._progress import BenchProgress, LiveBar
from message_flow_harness._redact import redact_url


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``harness bench`` (what :func:`bench_command` reads)."""
    parser.add_argument(
        "flow", metavar="MODULE:FLOW", help="the Flow to time, e.g. myservice.tests:orders_flow"
    )
    parser.add_argument(
        "--messages", type=positive_int, default=1000, metavar="N", help="measured inputs per round"
    )
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--rate",
        type=positive_rate,
        default=None,
        metavar="R",
        help="publish at R msg/s, open loop (default: as fast as possible)",
    )
    pacing.add_argument(
        "--in-flight",
        type=positive_int,
        default=None,
        metavar="K",
        help="closed loop: at most K inputs unanswered (1: round trip)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        metavar="K",
        help="runs of the service (use >= 4 to compare)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="unmeasured inputs first, per round",
    )
    parser.add_argument(
        "--payload-size",
        type=non_negative_int,
        default=100,
        metavar="BYTES",
        help="bytes of each input's value",
    )
    parser.add_argument(
        "--keys", type=non_negative_int, default=10, metavar="K", help="distinct keys (0: no key)"
    )
    parser.add_argument(
        "--json", default=None, metavar="FILE", help="write the result as JSON to FILE"
    )
    parser.add_argument(
        "--svg", default=None, metavar="FILE", help="write latency and lag over time to FILE"
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="OLD.json",
        help="compare with an earlier --json result of the same settings; exit 1 if slower",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --compare: compare even though the settings differ (they are printed)",
    )
    add_output_arguments(parser, unit="round")
    add_broker_url_arguments(parser)


def planned_settings(flow: Flow, args: argparse.Namespace) -> dict[str, object]:
    """The settings of the bench ``args`` asks for, as :meth:`BenchResult.settings` has them."""
    rate = getattr(args, "rate", None)
    return {
        "flow": flow.label,
        "broker": flow.broker,
        "messages": args.messages,
        "rate": None if rate is None else float(rate),
        "in_flight": getattr(args, "in_flight", None),
        "payload_size": getattr(args, "payload_size", 100),
        "keys": getattr(args, "keys", 10),
        "warmup": getattr(args, "warmup", 100),
        "probes": flow.probes,
    }


def describe_differences(differences: list[SettingDifference], baseline: str) -> str:
    """The settings two runs differ in, one per line, in the CLI's terms."""
    return "\n".join(
        f"  {d.option}: {d.show(d.a)} in {baseline}, {d.show(d.b)} in this run" for d in differences
    )


def bench_command(flow: Flow, args: argparse.Namespace) -> int:
    """``harness bench``: 0 done, 1 inputs without output or significantly slower than
    ``--compare``; a HarnessError (exit 2 in the CLI) for usage and broker errors, and for
    a ``--compare`` with other settings (unless ``--force``), before anything runs.

    ``flow`` is the Flow that ``args.flow`` names: the CLI loads it (this module
    does not import the CLI, which imports it).
    """
    baseline = BenchResult.load(args.compare) if args.compare else None
    if baseline is not None:
        differences = setting_differences(baseline.settings(), planned_settings(flow, args))
        if differences and not getattr(args, "force", False):
            raise InvalidArgument(
                f"--compare {args.compare} measured other settings than this run asks for,"
                " so a difference in speed would mean nothing:\n"
                + describe_differences(differences, args.compare)
                + "\n  give the same options, or --force to compare anyway"
            )
        if differences:
            print(
                "warning: comparing runs of different settings (--force):\n"
                + describe_differences(differences, args.compare),
                flush=True,
            )
    url = broker_url(args, flow.broker)
    quiet = getattr(args, "quiet", False)
    with brokers.provision(flow.broker, url=url) as info:
        if not quiet:
            print(f"benching {flow.label} on {flow.broker} at {redact_url(info.url)}", flush=True)
        with LiveBar(show=not quiet) as bar:
            result = asyncio.run(
                bench(
                    flow,
                    messages=args.messages,
                    rate=args.rate,
                    in_flight=getattr(args, "in_flight", None),
                    payload_size=getattr(args, "payload_size", 100),
                    keys=getattr(args, "keys", 10),
                    broker=info,
                    warmup=getattr(args, "warmup", 100),
                    rounds=args.rounds,
                    progress=BenchProgress(bar, verbose=getattr(args, "verbose", 0) > 0),
                )
            )
    print(result.table())
    if args.json:
        print(f"JSON: {result.write_json(args.json)}")
    if args.svg:
        print(f"SVG: {result.write_svg(args.svg)}")
    status = 0 if result.lost == 0 else 1
    if baseline is not None:
        comparison = compare(baseline, result)
        print(f"compared with {args.compare} (a = that, b = this run):")
        print(comparison.summary())
        if comparison.faster == "a":
            status = 1
    sys.stdout.flush()
    return status
