"""The ``harness`` command as a person meets it: options with help and defaults, errors in
the CLI's terms before any broker is touched, "did you mean", seeds that repeat a search,
bounded lists and plurals in what it prints, and bench comparisons that refuse other settings.

No broker: provisioning is replaced by a stand-in that fails the test (or, where a run
must go on, by a fake broker and a fake bench). A campaign without a broker runs here
with a scripted example runner: Hypothesis, seeds and the database are the real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from message_flow_harness import (
    BrokerInfo,
    BrokerUnavailable,
    Endpoints,
    Faults,
    Flow,
    FuzzReport,
    InvalidArgument,
    Message,
    RunResult,
    brokers,
)
from message_flow_harness._bench import command as bench_module
from message_flow_harness._bench.result import BenchResult, Round
from message_flow_harness._checks import Anomaly, Verdict
from message_flow_harness._cli import build_parser, main
from message_flow_harness._cli_args import fault_kinds, faults_asked
from message_flow_harness._fuzz import SEEDS, Campaign, Example, choose_seed
from message_flow_harness._progress import FuzzProgress, LiveBar, example_line
from message_flow_harness._reference import did_you_mean, load_flow
from message_flow_harness._report import fuzz_summary
from message_flow_harness._schedule import FAULT_KINDS, Publish, Step
from message_flow_harness._shard import Shard
from message_flow_harness._text import bounded, plural, shorten
from message_flow_harness.schedule import Crash
from tests.unit.histories import Script

FLOW_REF = "tests.unit.test_reproduction:FLOW"  # a Flow named "orders", on Kafka
SINGLE_INSTANCE_REF = "tests.unit.test_cli:SINGLE_INSTANCE"


@asynccontextmanager
async def service(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


#: A deployment of one instance: it crashes and meets a bad network, never a second consumer.
SINGLE_INSTANCE = Flow(sut=service, broker="rabbitmq", faults=Faults(crash=True, network=True))


@dataclass
class Outcome:
    code: int
    out: str
    err: str


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command provisions a broker (it should have stopped before)."""

    def provision(*args: object, **kwargs: object) -> None:
        raise AssertionError("a broker was provisioned before the options were checked")

    monkeypatch.setattr(brokers, "provision", provision)


