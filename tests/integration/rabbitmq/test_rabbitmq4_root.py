"""A node started from ``HARNESS_RABBITMQ_ROOT`` runs the root's RabbitMQ (4.x), not the system's.

Only the 4.x pass sets the variable (``make test-rabbitmq4``); the main pass,
on the system's RabbitMQ, skips this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import aio_pika
import pytest

from message_flow_harness import BrokerInfo
from message_flow_harness.brokers.rabbitmq import ROOT_ENV, rabbitmqctl

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.skipif(
        not os.environ.get(ROOT_ENV, "").strip(),
        reason=f"{ROOT_ENV} is unset: the RabbitMQ 4.x pass (make test-rabbitmq4) runs this",
    ),
]


def test_the_session_node_runs_in_the_root(rabbitmq_broker: BrokerInfo) -> None:
    assert rabbitmq_broker.provider == "local"
    assert rabbitmq_broker.extra["root"] == os.environ[ROOT_ENV].strip()
    assert rabbitmq_broker.extra["version"].startswith("4."), rabbitmq_broker.extra
    # Its files are where the harness looks, though the node wrote them inside the root.
    assert Path(rabbitmq_broker.extra["log"]).is_file()


@pytest.mark.asyncio
async def test_the_broker_says_it_is_4x(rabbitmq_broker: BrokerInfo) -> None:
    connection = await aio_pika.connect(rabbitmq_broker.url)
    try:
        said = connection.transport.connection.server_properties
    finally:
        await connection.close()
    version = said["version"]
    assert isinstance(version, str | bytes)
    text = version.decode() if isinstance(version, bytes) else version
    assert text.startswith("4."), said
    assert text == rabbitmq_broker.extra["version"]  # what the harness reports is the node's


def test_rabbitmqctl_runs_the_roots_cli(rabbitmq_broker: BrokerInfo) -> None:
    assert rabbitmqctl(rabbitmq_broker, "version").strip() == rabbitmq_broker.extra["version"]
