"""``harness bench MODULE:FLOW``: its options, and the command that runs, prints and compares."""

from __future__ import annotations

import argparse
import asyncio
import sys

from message_flow_harness import brokers
from message_flow_harness._bench.compare import compare
from message_flow_harness._bench.result import BenchResult
from message_flow_harness._bench.run import bench
from message_flow_harness._cli_args import (
    add_broker_url_arguments,
    broker_url,
    non_negative_int,
    positive_int,
    positive_rate,
)
from message_flow_harness._flow import Flow
from message_flow_harness._redact import redact_url


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``harness bench`` (what :func:`bench_command` reads)."""
    parser.add_argument("flow", metavar="MODULE:FLOW", help="e.g. myservice.tests:flow")
    parser.add_argument(
        "--messages",
        type=positive_int,
        default=1000,
        metavar="N",
        help="measured inputs per round (default 1000)",
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
        help="runs of the service (use >= 4 to compare; default 1)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="unmeasured inputs first, per round (default 100)",
    )
    parser.add_argument("--payload-size", type=non_negative_int, default=100, metavar="BYTES")
    parser.add_argument(
        "--keys",
        type=non_negative_int,
        default=10,
        metavar="K",
        help="distinct keys (0: no key; default 10)",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="write the result")
    parser.add_argument(
        "--svg", default=None, metavar="FILE", help="write latency and lag over time"
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="OLD.json",
        help="compare with an earlier --json result; exit 1 if slower",
    )
    add_broker_url_arguments(parser)
    parser.add_argument(
        "--verbose", action="store_true", help="show the drivers' and services' logs"
    )


def bench_command(flow: Flow, args: argparse.Namespace) -> int:
    """``harness bench``: 0 done, 1 inputs without output or significantly slower than
    ``--compare``; a HarnessError (exit 2 in the CLI) for usage and broker errors.

    ``flow`` is the Flow that ``args.flow`` names: the CLI loads it (this module
    does not import the CLI, which imports it).
    """
    baseline = BenchResult.load(args.compare) if args.compare else None
    url = broker_url(args, flow.broker)
    with brokers.provision(flow.broker, url=url) as info:
        print(f"benching {flow.label} on {flow.broker} at {redact_url(info.url)}", flush=True)
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
