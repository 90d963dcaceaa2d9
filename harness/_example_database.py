"""Where a campaign keeps its failures: any Hypothesis example database, from one string.

``harness fuzz --database`` and ``fuzz(database=...)`` take a directory (the
default, ``.hypothesis/harness``), a Redis URL (``redis://host:6379/0``:
CI jobs and machines share what each found), or ``github:OWNER/REPO`` (the
failures a GitHub Actions job uploaded as an artifact, read beside the local
directory, where new ones go), or a Hypothesis ``ExampleDatabase`` itself.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    GitHubArtifactDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

from message_flow_harness._errors import DatabaseUnavailable, InvalidArgument
from message_flow_harness._redact import redact_url

#: Where failures are kept unless told otherwise (and beside a GitHub artifact's).
LOCAL = Path(".hypothesis") / "harness"
#: The artifact name Hypothesis's GitHubArtifactDatabase reads by default.
ARTIFACT = "hypothesis-example-db"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_FORMS = "a directory, a Redis URL (redis://HOST:PORT/DB) or github:OWNER/REPO[/ARTIFACT]"


Database = Path | str | ExampleDatabase | None


def open_database(spec: Database) -> ExampleDatabase | None:
    """The example database ``spec`` names (see the module's docstring); None for None."""
    if spec is None or isinstance(spec, ExampleDatabase):
        return spec
    if isinstance(spec, Path):
        return DirectoryBasedExampleDatabase(str(spec))
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgument(f"database={spec!r} is invalid: give {_FORMS}")
    if spec.startswith(_REDIS_SCHEMES):
        return _redis(spec)
    if spec.startswith("github:"):
        return _github(spec)
    if "://" in spec:
        scheme = spec.split("://", 1)[0]
        raise InvalidArgument(
            f"database {redact_url(spec)!r} is invalid: no example database speaks {scheme}://;"
            f" give {_FORMS}"
        )
    return DirectoryBasedExampleDatabase(spec)


def github_parts(spec: str) -> tuple[str, str, str]:
    """``github:OWNER/REPO[/ARTIFACT]`` as (owner, repo, artifact)."""
    parts = spec.removeprefix("github:").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(
            f"database {spec!r} is invalid: give github:OWNER/REPO, or github:OWNER/REPO/ARTIFACT"
            f" for an artifact not named {ARTIFACT}"
        )
    owner, repo, *artifact = parts
    return owner, repo, artifact[0] if artifact else ARTIFACT


def _github(spec: str) -> ExampleDatabase:
    # Hypothesis reads the artifact with $GITHUB_TOKEN; it cannot write one (a CI job
    # uploads its directory with actions/upload-artifact), so new failures go local.
    owner, repo, artifact = github_parts(spec)
    shared = GitHubArtifactDatabase(owner, repo, artifact_name=artifact)
    return MultiplexedDatabase(DirectoryBasedExampleDatabase(str(LOCAL)), ReadOnlyDatabase(shared))


def _redis(url: str) -> ExampleDatabase:
    shown = redact_url(url)
    try:
        import redis
        from hypothesis.extra.redis import RedisExampleDatabase
    except ImportError:
        raise InvalidArgument(
            f"database {shown!r} needs the redis client: pip install 'message-flow-harness[redis]'"
        ) from None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    except ValueError as exc:
        raise InvalidArgument(f"database {shown!r} is invalid: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise DatabaseUnavailable(
            f"no Redis answers at {shown} ({exc}): start it, or name another example database"
        ) from None
    return RedisExampleDatabase(client)
