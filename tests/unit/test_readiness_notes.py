"""Flow(ready=..., first_deploy=...) is checked early; lost inputs come with their likely cause."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from message_flow_harness import Endpoints, Flow, InvalidArgument
from message_flow_harness._causes import errors_logged, with_causes
from message_flow_harness._checks import no_loss
from message_flow_harness._history import History, Kind, LogEntry
from message_flow_harness._readiness import consumed_nothing, skipped_on_first_deploy

KAFKA = Endpoints(
    kind="kafka",
    input="h-1-in",
    output="h-1-out",
    dead_letter="h-1-dlq",
    bootstrap_servers="127.0.0.1:9092",
    group_id="h-1-group",
)
RABBIT = Endpoints(
    kind="rabbitmq",
    input="h-1-in",
    output="h-1-out",
    dead_letter="h-1-dlq",
    amqp_url="amqp://guest:guest@127.0.0.1:5672/",
)


@contextlib.asynccontextmanager
async def _idle(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


@pytest.mark.parametrize("ready", [3, "yes", True])
def test_ready_is_none_false_or_a_check(ready: object) -> None:
    with pytest.raises(InvalidArgument, match=r"ready=.* is invalid: pass None"):
        Flow(sut=_idle, broker="kafka", ready=ready)  # type: ignore[arg-type]


def test_a_first_deploy_has_no_meaning_without_committed_positions() -> None:
    with pytest.raises(InvalidArgument, match="first_deploy=True is invalid for RabbitMQ"):
        Flow(sut=_idle, broker="rabbitmq", first_deploy=True)
    with pytest.raises(InvalidArgument, match="first_deploy='yes' is invalid"):
        Flow(sut=_idle, broker="kafka", first_deploy="yes")  # type: ignore[arg-type]


def _published(history: History, count: int) -> None:
    for n in range(count):
        history.record(
            Kind.PUBLISHED,
            "harness",
            harness_id=f"r-{n}",
            destination="h-1-in",
            partition=0,
            offset=n,
        )


def test_a_run_that_consumed_nothing_says_so_on_its_losses() -> None:
    history = History()
    _published(history, 3)
    flow = Flow(sut=_idle, broker="kafka")
    [verdict] = with_causes((no_loss()(history),), flow, KAFKA, history)
    [note] = verdict.notes
    assert note == (
        "the service consumed nothing: it may not subscribe to 'h-1-in' (endpoints.input),"
        " or start at the end of the topic (auto_offset_reset='latest')"
    )
    assert f"  note: {note}" in str(verdict)
    assert history.of(Kind.NOTE)[-1].detail == note


def test_a_first_deploy_that_consumed_nothing_names_the_offset_reset() -> None:
    history = History()
    _published(history, 1)
    note = consumed_nothing(Flow(sut=_idle, broker="kafka", first_deploy=True), KAFKA, history)
    assert note is not None
    assert note.endswith(
        "with no committed offsets (Flow(first_deploy=True)) a consumer with"
        " auto_offset_reset='latest' starts at the end of the partition, after the inputs"
        " published before it got its assignment"
    )


def test_a_delivery_or_an_output_is_consuming() -> None:
    flow = Flow(sut=_idle, broker="rabbitmq")
    for kind in (Kind.DELIVERED, Kind.OUTPUT, Kind.DEAD_LETTERED):
        history = History()
        _published(history, 2)
        history.record(kind, "tap", harness_id="r-0")
        assert consumed_nothing(flow, RABBIT, history) is None


def test_without_probes_kafka_cannot_tell_consuming_from_silence() -> None:
    history = History()
    _published(history, 2)
    assert consumed_nothing(Flow(sut=_idle, broker="kafka", probes=False), KAFKA, history) is None
    assert consumed_nothing(Flow(sut=_idle, broker="rabbitmq", probes=False), RABBIT, history)


def test_inputs_skipped_behind_later_deliveries_are_explained_on_a_first_deploy() -> None:
    history = History()
    _published(history, 4)
    for n in (2, 3):  # the consumer started at offset 2: #1 and #2 were behind it
        history.record(
            Kind.DELIVERED,
            "probe",
            harness_id=f"r-{n}",
            destination="h-1-in",
            partition=0,
            offset=n,
        )
        history.record(Kind.OUTPUT, "tap", harness_id=f"r-{n}")
    first_deploy = Flow(sut=_idle, broker="kafka", first_deploy=True)
    note = skipped_on_first_deploy(first_deploy, KAFKA, history)
    assert note is not None
    assert note.startswith(
        "2 lost inputs (#1, #2) never reached the service while later records of their"
        " partition did: with no committed offsets"
    )
    [verdict] = with_causes((no_loss()(history),), first_deploy, KAFKA, history)
    assert verdict.notes == (note,)
    # With committed offsets the consumer starts at the first input: no such cause.
    assert skipped_on_first_deploy(Flow(sut=_idle, broker="kafka"), KAFKA, history) is None


def test_a_verdict_without_losses_gets_no_note() -> None:
    history = History()
    _published(history, 1)
    flow = Flow(sut=_idle, broker="kafka")
    passing = no_loss()(History())
    assert with_causes((passing,), flow, KAFKA, history) == (passing,)


def test_a_service_whose_clients_the_probes_never_saw_gets_no_guess_on_kafka() -> None:
    """A service in its own process: its deliveries are out of sight, so silence proves nothing."""
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="r-1", destination="h-1-in")
    flow = Flow(sut=_idle, broker="kafka")
    assert consumed_nothing(flow, KAFKA, history, probed=False) is None
    assert consumed_nothing(flow, KAFKA, history, probed=True) is not None
    # RabbitMQ's firehose reports deliveries itself.
    assert consumed_nothing(Flow(sut=_idle, broker="rabbitmq"), RABBIT, history, probed=False)


def test_errors_the_service_logged_come_with_its_losses() -> None:
    history = History()
    _published(history, 2)
    history.record(Kind.DELIVERED, "probe", harness_id="r-0", destination="h-1-in")
    history.record(Kind.OUTPUT, "tap", harness_id="r-0", destination="h-1-out")
    for level, logger, message in (
        ("ERROR", "orders.worker", "cannot price order 7 [KeyError: 'price']"),
        ("ERROR", "orders.worker", "cannot price order 7 [KeyError: 'price']"),
        ("WARNING", "orders.worker", "slow database"),  # not an error
        ("ERROR", "aiokafka.consumer", "Unable to request metadata"),  # the client's, under faults
        ("ERROR", "asyncio", "Task exception was never retrieved"),  # the task deaths say it
    ):
        history.add_log(LogEntry(0, level, logger, message))
    flow = Flow(sut=_idle, broker="kafka")
    [verdict] = with_causes((no_loss()(history),), flow, KAFKA, history)
    assert verdict.notes == (
        "the service logged 2 errors while running:"
        " orders.worker: cannot price order 7 [KeyError: 'price'] (2 times)",
    )
    assert errors_logged(History()) is None
    passing = no_loss()(History())
    assert with_causes((passing,), flow, KAFKA, history) == (passing,)  # no loss, no note
