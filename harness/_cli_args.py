"""argparse pieces shared by every ``harness`` command: values checked where they are
read, help that shows defaults, verbosity, and one option per broker kind naming an
existing broker.

The value types raise ``argparse.ArgumentTypeError`` saying which value is wrong and what
to give instead, so argparse prints it as a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import math

from message_flow_harness._drivers import driver, drivers
from message_flow_harness._errors import HarnessError, InvalidArgument
from message_flow_harness._fault_model import Faults
from message_flow_harness._schedule import FAULT_KINDS, MAX_PRODUCERS, OPT_IN_FAULT_KINDS
from message_flow_harness._shard import Shard


class UsageError(HarnessError):
    """Options that parse one by one but do not go together (the CLI prints its usage too)."""


class Formatter(argparse.HelpFormatter):
    """Help that ends each option with its default, when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, argparse.SUPPRESS) and not isinstance(
            action, argparse._HelpAction | argparse._CountAction
        )
        if shown and action.option_strings and "default" not in text:
            text += " (default: %(default)s)"
        return text


def fault_kinds(text: str) -> tuple[str, ...]:
    """``none``, or a comma list of fault kinds and ``all`` (``crash,cut``): checked.

    ``all`` stays a name: which kinds it means depends on the flow (:func:`faults_asked`).
    """
    if text.strip() == "none":
        return ()
    known = ("all", *FAULT_KINDS, *OPT_IN_FAULT_KINDS)
    kinds: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if name not in known and ":" in name:  # the flow, taken for the kinds
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a fault kind: --faults takes KINDS, e.g. --faults all {name}"
            )
        if name not in known:
            raise argparse.ArgumentTypeError(
                f"unknown fault kind {name!r}: give all, none, or a comma list of"
                f" {', '.join(known[1:])}"
            )
        if name not in kinds:
            kinds.append(name)
    return tuple(kinds)


def faults_asked(kinds: tuple[str, ...] | None, model: Faults | None) -> bool | list[str] | None:
    """What ``--faults`` asks of :func:`fuzz`: None (not given: the flow's model), False
    (``none``), or the kinds, ``all`` read as every kind the flow's model allows (without
    one: crash, join, latency, cut)."""
    if kinds is None or not kinds:
        return None if kinds is None else False
    everything = model.kinds if model is not None else FAULT_KINDS
    named = [kind for name in kinds for kind in (everything if name == "all" else (name,))]
    return list(dict.fromkeys(named))


def shard_of(text: str) -> Shard:
    """``I/N``: the I-th of N shards of a campaign."""
    try:
        return Shard.parse(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def producer_count(text: str) -> int:
    """How many concurrent producers publish: 1 to ``MAX_PRODUCERS``."""
    value = _whole_number(text, minimum=1)
    if value > MAX_PRODUCERS:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: give 1 to {MAX_PRODUCERS}")
    return value


def add_output_arguments(parser: argparse.ArgumentParser, *, unit: str) -> None:
    """``-v`` (a line per ``unit``; twice: the logs too) and ``-q``."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help=f"print a line per {unit}; -vv also shows the drivers' and services' logs",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar: only the summary"
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show where it was raised (for reporting a bug in the harness)",
    )


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
