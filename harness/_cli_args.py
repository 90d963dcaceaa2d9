"""argparse types shared by every ``harness`` command: numbers checked where they are read.

Each raises ``argparse.ArgumentTypeError`` saying which value is wrong and what
to give instead, so argparse prints it as a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import math


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
