"""Correlation by business key, fan-out and side events: the Correlator and the checks on
the histories it records (no broker: what the runner's taps would record, by hand)."""

from __future__ import annotations

import json

import pytest

from message_flow_harness import (
    Flow,
    History,
    InvalidArgument,
    Kind,
    Message,
    by_json_field,
    by_key,
    checks,
)
from message_flow_harness._correlation import Correlator, Landing
from message_flow_harness._message import HARNESS_ID_HEADER


def order(order_id: object, **fields: object) -> Message:
    return Message(value=json.dumps({"id": order_id, **fields}).encode())


def answer(order_id: object, kind: str | None = None, **fields: object) -> Message:
    body: dict[str, object] = {"order": order_id, **fields}
    if kind is not None:
        body["type"] = kind
    return Message(value=json.dumps(body).encode())


class Run:
    """Records what a run's publisher and taps would, through one Correlator."""

    def __init__(self, correlator: Correlator) -> None:
        self.correlator = correlator
        self.history = History(started_ns=0)
        self.count = 0
        self.now_ns = 0  # each event 1 ms after the one before: deterministic texts

    def publish(self, message: Message) -> str:
        self.count += 1
        harness_id = f"r-{self.count}"
        stamped = message.with_headers(**{HARNESS_ID_HEADER: harness_id.encode()})
        detail = self.correlator.register(harness_id, stamped)
        self.history.record(
            Kind.PUBLISHED,
            "harness",
            at_ns=self.tick(),
            harness_id=harness_id,
            detail=detail,
            message=stamped,
        )
        return harness_id

    def tick(self) -> int:
        self.now_ns += 1_000_000
        return self.now_ns

    def land(self, landing: Landing, message: Message) -> Landing:
        self.history.record(
            landing.kind,
            "tap",
            at_ns=self.tick(),
            harness_id=landing.harness_id,
            detail=landing.detail,
            message=message,
        )
        return landing

    def output(self, message: Message) -> Landing:
        return self.land(self.correlator.of_output(message), message)

    def dead_letter(self, message: Message) -> Landing:
        return self.land(self.correlator.of_dead_letter(message), message)


def anomalies(check: checks.Check, history: History) -> list[str]:
    return [f"{a.kind}: {a.text}" for a in check(history).anomalies]


# --- business keys ------------------------------------------------------------------


def test_a_dead_letter_without_a_key_says_to_keep_the_headers() -> None:
    run = Run(Correlator(by_json_field("id", output="order", dead_letter="original.id")))
    run.publish(order(1))
    missed = run.dead_letter(Message(value=b'{"original": "not json"}'))
    assert missed.harness_id is None
    assert (missed.detail or "").endswith(
        "keep the input's headers on the dead letter, or point Flow(correlate=...)"
        " at where its key is (dead_letter=...)"
    )
    unknown = run.dead_letter(Message(value=b'{"original": {"id": 2}}'))
    assert "(field 'original.id' of the dead letter)" in (unknown.detail or "")


def test_a_function_is_named_in_explanations() -> None:
    def order_of(message: Message) -> str:
        return message.value.decode()

    run = Run(Correlator(by_key(input=lambda m: m.value.decode(), output=order_of)))
    run.publish(Message(value=b"1"))
    missed = run.output(Message(value=b"2"))
    assert "read business key '2' (order_of() of the output), which no input has;" in (
        missed.detail or ""
    )
    assert "(by_key(input=...) of input id r-1)" in (missed.detail or "")


def test_an_output_is_linked_to_its_input_by_a_json_field() -> None:
    run = Run(Correlator(by_json_field("id", output="order")))
    first, second = run.publish(order(17)), run.publish(order("A-9"))
    assert run.output(answer("A-9")).harness_id == second
    assert run.output(answer("17")).harness_id == first  # numbers and strings compare as text
    assert anomalies(checks.no_loss(), run.history) == []
    assert anomalies(checks.no_unexpected(), run.history) == []


