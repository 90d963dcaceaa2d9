"""A RabbitMQ broker in a Docker container (testcontainers), the last of the providers.

:func:`start_container` first asks whether a Docker engine answers (the
``docker`` CLI, else docker-py), so its absence is one clear error, then starts
the management image with firehose tracing on for vhost "/" and returns the
broker's info with the function that stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from typing import Final

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import BrokerError, BrokerStartError, BrokerUnavailable


def _docker_engine_problem() -> str | None:
    """None when a Docker engine answers, else why not."""
    cli = shutil.which("docker")
    if cli is not None:
        try:
            done = subprocess.run(
                [cli, "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`docker info` failed: {exc}"
        if done.returncode != 0:
            return (
                done.stderr.strip() or done.stdout.strip() or "`docker info` failed"
            ).splitlines()[0]
        return None
    import gc
    import warnings

    import docker  # type: ignore[import-untyped]

    # docker-py leaks its socket when no engine answers: keep that ResourceWarning quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(version="auto", timeout=15)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # docker-py raises several unrelated types here
            return f"{type(exc).__name__}: {exc}"
        finally:
            gc.collect()
    return None


#: The image when neither the caller nor ``HARNESS_RABBITMQ_IMAGE`` names one.
DEFAULT_IMAGE: Final = "rabbitmq:3.10-management"
IMAGE_ENV: Final = "HARNESS_RABBITMQ_IMAGE"


def image_from_env() -> str:
    """The image ``HARNESS_RABBITMQ_IMAGE`` names (say ``rabbitmq:4.0-management``), else ours."""
    return os.environ.get(IMAGE_ENV, "").strip() or DEFAULT_IMAGE


def start_container(
    *, image: str | None = None, timeout: float = 120.0
) -> tuple[BrokerInfo, Callable[[], None]]:
    """Start RabbitMQ in a container with tracing on; return its info and a stop function.

    ``image`` defaults to :func:`image_from_env`: a management image, which the
    harness needs for its management API.
    """
    image = image or image_from_env()
    problem = _docker_engine_problem()
    if problem is not None:
        raise BrokerUnavailable(
            f"no Docker engine answers: {problem}; start Docker (or set DOCKER_HOST), "
            "or use the local provider or --amqp-url / HARNESS_AMQP_URL"
        )
    from testcontainers.community.rabbitmq import RabbitMqContainer

    container = RabbitMqContainer(image).with_exposed_ports(15672)
    deadline = time.monotonic() + timeout
    try:
        container.start()
        exit_code, output = container.exec(["rabbitmqctl", "trace_on", "-p", "/"])
        if exit_code != 0:
            raise BrokerStartError(f"`rabbitmqctl trace_on` in the container failed: {output!r}")
        host = container.get_container_host_ip()
        amqp_port = container.get_exposed_port(container.port)
        management_port = container.get_exposed_port(15672)
    except BrokerError:
        container.stop()
        raise
    except Exception as exc:  # testcontainers and docker-py raise many types
        with contextlib.suppress(Exception):
            container.stop()
        raise BrokerStartError(f"the RabbitMQ container ({image}) did not start: {exc!r}") from exc
    if time.monotonic() > deadline:
        container.stop()
        raise BrokerStartError(f"the RabbitMQ container ({image}) took more than {timeout:g} s")
    user = urllib.parse.quote(container.username, safe="")
    password = urllib.parse.quote(container.password, safe="")
    info = BrokerInfo(
        kind="rabbitmq",
        url=f"amqp://{user}:{password}@{host}:{amqp_port}/",
        provider="docker",
        extra={
            "management": f"http://{host}:{management_port}/",
            "container": container.get_container_id(),
            "image": image,
        },
    )
    return info, container.stop
