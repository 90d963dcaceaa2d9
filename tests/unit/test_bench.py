"""The pure parts of consumer timing: figures from histories, distributions, the comparison."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from message_flow_harness import Flow, InvalidArgument, Kind
from message_flow_harness._bench.analysis import analyze
from message_flow_harness._bench.command import add_bench_arguments
from message_flow_harness._bench.compare import compare
from message_flow_harness._bench.publishers import inputs
from message_flow_harness._bench.result import FORMAT, BenchResult, Round, Sample
from message_flow_harness._bench.run import bench
from message_flow_harness._bench.stats import Distribution, mann_whitney_p
from message_flow_harness.zoo.kafka_services import kafka_correct
from tests.unit.histories import Script

# --- distributions --------------------------------------------------------------------------


def test_distribution_reports_percentiles_in_microseconds() -> None:
    found = Distribution.of(range(1000, 0, -1))
    assert found is not None
    assert found.count == 1000
    assert (found.min_us, found.max_us) == (1, 1000)
    assert found.at(50.0) == 500
    assert found.at(99.0) == 990
    assert found.at(99.9) == 999
    assert found.at(75.0) == 750  # not stored: read from the histogram
    assert found.mean_us == pytest.approx(500.5, rel=1e-3)


def test_distribution_keeps_three_significant_figures_at_large_values() -> None:
    found = Distribution.of([12_345_678])
    assert found is not None
    assert found.max_us == 12_345_678  # exact
    assert found.at(50.0) == 12_345_678  # at most the max
    spread = Distribution.of([12_345_678, 12_345_678 * 2])
    assert spread is not None
    assert spread.at(50.0) == pytest.approx(12_345_678, rel=1e-3)


def test_no_values_is_no_distribution() -> None:
    assert Distribution.of([]) is None
    assert Distribution.merge([None, None]) is None


def test_negative_durations_count_as_zero() -> None:
    found = Distribution.of([-5, 10])
    assert found is not None
    assert found.min_us == 0


def test_merged_distributions_hold_every_value() -> None:
    low, high = Distribution.of(range(1, 501)), Distribution.of(range(501, 1001))
    merged = Distribution.merge([low, None, high])
    assert merged is not None
    assert merged.count == 1000
    assert merged.at(50.0) == 500
    assert merged.max_us == 1000


def test_distribution_survives_json() -> None:
    found = Distribution.of([3, 5, 8, 13])
    assert found is not None
    again = Distribution.from_json(json.loads(json.dumps(found.to_json())))
    assert again == found
    assert again.histogram().get_total_count() == 4


# --- figures from a history ---------------------------------------------------------------


def _history() -> Script:
    """Three inputs at 0, 1, 2 ms; outputs at 10, 12 ms and a dead letter at 20 ms."""
    return (
        Script()
        .publish("r-1", at=0)
        .publish("r-2", at=1)
        .publish("r-3", at=2)
        .deliver("r-1", source="probe", at=4)
        .event(Kind.SENT, source="probe", harness_id="r-1", at=7)
        .output("r-1", at=10)
        .output("r-2", at=12)
        .output("r-2", at=13)  # a duplicate: the first output counts
        .dead_letter("r-3", at=20)
    )


def test_analyze_measures_latency_from_publish_to_first_output() -> None:
    found = analyze(_history().build(), ["r-1", "r-2", "r-3"])
    assert found.latency is not None
    assert found.latency.count == 3
    assert (found.latency.min_us, found.latency.max_us) == (10_000, 18_000)
    assert found.completed == 3
    assert found.lost == 0
    assert found.seconds == pytest.approx(0.020)
    assert found.throughput == pytest.approx(150.0)
    assert found.publish_seconds == pytest.approx(0.002)


def test_analyze_measures_in_service_time_from_probe_events() -> None:
    found = analyze(_history().build(), ["r-1", "r-2", "r-3"])
    assert found.in_service is not None
    assert found.in_service.count == 1
    assert found.in_service.max_us == 3000


def test_tap_deliveries_are_not_in_service_time() -> None:
    history = Script().publish("a", at=0).deliver("a", source="tap", at=1)
    history.event(Kind.SENT, source="probe", harness_id="a", at=2).output("a", at=3)
    assert analyze(history.build(), ["a"]).in_service is None


def test_a_send_before_the_delivery_does_not_answer_it() -> None:
    history = Script().publish("a", at=0).event(Kind.SENT, source="probe", harness_id="a", at=1)
    history.deliver("a", source="probe", at=2)
    history.event(Kind.SENT, source="probe", harness_id="a", at=6).output("a", at=9)
    found = analyze(history.build(), ["a"]).in_service
    assert found is not None
    assert found.max_us == 4000


def test_analyze_counts_only_the_measured_inputs() -> None:
    history = _history().publish("warm", at=0).output("warm", at=100).build()
    found = analyze(history, ["r-1", "r-2"])
    assert found.messages == 2
    assert found.completed == 2
    assert found.seconds == pytest.approx(0.012)


def test_inputs_without_output_are_lost() -> None:
    history = Script().publish("a", at=0).publish("b", at=1).output("a", at=5).build()
    found = analyze(history, ["a", "b"])
    assert (found.completed, found.lost) == (1, 1)
    assert found.latency is not None
    assert found.latency.count == 1


def test_due_times_replace_publish_times() -> None:
    history = Script().publish("a", at=5).output("a", at=10).build()
    found = analyze(history, ["a"], due_ns={"a": 0})
    assert found.latency is not None
    assert found.latency.max_us == 10_000


def test_a_run_without_outputs_has_no_latency() -> None:
    found = analyze(Script().publish("a", at=0).build(), ["a"], ended_by="timeout")
    assert found.latency is None
    assert found.throughput == 0.0
    assert found.ended_by == "timeout"


def test_lag_counts_published_inputs_not_yet_accounted_for() -> None:
    history = Script()
    for number in range(10):
        history.publish(f"m-{number}", at=0)
    for number in range(10):
        history.output(f"m-{number}", at=10 + number * 10)  # the last at 100 ms
    found = analyze(history.build(), [f"m-{n}" for n in range(10)], points=10)
    # one output every 10 ms from 10 ms on, sampled every 10 ms
    assert [s.lag for s in found.series] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert found.series[-1].t_s == pytest.approx(0.1)
    assert [s.p50_us for s in found.series[:3]] == [10_000, 20_000, 30_000]


# --- comparing ------------------------------------------------------------------------------


def test_mann_whitney_exact_p_values() -> None:
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert mann_whitney_p([6, 7, 8, 9, 10], [1, 2, 3, 4, 5]) == pytest.approx(2 / 252)
    assert mann_whitney_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert mann_whitney_p([5, 5, 5], [5, 5, 5]) == 1.0
    assert mann_whitney_p([], [1.0]) == 1.0


def test_mann_whitney_normal_approximation_for_many_rounds() -> None:
    separated = mann_whitney_p(list(range(30)), list(range(100, 130)))
    assert separated < 1e-6
    interleaved = mann_whitney_p(list(range(0, 60, 2)), list(range(1, 61, 2)))
    assert interleaved > 0.5


def _result(
    throughputs: list[float], *, p50_ms: float = 10.0, rate: float | None = None
) -> BenchResult:
    rounds = []
    for throughput in throughputs:
        latency = Distribution.of([round(p50_ms * 1000)] * 10)
        rounds.append(
            Round(
                messages=1000,
                completed=1000,
                seconds=1000 / throughput,
                publish_seconds=0.1,
                latency=latency,
                in_service=None,
                series=(Sample(0.5, 3, 1000, 2000), Sample(1.0, 0, None, None)),
                ended_by="every input accounted for",
            )
        )
    return BenchResult(
        flow="f",
        broker="kafka",
        messages=1000,
        rate=rate,
        in_flight=None,
        payload_size=100,
        keys=10,
        warmup=100,
        probes=True,
        rounds=tuple(rounds),
    )


def test_compare_names_the_faster_when_rounds_do_not_overlap() -> None:
    slow, fast = _result([900, 950, 1000, 980, 920]), _result([1500, 1600, 1550, 1480, 1700])
    comparison = compare(slow, fast)
    assert comparison.faster == "b"
    assert comparison.throughput.significant
    assert comparison.throughput.ratio == pytest.approx(1550 / 950)
    assert "b is faster" in comparison.summary()
    assert compare(fast, slow).faster == "a"


def test_compare_says_within_the_noise_when_rounds_overlap() -> None:
    comparison = compare(_result([900, 1100, 1000, 950]), _result([1050, 980, 1020, 930]))
    assert comparison.faster is None
    assert "no significant difference" in comparison.summary()


def test_one_round_each_is_never_significant() -> None:
    comparison = compare(_result([100]), _result([10_000]))
    assert comparison.faster is None
    assert "rounds >= 4" in comparison.summary()


def test_at_a_fixed_rate_latency_decides() -> None:
    a = _result([500] * 4, p50_ms=10, rate=500)
    b = _result([500] * 4, p50_ms=20, rate=500)
    comparison = compare(a, b)
    assert comparison.deciding is comparison.latency_p50
    assert comparison.faster == "a"


def test_compare_notes_different_settings() -> None:
    a, b = _result([1.0]), _result([1.0], rate=50)
    assert compare(a, b).summary().startswith("note: different settings: --rate not given vs 50")


# --- the result ---------------------------------------------------------------------------------


def test_result_survives_json(tmp_path: Path) -> None:
    result = _result([1000, 1200])
    again = BenchResult.load(result.write_json(tmp_path / "r.json"))
    assert again == result
    assert json.loads((tmp_path / "r.json").read_text())["format"] == FORMAT


def test_result_from_something_else_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a bench result"):
        BenchResult.from_json({"format": "message-flow-harness/history/1"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidArgument, match="cannot read a bench result"):
        BenchResult.load(tmp_path / "bad.json")


def test_table_has_a_line_per_round_and_the_median() -> None:
    table = _result([1000, 3000, 2000]).table()
    assert "3 rounds, as fast as possible" in table
    assert "round 3" in table
    assert "median 2,000 msg/s, range 1,000..3,000" in table
    assert "10.0 ms" in table


def test_table_says_when_inputs_were_lost() -> None:
    result = _result([1000])
    lossy = Round(**{**vars(result.rounds[0]), "completed": 990})
    table = BenchResult(**{**vars(result), "rounds": (lossy,)}).table()
    assert "10 inputs got no output" in table


def test_svg_draws_latency_and_lag(tmp_path: Path) -> None:
    path = _result([1000, 1100]).write_svg(tmp_path / "r.svg")
    text = path.read_text()
    assert text.startswith("<svg")
    assert text.count("<polyline") == 6  # per round: p50, max, lag
    assert "round 2" in text


def test_svg_of_a_result_without_outputs() -> None:
    empty = Round(
        messages=1,
        completed=0,
        seconds=0.0,
        publish_seconds=0.0,
        latency=None,
        in_service=None,
    )
    result = BenchResult(**{**vars(_result([1.0])), "rounds": (empty,)})
    assert result.svg().startswith("<svg")
    assert result.latency is None


# --- inputs, options ----------------------------------------------------------------------------


def test_inputs_have_the_size_and_keys_asked_for() -> None:
    made = inputs(12, payload_size=20, keys=5, start=100)
    assert {len(m.value) for m in made} == {20}
    assert made[0].value.startswith(b"000000000100")
    assert len({m.key for m in made}) == 5
    assert inputs(2, payload_size=3, keys=0)[0] == inputs(2, payload_size=3, keys=0)[0]
    assert inputs(1, payload_size=0, keys=0)[0].key is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"messages": 0}, "messages=0"),
        ({"rounds": 0}, "rounds=0"),
        ({"warmup": -1}, "warmup=-1"),
        ({"rate": 0}, "rate=0"),
        ({"rate": math.inf}, "rate=inf"),
        ({"in_flight": 0}, "in_flight=0"),
        ({"rate": 10, "in_flight": 1}, "exclusive"),
        ({"payload_size": True}, "payload_size=True"),
    ],
)
async def test_bad_options_are_refused_before_any_broker(
    options: dict[str, object], complaint: str
) -> None:
    flow = Flow(sut=kafka_correct, broker="kafka")
    with pytest.raises(InvalidArgument, match=complaint):
        await bench(flow, **options)  # type: ignore[arg-type]


def test_command_line_options() -> None:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    args = parser.parse_args(["m:f", "--messages", "50", "--rate", "200", "--rounds", "4"])
    assert (args.flow, args.messages, args.rate, args.rounds) == ("m:f", 50, 200.0, 4)
    assert (args.in_flight, args.warmup, args.json, args.compare) == (None, 100, None, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["m:f", "--rate", "5", "--in-flight", "1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["m:f", "--messages", "0"])


# --- the flow_bench fixture, as users meet it -------------------------------------------------

_CONFTEST = """
import pytest