def test_nested_fields_and_dead_letters_read_their_own_paths() -> None:
    correlation = by_json_field("order.id", output="ref.order", dead_letter="original.order.id")
    run = Run(Correlator(correlation))
    harness_id = run.publish(Message(value=b'{"order": {"id": 5}}'))
    assert run.output(Message(value=b'{"ref": {"order": 5}}')).harness_id == harness_id
    dead = Message(value=b'{"original": {"order": {"id": 5}}}')
    assert run.dead_letter(dead).harness_id == harness_id


def test_a_dead_letter_is_read_like_an_input_by_default() -> None:
    run = Run(Correlator(by_json_field("id", output="order")))
    harness_id = run.publish(order(3))
    assert run.dead_letter(order(3, error="bad total")).harness_id == harness_id


def test_the_harness_id_header_wins_over_the_business_key() -> None:
    run = Run(Correlator(by_json_field("id", output="order")))
    run.publish(order(1))
    second = run.publish(order(2))
    copied = answer(1).with_headers(**{HARNESS_ID_HEADER: second.encode()})
    assert run.output(copied).harness_id == second


def test_the_function_form_reads_keys_with_the_users_functions() -> None:
    def order_id(message: Message) -> str:
        return message.value.decode().split(":")[1]

    def reference(message: Message) -> str:
        return message.value.decode().removeprefix("done ")

    run = Run(Correlator(by_key(input=order_id, output=reference)))
    harness_id = run.publish(Message(value=b"order:42"))
    assert run.output(Message(value=b"done 42")).harness_id == harness_id
    raised = run.output(Message(value=b"garbage"))  # removeprefix is fine, the key is unknown
    assert raised.harness_id is None
    assert "'garbage'" in (raised.detail or "")


def test_a_reader_that_raises_reads_no_key_and_says_so() -> None:
    def strict(message: Message) -> str:
        return str(json.loads(message.value)["order"])

    run = Run(Correlator(by_key(input=lambda m: str(json.loads(m.value)["id"]), output=strict)))
    run.publish(order(1))
    missed = run.output(Message(value=b'{"ref": 1}'))
    assert missed.harness_id is None
    assert "strict raised KeyError('order')" in (missed.detail or "")


def test_the_old_form_still_maps_an_output_to_a_harness_id() -> None:
    run = Run(Correlator(lambda m: m.value.decode()))
    harness_id = run.publish(Message(value=b"x"))
    assert run.output(Message(value=harness_id.encode())).harness_id == harness_id
    assert run.correlator.of_delivery(Message(value=harness_id.encode())) == harness_id


def test_a_rebuilt_delivery_is_found_by_its_business_key() -> None:
    """A retry the service re-publishes without the harness's header is still the input."""
    correlator = Correlator(by_json_field("id", output="order"))
    run = Run(correlator)
    harness_id = run.publish(order(8))
    assert correlator.of_delivery(order(8, attempt=2)) == harness_id
    assert correlator.of_delivery(order(9)) is None
    assert Correlator().of_delivery(order(8)) is None  # no correlation: the header only


# --- a missed correlation says why --------------------------------------------------------


def test_an_output_whose_key_no_input_has_says_which_key_and_what_inputs_look_like() -> None:
    run = Run(Correlator(by_json_field("id", output="order")))
    run.publish(order(17))
    missed = run.output(Message(value=b'{"order": "ord-17"}'))
    assert missed == Landing(Kind.OUTPUT, None, missed.detail)
    assert anomalies(checks.no_unexpected(), run.history) == [
        "unexpected: an output at +2.0 ms carries no harness id (read business key 'ord-17'"
        " (field 'order' of the output), which no input has; the inputs' keys look like '17'"
        " (field 'id' of input id r-1): make the service write the input's key there,"
        " or point Flow(correlate=...) at where it does (output=...))"
    ]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"not json", "no business key: the payload is not JSON (b'not json')"),
        (b'{"id": 1}', "no business key: the payload has no field 'order'"),
    ],
)
def test_an_output_without_a_key_says_what_is_missing(value: bytes, why: str) -> None:
    run = Run(Correlator(by_json_field("id", output="order")))
    run.publish(order(1))
    missed = run.output(Message(value=value))
    assert missed.harness_id is None
    assert (missed.detail or "").startswith(why)
    [text] = anomalies(checks.no_unexpected(), run.history)
    assert why in text


