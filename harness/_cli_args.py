"""argparse pieces shared by every ``harness`` command: numbers checked where they are
read, and one option per broker kind naming an existing broker.

The number types raise ``argparse.ArgumentTypeError`` saying which value is wrong and what
to give instead, so argparse prints it as a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import math

from message_flow_harness._drivers import driver, drivers


def positive_int(text: str) -> int:
    """A whole number >= 1 (counts of messages, rounds, workers ...)."""
    return _whole_number(text, minimum=1)


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (warm-up inputs, payload bytes, keys)."""
    return _whole_number(text, minimum=0)


def positive_rate(text: str) -> float:
    """Messages per second: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: give messages per second > 0")
    return value


def _whole_number(text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: give a whole number >= {minimum}")
    return value


def add_broker_url_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per broker kind naming an existing broker (``--kafka-bootstrap``...)."""
    for each in drivers():
        parser.add_argument(
            each.url_option, default=None, metavar=each.url_metavar, help=each.url_help
        )


def broker_url(args: argparse.Namespace, kind: str) -> str | None:
    """The URL given with ``kind``'s option of :func:`add_broker_url_arguments`, if any."""
    dest = driver(kind).url_option.lstrip("-").replace("-", "_")
    url: str | None = getattr(args, dest, None)
    return url
