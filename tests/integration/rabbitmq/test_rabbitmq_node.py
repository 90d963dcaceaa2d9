"""The private node RabbitRecipe starts: loopback only, all in its workdir, reachable by CLI."""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, BrokerStartError, InvalidArgument
from message_flow_harness.brokers.rabbitmq import RabbitRecipe, ctl_env, rabbitmqctl

pytestmark = pytest.mark.rabbitmq

LOOPBACK = {"127.0.0.1", "::1"}


def listening_addresses() -> dict[int, set[str]]:
    """Port → local addresses of every listening TCP socket on this machine."""
    found: dict[int, set[str]] = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] != "0A":  # LISTEN
                continue
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            if width == 4:
                text = ".".join(str(b) for b in words)
            else:
                text = str(ipaddress.IPv6Address(words))
            found.setdefault(int(port, 16), set()).add(text)
    return found


def test_node_listens_on_loopback_only(rabbitmq_broker: BrokerInfo) -> None:
    amqp = urllib.parse.urlsplit(rabbitmq_broker.url).port
    management = urllib.parse.urlsplit(rabbitmq_broker.extra["management"]).port
    ports = {
        "amqp": amqp,
        "management": management,
        "erlang distribution": int(rabbitmq_broker.extra["dist_port"]),
        "epmd": int(rabbitmq_broker.extra["epmd_port"]),
    }
    listening = listening_addresses()
    for what, port in ports.items():
        assert port in listening, f"nothing listens on the {what} port {port}"
        assert listening[port] <= LOOPBACK, f"the {what} port {port} is bound to {listening[port]}"


def test_node_keeps_everything_in_its_workdir(rabbitmq_broker: BrokerInfo) -> None:
    data = Path(rabbitmq_broker.extra["data"])
    assert Path(rabbitmq_broker.extra["log"]).is_file()
    assert Path(rabbitmq_broker.extra["log"]).is_relative_to(data)
    assert (data / ".erlang.cookie").stat().st_mode & 0o077 == 0
    node_dirs = list((data / "mnesia").iterdir())
    assert any(p.name.startswith(rabbitmq_broker.extra["node"]) for p in node_dirs)
    assert rabbitmq_broker.extra["node"].startswith("rabbit-harness-")
    assert ctl_env(rabbitmq_broker)["HOME"] == str(data)


def test_rabbitmqctl_reaches_the_node_and_tracing_is_on(rabbitmq_broker: BrokerInfo) -> None:
    # trace_on at run time only sets this; it comes from advanced.config, so restarts keep it.
    output = rabbitmqctl(rabbitmq_broker, "eval", "application:get_env(rabbit, trace_vhosts).")
    # "/" among them: runs with a vhost of their own (Flow(topology=...)) trace theirs too.
    assert output.strip().startswith("{ok,["), output
    assert '<<"/">>' in output, output


def test_ctl_env_needs_a_local_node() -> None:
    info = BrokerInfo(kind="rabbitmq", url="amqp://guest:guest@127.0.0.1:5672/", provider="url")
    with pytest.raises(InvalidArgument, match="started itself"):
        ctl_env(info)


def test_missing_rabbitmq_server_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "message_flow_harness.brokers.rabbitmq._node.RABBITMQ_BIN",
        Path("/nonexistent/rabbitmq/bin"),
    )
    with pytest.raises(BrokerStartError, match="apt-get install rabbitmq-server"):
        RabbitRecipe().check_prerequisites()


def test_prepare_picks_distinct_loopback_ports(tmp_path: Path) -> None:
    plan = RabbitRecipe().prepare(tmp_path)
    env = plan.env
    ports = {env["RABBITMQ_NODE_PORT"], env["RABBITMQ_DIST_PORT"], env["ERL_EPMD_PORT"]}
    ports.add(str(urllib.parse.urlsplit(plan.extra["management"]).port))
    assert len(ports) == 4
    assert plan.url == f"amqp://guest:guest@127.0.0.1:{env['RABBITMQ_NODE_PORT']}/"
    assert env["RABBITMQ_NODE_IP_ADDRESS"] == "127.0.0.1"
    assert env["HOME"] == str(tmp_path.resolve())
    assert all(str(tmp_path.resolve()) in env[k] for k in env if k.endswith(("_FILE", "_BASE")))
    assert "management.tcp.ip = 127.0.0.1" in (tmp_path / "rabbitmq.conf").read_text()
    assert plan.companions
    assert os.path.basename(plan.companions[0][0]) == "epmd"