# --- inputs sharing a key --------------------------------------------------------------


def test_inputs_sharing_a_key_take_answers_in_publish_order() -> None:
    run = Run(Correlator(by_json_field("id", output="order")))
    first, second = run.publish(order(7)), run.publish(order(7))
    assert run.output(answer(7)).harness_id == first
    assert run.output(answer(7)).harness_id == second
    assert anomalies(checks.no_duplicates(), run.history) == []
    assert anomalies(checks.no_loss(), run.history) == []


def test_a_third_answer_to_a_shared_key_is_a_duplicate_that_names_the_key() -> None:
    run = Run(Correlator(by_json_field("id", output="order")))
    first = run.publish(order(7))
    run.publish(order(7))
    run.output(answer(7))
    run.output(answer(7))
    assert run.output(answer(7)).harness_id == first  # all answered: the earliest
    [text] = anomalies(checks.no_duplicates(), run.history)
    assert text.startswith(
        "duplicate: input #1 (id r-1, business key '7' shared with #2:"
        " answers go to the earliest unanswered) came out 2 times: output at"
    )


def test_a_lost_input_names_its_business_key() -> None:
    run = Run(Correlator(by_json_field("id", output="order")))
    run.publish(order(1))
    run.publish(order(2))
    run.output(answer(1))
    [text] = anomalies(checks.no_loss(), run.history)
    assert text.startswith("lost: input #2 (id r-2, business key '2') published at")


# --- fan-out ----------------------------------------------------------------------------


def fan_out(**options: object) -> Run:
    return Run(Correlator(by_json_field("id", output="order"), output_kinds="type", **options))  # type: ignore[arg-type]


def test_outputs_of_different_kinds_of_one_input_are_no_duplicate() -> None:
    run = fan_out()
    run.publish(order(1))
    assert run.output(answer(1, "result")).detail == "result"
    run.output(answer(1, "end"))
    assert anomalies(checks.no_duplicates(), run.history) == []
    assert anomalies(checks.no_unexpected(), run.history) == []


def test_two_outputs_of_one_kind_of_one_input_are_a_duplicate() -> None:
    run = fan_out()
    run.publish(order(1))
    run.output(answer(1, "result"))
    run.output(answer(1, "end"))
    run.output(answer(1, "result"))
    [text] = anomalies(checks.no_duplicates(), run.history)
    assert text.startswith(
        "duplicate: input #1 (id r-1, business key '1') came out 3 times as 'result':"
        " output 'result' at"
    )


def test_an_output_and_a_dead_letter_of_one_input_are_a_duplicate() -> None:
    run = fan_out()
    run.publish(order(1))
    run.output(answer(1, "result"))
    run.dead_letter(order(1))
    [text] = anomalies(checks.no_duplicates(), run.history)
    assert "came out 2 times: output 'result' at" in text
    assert "dead-lettered at" in text


def test_a_function_names_kinds_too() -> None:
    run = Run(Correlator(by_json_field("id", output="order"), output_kinds=lambda m: "one"))
    run.publish(order(1))
    run.output(answer(1, "result"))
    run.output(answer(1, "end"))
    assert len(anomalies(checks.no_duplicates(), run.history)) == 1


def test_any_answer_satisfies_no_loss_and_latency_counts_the_first() -> None:
    run = fan_out()
    harness_id = run.publish(order(1))
    run.history.record(Kind.OUTPUT, "tap", at_ns=5_000_000, harness_id=harness_id, detail="result")
    run.history.record(Kind.OUTPUT, "tap", at_ns=900_000_000, harness_id=harness_id, detail="end")
    assert anomalies(checks.no_loss(), run.history) == []
    assert anomalies(checks.within(0.1), run.history) == []


