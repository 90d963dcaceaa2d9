"""Environment templates and ``process(...)``: validation, and a local process's life cycle.

No broker: the processes here are small Python programs that print, wait
for a signal or exit, which is all the life cycle needs.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from message_flow_harness import (
    Endpoints,
    Flow,
    InvalidArgument,
    ServiceError,
    eventually,
    process,
)
from message_flow_harness._environment import (
    DEFAULT_VARIABLES,
    TEMPLATE_FIELDS,
    check_templates,
    default_environment,
    launching,
    render,
)
from message_flow_harness._history import History
from message_flow_harness._logs import attributed, capturing
from message_flow_harness._service_process import ServiceProcess

KAFKA = Endpoints(
    kind="kafka",
    input="in-1",
    output="out-1",
    dead_letter="dlq-1",
    bootstrap_servers="127.0.0.1:19092",
    group_id="group-1",
)
RABBITMQ = Endpoints(
    kind="rabbitmq",
    input="in-2",
    output="out-2",
    dead_letter="dlq-2",
    amqp_url="amqp://guest:guest@127.0.0.1:5672/",
)

# --- templates ---------------------------------------------------------------------


def test_templates_render_the_endpoints_fields() -> None:
    templates = check_templates(
        {"BOOT": "{bootstrap_servers}", "TOPICS": "{input},{output}", "LIT": "a{{b}}"},
        where="Flow(env=...)",
    )
    assert render(templates, KAFKA) == {
        "BOOT": "127.0.0.1:19092",
        "TOPICS": "in-1,out-1",
        "LIT": "a{b}",
    }


def test_an_unknown_field_is_named_with_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument) as raised:
        Flow(sut=lambda e: None, broker="kafka", env={"IN": "{input_topic}"})  # type: ignore[arg-type,return-value]
    message = str(raised.value)
    assert "Flow(env=...)" in message
    assert "{input_topic}" in message
    assert all(f"{{{field}}}" in message for field in TEMPLATE_FIELDS)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"X": 1}, "a template is a str"),
        ({"": "{input}"}, "variable name"),
        ({"A=B": "{input}"}, "variable name"),
        ({"X": "{input"}, "not a template"),
        ({"X": "{input!r}"}, "bare field name"),
        ({"X": "{input:>10}"}, "bare field name"),
        (["X"], "mapping of variable name to template"),
    ],
)
def test_bad_templates_are_refused_when_given(env: object, named: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(named)):
        process(["true"], env=env)  # type: ignore[arg-type]


def test_a_field_this_broker_lacks_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidArgument, match=r"a rabbitmq run has no bootstrap_servers"):
        render({"BOOT": "{bootstrap_servers}"}, RABBITMQ)


def test_every_text_field_of_endpoints_is_a_template_field() -> None:
    hints = typing.get_type_hints(Endpoints)
    text = {name for name, hint in hints.items() if hint in (str, str | None)}
    assert text == set(TEMPLATE_FIELDS)


def test_default_variables_leave_out_what_the_broker_lacks() -> None:
    kafka = default_environment(KAFKA)
    assert kafka["HARNESS_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    assert kafka["HARNESS_GROUP_ID"] == "group-1"
    assert kafka["HARNESS_DEAD_LETTER"] == "dlq-1"
    assert "HARNESS_AMQP_URL" not in kafka
    rabbitmq = default_environment(RABBITMQ)
    assert rabbitmq["HARNESS_AMQP_URL"] == RABBITMQ.amqp_url
    assert "HARNESS_BOOTSTRAP_SERVERS" not in rabbitmq
    assert set(kafka) | set(rabbitmq) == set(DEFAULT_VARIABLES)


@pytest.fixture
def no_orders_queue() -> Iterator[None]:
    saved = os.environ.pop("ORDERS_QUEUE", None)
    os.environ["ORDERS_URL"] = "amqp://kept-after"
    yield
    os.environ.pop("ORDERS_URL", None)
    if saved is not None:
        os.environ["ORDERS_QUEUE"] = saved


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_orders_queue")
async def test_launching_sets_the_environment_and_restores_it() -> None:
    templates = {"ORDERS_QUEUE": "{input}", "ORDERS_URL": "{amqp_url}"}
    async with launching("sut0", templates, RABBITMQ):
        assert os.environ["ORDERS_QUEUE"] == "in-2"
        assert os.environ["ORDERS_URL"] == RABBITMQ.amqp_url
    assert "ORDERS_QUEUE" not in os.environ
    assert os.environ["ORDERS_URL"] == "amqp://kept-after"


# --- process(...) arguments -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"argv": "python -m orders"}, "non-empty list"),
        ({"argv": []}, "non-empty list"),
        ({"argv": ["python", 3]}, "every argument is a str or a path"),
        ({"argv": ["x"], "ready": "("}, "not a regular expression"),
        ({"argv": ["x"], "ready": 0}, "a TCP port is 1-65535"),
        ({"argv": ["x"], "ready": True}, "give a regular expression"),
        ({"argv": ["x"], "ready": 2.5}, "give a regular expression"),
        ({"argv": ["x"], "stop_grace": 0}, "stop_grace=0"),
        ({"argv": ["x"], "stop_grace": float("inf")}, "positive number"),
    ],
)
def test_bad_process_arguments_are_refused(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(named)):
        process(**kwargs)  # type: ignore[arg-type]


def test_a_process_service_is_labelled_by_its_command() -> None:
    flow = Flow(sut=process(["/usr/bin/python3", "-m", "orders.worker"]), broker="kafka")
    assert flow.label == "python3 -m orders.worker"
    assert Flow(sut=process(["x"], name="orders"), broker="kafka").label == "orders"


# --- a process's life cycle ------------------------------------------------------------


def _python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", code]


async def _started(service: ServiceProcess, history: History) -> None:
    with attributed(history):
        await service.__aenter__()


def _dead(pid: int) -> bool:
    """Whether ``pid`` is gone, or a zombie (dead, until its new parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


async def _exited(service: ServiceProcess) -> None:
    """Until the process has ended by itself (the run would go on meanwhile)."""
    assert service._process is not None
    await asyncio.wait_for(service._process.wait(), timeout=10)


@pytest.mark.asyncio
async def test_output_lines_go_to_the_history_and_the_environment_reaches_the_process() -> None:
    code = (
        "import os, sys, time\n"
        "print('topic', os.environ['IN'], os.environ['HARNESS_GROUP_ID'], flush=True)\n"
        "print('warming up', file=sys.stderr, flush=True)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    history = History()
    service = process(_python(code), env={"IN": "{input}"}, ready=r"^ready$")(KAFKA)
    with capturing(history):
        await _started(service, history)
        await service.__aexit__(None, None, None)
    logs = [(entry.logger, entry.message) for entry in history.logs]
    assert ("sut.stdout", "topic in-1 group-1") in logs
    assert ("sut.stderr", "warming up") in logs
    assert ("sut.stdout", "ready") in logs


@pytest.mark.asyncio
async def test_the_instance_names_its_output() -> None:
    history = History()
    service = process(_python("print('hello', flush=True)"), ready="hello")(KAFKA)
    with capturing(history):
        async with launching("sut1", {}, KAFKA):
            await _started(service, history)
        await _exited(service)
        with pytest.raises(ServiceError, match="exited by itself with code 0"):
            await service.__aexit__(None, None, None)
    assert [(e.logger, e.message) for e in history.logs] == [("sut1.stdout", "hello")]


@pytest.mark.asyncio
async def test_a_process_that_exits_before_ready_names_its_code_and_last_lines() -> None:
    code = "import sys\nfor n in range(30): print('line', n)\nsys.exit(3)\n"
    service = process(_python(code), ready="never printed")(KAFKA)
    with pytest.raises(ServiceError) as raised:
        await _started(service, History())
    message = str(raised.value)
    assert "exited with code 3 before it was ready" in message
    assert "awaited an output line matching 'never printed'" in message
    assert "stdout| line 29" in message
    assert "stdout| line 10" in message
    assert "line 9\n" not in message  # only the last 20 lines


@pytest.mark.asyncio
async def test_a_process_that_dies_during_the_run_is_an_error_on_exit() -> None:
    code = "import sys, time\nprint('consuming', flush=True)\nsys.exit('broker gone')\n"
    service = process(_python(code), ready="consuming")(KAFKA)
    await _started(service, History())
    await _exited(service)
    with pytest.raises(ServiceError) as raised:
        await service.__aexit__(None, None, None)
    assert "exited by itself with code 1" in str(raised.value)
    assert "stderr| broker gone" in str(raised.value)


@pytest.mark.asyncio
async def test_stop_is_sigterm_and_a_clean_exit_is_no_error() -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('bye', flush=True), sys.exit(0)))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    service = process(_python(code), ready="up")(KAFKA)
    await _started(service, History())
    await service.__aexit__(None, None, None)
    assert list(service.lines) == ["stdout| up", "stdout| bye"]


