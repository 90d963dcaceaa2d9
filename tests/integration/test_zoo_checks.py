"""Each check catches the defect it names, on the real broker, and passes the correct service.

The services are the zoo's (harness/zoo): ordinary aiokafka / aio-pika programs.
Runs go through ``flow_check``, the plugin's fixture users call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from message_flow_harness import Flow, Kind, Message, checks
from message_flow_harness._message import BrokerKind
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.strategies import POISON
from message_flow_harness.zoo.kafka_services import KAFKA_SERVICES
from message_flow_harness.zoo.rabbitmq_services import RABBITMQ_SERVICES

pytestmark = pytest.mark.asyncio

SERVICES = {**KAFKA_SERVICES, **RABBITMQ_SERVICES}


def is_poison(message: Message) -> bool:
    return message.value.startswith(POISON)


ALL_CHECKS = (
    checks.no_loss(),
    checks.no_duplicates(),
    checks.no_unexpected(),
    checks.per_key_order(),
    checks.per_partition_order(),
    checks.dead_lettered(when=is_poison),
    checks.max_deliveries(3),
    checks.within(5),
)

# 30 inputs over 3 keys with one poison message in the middle.
INPUTS = [Message(key=b"abc"[i % 3 : i % 3 + 1], value=str(i).encode()) for i in range(30)]
INPUTS.insert(15, Message(key=b"a", value=POISON))


def flow_for(service: str, broker: BrokerKind, *extra: checks.Check) -> Flow:
    return Flow(
        sut=SERVICES[service],
        broker=broker,
        checks=extra or ALL_CHECKS,
        quiet=1.5,
        name=service,
    )


def by_broker(kafka: str, rabbitmq: str) -> list[object]:
    return [
        pytest.param("kafka", kafka, marks=pytest.mark.kafka, id="kafka"),
        pytest.param("rabbitmq", rabbitmq, marks=pytest.mark.rabbitmq, id="rabbitmq"),
    ]


@pytest.mark.parametrize(("broker", "service"), by_broker("kafka_correct", "rabbitmq_correct"))
async def test_correct_service_passes_every_check(
    flow_check: FlowCheck, broker: BrokerKind, service: str
) -> None:
    result = await flow_check(flow_for(service, broker), INPUTS)
    assert result.ended_by == "every input accounted for"
    assert len(result.history.of(Kind.OUTPUT)) == len(INPUTS) - 1
    assert len(result.history.of(Kind.DEAD_LETTERED)) == 1
    assert result.history.of(Kind.DELIVERED), "the deliveries were recorded"
    probed = [e for e in result.history if e.source == "probe"]
    assert probed, "the client-side probes saw the service"
    inputs = result.history.inputs()
    assert {e.harness_id for e in probed if e.harness_id} <= set(inputs)


async def _anomalies(
    flow_check: FlowCheck, broker: BrokerKind, service: str, check: checks.Check
) -> list[checks.Anomaly]:
    result = await flow_check.run(flow_for(service, broker, check), INPUTS)
    assert not result.ok, f"{check} missed the defect of {service}:\n{result.report()}"
    return [a for v in result.failures() for a in v.anomalies]


@pytest.mark.parametrize(
    ("broker", "service"), by_broker("kafka_concurrent_batch", "rabbitmq_concurrent")
)
async def test_per_key_order_catches_concurrent_handling(
    flow_check: FlowCheck, broker: BrokerKind, service: str
) -> None:
    anomalies = await _anomalies(flow_check, broker, service, checks.per_key_order())
    assert {a.kind for a in anomalies} == {"nonmonotonic"}
    assert "came before" in anomalies[0].text


@pytest.mark.parametrize(
    ("broker", "service"), by_broker("kafka_swallows_errors", "rabbitmq_swallows_errors")
)
async def test_no_loss_catches_a_swallowed_error(
    flow_check: FlowCheck, broker: BrokerKind, service: str
) -> None:
    anomalies = await _anomalies(flow_check, broker, service, checks.no_loss())
    assert [a.kind for a in anomalies] == ["lost"]
    assert "input #16" in anomalies[0].text


@pytest.mark.parametrize(
    ("broker", "service"), by_broker("kafka_swallows_errors", "rabbitmq_swallows_errors")
)
async def test_dead_lettered_catches_a_poison_message_that_vanished(
    flow_check: FlowCheck, broker: BrokerKind, service: str
) -> None:
    anomalies = await _anomalies(flow_check, broker, service, checks.dead_lettered(is_poison))
    assert [a.kind for a in anomalies] == ["not-dead-lettered"]
    assert "vanished" in anomalies[0].text


@pytest.mark.parametrize(
    ("broker", "service"), by_broker("kafka_duplicate_output", "rabbitmq_duplicate_output")
)
async def test_no_duplicates_catches_double_publishing(
    flow_check: FlowCheck, broker: BrokerKind, service: str
) -> None:
    anomalies = await _anomalies(flow_check, broker, service, checks.no_duplicates())
    assert {a.kind for a in anomalies} == {"duplicate"}
    assert len(anomalies) >= 29


@pytest.mark.parametrize(("broker", "service"), by_broker("kafka_slow", "rabbitmq_slow"))
async def test_within_catches_a_slow_consumer(
    flow_check: FlowCheck, broker: BrokerKind, service: str
) -> None:
    anomalies = await _anomalies(flow_check, broker, service, checks.within(0.1))
    assert anomalies
    assert {a.kind for a in anomalies} == {"late"}


@pytest.mark.rabbitmq
async def test_max_deliveries_catches_a_requeue_storm(flow_check: FlowCheck) -> None:
    anomalies = await _anomalies(
        flow_check, "rabbitmq", "rabbitmq_requeue_forever", checks.max_deliveries(5)
    )
    assert [a.kind for a in anomalies] == ["max-deliveries"]
    assert "input #16" in anomalies[0].text


@pytest.mark.parametrize(
    ("broker", "service"),
    by_broker("kafka_commit_before_process", "rabbitmq_ack_before_process"),
)
async def test_early_commit_is_correct_without_faults(
    flow_check: FlowCheck, broker: BrokerKind, service: str
) -> None:
    # The defect needs a crash between commit and output: the fuzzer's job (see test_fuzz).
    await flow_check(flow_for(service, broker), INPUTS)


@pytest.mark.kafka
async def test_failure_message_shows_counterexample_and_history(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    # The test runs in a subprocess: the environment reaches it, sys.path (syspathinsert) not.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[2]))
    pytester.makepyfile(
        """
        import pytest
        from message_flow_harness import Flow, Message, checks
        from message_flow_harness.zoo.kafka_services import kafka_concurrent_batch

        @pytest.mark.asyncio
        async def test_orders(flow_check):
            flow = Flow(sut=kafka_concurrent_batch, broker="kafka",
                        checks=[checks.per_key_order()])
            await flow_check(flow, [Message(key=b"k", value=str(i).encode()) for i in range(30)])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*CHECKS FAILED*",
            "*nonmonotonic: key 'k': output of #* came before #*",
            "*full history: *.json",
            "*report: *.html",
        ]
    )
    # On CI pytest's short summary repeats the whole message, so the line can appear twice.
    [named] = {line for line in result.outlines if line.startswith("report: ")}
    page = await asyncio.to_thread(Path(named.removeprefix("report: ")).read_text)
    assert "<title>kafka_concurrent_batch: FAIL - " in page
    assert "async def test_orders(flow_check):" in page  # the test itself is the reproduction
