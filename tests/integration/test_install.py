"""The wheel as users install it: built from this checkout, installed in a fresh virtualenv,
used from a project that has its own ``brokers`` package and ``harness`` module.

The wheel installs only ``message_flow_harness`` (no top-level ``brokers`` or
``harness`` to clash with a user's), its pytest plugin loads, ``harness
--version`` answers, and ``harness demo`` finds and shrinks its race with the
services the package ships, on the session's brokers (given by URL, so the
demo starts none). Dependencies come through pip's cache of earlier installs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo
from message_flow_harness._drivers import driver

pytestmark = [pytest.mark.kafka, pytest.mark.rabbitmq, pytest.mark.timeout(900)]

CHECKOUT = Path(__file__).resolve().parents[2]
#: What a wheel is built from: the package folders and the files pyproject.toml reads.
SOURCES = ("harness", "brokers", "pyproject.toml", "README.md")
#: Hang guards, not speed targets (a cold pip cache downloads the dependencies).
BUILD_S, INSTALL_S, COMMAND_S, DEMO_S = 300, 600, 120, 600


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(argv)} exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    )
    return done.stdout


def _build_wheel(into: Path, env: dict[str, str]) -> Path:
    """The wheel of a copy of the checkout (building in place would leave build/ behind)."""
    source = into / "source"
    for name in SOURCES:
        path = CHECKOUT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    # The checkout's virtualenv has the build backend: no isolated build environment to fetch.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run(
        [*pip_wheel, "-q", "--wheel-dir", str(into / "dist"), str(source)],
        cwd=into,
        env=env,
        timeout=BUILD_S,
    )
    [wheel] = (into / "dist").glob("message_flow_harness-*.whl")
    return wheel


def _user_project(at: Path) -> Path:
    """A project with names a careless wheel would clash with: ``brokers`` and ``harness``."""
    (at / "brokers").mkdir(parents=True)
    (at / "brokers" / "__init__.py").write_text('WHOSE = "the user\'s brokers"\n')
    (at / "harness.py").write_text('WHOSE = "the user\'s harness"\n')
    return at


def test_the_wheel_installs_beside_a_project_s_own_brokers_and_runs_the_demo(
    kafka_broker: BrokerInfo, rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

    wheel = _build_wheel(tmp_path / "build", env)
    with zipfile.ZipFile(wheel) as built:
        tops = {name.split("/")[0] for name in built.namelist()}
        shipped = set(built.namelist())
    assert tops == {"message_flow_harness", wheel.name.rsplit("-", 3)[0] + ".dist-info"}
    assert "message_flow_harness/zoo/kafka_services.py" in shipped

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env, timeout=COMMAND_S)
    bin_dir = venv / "bin"
    pip_install = [str(bin_dir / "python"), "-m", "pip", "install", "-q"]
    _run(
        [*pip_install, f"{wheel}[kafka,rabbitmq]", "pytest", "pytest-asyncio"],
        cwd=tmp_path,
        env=env,
        timeout=INSTALL_S,
    )

    project = _user_project(tmp_path / "project")
    env |= {
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        # Only in case the demo wanted a broker of its own: never the session's cache.
        "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
        driver("kafka").url_env: kafka_broker.url,
        driver("rabbitmq").url_env: rabbitmq_broker.url,
    }
    if "management" in rabbitmq_broker.extra:  # a node of its own port, not 15672
        env["HARNESS_RABBITMQ_MANAGEMENT_URL"] = rabbitmq_broker.extra["management"]
    # The plugin loaded through its entry point: its options are listed.
    helped = _run([str(bin_dir / "pytest"), "--help"], cwd=project, env=env, timeout=COMMAND_S)
    assert "message-flow harness:" in helped
    assert driver("kafka").url_option in helped
    version = _run([str(bin_dir / "harness"), "--version"], cwd=project, env=env, timeout=COMMAND_S)
    assert version.strip() == f"harness {wheel.name.split('-')[1]}"
    whose = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import brokers, harness; print(brokers.WHOSE, harness.WHOSE)",
        ],
        cwd=project,
        env=env,
        timeout=COMMAND_S,
    )
    assert whose.strip() == "the user's brokers the user's harness"

    shown = _run([str(bin_dir / "harness"), "demo"], cwd=project, env=env, timeout=DEMO_S)
    assert "kafka: race found and shrunk; the fix passes" in shown
    assert "rabbitmq: race found and shrunk; the fix passes" in shown
    assert "(url)" in shown  # the session's brokers, given by URL
    assert not (tmp_path / "cache").exists()
