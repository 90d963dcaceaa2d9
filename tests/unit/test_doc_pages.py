"""The README's and the docs' snippets run, their files parse, their shell blocks are honest.

The conventions are in ``tests/doc_pages.py``; the files and commands of a page
are run against real brokers by ``tests/integration/test_tutorial.py``.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from message_flow_harness._cli import build_parser
from tests.doc_pages import (
    ROOT,
    SHELLS,
    Block,
    blocks,
    commands,
    output_matches,
    page_id,
    pages,
    snippets,
)

PAGES = [pytest.param(page, id=page_id(page)) for page in pages()]


@pytest.mark.parametrize("page", PAGES)
def test_snippets_run(page: Path) -> None:
    """Every python block that is not a file runs, in order, in the page's namespace."""
    for example in snippets(page):
        example.evaluate()


@pytest.mark.parametrize("page", PAGES)
def test_files_parse(page: Path) -> None:
    """A file block is valid Python or TOML before a reader copies it."""
    for block in blocks(page):
        if block.path is None:
            continue
        if block.path.endswith(".py"):
            compile(block.text, f"{block.where} ({block.path})", "exec")
        elif block.path.endswith(".toml"):
            try:
                tomllib.loads(block.text)
            except tomllib.TOMLDecodeError as exc:
                pytest.fail(f"{block.where}: {block.path} is not valid TOML: {exc}")


#: A GitHub Actions expression (``${{ matrix.shard }}``): a value only the runner knows.
_EXPRESSION = re.compile(r"\$\{\{[^}]*\}\}")


def _harness_commands(workflow: object) -> list[str]:
    """The ``harness ...`` commands of a workflow's ``run`` steps, continuation lines joined."""
    if isinstance(workflow, dict):
        found = [
            line.strip()
            for key, value in workflow.items()
            if key == "run" and isinstance(value, str)
            for line in value.replace("\\\n", " ").splitlines()
            if line.strip().startswith("harness ")
        ]
        return found + [c for v in workflow.values() for c in _harness_commands(v)]
    if isinstance(workflow, list):
        return [command for item in workflow for command in _harness_commands(item)]
    return []


@pytest.mark.parametrize("page", PAGES)
def test_workflows_parse_and_so_do_their_harness_commands(page: Path) -> None:
    """A YAML block (a CI workflow) is valid YAML, and its harness commands parse.

    They are not run: they need the reader's project and CI. The runner's
    expressions stand in as 1.
    """
    for block in blocks(page):
        if block.language != "yaml":
            continue
        try:
            workflow = yaml.safe_load(block.text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{block.where}: not valid YAML: {exc}")
        for command in _harness_commands(workflow):
            filled = _EXPRESSION.sub("1", command)
            argv = shlex.split(filled)
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{block.where}: `{command}` does not parse", pytrace=False)


def _unlabelled_or_unrun(block: Block) -> str | None:
    if not block.language:
        return f"{block.where}: the fence names no language (use text, python, console ...)"
    if block.language in SHELLS and block.path is None and not block.not_run:
        return (
            f"{block.where}: a {block.language} block is never run: make it a console block of"
            " `$ command` lines and their output, or put `<!-- not-run: why -->` above it"
        )
    if block.language == "console" and not block.not_run:
        try:
            commands(block)
        except ValueError as exc:
            return str(exc)
    return None


@pytest.mark.parametrize("page", PAGES)
def test_every_shell_block_is_run_or_says_why_not(page: Path) -> None:
    problems = [p for p in map(_unlabelled_or_unrun, blocks(page)) if p is not None]
    assert not problems, "\n".join(problems)


# --- the parsing itself, on a page written here --------------------------------------


PAGE = """\
# A page

```python
# orders/service.py
print("a file")
```

<!-- not-run: installs from PyPI -->
```bash
pip install something
```

```console
$ pytest -q \\
    tests
..   [100%]
2 passed in ...s
$ harness fuzz orders:flow  # exits 1
FAILED
...
```
"""


def test_blocks_files_and_commands_are_read(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    found = blocks(page)
    assert [(b.language, b.line, b.path, b.not_run) for b in found] == [
        ("python", 3, "orders/service.py", False),
        ("bash", 9, None, True),
        ("console", 13, None, False),
    ]
    run = commands(found[2])
    assert [(c.line, c.text, c.status) for c in run] == [
        (14, "pytest -q tests", 0),
        (18, "harness fuzz orders:flow  # exits 1", 1),
    ]
    assert run[0].output == "..   [100%]\n2 passed in ...s"


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        ("2 passed in ...s", "2 passed in 3.10s\n", True),
        ("2 passed in ...s", "1 failed, 2 passed in 3.10s\n", False),
        ("..  [100%]\n2 passed in ...s", "..       [100%]\n2 passed in 1s", True),
        ("fuzzing\n...\ndone", "fuzzing\na\nb\ndone\n", True),
        ("fuzzing\n...\ndone", "fuzzing\ndone\n", True),
        ("fuzzing\n...\ndone", "fuzzing\na\ndone\nmore\n", False),
        ("a...c", "abc\nxc", False),
    ],
)
def test_output_matching(expected: str, actual: str, matches: bool) -> None:
    assert output_matches(expected, actual) is matches


def test_a_console_block_must_start_with_a_command(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\noutput first\n$ pytest\n```\n")
    with pytest.raises(ValueError, match="comes before any command"):
        commands(blocks(page)[0])


def test_the_readme_stays_short() -> None:
    """The README is the front door: what it is, install, two commands, five minutes, links."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: keep it to 200, move detail to docs/pages"


SNIPPET_PAGE = """\
```python
total = 1
```

```python
# orders/service.py
raise SystemExit("a file block is written into a project, never run in place")
```

<!-- skip: next -->
```python
raise SystemExit("skipped")
```

```python
total += 1
```
"""


def test_snippets_share_the_pages_namespace_and_files_do_not_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(SNIPPET_PAGE)
    document = snippets(page)
    for example in document:
        example.evaluate()
    assert document.namespace["total"] == 2


def test_a_broken_snippet_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nconfirmation = undefined_name\n```\n")
    (example,) = snippets(page)
    with pytest.raises(NameError, match="undefined_name"):
        example.evaluate()