@pytest.mark.asyncio
async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    service = process(_python(code), ready="up", stop_grace=0.2)(KAFKA)
    await _started(service, History())
    with pytest.raises(ServiceError, match=r"did not exit within stop_grace=0.2 s of SIGTERM"):
        await service.__aexit__(None, None, None)
    assert service._process is not None
    assert service._process.returncode == -signal.SIGKILL


@pytest.mark.asyncio
async def test_kill_ends_the_whole_group_at_once() -> None:
    # The service's own child, in its group, ignoring SIGTERM: a kill must reach it too.
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    service = process(_python(code), ready=r"^child \d+$")(KAFKA)
    await _started(service, History())
    pid = int(service.lines[-1].rsplit(" ", 1)[1])
    await service.kill()
    assert service._process is not None
    assert service._process.returncode == -signal.SIGKILL

    await eventually(lambda: _dead(pid), within=5.0)


@pytest.mark.asyncio
async def test_ready_on_a_port_and_by_a_function() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import socket, time\n"
        "time.sleep(0.3)\n"
        f"s = socket.create_server(('127.0.0.1', {port}))\n"
        "time.sleep(60)\n"
    )
    by_port = process(_python(code), ready=port)(KAFKA)
    await _started(by_port, History())
    await by_port.__aexit__(None, None, None)

    asked: list[str] = []

    async def ready(endpoints: Endpoints) -> bool:
        asked.append(endpoints.input)
        return len(asked) >= 3

    by_function = process(_python("import time; time.sleep(60)"), ready=ready)(KAFKA)
    await _started(by_function, History())
    await by_function.__aexit__(None, None, None)
    assert asked == ["in-1"] * 3


