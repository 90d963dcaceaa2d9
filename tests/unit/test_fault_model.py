"""A flow's fault model: what it allows, what a campaign draws within it, what a run refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import given, settings

from message_flow_harness import BrokerInfo, Endpoints, Faults, Flow, InvalidArgument, Message
from message_flow_harness import strategies as hs
from message_flow_harness._fault_model import (
    campaign_kinds,
    check_suffered,
    instances_at_once,
    kind_of,
    within_model,
)
from message_flow_harness._runner import run_flow
from message_flow_harness.schedule import (
    BrokerRestart,
    Crash,
    Cut,
    Join,
    Latency,
    Leave,
    Pause,
    Publish,
    Restart,
    Step,
)


@asynccontextmanager
async def service(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


SINGLE = Faults(crash=True, network=True)  # one instance: no competing consumer


def _flow(faults: Faults | None) -> Flow:
    return Flow(sut=service, broker="rabbitmq", faults=faults, name="orders")


def _drawn(strategy: object, examples: int = 300) -> list[list[Step]]:
    seen: list[list[Step]] = []

    @given(strategy)  # type: ignore[call-overload]
    @settings(max_examples=examples, deadline=None, database=None)
    def collect(schedule: list[Step]) -> None:
        seen.append(schedule)

    collect()
    return seen


def _kinds(schedules: list[list[Step]]) -> set[str]:
    return {type(step).__name__ for schedule in schedules for step in schedule}


@pytest.mark.parametrize(
    ("model", "kinds"),
    [
        (Faults(), ()),
        (Faults(crash=True), ("crash",)),
        (SINGLE, ("crash", "latency", "cut")),
        (Faults(instances=3, cut=True), ("join", "cut")),
        (Faults(crash=True, broker_restart=True), ("crash", "broker_restart")),
        (Faults.of("cut", "join"), ("join", "cut")),
    ],
)
def test_a_model_allows_the_kinds_its_deployment_suffers(
    model: Faults, kinds: tuple[str, ...]
) -> None:
    assert model.kinds == kinds


def test_a_model_reads_back_as_it_is_written() -> None:
    assert repr(SINGLE) == "Faults(crash=True, network=True)"
    assert repr(Faults.of("crash", "join", "latency")) == (
        "Faults(crash=True, instances=2, latency=True)"
    )
    assert repr(Faults()) == "Faults()"
    assert Faults.of("crash", "latency", "cut") == SINGLE


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (lambda: Faults(instances=0), "Faults(instances=0) is invalid"),
        (lambda: Faults(crash="yes"), "Faults(crash='yes') is invalid: pass True or False"),
        (lambda: Faults.of("meteor"), "Faults.of('meteor') is invalid"),
        (lambda: _flow({"crash"}), "for kinds: faults=Faults.of('crash')"),  # type: ignore[arg-type]
    ],
)
def test_bad_models_are_refused_with_the_fix(make: object, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        make()  # type: ignore[operator]


def test_a_campaign_draws_the_model_by_default_and_narrows_it_when_asked() -> None:
    assert campaign_kinds(SINGLE, None) == ("crash", "latency", "cut")
    assert campaign_kinds(SINGLE, True) == ("crash", "latency", "cut")
    assert campaign_kinds(SINGLE, ["cut"]) == ("cut",)
    assert campaign_kinds(SINGLE, False) == ()


def test_a_flow_without_a_model_keeps_what_the_campaign_asks() -> None:
    assert campaign_kinds(None, None) == ()  # fuzz: no faults unless asked
    assert campaign_kinds(None, True) == ("crash", "join", "latency", "cut")
    assert campaign_kinds(None, ["broker_restart"]) == ("broker_restart",)


def test_asking_for_a_kind_the_model_rules_out_names_the_option() -> None:
    with pytest.raises(InvalidArgument) as raised:
        campaign_kinds(SINGLE, ["crash", "join", "broker_restart"], flow="flow orders")
    text = str(raised.value)
    assert "flow orders declares faults=Faults(crash=True, network=True)" in text
    assert "rules out join, broker_restart" in text
    assert "set instances=2, broker_restart=True in the flow's Faults(...)" in text


def test_schedules_of_a_single_instance_flow_never_draw_join() -> None:
    drawn = _drawn(hs.schedules(flow=_flow(SINGLE)))
    assert not _kinds(drawn) & {"Join", "Leave", "BrokerRestart"}
    assert {"Crash", "Latency", "Cut"} <= _kinds(drawn)


def test_schedules_run_no_more_instances_than_the_model() -> None:
    two = _drawn(hs.schedules(faults=Faults(instances=2), max_faults=3))
    assert max(map(instances_at_once, two)) == 2
    assert all(within_model(Faults(instances=2), schedule) for schedule in two)
    three = _drawn(hs.schedules(faults=Faults(instances=3), max_faults=3))
    assert max(map(instances_at_once, three)) == 3


def test_a_schedule_shrunk_past_what_the_deployment_suffers_is_outside_its_model() -> None:
    """Deleting the Leave between two joins runs three instances of a two-instance
    deployment: shrinking never tries it (a deployment fact, not a finding)."""
    publish = Publish(Message(b"x"))
    drawn = [publish, Join(), Leave(), Join(), publish]
    shrunk = [publish, Join(), Join(), publish]
    assert (instances_at_once(drawn), instances_at_once(shrunk)) == (2, 3)
    assert within_model(Faults(instances=2), drawn)
    assert not within_model(Faults(instances=2), shrunk)
    assert within_model(Faults(instances=3), shrunk)
    assert not within_model(SINGLE, [publish, Crash(0), Cut(0), Join()])  # a kind ruled out
    assert within_model(None, shrunk)  # no model: anything goes
    assert instances_at_once([Leave(), Join()]) == 2  # a Leave with no extra instance stops none


def test_schedules_without_a_flow_or_model_draw_every_kind_as_before() -> None:
    assert {"Crash", "Join", "Latency", "Cut"} <= _kinds(_drawn(hs.schedules()))


def test_a_step_the_model_rules_out_is_refused_before_it_runs() -> None:
    for step in (Join(), Leave(), BrokerRestart()):
        with pytest.raises(InvalidArgument, match="cannot run: flow orders declares"):
            check_suffered(SINGLE, step, flow="flow orders")
    for allowed in (Crash(0), Restart(0), Latency(0.05), Cut(0), Pause(0.1)):
        check_suffered(SINGLE, allowed, flow="flow orders")
    check_suffered(None, Join(), flow="flow orders")  # no model: anything goes


def test_run_flow_refuses_a_ruled_out_fault_before_touching_the_broker() -> None:
    nowhere = BrokerInfo(kind="rabbitmq", url="amqp://guest:guest@127.0.0.1:1/", provider="url")
    schedule = [Publish(Message(b"x")), Join()]
    with pytest.raises(InvalidArgument, match=r"Join\(\) cannot run"):
        asyncio.run(run_flow(_flow(SINGLE), schedule, broker=nowhere))


def test_each_fault_step_has_its_kind_and_a_publish_has_none() -> None:
    from message_flow_harness.schedule import Crash, Cut, Join, Latency, Leave, Publish, Restart

    steps = [Crash(0), Restart(0), Join(), Leave(), Latency(0.1), Cut(0)]
    assert [kind_of(step) for step in steps] == [
        "crash", "crash", "join", "join", "latency", "cut"
    ]  # fmt: skip
    assert kind_of(Publish(Message(key=b"k", value=b"v"))) is None
