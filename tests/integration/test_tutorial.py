"""Follow each page as a reader would: write its files into a fresh project, run its commands.

Every page with ``console`` commands (the README, ``docs/pages/tutorial.md`` ...)
is one test. Its file blocks are written, exactly as they stand, into an empty
directory, and its ``$ commands`` run there in page order, in a subprocess,
with this environment's ``pytest`` and ``harness`` first on ``PATH``. Each
command's output must match what the page shows and its exit status what the
page says (see ``tests/doc_pages.py``). The project reaches the session's
brokers: a broker the harness started is shared through ``HARNESS_CACHE_DIR``
(so fault campaigns keep their proxies), one given by URL is passed on in
``HARNESS_KAFKA_BOOTSTRAP`` / ``HARNESS_AMQP_URL``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo
from message_flow_harness._drivers import BROKER_KINDS, driver
from tests.doc_pages import Command, output_matches, page_id, page_steps, pages

#: One command (a fuzz campaign with faults is the longest) may take this long.
COMMAND_TIMEOUT_S = 900


def _kinds(page: Path) -> list[str]:
    """The brokers a page's flows use (``broker="kafka"`` in its text)."""
    text = page.read_text(encoding="utf-8")
    return [kind for kind in BROKER_KINDS if f'broker="{kind}"' in text]


def _runnable() -> list[object]:
    params: list[object] = []
    for page in pages():
        if any(isinstance(step, Command) for step in page_steps(page)):
            kinds = _kinds(page)
            marks = [getattr(pytest.mark, kind) for kind in kinds]
            params.append(pytest.param(page, kinds, id=page_id(page), marks=marks))
    return params


def _environment(brokers: dict[str, BrokerInfo]) -> dict[str, str]:
    # The outer pytest's own variables (xdist worker, current test) are not the reader's.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "80"
    for kind, info in brokers.items():
        if info.provider != "local":
            env[driver(kind).url_env] = info.url
    return env


def _run(command: Command, project: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "-c", command.text],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    output = done.stdout + done.stderr
    shown = f"{command.where}: $ {command.text}\n--- it printed (exit {done.returncode}):\n{output}"
    assert done.returncode == command.status, (
        f"{shown}\n--- the page expects exit status {command.status}"
    )
    assert output_matches(command.output, output), f"{shown}\n--- the page shows:\n{command.output}"


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("page", "kinds"), _runnable())
def test_a_reader_following_the_page_gets_what_it_shows(
    page: Path, kinds: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    brokers = {kind: request.getfixturevalue(f"{kind}_broker") for kind in kinds}
    env = _environment(brokers)
    project = tmp_path / "project"
    project.mkdir()
    for step in page_steps(page):
        if isinstance(step, Command):
            _run(step, project, env)
        else:
            assert step.path is not None
            target = project / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.text, encoding="utf-8")
