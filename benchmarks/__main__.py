"""``python -m benchmarks [NAME ...] [--json FILE] [sizes]``: run, print a table, write JSON."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks import (
    BENCHMARKS,
    FORMAT,
    USES_BROKERS,
    Figure,
    Options,
    host,
    private_cache,
    quiet_logging,
)
from message_flow_harness import brokers
from message_flow_harness._cli_args import positive_int
from message_flow_harness._drivers import check_kind
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import BrokerKind

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"


def _kinds(text: str) -> tuple[BrokerKind, ...]:
    try:
        return tuple(check_kind(name) for name in text.split(","))
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Timing of the harness itself (see README.md)."
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="FILE")
    parser.add_argument("--brokers", type=_kinds, default=defaults.brokers, metavar="KINDS")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--shared",
        action="store_true",
        help="use the running local brokers (or HARNESS_KAFKA_BOOTSTRAP / HARNESS_AMQP_URL)"
        " instead of starting private ones for this run",
    )
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"probe overhead rounds per setting (default {defaults.rounds})",
    )
    sizes.add_argument(
        "--round-trip-messages",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"default {defaults.round_trip_messages}",
    )
    sizes.add_argument(
        "--batch-messages",
        type=positive_int,
        default=None,
        metavar="N",
        help="probe overhead, batched (default kafka 4000, rabbitmq 400)",
    )
    sizes.add_argument(
        "--fuzz-examples",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"without faults (default {defaults.fuzz_examples})",
    )
    sizes.add_argument(
        "--fault-examples",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"per fault kind (default {defaults.fault_examples})",
    )
    sizes.add_argument(
        "--false-alarm-examples",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"zoo detection, per correct service (default {defaults.false_alarm_examples})",
    )
    sizes.add_argument(
        "--ready-rounds",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"cold starts per broker (default {defaults.ready_rounds})",
    )
    sizes.add_argument(
        "--tap-kafka",
        type=positive_int,
        default=None,
        metavar="N",
        help="records for the Kafka tap (default 200000)",
    )
    sizes.add_argument(
        "--tap-rabbitmq",
        type=positive_int,
        default=None,
        metavar="N",
        help="messages for the RabbitMQ tap (default 50000)",
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    base = (
        Options(
            brokers=args.brokers,
            rounds=2,
            round_trip_messages=20,
            batch_messages={"kafka": 200, "rabbitmq": 100},
            fuzz_examples=5,
            fault_examples=2,
            false_alarm_examples=10,
            ready_rounds=1,
            tap_messages={"kafka": 20_000, "rabbitmq": 5_000},
            recording_calls=20_000,
        )
        if args.quick
        else Options(brokers=args.brokers)
    )
    batch = dict(base.batch_messages)
    if args.batch_messages:
        batch = {"kafka": args.batch_messages, "rabbitmq": args.batch_messages}
    tap = dict(base.tap_messages)
    if args.tap_kafka:
        tap["kafka"] = args.tap_kafka
    if args.tap_rabbitmq:
        tap["rabbitmq"] = args.tap_rabbitmq
    return Options(
        brokers=base.brokers,
        rounds=args.rounds or base.rounds,
        round_trip_messages=args.round_trip_messages or base.round_trip_messages,
        batch_messages=batch,
        fuzz_examples=args.fuzz_examples or base.fuzz_examples,
        fault_examples=args.fault_examples or base.fault_examples,
        false_alarm_examples=args.false_alarm_examples or base.false_alarm_examples,
        ready_rounds=args.ready_rounds or base.ready_rounds,
        tap_messages=tap,
        recording_calls=base.recording_calls,
    )


def _value(figure: Figure) -> str:
    if figure.value is None:
        return "-"
    if figure.unit == "ratio":
        return f"{figure.value:.3f}"
    return f"{figure.value:,.1f}" if figure.value < 100 else f"{figure.value:,.0f}"


def table(figures: Sequence[Figure]) -> str:
    """The figures as plain text, one line each."""
    rows = [("benchmark", "broker", "figure", "value", "unit", "target", "", "note")]
    for figure in figures:
        verdict = {True: "ok", False: "MISSED", None: ""}[figure.met]
        rows.append(
            (
                figure.benchmark,
                figure.broker or "-",
                figure.name,
                _value(figure),
                figure.unit,
                figure.target or "",
                verdict,
                figure.note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if index == 3 else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        lines.append(("  ".join(cells) + "  " + row[-1]).rstrip())
    return "\n".join(lines)


def _run_one(
    name: str, options: Options, timings: dict[str, float], failed: dict[str, str]
) -> list[Figure]:
    print(f"== {name} ...", flush=True)
    started = time.monotonic()
    found: list[Figure] = []
    try:
        found = importlib.import_module(f"benchmarks.{name}").run(options)
    except Exception as exc:  # one broken benchmark must not lose the others' figures
        traceback.print_exc()
        failed[name] = repr(exc)
    timings[name] = time.monotonic() - started
    if found:
        print(table(found), flush=True)
    print(f"   ({timings[name]:.1f} s)", flush=True)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        print(
            f"benchmarks: {', '.join(unknown)} unknown: choose from {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    options = options_from(args)
    quiet_logging()
    names = [name for name in BENCHMARKS if not args.names or name in args.names]
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    began = time.monotonic()
    with contextlib.ExitStack() as leases:
        if not args.shared and USES_BROKERS.intersection(names):
            print("== starting private brokers (--shared uses the running ones) ...", flush=True)
            leases.enter_context(private_cache())
            for kind in options.brokers:  # every benchmark's provision() reuses these
                leases.enter_context(brokers.provision(kind))
        for name in names:
            figures += _run_one(name, options, timings, failed)
    total = time.monotonic() - began
    print(f"\n== all figures ({total:.0f} s)\n{table(figures)}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "format": FORMAT,
                "host": host(),
                "brokers": "shared" if args.shared else "private",
                "options": vars(options),
                "seconds": {**timings, "total": total},
                "failed": failed,
                "figures": [figure.to_json() for figure in figures],
            },
            indent=1,
            default=list,
        )
    )
    print(f"JSON: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
