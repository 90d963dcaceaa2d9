"""The documentation site builds with ``mkdocs build --strict``, and its API page cannot drift.

--strict turns every warning into a failure: a broken link or anchor, a page
missing from the nav or a nav entry without a page, a docstring mkdocstrings
cannot render. The API reference is rendered from the docstrings, so the
second test checks that every public name is on it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import message_flow_harness as harness
from message_flow_harness import checks, schedule, stateful, strategies

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONFIG = DOCS / "mkdocs.yml"

#: Each public module and the names it promises (its ``__all__``).
PUBLIC = {
    "message_flow_harness": harness.__all__,
    "message_flow_harness.checks": checks.__all__,
    "message_flow_harness.schedule": schedule.__all__,
    "message_flow_harness.strategies": strategies.__all__,
    "message_flow_harness.stateful": stateful.__all__,
}
#: Public names that are modules: each has its own section, not an entry under the front.
SUBMODULES = {"checks", "schedule", "stateful", "strategies"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(CONFIG), "-d", str(target)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    # mkdocs logs to stderr; any WARNING fails --strict, and the message says which one.
    failed = done.returncode != 0 or "WARNING" in done.stderr
    assert not failed, (
        "mkdocs build --strict failed; fix the page or link it names:\n" + done.stderr[-4000:]
    )
    return target


def test_the_site_builds_strictly(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "reference" / "api" / "index.html").is_file()


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in PUBLIC.items() for name in names],
)
def test_every_public_name_is_rendered_on_the_api_page(site: Path, module: str, name: str) -> None:
    page = (site / "reference" / "api" / "index.html").read_text()
    anchor = f"{module}.{name}" if name not in SUBMODULES else f"message_flow_harness.{name}"
    assert f'id="{anchor}"' in page, (
        f"{anchor} is public but not on docs/pages/reference/api.md: add it there"
        " (a ::: block, or the module's member list)"
    )
