"""Records of aborted Kafka transactions: their own event kind, seen, never counted as outputs.

The checks judge what a ``read_committed`` consumer sees; ``CommittedView``
(the Kafka tap's bookkeeping) tells aborted records from the two readers.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from message_flow_harness import History, Kind, Message, checks
from message_flow_harness._broker import TapRecord
from message_flow_harness._timeline import ABORTED_LANE, lane_of, layout
from message_flow_harness.brokers.kafka._committed_view import CommittedView
from tests.unit.histories import Script

EXACTLY_ONCE = (checks.no_loss(), checks.no_duplicates(), checks.no_unexpected())


def aborted(script: Script, harness_id: str | None, *, at: float) -> Script:
    """An output of ``harness_id`` that landed in a transaction which then aborted."""
    script.output(harness_id, at=at)
    script.events[-1] = script.events[-1]._replace(kind=Kind.ABORTED)
    return script


def crashed_mid_transaction() -> History:
    """Input a's first output aborted with the crashed instance; the restarted one committed it."""
    script = Script().publish("a", key=b"k", at=0).publish("b", key=b"k", at=1)
    aborted(script, "a", at=2).crash(at=3)
    return script.output("a", at=10).output("b", at=11).build()


def test_an_aborted_copy_is_no_duplicate_and_the_summary_counts_it_apart() -> None:
    history = crashed_mid_transaction()
    for check in EXACTLY_ONCE:
        verdict = check(history)
        assert verdict.ok, str(verdict)
        assert verdict.summary == "2 inputs, 2 outputs, 0 dead-lettered, 1 aborted (not counted)"
    assert checks.delivery("exactly-once")(history).ok


def test_an_input_output_only_in_an_aborted_transaction_is_lost() -> None:
    script = Script().publish("a", at=0)
    history = aborted(script, "a", at=1).build()
    [anomaly] = checks.no_loss()(history).anomalies
    assert anomaly.kind == "lost"
    assert anomaly.harness_ids == ("a",)


def test_two_committed_outputs_are_a_duplicate_whatever_aborted_beside_them() -> None:
    script = Script().publish("a", at=0)
    aborted(script, "a", at=1)
    history = script.output("a", at=5).output("a", at=6).build()
    [anomaly] = checks.no_duplicates()(history).anomalies
    assert anomaly.kind == "duplicate"
    assert "came out 2 times: output at +5.0 ms, output at +6.0 ms" in anomaly.text


def test_an_aborted_record_without_an_id_is_not_unexpected() -> None:
    script = Script().publish("a", at=0)
    history = aborted(script, None, at=1).output("a", at=2).build()
    assert checks.no_unexpected()(history).ok


def test_aborted_events_keep_their_kind_through_json() -> None:
    history = crashed_mid_transaction()
    again = History.from_json(history.to_json())
    assert [e.kind for e in again] == [e.kind for e in history]
    assert len(again.of(Kind.ABORTED)) == 1


def test_a_tap_record_of_an_aborted_transaction_is_recorded_as_aborted() -> None:
    history = History()
    record = TapRecord(
        event="landed", destination="out", message=Message(b"x"), seen_ns=5, partition=0,
        offset=3, aborted=True,
    )  # fmt: skip
    event = history.record_tap(Kind.OUTPUT, record, "a")
    assert (event.kind, event.at_ns, event.offset) == (Kind.ABORTED, 5, 3)
    kept = history.record_tap(Kind.OUTPUT, TapRecord(**{**_fields(record), "aborted": False}), "a")
    assert kept.kind is Kind.OUTPUT


def _fields(record: TapRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in TapRecord.__dataclass_fields__}


def test_the_timeline_draws_aborted_outputs_in_their_own_lane() -> None:
    history = crashed_mid_transaction()
    [event] = history.of(Kind.ABORTED)
    assert lane_of(event) == ABORTED_LANE
    timeline = layout(history)
    assert timeline.overlapping_texts() == []
    assert ABORTED_LANE in [t.text for t in timeline.texts]
    assert "#1 aborted" in [t.text for t in timeline.texts]
    assert "aborted" in [t.text for t in timeline.texts], "the legend names the kind"


# --- CommittedView: telling aborted records from the two readers --------------------

# A partition's log: each record committed (True) or aborted (False).
logs = st.lists(st.booleans(), max_size=30)


@given(log=logs, data=st.data())
def test_the_view_finds_exactly_the_aborted_records_however_the_readers_interleave(
    log: list[bool], data: st.DataObject
) -> None:
    view: CommittedView[int] = CommittedView()
    committed = [offset for offset, kept in enumerate(log) if kept]
    # The committed reader returns its records in order, then reports its position
    # (past the aborted ones too); the uncommitted reader returns every record in order.
    steps = ["committed"] * len(committed) + ["uncommitted"] * len(log) + ["position"] * 3
    order = data.draw(st.permutations(steps))
    found: list[int] = []
    returned = uncommitted = 0
    for step in order:
        if step == "committed":
            view.committed(0, committed[returned])
            returned += 1
        elif step == "uncommitted":
            offset = uncommitted
            uncommitted += 1
            if view.uncommitted(0, offset, offset):
                found.append(offset)
        else:
            # The reader's position: past what it returned, and past the aborted
            # records before its next committed one (the end of the log at the end).
            position = committed[returned] if returned < len(committed) else len(log)
            found += view.passed(0, position)
    found += view.passed(0, len(log))
    assert sorted(found) == [offset for offset, kept in enumerate(log) if not kept]


def test_a_record_of_an_open_transaction_stays_undecided() -> None:
    view: CommittedView[str] = CommittedView()
    assert view.uncommitted(0, 0, "open") is False
    assert view.passed(0, 0) == []  # the committed reader waits at the open transaction
    assert view.passed(0, 1) == ["open"]  # it aborted: the reader went past it
