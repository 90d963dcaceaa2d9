"""Every command and option of ``harness`` and of the pytest plugin is on the CLI reference page.

The page (docs/pages/reference/cli.md) has one section per command, headed
``harness fuzz`` and so on; an option counts as named when it appears there
in backticks (`` `--seed` `` or `` `--seed S` ``). A new option without a
line on the page fails here, so the page cannot fall behind the parser.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from message_flow_harness import pytest_plugin
from message_flow_harness._cli import build_parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "pages" / "reference" / "cli.md"
#: The section of options the pytest plugin adds.
PYTEST_SECTION = "pytest"


def commands(
    parser: argparse.ArgumentParser, path: str = "harness"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command as its full name (``harness brokers up``) and its parser."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}")


def options(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings of one command, without argparse's own ``-h``/``--help``."""
    return [
        option
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
    ]


class _Recorder:
    """Stands in for pytest's parser and option group: records the options added."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def getgroup(self, name: str, description: str = "") -> _Recorder:
        return self

    def addoption(self, *names: str, **attributes: object) -> None:
        self.names.extend(names)


def pytest_options() -> list[str]:
    recorder = _Recorder()
    pytest_plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    return recorder.names


def sections() -> dict[str, str]:
    """The page's sections by the command in their heading (``## `harness fuzz` ``)."""
    found: dict[str, str] = {}
    current: str | None = None
    for line in PAGE.read_text().splitlines():
        heading = re.match(r"^#{2,4} `([^`]+)`", line)
        if heading:
            current = heading.group(1)
            found[current] = ""
        elif line.startswith("#"):
            current = None
        elif current is not None:
            found[current] += line + "\n"
    return found


def named(option: str, text: str) -> bool:
    return re.search(rf"`{re.escape(option)}(?:[ =`])", text) is not None


ALL_COMMANDS = dict(commands(build_parser()))


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_has_a_section(command: str) -> None:
    assert command in sections(), (
        f"`{command}` has no section on {PAGE.name}: add a heading ## `{command}`"
    )


@pytest.mark.parametrize(
    ("command", "option"),
    [(command, option) for command, parser in ALL_COMMANDS.items() for option in options(parser)],
)
def test_every_option_is_named_in_its_command_section(command: str, option: str) -> None:
    text = sections().get(command, "")
    assert named(option, text), (
        f"`{command} {option}` is not named on {PAGE.name}: describe it in the"
        f" section of `{command}`"
    )


@pytest.mark.parametrize("option", pytest_options())
def test_every_pytest_option_is_named(option: str) -> None:
    text = sections().get(PYTEST_SECTION, "")
    assert named(option, text), (
        f"the pytest option {option} is not named on {PAGE.name}: describe it in the"
        f" section `{PYTEST_SECTION}`"
    )


def test_the_page_is_checked_against_a_parser_with_options() -> None:
    # Guards the walk itself: a parser change that hid every option would pass the rest.
    assert "--seed" in options(ALL_COMMANDS["harness fuzz"])
    assert "--compare" in options(ALL_COMMANDS["harness bench"])
    assert "--kafka-bootstrap" in pytest_options()
