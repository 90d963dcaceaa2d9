"""The zoo's own check, ``totals_add_up()``, on hand-built histories.

It is the example of a user-defined check (harness/zoo/totals.py): a function of
the history, reading the harness's ``Facts``, returning a ``Verdict``.
"""

from __future__ import annotations

from typing import Self

from histories import Script
from hypothesis import given
from hypothesis import strategies as st

from message_flow_harness import HARNESS_ID_HEADER, Kind, Message
from message_flow_harness.checks import Check, Verdict
from message_flow_harness.zoo.totals import amounts, parse_amount, totals_add_up


class Deposits(Script):
    """A script whose outputs carry the totals a service reports."""

    def total(self, harness_id: str, total: int, *, at: float | None = None) -> Self:
        found = self.published[harness_id]
        message = Message(
            value=str(total).encode(),
            key=found.key,
            headers={HARNESS_ID_HEADER: harness_id.encode()},
        )
        return self.event(
            Kind.OUTPUT,
            at=at,
            source="tap",
            harness_id=harness_id,
            destination=self.output_name,
            key=found.key,
            message=message,
        )


def check(script: Script) -> Verdict:
    return totals_add_up()(script.build())


def test_it_is_a_check_like_the_harnesss_own() -> None:
    made = totals_add_up()
    assert isinstance(made, Check)
    assert str(made) == "totals_add_up()"


def test_serial_updates_add_up_whatever_order_the_outputs_land_in() -> None:
    verdict = check(
        Deposits()
        .publish("1", key=b"a", value=b"2", at=0)
        .publish("2", key=b"b", value=b"5", at=1)
        .publish("3", key=b"a", value=b"3", at=2)
        .total("3", 5, at=10)  # #3 applied second, its output landed first
        .total("2", 5, at=11)
        .total("1", 2, at=12)
    )
    assert verdict.ok, verdict
    assert verdict.summary == "3 inputs, 3 outputs, 0 dead-lettered"


def test_a_lost_update_names_the_key_the_totals_and_the_inputs() -> None:
    verdict = check(
        Deposits()
        .publish("1", key=b"a", value=b"1", at=0)
        .publish("2", key=b"a", value=b"2", at=1)
        .publish("3", key=b"b", value=b"7", at=2)
        .publish("4", key=b"a", value=b"2", at=3)
        .total("1", 1, at=10)  # #1 and #2 both read 0: #2's write overwrote #1's
        .total("2", 2, at=11)
        .total("3", 7, at=12)
        .total("4", 4, at=13)
    )
    assert [a.kind for a in verdict.anomalies] == ["lost-update"]
    assert [a.text for a in verdict.anomalies] == [
        "final total for key 'a' is 4, expected 5 (sum of inputs #1 + #2 + #4 = 1 + 2 + 2):"
        " updates lost; outputs reported 1 for #1, 2 for #2, 4 for #4"
    ]
    assert verdict.anomalies[0].harness_ids == ("1", "2", "4")
    assert "1 anomaly" in str(verdict)


def test_an_update_applied_twice_is_overcounted() -> None:
    verdict = check(
        Deposits()
        .publish("1", key=b"a", value=b"3", at=0)
        .publish("2", key=b"a", value=b"4", at=1)
        .total("1", 3, at=10)
        .total("2", 7, at=11)
        .total("2", 11, at=12)  # redelivered and added again
    )
    assert [a.kind for a in verdict.anomalies] == ["overcounted"]
    assert "final total for key 'a' is 11, expected 7" in verdict.anomalies[0].text
    assert "an update counted twice" in verdict.anomalies[0].text


def test_lost_and_dead_lettered_inputs_and_other_checks_business_do_not_count() -> None:
    verdict = check(
        Deposits()
        .publish("1", key=b"a", value=b"3", at=0)
        .publish("2", key=b"a", value=b"4", at=1)  # never output: no_loss's business
        .publish("3", key=b"a", value=b"oops", at=2)  # not an amount: dead-lettered
        .publish("4", key=None, value=b"6", at=3)
        .total("1", 3, at=10)
        .dead_letter("3", at=11)
        .total("4", 6, at=12)
    )
    assert verdict.ok, verdict


def test_an_output_that_is_not_a_total_is_unreadable() -> None:
    verdict = check(
        Deposits().publish("1", key=b"a", value=b"3", at=0).output("1", at=5)  # b"done:3"
    )
    assert [a.kind for a in verdict.anomalies] == ["unreadable"]
    assert verdict.anomalies[0].text == (
        "output of input #1 (id 1, key 'a') is b'done:3', not a total"
    )


def test_an_empty_history_passes() -> None:
    assert check(Deposits()).ok


@given(st.integers())
def test_only_positive_whole_amounts_are_deposits(n: int) -> None:
    assert parse_amount(str(n).encode()) == (n if n > 0 else None)


@given(amounts())
def test_the_strategy_generates_deposits_over_few_keys(messages: list[Message]) -> None:
    assert 1 <= len(messages) <= 6
    assert all(parse_amount(m.value) is not None for m in messages)
    assert {m.key for m in messages} <= {b"a", b"b"}


def test_the_store_counts_a_redelivered_input_once() -> None:
    import asyncio

    from message_flow_harness.zoo.totals import Totals

    async def deposits() -> list[int]:
        store = Totals()
        first = await store.add(b"a", 5, ("in", 0, 7))
        again = await store.add(b"a", 5, ("in", 0, 7))  # the same record, redelivered
        other = await store.add(b"a", 3, ("in", 0, 8))
        return [first, again, other]

    assert asyncio.run(deposits()) == [5, 5, 8]
