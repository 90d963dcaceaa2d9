"""Consumer timing on the real brokers: one small run per broker and mode, the command, the fixture.

Figures are not asserted (speed is for ``benchmarks/``): only that every
input is measured, and what the publishing mode guarantees.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, Flow
from message_flow_harness._bench.command import add_bench_arguments, bench_command
from message_flow_harness._bench.fixture import make_flow_bench
from message_flow_harness._bench.result import BenchResult
from message_flow_harness._bench.run import bench
from message_flow_harness._cli import load_flow
from message_flow_harness.zoo.kafka_services import kafka_correct
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_correct

KAFKA_FLOW = Flow(sut=kafka_correct, broker="kafka")
RABBITMQ_FLOW = Flow(sut=rabbitmq_correct, broker="rabbitmq")


def _every_input_measured(result: BenchResult, messages: int) -> None:
    for measured in result.rounds:
        assert measured.messages == messages
        assert measured.completed == messages, measured.ended_by
        assert measured.latency is not None
        assert measured.latency.count == messages
        assert measured.series
        assert measured.series[-1].lag == 0
        assert measured.throughput > 0


@pytest.mark.asyncio
@pytest.mark.kafka
async def test_bench_measures_every_input_on_kafka(kafka_broker: BrokerInfo) -> None:
    result = await bench(KAFKA_FLOW, messages=50, warmup=10, broker=kafka_broker)
    _every_input_measured(result, 50)
    assert result.mode == "fastest"
    # The client probes see the service's consumer and producer.
    assert result.in_service is not None
    assert result.in_service.count == 50
    assert BenchResult.from_json(result.to_json()) == result


@pytest.mark.asyncio
@pytest.mark.kafka
async def test_round_trip_keeps_one_input_in_flight(kafka_broker: BrokerInfo) -> None:
    result = await bench(KAFKA_FLOW, messages=10, warmup=2, in_flight=1, broker=kafka_broker)
    _every_input_measured(result, 10)
    assert max(sample.lag for sample in result.rounds[0].series) <= 1


@pytest.mark.asyncio
@pytest.mark.rabbitmq
async def test_fixed_rate_rounds_on_rabbitmq(rabbitmq_broker: BrokerInfo) -> None:
    result = await bench(
        RABBITMQ_FLOW, messages=40, rate=200, warmup=5, rounds=2, broker=rabbitmq_broker
    )
    assert len(result.rounds) == 2
    _every_input_measured(result, 40)
    # Open loop: input 40 is not due before 39/200 s, so the window cannot be shorter.
    assert all(measured.seconds >= 39 / 200 for measured in result.rounds)
    assert result.in_service is not None  # the aio-pika probes correlate too
    assert result.in_service.count == 80


@pytest.mark.asyncio
@pytest.mark.rabbitmq
async def test_flow_bench_fixture_runs_on_the_session_broker(
    request: pytest.FixtureRequest, rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    flow_bench = make_flow_bench(request)
    result = await flow_bench(RABBITMQ_FLOW, messages=20, warmup=5)
    _every_input_measured(result, 20)
    assert flow_bench.results == [result]
    assert BenchResult.load(tmp_path / "bench-rabbitmq_correct-1.json") == result


@pytest.mark.kafka
def test_bench_command_writes_json_and_svg_and_compares(
    kafka_broker: BrokerInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    first, picture = tmp_path / "first.json", tmp_path / "first.svg"
    common = ["tests.integration.test_bench_live:KAFKA_FLOW", "--messages", "30", "--warmup", "5"]
    common += ["--kafka-bootstrap", kafka_broker.url]
    written = parser.parse_args([*common, "--json", str(first), "--svg", str(picture)])
    assert bench_command(load_flow(written.flow), written) == 0
    assert BenchResult.load(first).messages == 30
    assert picture.read_text().startswith("<svg")
    compared = parser.parse_args([*common, "--compare", str(first)])
    assert bench_command(load_flow(compared.flow), compared) == 0
    printed = capsys.readouterr().out
    assert "bench kafka_correct on kafka: 30 messages x 1 round" in printed
    assert "no significant difference (only 1 round on one side" in printed
