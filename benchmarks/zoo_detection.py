"""Zoo detection: how many examples ``fuzz`` needs to find each zoo defect, and false alarms.

Issue 4's acceptance: every defective service in ``harness/zoo`` is found
within 200 examples on each real broker it applies to, shrunk to what the
defect needs (a two-message reorder: two messages of one key), and the
correct services raise no false alarm over 500 examples. Each campaign
below is what a user would write for that service: the checks its contract
needs, the inputs it takes, and the fault kinds that matter to it. Nothing
is hand-written: Hypothesis generates every schedule.

Figures per defect: the example at which it was first found (target < 200),
with the shrunk schedule's size in the note, and how often the minimal
schedule failed again in 5 re-runs (target: at least 4). Per correct
service: failing examples out of ``--false-alarm-examples`` (target 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from benchmarks import Figure, Options
from message_flow_harness import brokers, checks
from message_flow_harness import strategies as hs
from message_flow_harness._broker import BrokerInfo
from message_flow_harness._checks import Check
from message_flow_harness._flow import Flow
from message_flow_harness._fuzz import fuzz
from message_flow_harness._message import BrokerKind
from message_flow_harness._report import attempts_to_catch
from message_flow_harness._schedule import faults_of, messages_of
from message_flow_harness.zoo import DEFECTS, SERVICES
from message_flow_harness.zoo.rabbitmq_services import FLAKY
from message_flow_harness.zoo.totals import amounts, totals_add_up

NAME = "zoo_detection"
FOUND_WITHIN = 200
REPRODUCED_AT_LEAST = 4  # of 5 re-runs

_POISON_INPUTS = hs.messages(values=hs.values(poison=True), max_size=4)
_CONTRACT = (checks.no_loss(), checks.no_duplicates(), checks.per_key_order())


@dataclass(frozen=True)
class Campaign:
    """How a user would fuzz one zoo service."""

    checks: Sequence[Check] = _CONTRACT
    messages: Any = None
    faults: Sequence[str] = ()
    partitions: int = 1
    quiet: float = 1.0
    label: str = "contract"  # names the campaign in the figures


def _campaign(service: str) -> Campaign:
    """The campaign for ``service``: its defect's family decides inputs and faults."""
    if service.endswith(("_lost_update", "_locked_totals")):
        return Campaign(
            checks=(checks.no_loss(), totals_add_up()), messages=amounts(), label="totals"
        )
    if service.endswith(("_swallows_errors", "_requeue_forever")):
        return Campaign(
            checks=(
                checks.no_loss(),
                checks.dead_lettered(lambda m: m.value.startswith(hs.POISON)),
                checks.max_deliveries(5),
            ),
            messages=_POISON_INPUTS,
            quiet=0.5,
            label="poison",
        )
    if service.endswith(("_commit_before_process", "_ack_before_process")):
        return Campaign(checks=(checks.no_loss(),), faults=("crash",), label="crash")
    if service.endswith("_outside_transaction"):
        # quiet: a crashed instance's group session and open transaction end first.
        return Campaign(
            checks=(checks.no_loss(), checks.no_duplicates()),
            faults=("crash",),
            quiet=3.0,
            label="transactions",
        )
    if service.endswith("_rebalance_duplicates"):
        # quiet longer than a rebalance takes, or a slow one reads as loss.
        return Campaign(
            checks=(checks.no_loss(), checks.no_duplicates()),
            faults=("join",),
            partitions=2,
            quiet=5.0,
            label="join",
        )
    if service.endswith("_retry_reorders"):
        return Campaign(messages=hs.messages(keys=hs.keys(2), values=st.sampled_from([b"", FLAKY])))
    if service.endswith("_slow"):
        return Campaign(checks=(checks.no_loss(), checks.within(0.1)))
    return Campaign()


def _correct_campaigns(kind: BrokerKind) -> list[tuple[str, Campaign]]:
    """Each correct service under every campaign its defective siblings get."""
    plain = f"{kind}_correct"
    campaigns = [
        (plain, Campaign()),
        (plain, Campaign(checks=(checks.no_loss(),), faults=("crash",), label="crash")),
        (plain, _campaign(f"{kind}_swallows_errors")),
        (f"{kind}_locked_totals", _campaign(f"{kind}_locked_totals")),
    ]
    if kind == "kafka":
        campaigns.append((plain, _campaign("kafka_rebalance_duplicates")))
        campaigns.append(("kafka_transactional", _campaign("kafka_outputs_outside_transaction")))
    return campaigns


async def _fuzz(
    info: BrokerInfo, service: str, campaign: Campaign, examples: int, reruns: int
) -> Any:
    flow = Flow(
        sut=SERVICES[service],
        broker=info.kind,
        checks=campaign.checks,
        messages=campaign.messages,
        partitions=campaign.partitions,
        quiet=campaign.quiet,
        name=service,
    )
    return await fuzz(
        flow,
        max_examples=examples,
        seed=1,
        faults=list(campaign.faults) or False,
        broker=info,
        database=None,
        report_dir=None,
        reruns=reruns,
    )


def run(options: Options) -> list[Figure]:
    figures: list[Figure] = []
    for kind in options.brokers:
        defects = [name for name, check in DEFECTS.items() if check and name.startswith(f"{kind}_")]
        with brokers.provision(kind) as info:
            for service in defects:
                campaign = _campaign(service)
                report = asyncio.run(_fuzz(info, service, campaign, FOUND_WITHIN, reruns=5))
                note = f"faults={list(campaign.faults) or 'none'}; {report.examples} examples"
                if report.minimal is not None:
                    schedule = report.minimal.schedule
                    note += (
                        f"; shrunk to {len(messages_of(schedule))} message(s) and"
                        f" {len(faults_of(schedule))} fault(s); failed again in"
                        f" {sum(report.reruns)}/{len(report.reruns)} re-runs;"
                        f" {report.minimal.failures()[0].check}"
                    )
                else:
                    note += f"; NOT FOUND within {FOUND_WITHIN} examples"
                figures.append(
                    Figure(
                        benchmark=NAME,
                        name=f"examples to find {service}",
                        value=report.first_failure_at,  # None: not found
                        unit="examples",
                        broker=kind,
                        target=f"< {FOUND_WITHIN + 1}",
                        note=note,
                        details={"reruns": report.reruns, "examples": report.examples},
                    )
                )
                if report.minimal is not None:
                    figures.append(
                        Figure(
                            benchmark=NAME,
                            name=f"re-runs of {service}'s minimal schedule that failed again",
                            value=float(sum(report.reruns)),
                            unit=f"of {len(report.reruns)}",
                            broker=kind,
                            target=f">= {REPRODUCED_AT_LEAST}",
                            note="its pasted test runs it up to"
                            f" {attempts_to_catch(sum(report.reruns), len(report.reruns))}"
                            " time(s)",
                        )
                    )
            for service, campaign in _correct_campaigns(kind):
                examples = options.false_alarm_examples
                report = asyncio.run(_fuzz(info, service, campaign, examples, reruns=0))
                faults = list(campaign.faults) or "none"
                checked = ", ".join(c.name for c in campaign.checks)
                figures.append(
                    Figure(
                        benchmark=NAME,
                        name=f"false alarms on {service} ({campaign.label})",
                        value=0.0 if report.ok else 1.0,
                        unit="failing campaigns",
                        broker=kind,
                        target="< 1",
                        note=f"{report.examples} examples, faults={faults}, checks: {checked}"
                        + ("" if report.ok else f"; FAILED: {report.violations[:1]}"),
                    )
                )
    return figures
