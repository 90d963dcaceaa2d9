"""Every check on hand-built histories: passes on a correct one, names the defect otherwise.

Times in the histories are explicit (``at=`` ms from the start), so the
anomaly texts are asserted whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from histories import MS, Script

from message_flow_harness import HARNESS_ID_HEADER, InvalidArgument, Message, checks
from message_flow_harness._history import History
from message_flow_harness.checks import (
    Anomaly,
    Check,
    Facts,
    Verdict,
    all_of,
    dead_lettered,
    delivery,
    latency,
    max_deliveries,
    no_duplicates,
    no_loss,
    no_unexpected,
    per_key_order,
    per_partition_order,
    percentile,
    within,
)


def kinds(verdict: Verdict) -> list[str]:
    return [a.kind for a in verdict.anomalies]


def texts(verdict: Verdict) -> list[str]:
    return [a.text for a in verdict.anomalies]


def ids(verdict: Verdict) -> list[tuple[str, ...]]:
    return [a.harness_ids for a in verdict.anomalies]


def correct_run() -> History:
    """Three keyed inputs, each output once in order; a poison input dead-lettered."""
    return (
        Script()
        .publish("a", key=b"k1", value=b"ok-a", at=0)
        .publish("b", key=b"k2", value=b"ok-b", at=1)
        .publish("c", key=b"k1", value=b"ok-c", at=2)
        .publish("p", key=b"k2", value=b"poison", at=3)
        .deliver("a", at=4)
        .output("a", at=5)
        .deliver("b", at=6)
        .output("b", at=7)
        .deliver("c", at=8)
        .output("c", at=9)
        .deliver("p", at=10)
        .nack("p", requeue=False, at=11)
        .dead_letter("p", at=12)
        .build()
    )


def crash_replay() -> History:
    """At-least-once after a crash: a and b are output, the consumer dies before
    committing, and its successor replays both: outputs a, b, a, b."""
    return (
        Script()
        .publish("a", key=b"k", partition=0, at=0)
        .publish("b", key=b"k", partition=0, at=1)
        .deliver("a", at=2)
        .output("a", at=3)
        .deliver("b", at=4)
        .output("b", at=5)
        .crash("c1", at=6)
        .deliver("a", redelivered=True, lane="c2", at=7)
        .output("a", lane="c2", at=8)
        .deliver("b", redelivered=True, lane="c2", at=9)
        .output("b", lane="c2", at=10)
        .build()
    )


def poison(message: Message) -> bool:
    return message.value.startswith(b"poison")


EVERY_CHECK: list[Check] = [
    no_loss(),
    no_duplicates(),
    no_unexpected(),
    delivery("at-least-once"),
    delivery("exactly-once"),
    delivery("at-most-once"),
    per_key_order(),
    per_partition_order(),
    dead_lettered(when=poison),
    max_deliveries(1),
    within(0.009),
    latency(p50=0.006, p99=0.009, max=0.009),
]


@pytest.mark.parametrize("check", EVERY_CHECK, ids=str)
def test_every_check_passes_on_a_correct_run(check: Check) -> None:
    verdict = check(correct_run())
    assert verdict.ok, str(verdict)
    assert verdict.anomalies == ()
    assert verdict.check == check.name
    assert verdict.summary == "4 inputs, 3 outputs, 1 dead-lettered"


@pytest.mark.parametrize("check", EVERY_CHECK, ids=str)
def test_every_check_passes_on_an_empty_history(check: Check) -> None:
    verdict = check(History.of_events([]))
    assert verdict.ok, str(verdict)
    assert verdict.summary == "0 inputs, 0 outputs, 0 dead-lettered"


@pytest.mark.parametrize("check", EVERY_CHECK, ids=str)
def test_checks_do_not_change_the_history_and_repeat_their_verdict(check: Check) -> None:
    history = crash_replay()
    before = list(history.events)
    assert check(history) == check(history)
    assert history.events == before


# --- no_loss ---------------------------------------------------------------------------


def test_no_loss_names_the_lost_input_and_when_it_was_published() -> None:
    history = (
        Script()
        .publish("a", at=0)
        .publish("b", key=b"k", at=1.5)
        .publish("c", at=2)
        .output("a", at=5)
        .dead_letter("c", at=6)
        .build()
    )
    verdict = no_loss()(history)
    assert not verdict.ok
    assert kinds(verdict) == ["lost"]
    assert ids(verdict) == [("b",)]
    assert texts(verdict) == [
        "input #2 (id b, key 'k') published at +1.5 ms was never output nor dead-lettered"
    ]


def test_no_loss_counts_a_dead_letter_as_accounted_for() -> None:
    history = Script().publish("a").dead_letter("a").build()
    assert no_loss()(history).ok


def test_no_loss_ignores_unstamped_publishes_and_foreign_outputs() -> None:
    history = Script().publish(None).publish("a").output("zz").output(None).output("a").build()
    assert no_loss()(history).ok


def test_no_loss_is_not_fooled_by_an_output_of_another_id() -> None:
    history = Script().publish("a").publish("b").output("a").output("a").build()
    verdict = no_loss()(history)
    assert ids(verdict) == [("b",)]


def test_no_loss_holds_after_a_crash_replay() -> None:
    assert no_loss()(crash_replay()).ok


# --- no_duplicates ----------------------------------------------------------------------


def test_no_duplicates_flags_the_replay_after_a_crash() -> None:
    verdict = no_duplicates()(crash_replay())
    assert kinds(verdict) == ["duplicate", "duplicate"]
    assert ids(verdict) == [("a",), ("b",)]
    assert texts(verdict) == [
        "input #1 (id a, key 'k') came out 2 times: output at +3.0 ms, output at +8.0 ms",
        "input #2 (id b, key 'k') came out 2 times: output at +5.0 ms, output at +10.0 ms",
    ]


def test_no_duplicates_flags_two_lanes_outputting_one_input_after_a_rebalance() -> None:
    history = (
        Script()
        .publish("a", at=0)
        .publish("b", at=1)
        .deliver("a", lane="c1", at=2)
        .output("a", lane="c1", at=3)
        .note("rebalance: partition 0 moves to c2", at=4)
        .deliver("a", lane="c2", at=5)
        .output("a", lane="c2", at=6)
        .deliver("b", lane="c2", at=7)
        .output("b", lane="c2", at=8)
        .build()
    )
    verdict = no_duplicates()(history)
    assert ids(verdict) == [("a",)]
    assert texts(verdict) == [
        "input #1 (id a) came out 2 times: output at +3.0 ms, output at +6.0 ms"
    ]
    assert per_key_order()(history).ok
    assert delivery("at-least-once")(history).ok
    assert not delivery("exactly-once")(history).ok


def test_no_duplicates_flags_an_input_both_output_and_dead_lettered_in_time_order() -> None:
    history = (
        Script()
        .publish("a", at=0)
        .output("a", at=9)  # recorded first, but landed after the dead letter
        .dead_letter("a", at=4)
        .build()
    )
    verdict = no_duplicates()(history)
    assert kinds(verdict) == ["duplicate"]
    assert texts(verdict) == [
        "input #1 (id a) came out 2 times: dead-lettered at +4.0 ms, output at +9.0 ms"
    ]


def test_no_duplicates_counts_every_landing() -> None:
    history = Script().publish("a").output("a").output("a").output("a").build()
    assert "came out 3 times" in texts(no_duplicates()(history))[0]


def test_no_duplicates_ignores_duplicate_deliveries_that_were_output_once() -> None:
    history = Script().publish("a").deliver("a").deliver("a", redelivered=True).output("a").build()
    assert no_duplicates()(history).ok


def test_no_duplicates_leaves_foreign_outputs_to_no_unexpected() -> None:
    history = Script().publish("a").output("a").output("zz").output("zz").output(None).build()
    assert no_duplicates()(history).ok


# --- no_unexpected ----------------------------------------------------------------------


def test_no_unexpected_flags_an_output_without_a_harness_id() -> None:
    history = Script().publish("a", at=0).output("a", at=1).output(None, at=4).build()
    verdict = no_unexpected()(history)
    assert kinds(verdict) == ["unexpected"]
    assert ids(verdict) == [()]
    assert texts(verdict) == [
        "an output at +4.0 ms carries no harness id"
        " (copy the input's headers or pass Flow(correlate=...))"
    ]
    assert verdict.summary == "1 input, 2 outputs, 0 dead-lettered"


def test_no_unexpected_flags_an_output_answering_an_id_never_published() -> None:
    history = (
        Script().publish("a", at=0).output("zz", at=3).output("zz", at=5).output("a", at=6).build()
    )
    verdict = no_unexpected()(history)
    assert kinds(verdict) == ["unexpected"]
    assert ids(verdict) == [("zz",)]
    assert texts(verdict) == ["an output at +3.0 ms answers id zz, which this run never published"]


def test_no_unexpected_names_a_dead_letter_as_a_dead_letter() -> None:
    history = Script().publish("a").output("a").dead_letter("yy", at=7).dead_letter(None, at=8)
    verdict = no_unexpected()(history.build())
    assert texts(verdict) == [
        "a dead letter at +8.0 ms carries no harness id"
        " (copy the input's headers or pass Flow(correlate=...))",
        "a dead letter at +7.0 ms answers id yy, which this run never published",
    ]
    assert ids(verdict) == [(), ("yy",)]
    assert verdict.summary == "1 input, 1 output, 2 dead-lettered"


def test_no_unexpected_reports_a_foreign_id_once_at_its_first_landing() -> None:
    history = Script().dead_letter("zz", at=2).output("zz", at=1).build()
    verdict = no_unexpected()(history)
    assert texts(verdict) == ["an output at +1.0 ms answers id zz, which this run never published"]


def test_no_unexpected_ignores_deliveries_of_unknown_ids() -> None:
    history = Script().publish("a").deliver("zz").output("a").build()
    assert no_unexpected()(history).ok


# --- delivery guarantees and all_of ---------------------------------------------------


def lost_and_duplicated() -> History:
    return (
        Script().publish("a", at=0).publish("b", at=1).output("a", at=2).output("a", at=3).build()
    )


def test_delivery_at_least_once_tolerates_the_replay_but_not_a_loss() -> None:
    check = delivery("at-least-once")
    assert check(crash_replay()).ok
    verdict = check(lost_and_duplicated())
    assert verdict.check == "delivery('at-least-once')"
    assert kinds(verdict) == ["lost"]
    assert ids(verdict) == [("b",)]


def test_delivery_exactly_once_forbids_the_replay_and_the_loss() -> None:
    check = delivery("exactly-once")
    replay = check(crash_replay())
    assert kinds(replay) == ["duplicate", "duplicate"]
    assert ids(replay) == [("a",), ("b",)]
    both = check(lost_and_duplicated())
    assert kinds(both) == ["lost", "duplicate"]
    assert ids(both) == [("b",), ("a",)]
    assert both.summary == "2 inputs, 2 outputs, 0 dead-lettered"


def test_delivery_at_most_once_tolerates_a_loss_but_not_a_duplicate() -> None:
    check = delivery("at-most-once")
    assert check(Script().publish("a").publish("b").output("a").build()).ok
    assert kinds(check(lost_and_duplicated())) == ["duplicate"]


@pytest.mark.parametrize("bad", ["bogus", "exactly_once", "", None, ["at-least-once"]])
def test_delivery_rejects_an_unknown_guarantee(bad: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        delivery(bad)  # type: ignore[arg-type]
    assert f"guarantee={bad!r} is invalid" in str(raised.value)
    assert "'at-least-once', 'exactly-once' or 'at-most-once'" in str(raised.value)


def test_all_of_concatenates_anomalies_in_part_order() -> None:
    check = all_of("both", [no_duplicates(), no_loss()])
    verdict = check(lost_and_duplicated())
    assert str(check) == "both"
    assert verdict.check == "both"
    assert kinds(verdict) == ["duplicate", "lost"]
    assert verdict.summary == "2 inputs, 2 outputs, 0 dead-lettered"


def test_all_of_nothing_passes() -> None:
    assert all_of("none", [])(lost_and_duplicated()) == Verdict("none", (), "")


# --- per_key_order ----------------------------------------------------------------------


def test_per_key_order_names_the_key_the_inputs_and_all_four_times() -> None:
    history = (
        Script()
        .publish("a", key=b"k2", at=0)
        .publish("b", key=b"k2", at=1)
        .publish("c", key=b"k1", at=2)
        .output("c", at=3)  # other keys may overtake
        .output("b", at=4)
        .output("a", at=6)
        .build()
    )
    verdict = per_key_order()(history)
    assert kinds(verdict) == ["nonmonotonic"]
    assert ids(verdict) == [("a", "b")]
    assert texts(verdict) == [
        "key 'k2': output of #2 (id b) at +4.0 ms came before #1 (id a) at +6.0 ms;"
        " published at +1.0 ms and +0.0 ms"
    ]


def test_per_key_order_accepts_the_at_least_once_replay() -> None:
    # a, b, a, b: the replay repeats both in order; judged by first outputs it is in order.
    assert per_key_order()(crash_replay()).ok
    assert per_partition_order()(crash_replay()).ok


def test_per_key_order_still_sees_a_reordering_inside_a_replay() -> None:
    history = (
        Script()
        .publish("a", key=b"k", at=0)
        .publish("b", key=b"k", at=1)
        .output("b", at=2)
        .crash(at=3)
        .output("a", lane="c2", at=4)
        .output("b", lane="c2", at=5)
        .build()
    )
    verdict = per_key_order()(history)
    assert ids(verdict) == [("a", "b")]
    assert texts(verdict) == [
        "key 'k': output of #2 (id b) at +2.0 ms came before #1 (id a) at +4.0 ms;"
        " published at +1.0 ms and +0.0 ms"
    ]


def test_per_key_order_lets_concurrent_producers_of_one_burst_interleave() -> None:
    # One burst (one start time): producers 0 and 1 publish at once, so the
    # broker may take b before a; producer 1's own two stay ordered.
    burst = (
        Script()
        .publish("a", key=b"k", at=0)
        .publish("b", key=b"k", producer=1, at=0)
        .publish("c", key=b"k", producer=1, at=0)
    )
    interleaved = burst.output("b", at=2).output("a", at=3).output("c", at=4).build()
    assert per_key_order()(interleaved).ok
    assert per_partition_order()(interleaved).ok


def test_per_key_order_keeps_one_producers_order_within_a_burst() -> None:
    history = (
        Script()
        .publish("a", key=b"k", at=0)
        .publish("b", key=b"k", producer=1, at=0)
        .publish("c", key=b"k", producer=1, at=0)
        .output("c", at=2)
        .output("a", at=3)
        .output("b", at=4)
        .build()
    )
    verdict = per_key_order()(history)
    assert ids(verdict) == [("b", "c")]


def test_per_key_order_orders_bursts_whatever_their_producers() -> None:
    # b's burst started after a's had finished: b must not overtake a.
    history = (
        Script()
        .publish("a", key=b"k", at=0)
        .publish("b", key=b"k", producer=1, at=5)
        .output("b", at=6)
        .output("a", at=7)
        .build()
    )
    verdict = per_key_order()(history)
    assert ids(verdict) == [("a", "b")]
    assert texts(verdict) == [
        "key 'k': output of #2 (id b) at +6.0 ms came before #1 (id a) at +7.0 ms;"
        " published at +5.0 ms and +0.0 ms"
    ]


def test_per_key_order_reports_each_input_overtaken() -> None:
    history = (
        Script()
        .publish("a", key=b"k", at=0)
        .publish("b", key=b"k", at=1)
        .publish("c", key=b"k", at=2)
        .publish("d", key=b"k", at=3)
        .output("c", at=4)
        .output("a", at=5)
        .output("d", at=6)
        .output("b", at=7)
        .build()
    )
    verdict = per_key_order()(history)
    assert ids(verdict) == [("a", "c"), ("b", "d")]
    assert texts(verdict)[1].startswith("key 'k': output of #4 (id d) at +6.0 ms came before #2")


def test_per_key_order_groups_unkeyed_inputs_together() -> None:
    history = Script().publish("a").publish("b").output("b").output("a").build()
    verdict = per_key_order()(history)
    assert texts(verdict)[0].startswith("no key: output of #2 (id b)")


def test_per_key_order_shows_a_binary_key_as_bytes() -> None:
    history = (
        Script().publish("a", key=b"\xff").publish("b", key=b"\xff").output("b").output("a")
    ).build()
    assert texts(per_key_order()(history))[0].startswith("key b'\\xff': output of #2")


def test_per_key_order_ignores_inputs_never_output_and_dead_letters() -> None:
    history = (
        Script()
        .publish("a", key=b"k")
        .publish("b", key=b"k")
        .publish("c", key=b"k")
        .output("c")
        .dead_letter("a")  # dead letters are not outputs: no order among them
        .output("zz")
        .output(None)
        .build()
    )
    assert per_key_order()(history).ok


def test_per_key_order_uses_the_order_outputs_were_recorded_in() -> None:
    # The output log is the order consumers saw; equal timestamps do not hide a swap.
    history = (
        Script()
        .publish("a", key=b"k", at=0)
        .publish("b", key=b"k", at=1)
        .output("b", at=5)
        .output("a", at=5)
    ).build()
    assert ids(per_key_order()(history)) == [("a", "b")]


# --- per_partition_order ----------------------------------------------------------------


def test_per_partition_order_on_kafka_partitions() -> None:
    history = (
        Script()
        .publish("a", partition=0, at=0)
        .publish("b", partition=1, at=1)
        .publish("c", partition=0, at=2)
        .publish("d", partition=1, at=3)
        .output("b", at=4)  # partitions are independent of each other
        .output("d", at=5)
        .output("c", at=6)
        .output("a", at=7)
        .build()
    )
    verdict = per_partition_order()(history)
    assert kinds(verdict) == ["nonmonotonic"]
    assert ids(verdict) == [("a", "c")]
    assert texts(verdict) == [
        "partition 0: output of #3 (id c) at +6.0 ms came before #1 (id a) at +7.0 ms;"
        " published at +2.0 ms and +0.0 ms"
    ]


def test_per_partition_order_names_the_rabbitmq_queue() -> None:
    history = (
        Script(input="orders")
        .publish("a", at=0)
        .publish("b", at=1)
        .output("b", at=2)
        .output("a", at=3)
        .build()
    )
    verdict = per_partition_order()(history)
    assert texts(verdict) == [
        "queue orders: output of #2 (id b) at +2.0 ms came before #1 (id a) at +3.0 ms;"
        " published at +1.0 ms and +0.0 ms"
    ]


def test_per_partition_order_keeps_queues_apart() -> None:
    history = (
        Script()
        .publish("a", destination="q1")
        .publish("b", destination="q2")
        .output("b")
        .output("a")
        .build()
    )
    assert per_partition_order()(history).ok
    # Two inputs (a Topology's): no order between them, whatever the key.
    assert per_key_order()(history).ok


def test_per_partition_order_ignores_keys() -> None:
    history = (
        Script()
        .publish("a", key=b"k1", partition=0)
        .publish("b", key=b"k2", partition=0)
        .output("b")
        .output("a")
    ).build()
    assert per_key_order()(history).ok
    assert ids(per_partition_order()(history)) == [("a", "b")]


# --- dead_lettered -------------------------------------------------------------------------


def poison_run(*steps: Callable[[Script], Script]) -> History:
    script = Script().publish("a", value=b"fine", at=0).publish("p", value=b"poison!", at=1)
    script.output("a", at=2)
    for step in steps:
        step(script)
    return script.build()


def test_dead_lettered_passes_when_only_poison_is_dead_lettered() -> None:
    verdict = dead_lettered(when=poison)(poison_run(lambda s: s.dead_letter("p", at=3)))
    assert verdict.ok
    assert verdict.check == "dead_lettered(when=poison)"


def test_dead_lettered_flags_poison_that_vanished() -> None:
    verdict = dead_lettered(when=poison)(poison_run())
    assert kinds(verdict) == ["not-dead-lettered"]
    assert ids(verdict) == [("p",)]
    assert texts(verdict) == ["input #2 (id p) should have been dead-lettered but vanished"]


def test_dead_lettered_flags_poison_that_was_output() -> None:
    verdict = dead_lettered(when=poison)(poison_run(lambda s: s.output("p", at=4)))
    assert kinds(verdict) == ["not-dead-lettered"]
    assert texts(verdict) == [
        "input #2 (id p) should have been dead-lettered but was output at +4.0 ms"
    ]


def test_dead_lettered_flags_poison_dead_lettered_and_also_output() -> None:
    history = poison_run(lambda s: s.dead_letter("p", at=3), lambda s: s.output("p", at=5))
    verdict = dead_lettered(when=poison)(history)
    assert kinds(verdict) == ["not-dead-lettered"]
    assert ids(verdict) == [("p",)]
    assert texts(verdict) == ["input #2 (id p) was dead-lettered but also output at +5.0 ms"]
    assert kinds(no_duplicates()(history)) == ["duplicate"]


def test_dead_lettered_flags_a_good_input_that_was_dead_lettered() -> None:
    history = poison_run(lambda s: s.dead_letter("p", at=3), lambda s: s.dead_letter("a", at=6))
    verdict = dead_lettered(when=poison)(history)
    assert kinds(verdict) == ["dead-lettered"]
    assert ids(verdict) == [("a",)]
    assert texts(verdict) == [
        "input #1 (id a) was dead-lettered at +6.0 ms though it is not poison"
    ]


def test_dead_lettered_leaves_a_lost_good_input_to_no_loss() -> None:
    history = Script().publish("a", value=b"fine").build()
    assert dead_lettered(when=poison)(history).ok
    assert not no_loss()(history).ok


def test_dead_lettered_asks_about_each_input_message_as_published() -> None:
    seen: list[Message] = []

    def record(message: Message) -> bool:
        seen.append(message)
        return False

    history = Script().publish("a", key=b"k", value=b"v", headers={"h": b"1"}).publish(None).build()
    assert dead_lettered(when=record)(history).ok
    assert seen == [Message(value=b"v", key=b"k", headers={"h": b"1", HARNESS_ID_HEADER: b"a"})]


def test_dead_lettered_is_named_after_its_predicate() -> None:
    assert str(dead_lettered(when=lambda m: False)) == "dead_lettered(when=<lambda>)"


@pytest.mark.parametrize("bad", [3, None, "poison", b"poison"])
def test_dead_lettered_needs_a_function(bad: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        dead_lettered(when=bad)  # type: ignore[arg-type]
    assert f"dead_lettered(when={bad!r}) needs a function" in str(raised.value)


# --- max_deliveries -----------------------------------------------------------------------


def requeue_storm(deliveries: int) -> History:
    """Input a is delivered, nacked with requeue and redelivered, ``deliveries`` times."""
    script = Script().publish("a", key=b"k", at=0).publish("b", at=1).deliver("b", at=2)
    for i in range(deliveries):
        script.deliver("a", redelivered=i > 0, at=10 + 2 * i).nack("a", at=11 + 2 * i)
    return script.build()


def test_max_deliveries_allows_exactly_n() -> None:
    assert max_deliveries(3)(requeue_storm(3)).ok
    assert max_deliveries(1)(requeue_storm(1)).ok


def test_max_deliveries_flags_one_more_than_n() -> None:
    verdict = max_deliveries(3)(requeue_storm(4))
    assert verdict.check == "max_deliveries(3)"
    assert kinds(verdict) == ["max-deliveries"]
    assert ids(verdict) == [("a",)]
    assert texts(verdict) == [
        "input #1 (id a, key 'k') was delivered 4 times (limit 3),"
        " first at +10.0 ms, last at +16.0 ms"
    ]


def test_max_deliveries_catches_a_requeue_storm() -> None:
    verdict = max_deliveries(5)(requeue_storm(200))
    assert texts(verdict) == [
        "input #1 (id a, key 'k') was delivered 200 times (limit 5),"
        " first at +10.0 ms, last at +408.0 ms"
    ]


def test_max_deliveries_counts_crash_redeliveries() -> None:
    assert max_deliveries(2)(crash_replay()).ok
    assert ids(max_deliveries(1)(crash_replay())) == [("a",), ("b",)]


def test_max_deliveries_names_an_unknown_message_by_its_id() -> None:
    history = Script().deliver("zz", at=1).deliver("zz", at=2).build()
    assert texts(max_deliveries(1)(history)) == [
        "unknown message (id zz) was delivered 2 times (limit 1), first at +1.0 ms, last at +2.0 ms"
    ]


def test_max_deliveries_counts_the_broker_tap_over_client_probes() -> None:
    # Both saw the deliveries: counting both would double them.
    both = (
        Script()
        .publish("a")
        .deliver("a", source="tap")
        .deliver("a", source="probe")
        .deliver("a", redelivered=True, source="tap")
        .deliver("a", redelivered=True, source="probe")
        .build()
    )
    assert max_deliveries(2)(both).ok
    assert "delivered 3 times" not in str(max_deliveries(1)(both))
    assert "delivered 2 times" in str(max_deliveries(1)(both))


def test_max_deliveries_counts_client_probes_when_there_is_no_tap() -> None:
    # Kafka has no broker-side delivery tap: the client probes are all there is.
    probed = Script().publish("a").deliver("a", source="probe").deliver("a", source="probe")
    assert ids(max_deliveries(1)(probed.build())) == [("a",)]


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, "2", None, True])
def test_max_deliveries_rejects_a_bad_limit(bad: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        max_deliveries(bad)  # type: ignore[arg-type]
    assert f"max_deliveries(n={bad!r}) is invalid" in str(raised.value)
    assert ">= 1" in str(raised.value)


# --- within -----------------------------------------------------------------------------------


def timed(*took_ms: float) -> History:
    """One input per latency: published at 100 ms steps, landed ``took`` ms later."""
    script = Script()
    for i in range(len(took_ms)):
        script.publish(f"i{i}", at=100 * i)
    for i, took in enumerate(took_ms):
        script.output(f"i{i}", at=100 * i + took)
    return script.build()


def test_within_passes_at_exactly_the_limit() -> None:
    assert within(0.005)(timed(1, 5, 3)).ok
    assert within(0.0055)(timed(5.5)).ok


def test_within_flags_the_late_input() -> None:
    verdict = within(0.005)(timed(1, 5.3, 3))
    assert verdict.check == "within(0.005)"
    assert kinds(verdict) == ["late"]
    assert ids(verdict) == [("i1",)]
    assert texts(verdict) == ["input #2 (id i1) took 5.3 ms from publish to output (limit 5 ms)"]


def test_within_flags_one_nanosecond_over_the_limit() -> None:
    history = Script().publish("a", at=0).output("a", at=5 + 1e-6).build()
    assert history.events[-1].at_ns == 5 * MS + 1
    assert ids(within(0.005)(history)) == [("a",)]


def test_within_measures_to_the_first_landing_dead_letters_included() -> None:
    history = (
        Script()
        .publish("a", at=0)
        .publish("b", at=1)
        .output("a", at=2)
        .output("a", at=50)  # a replay later does not make a late
        .dead_letter("b", at=9)
        .build()
    )
    assert within(0.008)(history).ok
    assert ids(within(0.0075)(history)) == [("b",)]


def test_within_leaves_lost_inputs_to_no_loss() -> None:
    assert within(0.001)(Script().publish("a").build()).ok


def test_within_is_named_after_its_limit() -> None:
    assert str(within(0.5)) == "within(0.5)"
    assert str(within(250)) == "within(250)"


@pytest.mark.parametrize("bad", [-1, 0, 0.0, math.inf, math.nan, "5", None, True])
def test_within_rejects_a_bad_limit(bad: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        within(bad)  # type: ignore[arg-type]
    assert f"within({bad!r}) is invalid" in str(raised.value)


# --- latency and percentile -------------------------------------------------------------------


def test_latency_passes_under_its_limits() -> None:
    history = timed(*range(1, 11))  # 1..10 ms
    check = latency(p50=0.005, p99=0.01, max=0.01)
    assert str(check) == "latency(p50=0.005, p99=0.01, max=0.01)"
    assert check(history).ok


def test_latency_flags_each_percentile_over_its_limit_in_percentile_order() -> None:
    history = timed(*range(10, 0, -1))  # 10..1 ms: order of inputs does not matter
    verdict = latency(max=0.0095, p50=0.0049, p90=0.009)(history)
    assert kinds(verdict) == ["late", "late"]
    assert ids(verdict) == [(), ()]
    assert texts(verdict) == [
        "p50 latency is 5.0 ms over 10 inputs (limit 4.9 ms)",
        "p100 latency is 10.0 ms over 10 inputs (limit 9.5 ms)",
    ]


def test_latency_uses_nearest_rank_percentiles() -> None:
    history = timed(*range(1, 101))  # 1..100 ms
    assert latency(p55=0.055, p7=0.007, p99_9=0.1)(history).ok
    verdict = latency(p55=0.0549, p7=0.0069, p99_9=0.0999)(history)
    assert texts(verdict) == [
        "p7 latency is 7.0 ms over 100 inputs (limit 6.9 ms)",
        "p55 latency is 55.0 ms over 100 inputs (limit 54.9 ms)",
        "p99.9 latency is 100.0 ms over 100 inputs (limit 99.9 ms)",
    ]


def test_latency_counts_dead_letters_and_skips_lost_inputs() -> None:
    history = (
        Script().publish("a", at=0).publish("b", at=1).publish("c", at=2).dead_letter("b", at=21)
    ).build()
    verdict = latency(p50=0.01)(history)
    assert texts(verdict) == ["p50 latency is 20.0 ms over 1 input (limit 10 ms)"]


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ({"p0": 1}, "latency(p0=...)"),
        ({"p101": 1}, "latency(p101=...)"),
        ({"p": 1}, "latency(p=...)"),
        ({"pfoo": 1}, "latency(pfoo=...)"),
        ({"q50": 1}, "latency(q50=...)"),
        ({"pnan": 1}, "latency(pnan=...)"),
        ({"p50": 0}, "latency(p50=0)"),
        ({"p50": -1}, "latency(p50=-1)"),
        ({"p50": "1"}, "latency(p50='1')"),
        ({"p50": math.nan}, "latency(p50=nan)"),
        ({"p50": math.inf}, "latency(p50=inf)"),
        ({"max": True}, "latency(max=True)"),
        ({"max": None}, "latency(max=None)"),
    ],
)
def test_latency_rejects_a_bad_limit(limits: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        latency(**limits)  # type: ignore[arg-type]
    assert str(raised.value).startswith(f"{named} is invalid")


def test_latency_needs_a_limit() -> None:
    with pytest.raises(InvalidArgument, match=r"latency\(\) needs at least one limit"):
        latency()


def nearest_rank(values: list[float], q: int) -> float:
    """The textbook definition, in integers: the ceil(q/100 * n)-th smallest value."""
    rank = max(1, -(-q * len(values) // 100))
    return sorted(values)[rank - 1]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([7.0], 1) == 7.0
    assert percentile([7.0], 100) == 7.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 50.1) == 3.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 100) == 4.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.001) == 1.0
    assert percentile([float(v) for v in range(1, 1001)], 99.9) == 999.0
    assert percentile([float(v) for v in range(1, 1001)], 99.99) == 1000.0


def test_percentile_has_no_rounding_error_for_whole_percentiles() -> None:
    for n in range(1, 201):
        values = [float(v) for v in range(n, 0, -1)]
        for q in range(1, 101):
            assert percentile(values, q) == nearest_rank(values, q), (n, q)


# --- verdicts, checks and facts -----------------------------------------------------------


def test_verdict_str_shows_name_count_summary_and_each_anomaly() -> None:
    verdict = no_duplicates()(crash_replay())
    assert str(verdict) == (
        "no_duplicates(): 2 anomalies (2 inputs, 4 outputs, 0 dead-lettered)\n"
        "  - duplicate: input #1 (id a, key 'k') came out 2 times:"
        " output at +3.0 ms, output at +8.0 ms\n"
        "  - duplicate: input #2 (id b, key 'k') came out 2 times:"
        " output at +5.0 ms, output at +10.0 ms"
    )


def test_verdict_str_when_ok() -> None:
    assert str(no_loss()(crash_replay())) == (
        "no_loss(): ok (2 inputs, 4 outputs, 0 dead-lettered)"
    )
    assert str(Verdict("bare")) == "bare: ok"


def test_verdict_str_with_one_anomaly() -> None:
    verdict = Verdict("x", (Anomaly("lost", "input #1 (id a) gone", ("a",)),))
    head, line = str(verdict).split("\n")
    assert head.startswith("x: 1 anomal")
    assert line == "  - lost: input #1 (id a) gone"
    assert not verdict.ok


@pytest.mark.parametrize(
    ("check", "name"),
    [
        (no_loss(), "no_loss()"),
        (no_duplicates(), "no_duplicates()"),
        (no_unexpected(), "no_unexpected()"),
        (per_key_order(), "per_key_order()"),
        (per_partition_order(), "per_partition_order()"),
        (delivery("exactly-once"), "delivery('exactly-once')"),
        (dead_lettered(when=poison), "dead_lettered(when=poison)"),
        (max_deliveries(4), "max_deliveries(4)"),
        (within(0.0015), "within(0.0015)"),
        (latency(p99_9=0.003), "latency(p99_9=0.003)"),
    ],
)
def test_a_check_reads_as_its_name(check: Check, name: str) -> None:
    assert str(check) == name
    assert check.name == name
    assert "run" not in repr(check)


def test_facts_index_a_history() -> None:
    history = (
        Script()
        .publish("a", key=b"k", at=0)
        .publish("b", at=1)
        .publish("a", at=2)  # a repeated id keeps its first publish
        .deliver("a", at=3)
        .output("a", at=4)
        .output(None, at=5)
        .dead_letter("b", at=6)
        .build()
    )
    facts = Facts(history)
    assert [(i.number, i.harness_id, i.event.at_ns) for i in facts.inputs.values()] == [
        (1, "a", 0),
        (2, "b", 1 * MS),
    ]
    assert facts.name("a") == "input #1 (id a, key 'k')"
    assert facts.name("b") == "input #2 (id b)"
    assert facts.name("zz") == "unknown message (id zz)"
    assert [e.at_ns for e in facts.accounted("b")] == [6 * MS]
    assert len(facts.uncorrelated) == 1
    assert len(facts.deliveries["a"]) == 1
    assert facts.at(history.events[-1]) == "+6.0 ms"
    assert facts.summary() == "2 inputs, 2 outputs, 1 dead-lettered"


def test_the_public_module_exports_every_check() -> None:
    for name in checks.__all__:
        assert getattr(checks, name) is not None
