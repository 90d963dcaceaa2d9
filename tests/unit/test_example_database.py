"""Example databases named by one string, and shards of a campaign: parsing, without GitHub."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    InMemoryExampleDatabase,
    MultiplexedDatabase,
)

from message_flow_harness import DatabaseUnavailable, InvalidArgument
from message_flow_harness._example_database import github_parts, open_database
from message_flow_harness._shard import Shard


def test_a_directory_is_a_directory_database(tmp_path: Path) -> None:
    assert isinstance(open_database(tmp_path / "db"), DirectoryBasedExampleDatabase)
    assert isinstance(open_database(str(tmp_path / "db")), DirectoryBasedExampleDatabase)
    assert open_database(None) is None
    given = InMemoryExampleDatabase()
    assert open_database(given) is given


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("github:acme/orders", ("acme", "orders", "hypothesis-example-db")),
        ("github:acme/orders/nightly-db", ("acme", "orders", "nightly-db")),
    ],
)
def test_github_names_an_artifact(spec: str, parts: tuple[str, str, str]) -> None:
    assert github_parts(spec) == parts
    # Read from the artifact, new failures kept locally: never a request made here.
    assert isinstance(open_database(spec), MultiplexedDatabase)


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("github:acme", "give github:OWNER/REPO"),
        ("github:acme//db", "give github:OWNER/REPO"),
        ("s3://bucket/db", "no example database speaks s3://"),
        ("redis://user:secret@127.0.0.1:notaport/0", "is invalid"),
        ("", "give a directory, a Redis URL"),
    ],
)
def test_bad_database_names_say_what_to_give(spec: str, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint) as raised:
        open_database(spec)
    assert "secret" not in str(raised.value)


def test_a_redis_server_that_does_not_answer_is_said_at_once() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DatabaseUnavailable, match=f"no Redis answers at redis://127.0.0.1:{port}"):
        open_database(f"redis://127.0.0.1:{port}/0")


@pytest.mark.parametrize(
    ("max_examples", "shares"), [(10, [4, 3, 3]), (3, [1, 1, 1]), (100, [34, 33, 33])]
)
def test_shards_share_the_examples(max_examples: int, shares: list[int]) -> None:
    assert [Shard(i, 3).examples(max_examples) for i in (1, 2, 3)] == shares


def test_shard_searches_are_numbered_apart_across_jobs() -> None:
    numbers = {Shard(i, 3).search_number(worker) for i in (1, 2, 3) for worker in (0, 1)}
    assert numbers == set(range(6))
    assert Shard().search_number(1) == 1  # unsharded: a worker's number, as before


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="is invalid: give I/N"):
        Shard.parse(text)