@pytest.mark.asyncio
async def test_a_start_that_times_out_leaves_no_process() -> None:
    service = process(_python("import time; time.sleep(60)"), ready="never")(KAFKA)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await _started(service, History())
    assert service._process is not None
    assert service._process.returncode == -signal.SIGKILL


@pytest.mark.asyncio
async def test_a_missing_program_is_a_service_error() -> None:
    service = process(["/nonexistent/orders-worker"])(KAFKA)
    with pytest.raises(ServiceError, match="cannot start orders-worker"):
        await _started(service, History())


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_orders_queue")
async def test_a_flows_env_lies_under_the_processs_own() -> None:
    code = "import os\nprint(os.environ['ORDERS_QUEUE'], os.environ['ORDERS_URL'], flush=True)\n"
    service = process(_python(code), env={"ORDERS_URL": "own:{output}"}, ready="in-2")
    flow_env = {"ORDERS_QUEUE": "{input}", "ORDERS_URL": "flow:{amqp_url}"}
    async with launching("sut0", flow_env, RABBITMQ):
        started = service(RABBITMQ)
        await _started(started, History())
    await _exited(started)
    await started.kill()  # nothing left to kill: takes the last lines
    assert list(started.lines) == ["stdout| in-2 own:out-2"]


@pytest.mark.asyncio
async def test_a_start_that_runs_out_of_time_says_what_it_awaited() -> None:
    history = History()
    service = process(_python("import time; time.sleep(60)"), ready="never")(KAFKA)
    with capturing(history):
        async with launching("sut0", {}, KAFKA):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await _started(service, history)
    assert [(e.logger, e.message) for e in history.logs] == [
        ("sut0.process", "not ready: awaited an output line matching 'never'")
    ]


@pytest.mark.asyncio
async def test_the_process_runs_in_its_cwd(tmp_path: Path) -> None:
    code = "import os\nprint('in', os.getcwd(), flush=True)\n"
    service = process(_python(code), cwd=tmp_path, ready="^in ")(KAFKA)
    await _started(service, History())
    await _exited(service)
    await service.kill()
    assert list(service.lines) == [f"stdout| in {tmp_path}"]


def test_at_exit_only_a_running_child_is_killed() -> None:
    """The interpreter's last act kills a process no run stopped, and nothing else."""
    code = (
        "import asyncio, sys\n"
        "from message_flow_harness import Endpoints, process\n"
        "endpoints = Endpoints(kind='kafka', input='i', output='o', dead_letter='d',"
        " bootstrap_servers='127.0.0.1:1')\n"
        "sleeper = process([sys.executable, '-c', 'import time; print(1, flush=True);"
        " time.sleep(60)'], ready='1')(endpoints)\n"
        "quick = process([sys.executable, '-c', 'pass'])(endpoints)\n"
        "async def main():\n"
        "    await sleeper.__aenter__()\n"
        "    await quick.__aenter__()\n"
        "    await quick._process.wait()  # reaped: its id may be reused\n"
        "    print(sleeper._process.pid, flush=True)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    asyncio.run(eventually(lambda: _dead(pid), within=5.0))
