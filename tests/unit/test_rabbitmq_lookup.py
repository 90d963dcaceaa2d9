"""The RabbitMQ adapter asks the management API about many queues in chunks (no broker)."""

from __future__ import annotations

import re
import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st

from message_flow_harness.brokers.rabbitmq._management import _LOOKUP_PATTERN_BYTES, _name_chunks

queue_names = st.text(min_size=1, max_size=120).filter(lambda n: len(n.encode()) <= 255)


def quoted_pattern(names: list[str]) -> int:
    pattern = "^(" + "|".join(re.escape(name) for name in names) + ")$"
    return len(urllib.parse.quote(pattern, safe=""))


@settings(max_examples=300, deadline=None)
@given(st.lists(queue_names, max_size=400))
def test_chunks_keep_every_name_in_order_and_each_request_short(names: list[str]) -> None:
    chunks = _name_chunks(names)
    assert [name for chunk in chunks for name in chunk] == names
    for chunk in chunks:
        assert chunk, "no empty lookups"
        # A name too long to share a chunk still gets one of its own.
        assert len(chunk) == 1 or quoted_pattern(chunk) <= _LOOKUP_PATTERN_BYTES + 10


def test_a_few_hundred_campaign_names_take_a_few_requests() -> None:
    names = [f"h-{i:010x}-{part}" for i in range(300) for part in ("dlq", "out", "in")]
    chunks = _name_chunks(names)
    assert 3 <= len(chunks) <= 10
    assert max(quoted_pattern(chunk) for chunk in chunks) < 8000 - 200  # the server's limit
