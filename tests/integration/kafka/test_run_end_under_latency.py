"""When a run ends follows its faults: a correct service under latency is not called lossy.

Under ``Latency(200)`` every round trip through the fault proxy costs 400 ms
(200 ms each way), so a consume-produce-commit cycle takes seconds; a run
that ended after ``quiet`` (2 s) without a new output reported the zoo's
correct service as losing inputs, 5 runs of 5.
"""

from __future__ import annotations

import pytest

from message_flow_harness import BrokerInfo, Flow, Message, checks
from message_flow_harness._runner import run_flow
from message_flow_harness.schedule import Latency
from message_flow_harness.zoo.kafka_services import kafka_correct

pytestmark = [pytest.mark.asyncio, pytest.mark.kafka]


async def test_a_correct_service_under_latency_loses_nothing_five_runs_of_five(
    kafka_broker: BrokerInfo,
) -> None:
    flow = Flow(
        sut=kafka_correct,
        broker="kafka",
        partitions=3,
        checks=[checks.no_loss(), checks.per_key_order()],
    )
    for run in range(5):
        schedule = [
            Latency(0.2),
            Message(key=b"a", value=f"{run}-a".encode()),
            Message(key=b"b", value=f"{run}-b".encode()),
        ]
        result = await run_flow(flow, schedule, broker=kafka_broker)
        assert result.ok, f"run {run + 1} of 5:\n{result.report()}"
        assert result.ended_by == "every input accounted for", result.report()