# --- side events --------------------------------------------------------------------------


def test_side_events_are_recorded_apart_and_no_check_counts_them() -> None:
    run = fan_out(side_events={"payment.failed"})
    harness_id = run.publish(order(1))
    run.dead_letter(order(1))
    side = run.output(answer(1, "payment.failed"))
    assert side == Landing(Kind.SIDE_EVENT, harness_id, "payment.failed")
    keyless = run.output(Message(value=b'{"type": "payment.failed"}'))
    assert keyless == Landing(Kind.SIDE_EVENT, None, "payment.failed")  # need not name an input
    for check in (checks.no_duplicates(), checks.no_unexpected(), checks.no_loss()):
        assert check(run.history).ok, check
    assert checks.no_loss()(run.history).summary == (
        "1 input, 0 outputs, 1 dead-lettered, 2 side events"
    )


def test_a_side_event_takes_no_answer_from_inputs_sharing_its_key() -> None:
    run = fan_out(side_events={"audit"})
    first, second = run.publish(order(7)), run.publish(order(7))
    assert run.output(answer(7, "audit")).harness_id == first
    assert run.output(answer(7, "result")).harness_id == first
    assert run.output(answer(7, "result")).harness_id == second


def test_a_side_event_alone_does_not_account_for_an_input() -> None:
    run = Run(
        Correlator(by_json_field("id", output="order"), side_events=lambda m: b"audit" in m.value)
    )
    run.publish(order(1))
    assert run.output(answer(1, audit=True)).kind is Kind.SIDE_EVENT
    [text] = anomalies(checks.no_loss(), run.history)
    assert text.startswith("lost: input #1")


def test_a_side_event_survives_the_json_round_trip() -> None:
    run = fan_out(side_events={"audit"})
    run.publish(order(1))
    run.output(answer(1, "audit"))
    again = History.from_json(run.history.to_json())
    assert [e.kind for e in again] == [Kind.PUBLISHED, Kind.SIDE_EVENT]


# --- what Flow accepts ------------------------------------------------------------------------


async def _service(endpoints: object) -> None:
    raise AssertionError("never started")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"correlate": 42}, r"correlate=42\) is invalid: pass by_json_field"),
        ({"output_kinds": ""}, r"output_kinds\)='' is invalid: name a JSON field"),
        ({"output_kinds": "type", "side_events": "audit"}, r"collection of output kinds"),
        ({"side_events": {"audit"}}, r"the flow has no output_kinds: pass output_kinds="),
    ],
)
def test_flow_rejects_what_it_cannot_use(options: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        Flow(sut=_service, broker="kafka", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: by_json_field("order..id"), r"name a JSON field"),
        (lambda: by_json_field("id", output=3), r"output=3 is invalid"),
        (lambda: by_key(input="id", output=str), r"by_key\(input='id'\) is invalid"),
    ],
)
def test_bad_correlations_say_how_to_write_them(build: object, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        build()  # type: ignore[operator]


def test_flow_accepts_every_form() -> None:
    Flow(sut=_service, broker="kafka", correlate=by_json_field("id", output="order"))
    Flow(sut=_service, broker="kafka", correlate=lambda m: None)
    Flow(
        sut=_service,
        broker="rabbitmq",
        correlate=by_key(input=lambda m: m.key, output=lambda m: m.key),
        output_kinds=lambda m: "x",
        side_events=lambda m: False,
    )


def test_the_timeline_draws_side_events_on_a_lane_of_their_own() -> None:
    from message_flow_harness._timeline import SIDE_EVENT_LANE, layout, render_svg

    run = fan_out(side_events={"audit"})
    run.publish(order(1))
    run.output(answer(1, "result"))
    run.output(answer(1, "audit"))
    svg = render_svg(layout(run.history))
    assert SIDE_EVENT_LANE in svg
    assert "#1 side event" in svg
