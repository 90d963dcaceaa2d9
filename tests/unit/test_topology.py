"""``Flow(topology=...)``: a topology is checked when it is built, with the fix in the error."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from message_flow_harness import Endpoints, Flow, InvalidArgument, Topology
from message_flow_harness.brokers.rabbitmq._urls import with_vhost

PAYMENTS = Topology(
    input="payments.requests",
    publish=("payments", "payment.requested"),
    output=("payments", "payment.completed"),
    dead_letter="payments.dead",
)


@contextlib.asynccontextmanager
async def worker(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


def test_the_endpoints_name_what_the_topology_names() -> None:
    assert PAYMENTS.names() == ("payments.requests", "payments", "payments.dead")


def test_exchange_routes_are_rabbitmq_s() -> None:
    with pytest.raises(InvalidArgument, match=r"is a RabbitMQ route; name a topic, or several in"):
        Flow(sut=worker, broker="kafka", topology=PAYMENTS)
    with pytest.raises(InvalidArgument, match=r"pass a Topology"):
        Flow(sut=worker, broker="rabbitmq", topology="payments")  # type: ignore[arg-type]


@pytest.mark.parametrize("route", [("payments",), ("", "#"), "", 3, ("payments", 7)])
def test_a_route_is_a_queue_or_an_exchange_with_a_key(route: object) -> None:
    with pytest.raises(InvalidArgument, match=r"\(exchange, binding_key\)"):
        Topology(input="q", output=route, dead_letter="dead")  # type: ignore[arg-type]


def test_inputs_go_to_a_queue_or_an_exchange_with_a_routing_key() -> None:
    with pytest.raises(InvalidArgument, match=r"\(exchange, routing_key\)"):
        Topology(input="q", output="out", dead_letter="dead", publish="payments")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"Topology\(input=''\) is invalid: pass a queue or"):
        Topology(input="", output="out", dead_letter="dead")


def test_a_run_url_points_into_its_vhost_percent_encoded() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/?heartbeat=5"
    assert with_vhost(url, "h-1a") == "amqp://guest:guest@127.0.0.1:5672/h-1a?heartbeat=5"
    assert with_vhost(url, "a/b c").startswith("amqp://guest:guest@127.0.0.1:5672/a%2Fb%20c")


def test_queue_options_shape_the_harness_queues_not_a_services_own() -> None:
    with pytest.raises(InvalidArgument, match=r"the service declares its own"):
        Flow(sut=worker, broker="rabbitmq", topology=PAYMENTS, queue_type="quorum")
