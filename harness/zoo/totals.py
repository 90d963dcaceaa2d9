"""Running totals per key: the store the ``*_lost_update`` / ``*_locked_totals`` services
share, the inputs to fuzz them with, and a check of your own that reads their outputs.

The business: every input is a deposit, its value a positive whole amount in
ASCII digits (``b"5"``); the service adds it to its key's total in a store and
outputs the new total (``b"12"``), with the input's key and headers. Anything
else is dead-lettered. The store stands for an external one (a database): a
read and a write are each an awaited call that takes a few milliseconds, so
two handlers that read-modify-write one key concurrently can interleave, and
the second write overwrites the first update.

Deliveries are at least once (a rebalance or a lost ack redelivers), so the
store also keeps which input made which total, written with the total as one
transaction would: a redelivered input is answered with its total again and
added nothing. Without that, a redelivery counts a deposit twice.

``totals_add_up()`` is written the way a user writes a check: a function of the
run's ``History`` returning a ``Verdict`` of ``Anomaly``s, wrapped in ``Check``.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Hashable, Iterator
from typing import ClassVar

from hypothesis import strategies as st

from message_flow_harness import Endpoints, History, Message
from message_flow_harness import strategies as hs
from message_flow_harness.checks import Anomaly, Check, Facts, Verdict

#: The store's read and write each take up to this long (a round trip to a database).
STORE_LATENCY_S = 0.02


def parse_amount(value: bytes) -> int | None:
    """The deposit ``value`` stands for (``b"5"`` -> 5), or None if it is not a positive amount."""
    if not value.isdigit():
        return None
    amount = int(value)
    return amount if amount > 0 else None


class Totals:
    """A store of per-key running totals with awaited reads and writes.

    One store per run (per input destination), shared by every instance of the
    service in it and kept across crashes and restarts, as an external store would be.
    """

    _stores: ClassVar[dict[str, Totals]] = {}

    def __init__(self) -> None:
        self._totals: dict[bytes | None, int] = {}
        self._made: dict[Hashable, int] = {}  # input -> the total it made
        self._locks: dict[bytes | None, asyncio.Lock] = defaultdict(asyncio.Lock)

    @classmethod
    def of(cls, endpoints: Endpoints) -> Totals:
        """The store of the run ``endpoints`` belong to."""
        return cls._stores.setdefault(endpoints.input, cls())

    async def read(self, key: bytes | None, made_by: Hashable) -> tuple[int, int | None]:
        """The key's total, and the total input ``made_by`` made if it was applied already."""
        await asyncio.sleep(random.uniform(0, STORE_LATENCY_S))
        return self._totals.get(key, 0), self._made.get(made_by)

    async def write(self, key: bytes | None, total: int, made_by: Hashable) -> None:
        """Set the key's total and note that input ``made_by`` made it, in one write."""
        await asyncio.sleep(random.uniform(0, STORE_LATENCY_S))
        self._totals[key] = total
        self._made[made_by] = total

    async def add(self, key: bytes | None, amount: int, made_by: Hashable) -> int:
        """Read, modify, write: the new total (an input applied already only reads).

        Not atomic: another handler's update of the key may come between the
        read and the write, and one of the two is lost (unless under :meth:`lock`).
        """
        total, made = await self.read(key, made_by)
        if made is not None:
            return made  # a redelivery: answer again, count nothing
        total += amount
        await self.write(key, total, made_by)
        return total

    def lock(self, key: bytes | None) -> asyncio.Lock:
        """A lock per key. An external store would use a transaction, a conditional
        write or an atomic increment instead; the point is the same."""
        return self._locks[key]


def amounts(*, keys: int = 2, max_size: int = 6) -> st.SearchStrategy[list[Message]]:
    """Message lists for these services: few keys (so updates collide), small positive amounts."""
    return hs.messages(
        keys=hs.keys(keys),
        values=st.integers(1, 9).map(lambda n: str(n).encode()),
        max_size=max_size,
    )


def totals_add_up() -> Check:
    """Each key's final total is the sum of its inputs' amounts.

    The final total is the largest total any output of the key reports: amounts
    are positive, so totals only grow. Inputs that were never output (see
    ``no_loss``) or are not amounts (see ``dead_lettered``) do not count.
    Less than the sum is a *lost-update*; more, an update applied twice.
    """

    def anomalies(facts: Facts) -> Iterator[Anomaly]:
        # (input number, harness id, amount) of each counted input, and the totals
        # its outputs report, per key.
        counted: dict[bytes | None, list[tuple[int, str, int]]] = defaultdict(list)
        reported: dict[bytes | None, list[tuple[int, int]]] = defaultdict(list)
        for harness_id, found in facts.inputs.items():
            message = found.event.message
            amount = None if message is None else parse_amount(message.value)
            outputs = facts.outputs.get(harness_id, [])
            if amount is None or not outputs:
                continue
            counted[found.key].append((found.number, harness_id, amount))
            for output in outputs:
                value = b"" if output.message is None else output.message.value
                if not value.isdigit():
                    yield Anomaly(
                        "unreadable",
                        f"output of {facts.name(harness_id)} is {value[:40]!r}, not a total",
                        (harness_id,),
                    )
                    continue
                reported[found.key].append((int(value), found.number))
        for key, inputs in counted.items():
            if not reported[key]:
                continue
            final = max(total for total, _ in reported[key])
            expected = sum(amount for _, _, amount in inputs)
            if final == expected:
                continue
            what = "updates lost" if final < expected else "an update counted twice"
            numbers = " + ".join(f"#{number}" for number, _, _ in inputs)
            terms = " + ".join(str(amount) for _, _, amount in inputs)
            said = ", ".join(f"{total} for #{number}" for total, number in reported[key])
            name = "no key" if key is None else f"key {key.decode('utf-8', 'replace')!r}"
            yield Anomaly(
                "lost-update" if final < expected else "overcounted",
                f"final total for {name} is {final}, expected {expected}"
                f" (sum of inputs {numbers} = {terms}): {what}; outputs reported {said}",
                tuple(harness_id for _, harness_id, _ in inputs),
            )

    def run(history: History) -> Verdict:
        facts = Facts(history)
        return Verdict("totals_add_up()", tuple(anomalies(facts)), facts.summary())

    return Check("totals_add_up()", run)


__all__ = ("STORE_LATENCY_S", "Totals", "amounts", "parse_amount", "totals_add_up")
