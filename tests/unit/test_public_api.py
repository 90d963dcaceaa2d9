"""The public front: every advertised name imports, and the core imports no driver."""

from __future__ import annotations

import subprocess
import sys

import pytest

import message_flow_harness as harness
from message_flow_harness import checks


@pytest.mark.parametrize("name", harness.__all__)
def test_every_public_name_is_importable(name: str) -> None:
    assert getattr(harness, name) is not None


@pytest.mark.parametrize("name", checks.__all__)
def test_every_check_name_is_importable(name: str) -> None:
    assert callable(getattr(checks, name))


def test_importing_the_core_and_plugin_loads_no_broker_driver() -> None:
    code = (
        "import sys, message_flow_harness, message_flow_harness.pytest_plugin;"
        "import message_flow_harness.brokers;"
        "loaded = [m for m in ('aiokafka', 'aio_pika', 'aiormq') if m in sys.modules];"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