def harness(capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    """``harness ARGV`` in this process: its exit code, stdout and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own usage errors
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- options -------------------------------------------------------------------------


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: commands.choices[name] for name in ("fuzz", "bench")}


@pytest.mark.parametrize("command", ["fuzz", "bench"])
def test_every_option_has_help_and_shows_its_default(command: str) -> None:
    parser = _commands()[command]
    shown = one_line(parser.format_help())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{action.option_strings or action.dest} has no help"
        default = action.default
        if action.option_strings and default not in (None, False, 0):
            assert f"(default: {default})" in shown, f"{action.option_strings} hides its default"


def test_faults_always_takes_kinds_so_it_never_swallows_the_flow() -> None:
    parser = build_parser()
    args = parser.parse_args(["fuzz", "--faults", "crash,cut", FLOW_REF])
    assert (args.faults, args.flow) == (("crash", "cut"), FLOW_REF)
    assert fault_kinds("all,broker_restart") == ("all", "broker_restart")
    assert fault_kinds("cut, crash ,cut") == ("cut", "crash")
    assert fault_kinds("none") == ()
    assert parser.parse_args(["fuzz", FLOW_REF]).faults is None


def test_faults_all_means_every_kind_the_flow_can_suffer() -> None:
    assert faults_asked(None, None) is None  # not given: the flow's model decides
    assert faults_asked((), SINGLE_INSTANCE.faults) is False  # --faults none
    assert faults_asked(("all",), None) == list(FAULT_KINDS)
    assert faults_asked(("all", "broker_restart"), None) == [*FAULT_KINDS, "broker_restart"]
    assert faults_asked(("all",), SINGLE_INSTANCE.faults) == ["crash", "latency", "cut"]
    assert faults_asked(("cut", "all"), SINGLE_INSTANCE.faults) == ["cut", "crash", "latency"]


@pytest.mark.usefixtures("no_broker")
def test_a_fault_the_flow_rules_out_is_an_error_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = harness(capsys, "fuzz", "--faults", "crash,join", SINGLE_INSTANCE_REF)
    assert found.code == 2
    err = one_line(found.err)
    assert "which rules out join" in err, err
    assert "set instances=2 in the flow's Faults(...)" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("no_broker")
def test_workers_with_a_flow_that_declares_faults_says_how_to_turn_them_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = harness(capsys, "fuzz", "--workers", "2", SINGLE_INSTANCE_REF)
    assert found.code == 2
    err = one_line(found.err)
    assert f"{SINGLE_INSTANCE_REF}'s fault model draws crash, latency, cut" in err, err
    assert "give --workers 1, or --faults none" in err


@pytest.mark.usefixtures("no_broker")
@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (["--shard", "3/2"], "argument --shard: shard 3/2 is invalid: give I/N with 1 <= I <= N"),
        (["--shard", "half"], "argument --shard: shard 'half' is invalid: give I/N"),
        (
            ["--shard", "3/3", "--max-examples", "2"],
            "max_examples=2 leaves shard 3/3 no example: give at least 3, one per shard",
        ),
        (["--database", "ftp://host/db"], "no example database speaks ftp://"),
        (["--database", "github:owner"], "give github:OWNER/REPO"),
    ],
)
def test_bad_sharing_options_are_errors_before_any_broker(
    options: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    found = harness(capsys, "fuzz", *options, FLOW_REF)
    assert found.code == 2
    assert complaint in one_line(found.err), found.err


def test_faults_given_the_flow_says_it_wants_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    found = harness(capsys, "fuzz", "--faults", FLOW_REF)
    assert found.code == 2
    assert f"harness fuzz: error: argument --faults: {FLOW_REF!r} is not a fault kind" in found.err
    assert f"e.g. --faults all {FLOW_REF}" in found.err


@pytest.mark.usefixtures("no_broker")
@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (
            ["--faults", "crash,nonsense"],
            "argument --faults: unknown fault kind 'nonsense': give all, none, or a comma list of"
            " crash, join, latency, cut, broker_restart",
        ),
        (["--workers", "2", "--faults", "crash"], "--workers 2 runs examples at once"),
        (["--producers", "99"], "argument --producers: '99' is invalid: give 1 to 8"),
        (["--max-examples", "0"], "argument --max-examples: '0' is invalid"),
        (["--seed", "x"], "argument --seed: 'x' is invalid"),
    ],
)
def test_bad_options_are_cli_errors_before_any_broker(
    options: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    found = harness(capsys, "fuzz", *options, FLOW_REF)
    assert found.code == 2
    assert f"harness fuzz: error: {complaint}" in one_line(found.err), found.err
    assert found.err.startswith("usage: harness fuzz")
    assert "faults=[" not in found.err  # never a Python repr
    assert "Traceback" not in found.err


# --- flow references: did you mean ---------------------------------------------------


@pytest.mark.usefixtures("no_broker")
@pytest.mark.parametrize(
    ("reference", "complaint"),
    [
        (
            "tests.unit.test_reproduction:FLWO",
            "tests.unit.test_reproduction has no 'FLWO': did you mean"
            " tests.unit.test_reproduction:FLOW?",
        ),
        (
            "tests.unit.test_reprodcution:FLOW",
            "no module named tests.unit.test_reprodcution (looked in",
        ),
        (
            "tests.unit.test_reproduction.FLOW",
            "'tests.unit.test_reproduction.FLOW' is not MODULE:FLOW: did you mean"
            " tests.unit.test_reproduction:FLOW?",
        ),
        (
            "tests.unit.test_reproduction",
            "is not MODULE:FLOW: name a flow of tests.unit.test_reproduction: FLOW",
        ),
        (
            "tests/unit/test_reproduction.py:FLOW",
            "name the module, not its file: tests.unit.test_reproduction:FLOW",
        ),
        (
            "tests.unit.test_reproduction:service",
            "tests.unit.test_reproduction:service is a function, not a harness.Flow:"
            " its flows are FLOW",
        ),
        ("tests.unit:x", "tests.unit defines no Flow at module level"),
    ],
)
def test_a_wrong_flow_reference_says_what_was_probably_meant(
    reference: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    found = harness(capsys, "fuzz", reference)
    assert found.code == 2
    assert found.err.startswith("harness fuzz: error: ")
    assert complaint in found.err
    assert "Traceback" not in found.err


def test_a_misspelt_module_gets_the_closest_name(capsys: pytest.CaptureFixture[str]) -> None:
    found = harness(capsys, "bench", "tests.unit.test_reprodcution:FLOW")
    assert "did you mean tests.unit.test_reproduction?" in found.err
    assert found.err.startswith("harness bench: error: ")


def test_did_you_mean_only_offers_close_names() -> None:
    assert did_you_mean("ordrs", ["orders", "payments"]) == "orders"
    assert did_you_mean("zzz", ["orders", "payments"]) is None


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable folder for modules written by a test, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cli_broken_")]:
        del sys.modules[name]


@pytest.mark.usefixtures("no_broker")
def test_a_module_that_fails_to_import_is_one_message_and_traceback_on_demand(
    module_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (module_dir / "cli_broken_raises.py").write_text("raise RuntimeError('no config ' * 500)\n")
    found = harness(capsys, "fuzz", "cli_broken_raises:flow")
    assert found.code == 2
    assert "harness fuzz: error: importing cli_broken_raises raised RuntimeError: no config" in (
        found.err
    )
    assert "fix the module (--traceback shows where)" in found.err
    assert "Traceback" not in found.err
    assert len(found.err) < 600  # the huge message is cut
    shown = harness(capsys, "fuzz", "--traceback", "cli_broken_raises:flow")
    assert "Traceback" in shown.err
    assert 'cli_broken_raises.py", line 1' in shown.err


@pytest.mark.usefixtures("no_broker")
def test_a_module_missing_a_dependency_says_which(
    module_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (module_dir / "cli_broken_needs.py").write_text("import not_installed_anywhere_xyz\n")
    found = harness(capsys, "fuzz", "cli_broken_needs:flow")
    assert found.code == 2
    assert (
        "importing cli_broken_needs failed: it imports not_installed_anywhere_xyz,"
        " which is not installed here"
    ) in found.err


def test_load_flow_returns_the_flow() -> None:
    from tests.unit.test_reproduction import FLOW

    assert load_flow(FLOW_REF) is FLOW


# --- errors that reach main ------------------------------------------------------------


def test_harness_errors_print_one_message_with_its_notes_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def provision(*args: object, **kwargs: object) -> None:
        error = BrokerUnavailable("no Kafka broker answers at 127.0.0.1:1: start one")
        error.add_note("partial history: reports/orders-partial.json")
        raise error

    monkeypatch.setattr(brokers, "provision", provision)
    found = harness(capsys, "fuzz", "--quiet", FLOW_REF)
    assert found.code == 2
    assert found.err == (
        "harness fuzz: error: no Kafka broker answers at 127.0.0.1:1: start one\n"
        "  partial history: reports/orders-partial.json\n"
    )


@pytest.mark.parametrize("command", ["fuzz", "bench"])
def test_an_unexpected_error_is_short_and_points_at_traceback(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def provision(*args: object, **kwargs: object) -> None:
        raise RuntimeError(repr(list(range(5000))))

    monkeypatch.setattr(brokers, "provision", provision)
    found = harness(capsys, command, "--quiet", FLOW_REF)
    assert found.code == 2
    assert found.err.startswith(f"harness {command}: internal error: RuntimeError: [0, 1, 2")
    assert "re-run with --traceback" in found.err
    assert "Traceback" not in found.err
    assert len(found.err) < 600
    assert "Traceback" in harness(capsys, command, "--traceback", "--quiet", FLOW_REF).err


# --- --replay --------------------------------------------------------------------------


@pytest.mark.usefixtures("no_broker")
def test_replay_with_nothing_saved_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    found = harness(capsys, "fuzz", "--replay", FLOW_REF)
    assert found.code == 2
    database = tmp_path.resolve() / ".hypothesis" / "harness"
    assert f"harness fuzz: error: --replay found no saved failure of {FLOW_REF} in {database}" in (
        one_line(found.err)
    )
    assert f"run `harness fuzz {FLOW_REF}` first" in one_line(found.err)
    assert "every check held" not in found.out


# --- text: plurals, bounded lists ------------------------------------------------------


def test_plurals_agree_with_their_count() -> None:
    assert [plural(n, "message") for n in (0, 1, 2)] == ["0 messages", "1 message", "2 messages"]
    assert plural(1, "anomaly") == "1 anomaly"
    assert plural(3, "anomaly") == "3 anomalies"
    assert plural(2, "re-run") == "2 re-runs"


def test_long_lists_show_their_first_few_and_count_the_rest() -> None:
    lines = [f"line {n}" for n in range(50)]
    assert bounded(lines) == [*lines[:5], "… and 45 more"]
    assert bounded(lines[:6]) == lines[:6]  # never "and 1 more": the line itself fits
    assert bounded(lines[:7], indent="  ")[-1] == "  … and 2 more"
    assert shorten("x" * 10, limit=4) == "xxxx… (6 more characters)"


def _lost(count: int) -> Verdict:
    anomalies = tuple(
        Anomaly("lost", f"input #{n} was never output", (f"r-{n}",)) for n in range(count)
    )
    return Verdict("no_loss()", anomalies, "50 inputs, 0 outputs, 0 dead-lettered")


def test_a_verdict_lists_a_few_anomalies_and_counts_the_rest() -> None:
    text = str(_lost(50))
    assert text.splitlines()[0] == (
        "no_loss(): 50 anomalies (50 inputs, 0 outputs, 0 dead-lettered)"
    )
    assert text.count("- lost:") == 5
    assert text.splitlines()[-1] == "  … and 45 more"
    assert str(_lost(1)).startswith("no_loss(): 1 anomaly ")


ENDPOINTS = Endpoints(kind="kafka", input="in-1", output="out-1", dead_letter="dlq-1",
                      bootstrap_servers="localhost:9092")  # fmt: skip


def _result(schedule: Sequence[Step], verdicts: tuple[Verdict, ...]) -> RunResult:
    return RunResult(
        flow=Flow(sut=service, broker="kafka", name="orders", probes=False),
        endpoints=ENDPOINTS,
        messages=tuple(s.message for s in schedule if isinstance(s, Publish)),
        schedule=tuple(schedule),
        history=Script().publish("r-1").build(),
        verdicts=verdicts,
        ended_by="quiet",
    )


def test_a_failed_run_report_is_bounded_as_pytest_shows_it() -> None:
    # flow_check fails a test with this text.
    text = _result((Publish(Message(value=b"1")),), (_lost(50),)).report()
    assert text.splitlines()[0] == (
        "flow orders on kafka: CHECKS FAILED (1 message, run ended: quiet)"
    )
    assert text.count("- lost:") == 5
    assert "  … and 45 more" in text


def test_the_fuzz_summary_counts_in_words_bounds_its_lists_and_says_how_to_rerun() -> None:
    one = _result((Publish(Message(value=b"1")), Crash(0)), (_lost(50),))
    report = FuzzReport(
        flow=one.flow, examples=1, elapsed=2.0, seed=123456, minimal=one, first_failure_at=1,
        reruns=[True], flow_reference="shop:orders",
    )  # fmt: skip
    text = fuzz_summary(report, rerun="--seed 123456")
    assert text.startswith("fuzzed orders on kafka: 1 example in 2.0 s (0.5/s)\n")
    assert "seed 123456: re-run with --seed 123456" in text
    assert "minimal schedule has 1 message and 1 fault:" in text
    assert "reproduced in 1 of 1 re-run" in text
    assert "… and 45 more" in text
    assert "@seed" not in text
    assert "hypothesis-seed" not in text
    # The JSON keeps every anomaly, and the seed.
    data = report.to_json()
    assert data["seed"] == 123456
    assert len(data["violations"][0]["anomalies"]) == 50
    steps = tuple(Publish(Message(value=b"%d" % n)) for n in range(30))
    minimal = _result(steps, (_lost(1),))
    long = fuzz_summary(
        FuzzReport(flow=one.flow, examples=30, elapsed=1.0, seed=1, minimal=minimal)
    )
    assert "minimal schedule has 30 messages and 0 faults:" in long
    assert "  … and 25 more" in long
    assert "seed 1: re-run with fuzz(..., seed=1)" in long  # the library's terms by default


# --- seeds: an unseeded campaign chooses one, and passing it back repeats the search ----


def fails_with_three(schedule: Sequence[Step]) -> bool:
    return sum(isinstance(step, Publish) for step in schedule) >= 3


def passes(schedule: Sequence[Step]) -> bool:
    return False


def campaign(
    *,
    seed: int | None,
    database: Path | None,
    fails: object = passes,
    replay_only: bool = False,
    max_examples: int = 12,
    real_reruns: bool = False,
    shard: Shard | None = None,
) -> tuple[FuzzReport, list[Example]]:
    """A real campaign (Hypothesis, seeds, database) whose examples are judged by ``fails``."""
    seen: list[Example] = []
    flow = Flow(sut=service, broker="kafka", name="seeds", probes=False)

    def run_example(self: Campaign, schedule: Sequence[Step]) -> RunResult:
        self.examples += 1
        failed = fails(schedule)  # type: ignore[operator]
        verdict = _lost(1) if failed else Verdict("no_loss()")
        return _result(schedule, (verdict,))

    async def go() -> FuzzReport:
        made = Campaign(
            flow, None, None,  # type: ignore[arg-type]  # no adapter, no isolation: not used
            BrokerInfo(kind="kafka", url="127.0.0.1:1", provider="url"),
            max_examples=max_examples, seed=seed, faults=(), producers=1, shrink_seconds=5.0,
            shrink_tries=1, reruns=1, replay_only=replay_only, database=database,
            report_dir=None, progress=seen.append, flow_reference=None, workers=1, shard=shard,
        )  # fmt: skip
        made._run_example = run_example.__get__(made)  # type: ignore[method-assign]
        if not real_reruns:
            made._rerun = rerun.__get__(made)  # type: ignore[method-assign]
        return await made.run()

    async def rerun(self: Campaign, minimal: RunResult, failed_again: list[bool]) -> None:
        failed_again.append(True)

    return asyncio.run(go()), seen


def test_an_unseeded_campaign_chooses_a_seed_that_repeats_its_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("message_flow_harness._fuzz.choose_seed", lambda: 424242)
    unseeded, first = campaign(seed=None, database=tmp_path / "db")
    assert unseeded.seed == 424242
    seeded, again = campaign(seed=424242, database=None)
    assert [e.schedule for e in again] == [e.schedule for e in first]
    assert seeded.seed == 424242
    _, different = campaign(seed=1, database=None)
    assert [e.schedule for e in different] != [e.schedule for e in first]


def test_shards_search_with_seeds_numbered_apart() -> None:
    def schedules(examples: list[Example]) -> list[tuple[Step, ...]]:
        return [example.schedule for example in examples]

    _, first = campaign(seed=5, database=None, max_examples=6, shard=Shard(1, 2))
    _, second = campaign(seed=5, database=None, max_examples=6, shard=Shard(2, 2))
    assert schedules(first) == schedules(campaign(seed=5, database=None, max_examples=6)[1])
    assert schedules(second) == schedules(campaign(seed=6, database=None, max_examples=6)[1])
    assert schedules(second) != schedules(first)


def test_every_shard_replays_the_failures_another_saved_first(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    found, _ = campaign(
        seed=None, database=shared, fails=fails_with_three, max_examples=40, shard=Shard(1, 2)
    )
    assert not found.ok
    other, seen = campaign(
        seed=None, database=shared, fails=fails_with_three, max_examples=40, shard=Shard(2, 2)
    )
    assert not other.ok
    assert (seen[0].phase, seen[0].ok) == ("search", False)  # shard 1's failure came first


def test_chosen_seeds_are_short_and_vary() -> None:
    chosen = {choose_seed() for _ in range(20)}
    assert all(0 <= seed < SEEDS for seed in chosen)
    assert len(chosen) > 1


def test_unseeded_failures_are_saved_and_seeded_ones_are_not(tmp_path: Path) -> None:
    saved, unsaved = tmp_path / "unseeded", tmp_path / "seeded"
    found, _ = campaign(seed=None, database=saved, fails=fails_with_three, max_examples=40)
    assert not found.ok
    assert any(path.is_file() for path in saved.rglob("*"))
    replayed, seen = campaign(seed=None, database=saved, fails=fails_with_three, replay_only=True)
    assert not replayed.ok
    assert (seen[0].phase, seen[0].ok) == ("search", False)  # the saved failure came first
    also, _ = campaign(seed=7, database=unsaved, fails=fails_with_three, max_examples=40)
    assert not also.ok
    assert not any(path.is_file() for path in unsaved.rglob("*"))


def test_hypothesis_says_nothing_on_stdout_about_seeds(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run_flow(flow: Flow, schedule: Sequence[Step], **options: object) -> RunResult:
        return _result(schedule, (_lost(1),))

    monkeypatch.setattr("message_flow_harness._fuzz.run_flow", run_flow)
    found, seen = campaign(
        seed=None, database=tmp_path, fails=fails_with_three, max_examples=40, real_reruns=True
    )
    assert not found.ok
    out = capfd.readouterr().out
    assert "@seed" not in out
    assert "Falsifying" not in out
    # The re-runs are told as progress too.
    assert [e.phase for e in seen][-1:] == ["re-run"]
    assert found.reruns == [True]


# --- progress --------------------------------------------------------------------------


def _example(number: int, *, ok: bool = True, phase: str = "search") -> Example:
    return Example(number, (Publish(Message()), Crash(0)), ok, 0.012, phase)


def test_verbose_prints_a_line_per_example_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    progress = FuzzProgress(LiveBar(show=False), max_examples=10, verbose=True)
    progress(_example(1))
    progress(_example(2, ok=False))
    lines = capsys.readouterr().out.splitlines()
    assert lines == [example_line(_example(1)), example_line(_example(2, ok=False))]
    assert re.search(r"search  #1 +ok +1 message +1 fault +12 ms", lines[0])
    assert "FAIL" in lines[1]
    assert progress.failures == 1


def test_the_bar_shows_phase_count_rate_and_failures_on_a_terminal() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    with LiveBar(console=console) as bar:
        progress = FuzzProgress(bar, max_examples=10)
        for number in range(1, 4):
            progress(_example(number, ok=number != 3))
        progress(_example(4, ok=False, phase="shrink"))
        bar._progress.refresh()
        drawn = screen.getvalue()
    assert bar.shown
    assert "shrink" in drawn
    assert "2 failures" in drawn
    assert "1 shrink after 3 searched" in drawn
    assert "examples/s" in drawn


def test_no_bar_and_nothing_printed_when_not_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    screen = io.StringIO()
    with LiveBar(console=Console(file=screen)) as bar:
        progress = FuzzProgress(bar, max_examples=10)
        progress(_example(1, ok=False))
    assert not bar.shown
    assert screen.getvalue() == ""
    assert capsys.readouterr().out == ""


# --- bench --compare --------------------------------------------------------------------


def _bench_result(messages: int) -> BenchResult:
    from tests.unit.test_reproduction import FLOW

    measured = Round(messages=messages, completed=messages, seconds=1.0, publish_seconds=0.5,
                     latency=None, in_service=None)  # fmt: skip
    return BenchResult(flow=FLOW.label, broker="kafka", messages=messages, rate=None,
                       in_flight=None, payload_size=100, keys=10, warmup=100,
                       probes=FLOW.probes, rounds=(measured,))  # fmt: skip


@pytest.mark.usefixtures("no_broker")
def test_compare_refuses_other_settings_first_naming_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _bench_result(1000).write_json(tmp_path / "old.json")
    found = harness(capsys, "bench", FLOW_REF, "--messages", "500", "--keys", "3",
                    "--compare", str(old))  # fmt: skip
    assert found.code == 2
    assert found.out == ""
    assert found.err.startswith(
        f"harness bench: error: --compare {old} measured other settings than this run asks for"
    )
    assert f"  --messages: 1000 in {old}, 500 in this run\n" in found.err
    assert f"  --keys: 10 in {old}, 3 in this run\n" in found.err
    assert "or --force to compare anyway" in found.err


def test_compare_with_force_prints_the_difference_before_comparing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @contextmanager
    def provision(kind: str, *, url: str | None = None) -> Iterator[BrokerInfo]:
        yield BrokerInfo(kind="kafka", url="127.0.0.1:1", provider="url")

    async def bench(flow: Flow, **options: object) -> BenchResult:
        return _bench_result(int(options["messages"]))  # type: ignore[call-overload]

    monkeypatch.setattr(brokers, "provision", provision)
    monkeypatch.setattr(bench_module, "bench", bench)
    old = _bench_result(1000).write_json(tmp_path / "old.json")
    found = harness(capsys, "bench", FLOW_REF, "--messages", "500", "--compare", str(old),
                    "--force", "--quiet")  # fmt: skip
    assert found.code == 0
    assert found.out.startswith(
        f"warning: comparing runs of different settings (--force):\n"
        f"  --messages: 1000 in {old}, 500 in this run\n"
    )
    compared = found.out.index("compared with")
    assert found.out.index("note: different settings: --messages 1000 vs 500") > compared
    same = harness(capsys, "bench", FLOW_REF, "--messages", "1000", "--compare", str(old),
                   "--quiet")  # fmt: skip
    assert same.code == 0
    assert "different settings" not in same.out


def test_bench_result_json_round_trips_its_settings(tmp_path: Path) -> None:
    result = _bench_result(10)
    loaded = BenchResult.load(result.write_json(tmp_path / "r.json"))
    assert loaded.settings() == result.settings()
    assert json.loads((tmp_path / "r.json").read_text())["messages"] == 10


def test_compare_is_refused_before_a_bad_baseline_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_broker: None
) -> None:
    (tmp_path / "junk.json").write_text("{}")
    found = harness(capsys, "bench", FLOW_REF, "--compare", str(tmp_path / "junk.json"))
    assert found.code == 2
    assert "is not a bench result this version reads" in found.err


def test_bench_command_raises_for_callers_outside_the_cli(tmp_path: Path, no_broker: None) -> None:
    old = _bench_result(1000).write_json(tmp_path / "old.json")
    parser = argparse.ArgumentParser()
    bench_module.add_bench_arguments(parser)
    args = parser.parse_args([FLOW_REF, "--messages", "5", "--compare", str(old)])
    with pytest.raises(InvalidArgument, match="--messages: 1000 in"):
        bench_module.bench_command(load_flow(FLOW_REF), args)
