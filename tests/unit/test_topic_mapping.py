"""A service's own topics (``Topology`` on Kafka): mapping, validation, and how checks judge them.

No broker: what a run creates and hands over, the errors that name the fix,
fan-out across output topics, order per topic, and inputs drawn by strategies.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from histories import Script
from hypothesis import find, given, settings

from message_flow_harness import (
    BrokerInfo,
    Endpoints,
    Flow,
    InvalidArgument,
    Message,
    Topic,
    Topology,
    checks,
    strategies,
)
from message_flow_harness._correlation import Correlator
from message_flow_harness._environment import check_templates, render
from message_flow_harness._history import History, Kind
from message_flow_harness._isolation import topology_endpoints, topology_specs
from message_flow_harness._runner import run_flow
from message_flow_harness._timeline import event_tip

FULFILMENT = Topology(
    input=[Topic("orders", partitions=3, config={"retention.ms": "3600000"}), "payments"],
    output=["shipments", "invoices"],
    dead_letter=Topic("fulfilment.dlq", config={"cleanup.policy": "delete"}),
)
KAFKA = BrokerInfo(kind="kafka", url="127.0.0.1:9092", provider="url")


@contextlib.asynccontextmanager
async def worker(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


def kafka_flow(**options: object) -> Flow:
    return Flow(sut=worker, broker="kafka", topology=FULFILMENT, **options)  # type: ignore[arg-type]


# --- what a run creates and hands over ---------------------------------------------------


def test_each_name_maps_to_a_topic_unique_to_the_run() -> None:
    endpoints = topology_endpoints(KAFKA, "1a2b", FULFILMENT)
    assert endpoints.names == {
        "fulfilment.dlq": "h-1a2b-fulfilment.dlq",
        "shipments": "h-1a2b-shipments",
        "invoices": "h-1a2b-invoices",
        "orders": "h-1a2b-orders",
        "payments": "h-1a2b-payments",
    }
    assert (endpoints.input, endpoints.output, endpoints.dead_letter) == (
        "h-1a2b-orders",
        "h-1a2b-shipments",
        "h-1a2b-fulfilment.dlq",
    )
    assert endpoints.group_id == "h-1a2b-group"
    assert "names={" in repr(endpoints)


def test_each_topic_is_created_with_its_own_partitions_and_configs() -> None:
    endpoints = topology_endpoints(KAFKA, "1a2b", FULFILMENT)
    specs = {spec.name: spec for spec in topology_specs(endpoints, FULFILMENT)}
    assert specs["h-1a2b-orders"].partitions == 3
    assert specs["h-1a2b-orders"].config == {"retention.ms": "3600000"}
    assert specs["h-1a2b-payments"].partitions == 1
    assert specs["h-1a2b-fulfilment.dlq"].config == {"cleanup.policy": "delete"}
    assert len(specs) == 5


def test_a_flow_knows_its_inputs_and_where_each_message_goes() -> None:
    flow = kafka_flow()
    endpoints = topology_endpoints(KAFKA, "1a2b", FULFILMENT)
    assert flow.inputs_of(endpoints) == [("h-1a2b-orders", 3), ("h-1a2b-payments", 1)]
    assert flow.input_of(endpoints, Message(b"{}")) == "h-1a2b-orders"
    assert flow.input_of(endpoints, Message(b"{}", to="payments")) == "h-1a2b-payments"
    with pytest.raises(InvalidArgument, match=r"names no input of this topology: its inputs"):
        flow.input_of(endpoints, Message(b"{}", to="shipments"))


def test_a_message_to_an_input_of_a_flow_with_one_is_refused_with_the_fix() -> None:
    flow = Flow(sut=worker, broker="kafka")
    endpoints = Endpoints(
        kind="kafka", input="i", output="o", dead_letter="d", bootstrap_servers="b"
    )
    with pytest.raises(InvalidArgument, match=r"it has one input; name several with Flow\(topo"):
        flow.input_of(endpoints, Message(b"{}", to="payments"))


def test_env_templates_name_the_runs_topics() -> None:
    endpoints = topology_endpoints(KAFKA, "1a2b", FULFILMENT)
    templates = check_templates(
        {"ORDERS_TOPIC": "{names[orders]}", "DLQ": "{names[fulfilment.dlq]}"}, where="env"
    )
    assert render(templates, endpoints) == {
        "ORDERS_TOPIC": "h-1a2b-orders",
        "DLQ": "h-1a2b-fulfilment.dlq",
    }


def test_env_templates_naming_a_topic_the_topology_lacks_are_refused_with_the_fix() -> None:
    with pytest.raises(InvalidArgument, match=r"which the topology does not name: use one of"):
        kafka_flow(env={"ORDERS_TOPIC": "{names[order]}"})
    with pytest.raises(InvalidArgument, match=r"\{names\[NAME\]\} for a destination"):
        check_templates({"X": "{name[orders]}"}, where="Flow(env=...)")
    endpoints = Endpoints(
        kind="kafka", input="i", output="o", dead_letter="d", bootstrap_servers="b"
    )
    with pytest.raises(InvalidArgument, match=r"this run names no 'orders': name it in the flow"):
        render({"ORDERS_TOPIC": "{names[orders]}"}, endpoints)


# --- what is refused, with the fix --------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"partitions": 0}, r"partitions=0\) is invalid: a topic needs at least one"),
        ({"partitions": True}, r"partitions=True\) is invalid"),
        ({"config": {"retention.ms": 60000}}, r'configs as str to str, e.g. \{"retention.ms"'),
    ],
)
def test_a_topic_is_checked_when_built(options: dict[str, object], fix: str) -> None:
    with pytest.raises(InvalidArgument, match=fix):
        Topic("orders", **options)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"give the topic's name as the service knows it"):
        Topic("")


def test_a_name_given_twice_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"names 'orders' more than once"):
        Topology(input=["orders", Topic("orders", partitions=2)], output="out", dead_letter="d")


def test_an_exchange_route_on_kafka_is_refused_with_the_list_to_write() -> None:
    topology = Topology(input="orders", output=("shipments", "invoices"), dead_letter="dlq")
    with pytest.raises(InvalidArgument, match=r"several in a list: output=\['shipments', 'inv"):
        Flow(sut=worker, broker="kafka", topology=topology)


def test_publish_is_rabbitmq_s_and_for_one_input() -> None:
    routed = Topology(input="orders", publish=("shop", "order.new"), output="o", dead_letter="d")
    with pytest.raises(InvalidArgument, match=r"invalid on Kafka: inputs are published to their"):
        Flow(sut=worker, broker="kafka", topology=routed)
    with pytest.raises(InvalidArgument, match=r"invalid with several inputs: each input queue"):
        Topology(input=["a", "b"], publish=("shop", "order.new"), output="o", dead_letter="d")


def test_a_kafka_topic_on_rabbitmq_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidArgument, match=r"a Kafka topic: on RabbitMQ name the queue"):
        Flow(sut=worker, broker="rabbitmq", topology=FULFILMENT)


def test_flow_partitions_give_way_to_each_topics_own() -> None:
    with pytest.raises(InvalidArgument, match=r"give each topic its own, Topic\('orders', part"):
        kafka_flow(partitions=3)


def test_a_message_names_its_input_with_a_str() -> None:
    with pytest.raises(InvalidArgument, match=r"name an input of the flow's topology"):
        Message(b"{}", to="")


# --- how the run records and the checks judge several outputs ------------------------------


def test_an_output_is_recorded_with_the_topic_it_came_out_of() -> None:
    correlator = Correlator()
    answer = Message(b"{}", headers={"x-harness-id": b"r-1"})
    assert correlator.of_output(answer, via="shipments") == (Kind.OUTPUT, "r-1", "shipments")
    kinds = Correlator(output_kinds="kind")
    typed = Message(b'{"kind": "receipt"}', headers={"x-harness-id": b"r-1"})
    assert kinds.of_output(typed, via="invoices").detail == "invoices/receipt"
    assert kinds.of_output(typed).detail == "receipt"


def test_one_answer_on_each_output_topic_is_fan_out_and_two_on_one_a_duplicate() -> None:
    fan_out = Script().publish("a").output("a", on="shipments").output("a", on="invoices").build()
    assert checks.no_duplicates()(fan_out).ok
    twice = Script().publish("a").output("a", on="invoices").output("a", on="invoices").build()
    [anomaly] = checks.no_duplicates()(twice).anomalies
    assert "came out 2 times as 'invoices'" in anomaly.text


def test_order_is_judged_per_output_topic() -> None:
    # Shipments keep publish order; invoices answer #2 first: out of order on invoices only.
    history = (
        Script()
        .publish("a", key=b"k", at=0)
        .publish("b", key=b"k", at=1)
        .output("a", on="shipments")
        .output("b", on="invoices")
        .output("b", on="shipments")
        .output("a", on="invoices")
        .build()
    )
    [anomaly] = checks.per_key_order()(history).anomalies
    assert anomaly.text.startswith("output invoices, key 'k': output of #2")


def test_order_is_judged_per_input_topic() -> None:
    history = (
        Script()
        .publish("a", key=b"k", destination="h-1-orders", at=0)
        .publish("b", key=b"k", destination="h-1-orders", at=1)
        .publish("c", key=b"k", destination="h-1-payments", at=2)
        .output("c")
        .output("b")
        .output("a")
        .build()
    )
    [anomaly] = checks.per_key_order()(history).anomalies
    assert anomaly.text.startswith("input h-1-orders, key 'k': output of #2 (id b)")


def test_the_timeline_names_each_messages_topic() -> None:
    history = Script().publish("a", destination="h-1-payments").build()
    [published] = history.of(Kind.PUBLISHED)
    assert "on h-1-payments" in event_tip(published, history)


def test_a_message_keeps_its_input_through_json_and_repr() -> None:
    message = Message(b"{}", key=b"k", to="payments")
    assert repr(message) == "Message(value=b'{}', key=b'k', headers={}, to='payments')"
    assert eval(repr(message)) == message
    assert repr(Message(b"x")) == "Message(value=b'x', key=None, headers={})"
    assert message.with_headers(h=b"1").to == "payments"
    history = History()
    history.record(Kind.PUBLISHED, "harness", harness_id="r-1", message=message)
    [event] = History.from_json(history.to_json()).events
    assert event.message == message


# --- strategies -------------------------------------------------------------------------


@settings(max_examples=50, database=None)
@given(drawn=strategies.messages(inputs=["orders", "payments"], min_size=5))
def test_drawn_messages_each_go_to_one_of_the_inputs(drawn: list[Message]) -> None:
    assert {m.to for m in drawn} <= {"orders", "payments"}


def test_a_drawn_sequence_mixes_the_inputs_and_shrinks_to_the_first() -> None:
    both = find(
        strategies.messages(inputs=["orders", "payments"]),
        lambda drawn: {m.to for m in drawn} == {"orders", "payments"},
        settings=settings(database=None),
    )
    assert [m.to for m in both] == ["orders", "payments"] or [m.to for m in both] == [
        "payments",
        "orders",
    ]
    shrunk = find(
        strategies.messages(inputs=["orders", "payments"]),
        lambda drawn: len(drawn) >= 2,
        settings=settings(database=None),
    )
    assert [m.to for m in shrunk] == ["orders", "orders"]


def test_inputs_of_a_strategy_are_names() -> None:
    with pytest.raises(InvalidArgument, match=r"give the names of the flow's inputs, e.g. inp"):
        strategies.messages(inputs="orders")
    unnamed = find(strategies.messages(), lambda drawn: True, settings=settings(database=None))
    assert all(m.to is None for m in unnamed)


@pytest.mark.asyncio
async def test_a_schedule_naming_an_input_the_flow_lacks_fails_before_anything_starts() -> None:
    # No broker answers at this address: the error comes before any connection is tried.
    with pytest.raises(InvalidArgument, match=r"names no input of this topology: its inputs"):
        await run_flow(kafka_flow(), [Message(b"{}", to="refunds")], broker=KAFKA)
