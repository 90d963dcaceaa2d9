"""``Shard``: one of n independent searches that together make up one campaign.

A campaign split across CI jobs (``harness fuzz --shard 2/4``) runs its
searches as a campaign's ``workers`` do on one machine, the jobs' workers
numbered apart: each search has its own seed (the campaign's seed plus its
number among all the shards' searches) and a share of ``max_examples``, and
the first worker of every shard replays the failures the shared example
database holds before searching.
"""

from __future__ import annotations

from dataclasses import dataclass

from message_flow_harness._errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (from 1) of ``count``."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        numbers_ok = all(
            isinstance(n, int) and not isinstance(n, bool) for n in (self.index, self.count)
        )
        if not numbers_ok or not 1 <= self.index <= self.count:
            raise InvalidArgument(
                f"shard {self.index!r}/{self.count!r} is invalid: give I/N with 1 <= I <= N,"
                " e.g. 2/4 for the second of four jobs"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/4"``: the second shard of four."""
        index, _, count = text.partition("/")
        try:
            numbers = int(index), int(count)
        except ValueError:
            raise InvalidArgument(
                f"shard {text!r} is invalid: give I/N, e.g. 2/4 for the second of four jobs"
            ) from None
        return cls(*numbers)

    def examples(self, max_examples: int) -> int:
        """This shard's share of a campaign's ``max_examples`` (shares differ by at most 1)."""
        share = max_examples // self.count + (self.index - 1 < max_examples % self.count)
        if share < 1:
            raise InvalidArgument(
                f"max_examples={max_examples} leaves shard {self} no example: give at least"
                f" {self.count}, one per shard"
            )
        return share

    def search_number(self, worker: int) -> int:
        """The campaign-wide number of this shard's ``worker``: its seed is the seed plus it."""
        return worker * self.count + self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