import message_flow_harness._bench.fixture as bench_module
from message_flow_harness import BrokerInfo
from message_flow_harness._bench.result import BenchResult, Round
from message_flow_harness._bench.stats import Distribution


async def fake_bench(flow, *, broker, messages=1000, **options):
    latency = Distribution.of([2000] * messages)
    measured = Round(messages=messages, completed=messages, seconds=messages / 500,
                     publish_seconds=0.01, latency=latency, in_service=None)
    return BenchResult(flow=flow.label, broker=broker.kind, messages=messages, rate=None,
                       in_flight=None, payload_size=100, keys=10, warmup=0, probes=True,
                       rounds=(measured,))


@pytest.fixture(autouse=True)
def _no_broker_traffic(monkeypatch):
    monkeypatch.setattr(bench_module, "bench", fake_bench)


@pytest.fixture(scope="session")
def kafka_broker():
    return BrokerInfo(kind="kafka", url="127.0.0.1:1", provider="url")


@pytest.fixture
def flow_bench(request):
    return bench_module.make_flow_bench(request)


def pytest_terminal_summary(terminalreporter):
    bench_module.terminal_summary(terminalreporter)
"""


def test_flow_bench_returns_the_result_and_lists_it_in_the_summary(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(
        """
        import contextlib
        import pytest
        from message_flow_harness import Flow

        def orders(endpoints):
            return contextlib.nullcontext()

        flow = Flow(sut=orders, broker="kafka")

        @pytest.mark.asyncio
        async def test_orders_speed(flow_bench, tmp_path):
            result = await flow_bench(flow, messages=50)
            assert result.throughput == 500
            assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".svg"]

        @pytest.mark.asyncio
        async def test_broker_is_the_sessions(flow_bench):
            with pytest.raises(ValueError, match="session's broker"):
                await flow_bench(flow, broker=None)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*flow_bench results*",
            "*test_orders_speed*",
            "*bench orders on kafka: 50 messages x 1 round*",
            "*round 1*500*2.0 ms*",
            "*json: *bench-orders-1.json*",
        ]
    )
