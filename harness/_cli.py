"""The ``harness`` command: ``brokers up|down|status`` and ``demo``.

Exit codes: 0 success, 1 a check failed, 2 a usage or broker error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import brokers
from brokers import _local
from harness._broker import BrokerInfo
from harness._errors import HarnessError
from harness._message import BROKER_KINDS, BrokerKind
from harness._redact import redact_url

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def _kinds(names: Sequence[str]) -> list[BrokerKind]:
    return [brokers.check_kind(name) for name in names] or list(BROKER_KINDS)


def describe(info: BrokerInfo) -> str:
    lines = [f"{info.kind}: {redact_url(info.url)}  ({info.provider})"]
    lines += [f"  {key}: {value}" for key, value in sorted(info.extra.items())]
    return "\n".join(lines)


def _brokers_up(kinds: list[BrokerKind]) -> int:
    for kind in kinds:
        print(f"starting {kind} ...", flush=True)
        info = _local.acquire(brokers.recipe(kind), pinned=True)
        print(describe(info))
    print(
        f"stop them with: harness brokers down; or export {' and '.join(brokers.URL_ENV.values())}"
    )
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
    from harness._demo import run_demo

    return run_demo(kinds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Test Kafka and RabbitMQ services against real brokers."
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
        sub.add_argument("kinds", nargs="*", metavar="KIND", help="kafka, rabbitmq (default both)")

    demo = commands.add_parser("demo", help="the main job, on brokers the harness starts itself")
    demo.add_argument("kinds", nargs="*", metavar="KIND", help="kafka, rabbitmq (default both)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
