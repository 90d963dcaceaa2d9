"""Text a person reads: counted nouns, lists that stay short, values that stay one line.

A leaf module (it imports nothing of the harness), so checks, reports and the
CLI can all use it.
"""

from __future__ import annotations

from collections.abc import Sequence

#: How many items of a long list a person is shown before "… and N more".
SHOWN = 5

_IRREGULAR = {"anomaly": "anomalies"}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 message``, ``2 messages``, ``0 anomalies``: the count and the noun that agrees."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {many or _IRREGULAR.get(noun) or noun + 's'}"


def bounded(lines: Sequence[str], *, shown: int = SHOWN, indent: str = "") -> list[str]:
    """The first ``shown`` of ``lines``, then ``… and N more`` for the rest (never "and 1 more":
    a last line takes the room of its own summary)."""
    if len(lines) <= shown + 1:
        return list(lines)
    return [*lines[:shown], f"{indent}… and {len(lines) - shown} more"]


def shorten(text: str, *, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
