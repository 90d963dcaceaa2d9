"""A Kafka broker in a container (testcontainers), where a Docker engine answers.

:func:`start_container` starts Confluent's KRaft image with the same
test-friendly settings as the local broker and waits for a round trip;
:func:`_require_docker` first says plainly when no engine answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import BrokerStartError, BrokerUnavailable, HarnessError
from message_flow_harness.brokers.kafka._clients import MAX_MESSAGE_BYTES
from message_flow_harness.brokers.kafka._errors import describe
from message_flow_harness.brokers.kafka._ready import await_round_trip

#: The image testcontainers' KafkaContainer is tested with (KRaft needs cp-kafka >= 7.0).
DOCKER_IMAGE = "confluentinc/cp-kafka:7.6.0"


def start_container(*, timeout: float = 120.0) -> tuple[BrokerInfo, Callable[[], None]]:
    """Start a KRaft Kafka container (testcontainers); return its info and a stop function.

    Raises BrokerUnavailable when no Docker engine answers, BrokerStartError
    when the container does not come up or fails a round trip in ``timeout``.
    """
    _require_docker()
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(image=DOCKER_IMAGE).with_kraft()
    # The same test-friendly settings as the local broker (see _recipe._server_properties).
    for key, value in {
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_MESSAGE_MAX_BYTES": str(MAX_MESSAGE_BYTES),
        "KAFKA_REPLICA_FETCH_MAX_BYTES": str(MAX_MESSAGE_BYTES),
    }.items():
        container.with_env(key, value)

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            container.stop()

    started = time.monotonic()
    try:
        container.start(timeout=max(1, int(timeout)))
        info = BrokerInfo(
            kind="kafka",
            url=container.get_bootstrap_server(),
            provider="docker",
            extra={"image": DOCKER_IMAGE, "container": str(container.get_wrapped_container().id)},
        )
        remaining = max(1.0, timeout - (time.monotonic() - started))
        asyncio.run(await_round_trip(info, within=remaining))
    except BaseException as err:
        with contextlib.suppress(Exception):
            stop()
        if isinstance(err, HarnessError):
            raise
        if isinstance(err, Exception):
            raise BrokerStartError(
                f"the Kafka container ({DOCKER_IMAGE}) did not start within {timeout:g} s "
                f"({describe(err)}): check `docker logs` and that the image can be pulled"
            ) from err
        raise
    return info, stop


def _require_docker() -> None:
    from testcontainers.core.docker_client import DockerClient, get_docker_host

    fix = "start Docker or set DOCKER_HOST, or use the local Kafka broker that needs only Java"
    host = get_docker_host() or "unix:///var/run/docker.sock"
    socket_path = Path(host.removeprefix("unix://"))
    if host.startswith("unix://") and not socket_path.exists():
        raise BrokerUnavailable(f"no Docker engine answers: {socket_path} does not exist: {fix}")
    reason = ""
    # docker-py drops the socket of a failed connection without closing it;
    # collect it here, quietly, rather than in whatever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = DockerClient()
            try:
                client.client.ping()
            finally:
                client.client.close()
        except Exception as err:
            reason = describe(err)
        if reason:
            gc.collect()
    if reason:
        raise BrokerUnavailable(f"no Docker engine answers at {host} ({reason}): {fix}")
