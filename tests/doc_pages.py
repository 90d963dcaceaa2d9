"""The README's and the docs' pages as the suite reads them: the blocks a reader runs.

A page (``README.md``, ``docs/pages/**/*.md``) follows four conventions, which
the tests in ``tests/unit/test_doc_pages.py`` and
``tests/integration/test_tutorial.py`` hold it to:

- A fenced ``python`` block is a **snippet**. A page's snippets run in order,
  sharing one namespace, with no broker (Sybil). ``<!-- skip: next -->``
  before a block skips it (say why next to it), ``<!-- clear-namespace -->``
  starts afresh, ``<!-- invisible-code-block: python -->`` runs code the
  reader does not see.
- A block whose first line is a path comment (``# orders/service.py``,
  ``# pyproject.toml``) is a **file** the reader creates. It is never run in
  place: the project test writes the page's files, exactly as they stand,
  into a fresh directory (a later block with the same path replaces the
  file, as a reader editing it would).
- A ``console`` block holds **commands**: ``$ command`` lines, each followed
  by its output. The project test runs them in that directory, at their
  place in the page (after the files above them), against the session's
  brokers, and matches the output: ``...`` alone on a line stands for any
  lines, inside a line for any text, and runs of spaces compare equal. A
  trailing ``# exits N`` says the exit status expected (default 0).
- Any other shell block (``bash``, ``sh``, ``shell``) is **not run**, and must
  follow ``<!-- not-run: why -->`` saying why. Every fence names a
  language (``text`` for output or plain text), so nothing slips through
  unlabelled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sybil import Document, Example, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import ClearNamespaceParser, CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent.parent
SHELLS = frozenset({"bash", "sh", "shell", "zsh"})

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_COMMENT = re.compile(r"^<!--\s*(?P<text>.*?)\s*-->$")
# A file block's first line: "# orders/service.py", "# pyproject.toml".
_PATH = re.compile(r"^# (?P<path>[\w.-]+(?:/[\w.-]+)*\.[A-Za-z0-9]+)\s*$")
_EXITS = re.compile(r"\s#\s*exits (?P<status>\d+)\s*$")


def pages() -> list[Path]:
    """Every page whose blocks the suite runs: the README, then the docs tree."""
    return [ROOT / "README.md", *sorted((ROOT / "docs" / "pages").rglob("*.md"))]


def page_id(page: Path) -> str:
    """``page`` as the suite names it: relative to the repository when inside it."""
    return page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else str(page)


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    directive: str | None  # the HTML comment just above it, if any

    @property
    def where(self) -> str:
        return f"{page_id(self.page)}:{self.line}"

    @property
    def path(self) -> str | None:
        """The file this block is, when its first line is a path comment."""
        first = self.text.split("\n", 1)[0]
        match = _PATH.match(first)
        return match["path"] if match else None

    @property
    def not_run(self) -> bool:
        return self.directive is not None and self.directive.startswith("not-run:")


@dataclass(frozen=True)
class Command:
    """A ``$ command`` of a console block and the output the page shows for it."""

    block: Block
    line: int
    text: str
    output: str
    status: int

    @property
    def where(self) -> str:
        return f"{page_id(self.block.page)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["fence"]
        end = index + 1
        while end < len(lines) and not (
            lines[end].startswith(fence) and not lines[end].strip(fence[0]).strip()
        ):
            end += 1
        above = next((text for text in reversed(lines[:index]) if text.strip()), "")
        directive = _COMMENT.match(above.strip())
        found.append(
            Block(
                page=page,
                line=index + 1,
                language=opening["info"].strip().split(" ")[0],
                text="\n".join(lines[index + 1 : end]) + "\n",
                directive=directive["text"] if directive else None,
            )
        )
        index = end + 1
    return found


def page_namespace(page: Path) -> dict[str, Any]:
    """The names a page's python snippets define, run in order as a reader pastes them."""
    namespace: dict[str, Any] = {"__name__": page.stem.replace("-", "_")}
    for block in blocks(page):
        if block.language == "python" and block.path is None:
            code = "\n" * block.line + block.text  # tracebacks name the page's own lines
            # dont_inherit: not the caller's __future__ annotations, which the page has not
            exec(compile(code, str(page), "exec", dont_inherit=True), namespace)
    return namespace


def commands(block: Block) -> list[Command]:
    """The commands of a console block, each with its output."""
    found: list[Command] = []
    lines = block.text.rstrip("\n").split("\n")
    index = 0
    while index < len(lines):
        if not lines[index].startswith("$ "):
            raise ValueError(
                f"{page_id(block.page)}:{block.line + 1 + index}: console output"
                f" {lines[index]!r} comes before any command: start the block with `$ command`"
            )
        start = index
        text = lines[index][2:]
        while text.endswith("\\") and index + 1 < len(lines):
            index += 1
            text = text[:-1].rstrip() + " " + lines[index].strip()
        index += 1
        output: list[str] = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        exits = _EXITS.search(text)
        found.append(
            Command(
                block=block,
                line=block.line + 1 + start,
                text=text,
                output="\n".join(output),
                status=int(exits["status"]) if exits else 0,
            )
        )
    return found


def page_steps(page: Path) -> Iterator[Block | Command]:
    """What a reader does with ``page``, in order: files to write, commands to run."""
    for block in blocks(page):
        if block.path is not None:
            yield block
        elif block.language == "console" and not block.not_run:
            yield from commands(block)


def output_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is what ``expected`` shows, with its ``...`` wildcards."""
    pattern: list[str] = []
    for line in expected.split("\n"):
        line = " ".join(line.split())
        if line == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            parts = (re.escape(part) for part in line.split("..."))
            pattern.append("[^\n]*".join(parts) + r"\n")
    text = "".join(" ".join(line.split()) + "\n" for line in actual.rstrip("\n").split("\n"))
    return re.fullmatch("".join(pattern), text) is not None


_python = PythonEvaluator()


def _evaluate_snippet(example: Example) -> None:
    __tracebackhide__ = True
    if _PATH.match(str(example.parsed).split("\n", 1)[0]):
        return  # a file the reader creates: the project test runs it where it belongs
    _python(example)


_SNIPPETS = Sybil(
    parsers=[
        CodeBlockParser(language="python", evaluator=_evaluate_snippet),
        SkipParser(),
        ClearNamespaceParser(),
    ],
    patterns=["*.md"],
    path=str(ROOT),
)


def snippets(page: Path) -> Document:
    """``page`` parsed by Sybil: iterate it and ``evaluate()`` each example in turn."""
    document = _SNIPPETS.parse(page)
    # Like a module's: classes and functions the snippets define get a ``__module__``.
    document.namespace["__name__"] = f"page:{page_id(page)}"
    return document
