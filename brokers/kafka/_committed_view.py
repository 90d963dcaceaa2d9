"""Which records of a topic a ``read_committed`` consumer sees, and which aborted.

A Kafka tap reads each topic twice: a ``read_committed`` reader (what the
service's own consumers downstream see: the outputs) and a ``read_uncommitted``
reader (everything the producers appended). Both skip control records (commit
and abort markers), so the two differ only in the records of aborted
transactions. :class:`CommittedView` pairs them per partition: a record the
uncommitted reader saw and the committed reader went past without returning
belongs to an aborted transaction. A record of a transaction still open stays
undecided (neither) until the transaction ends.

Pure bookkeeping, no client: the tap feeds it (see brokers/kafka/_tap.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Generic, TypeVar

Record = TypeVar("Record")


class CommittedView(Generic[Record]):
    """Pairs a topic's committed and uncommitted readers; returns the aborted records it finds.

    Per partition it keeps only what is not yet paired: offsets the committed
    reader returned before the uncommitted reader got there, and records the
    uncommitted reader saw before the committed reader decided them. A record
    is whatever the tap keeps of one (its client's record and when it was seen):
    only the aborted ones are ever turned into tap records.
    """

    def __init__(self) -> None:
        self._committed: dict[int, set[int]] = defaultdict(set)  # returned, not yet paired
        self._undecided: dict[int, dict[int, Record]] = defaultdict(dict)
        self._position: dict[int, int] = defaultdict(int)  # the committed reader's next offset

    def committed(self, partition: int, offset: int) -> None:
        """The committed reader returned the record at ``offset``."""
        if self._undecided[partition].pop(offset, None) is None:
            self._committed[partition].add(offset)
        self._position[partition] = max(self._position[partition], offset + 1)

    def uncommitted(self, partition: int, offset: int, record: Record) -> bool:
        """The uncommitted reader returned ``record`` at ``offset``: True if it aborted."""
        committed = self._committed[partition]
        if offset in committed:
            committed.discard(offset)
            return False
        if offset < self._position[partition]:
            return True  # the committed reader went past it
        self._undecided[partition][offset] = record
        return False

    def passed(self, partition: int, position: int) -> list[Record]:
        """The committed reader's next offset is ``position``: the aborted records it went past."""
        if position <= self._position[partition] and not self._undecided[partition]:
            return []
        self._position[partition] = max(self._position[partition], position)
        undecided = self._undecided[partition]
        gone = sorted(offset for offset in undecided if offset < position)
        return [undecided.pop(offset) for offset in gone]
