"""A private RabbitMQ node started from the system's rabbitmq-server, and rabbitmqctl for it.

:class:`RabbitRecipe` is the local provider's recipe: it picks free loopback
ports, writes the node's configuration, plugins, cookie and certificates into
one workdir, says how to launch the node beside its own epmd, and waits until
the node is ready (registered with epmd, ``await_startup``, then a publish and
consume round trip whose firehose trace is seen, over AMQPS too when there is
a TLS listener). :func:`ctl_env` and :func:`rabbitmqctl` reach such a node.
Its programs are the system's, or those of a Debian root holding another
RabbitMQ (``HARNESS_RABBITMQ_ROOT``): an :class:`Installation` (``_root``)
wraps every command the node runs and maps the root's paths.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import BrokerError, BrokerStartError, InvalidArgument
from message_flow_harness._message import BrokerKind
from message_flow_harness._redact import redact_url
from message_flow_harness.brokers._local import LaunchPlan, free_port
from message_flow_harness.brokers._tls import make_pki, openssl_available
from message_flow_harness.brokers.rabbitmq._codec import TRACE_EXCHANGE
from message_flow_harness.brokers.rabbitmq._connection import _connect_amqp
from message_flow_harness.brokers.rabbitmq._root import ROOT_KEY, Installation
from message_flow_harness.brokers.rabbitmq._urls import secure_url

RABBITMQ_BIN: Final = Path("/usr/lib/rabbitmq/bin")
_INSTALL_FIX: Final = "install it with `apt-get install rabbitmq-server`"
_CTL_TIMEOUT: Final = 30.0


def _epmd_names(port: int, *, timeout: float) -> list[str]:
    """Node names registered with the epmd on 127.0.0.1:``port`` (empty if none answers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"\x00\x01n")  # NAMES_REQ: length 1, then 'n'
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return []
    text = b"".join(chunks)[4:].decode("utf-8", "replace")
    return [line.split()[1] for line in text.splitlines() if line.startswith("name ")]


def _tail(path: Path, *, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


# Booting loads about 1,100 modules one after the other (RabbitMQ scans every module
# for boot steps), which costs a JIT-compiling VM 4-8 s on two cores. Loading them in
# parallel from the start, while the node does its other work, takes about 3 s off.
# Erlang terms evaluated with file:script/1; failure only forfeits the speed-up.
_PRELOAD_SCRIPT: Final = """\
spawn(fun() ->
    try
        Props = fun(App) ->
            case code:where_is_file(atom_to_list(App) ++ ".app") of
                non_existing -> [];
                Path ->
                    case file:consult(Path) of
                        {ok, [{application, _, P}]} -> P;
                        _ -> []
                    end
            end
        end,
        Closure = fun
            Closure([], Seen) -> Seen;
            Closure([App | Rest], Seen) ->
                case lists:member(App, Seen) of
                    true -> Closure(Rest, Seen);
                    false ->
                        P = Props(App),
                        Deps = proplists:get_value(applications, P, [])
                            ++ proplists:get_value(included_applications, P, []),
                        Closure(Deps ++ Rest, [App | Seen])
                end
        end,
        Apps = Closure([rabbitmq_prelaunch, rabbit, rabbitmq_management], []),
        Modules = [proplists:get_value(modules, Props(A), []) || A <- Apps],
        code:ensure_modules_loaded(lists:append(Modules))
    catch _:_ -> ok
    end
end).
"""


def ctl_env(info: BrokerInfo) -> dict[str, str]:
    """Environment additions that let ``rabbitmqctl`` reach a :class:`RabbitRecipe` node."""
    try:
        node, data, epmd_port = info.extra["node"], info.extra["data"], info.extra["epmd_port"]
    except KeyError as exc:
        raise InvalidArgument(
            f"info.extra lacks {exc.args[0]!r}: rabbitmqctl can only reach a node the harness "
            "started itself (provider 'local')"
        ) from exc
    workdir = Path(data)
    return {
        "HOME": str(workdir),  # the Erlang cookie lives in $HOME
        "RABBITMQ_NODENAME": node,
        "ERL_EPMD_PORT": epmd_port,
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # Every Erlang VM in this family listens for distribution on loopback only
        # and never spawns a daemon epmd of its own.
        "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false",
        # The CLI's own distribution port: any free one, not the fixed 35672-35682 range.
        "RABBITMQ_CTL_DIST_PORT_MIN": "0",
        "RABBITMQ_CTL_DIST_PORT_MAX": "0",
        "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        "ERL_CRASH_DUMP": str(workdir / "erl_crash.dump"),
    }


def rabbitmqctl(info: BrokerInfo, *args: str, timeout: float = _CTL_TIMEOUT) -> str:
    """Run ``rabbitmqctl ARGS`` against a harness-started node; return its output.

    Raises BrokerError with the tool's output when it fails or exceeds ``timeout``.
    """
    env = ctl_env(info)
    installation = Installation.of(info)
    # The CLI runs where the node's programs live; its files are in the node's data dir.
    argv = installation.command(
        [str(RABBITMQ_BIN / "rabbitmqctl"), *args], binds=[Path(env["HOME"])]
    )
    try:
        done = subprocess.run(
            argv,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(
            f"`rabbitmqctl {' '.join(args)}` did not finish within {timeout:g} s"
        ) from exc
    except OSError as exc:
        raise BrokerError(f"cannot run {argv[0]} ({exc}): {_INSTALL_FIX}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-2000:]
        raise BrokerError(
            f"`rabbitmqctl {' '.join(args)}` failed with exit code {done.returncode}:\n{output}"
        )
    return done.stdout


class RabbitRecipe:
    """A private RabbitMQ node from Debian's rabbitmq-server, everything inside one workdir.

    Bound to 127.0.0.1 (AMQP, management, Erlang distribution, its own epmd),
    with the management plugin on and firehose tracing on for vhost "/" from boot
    (so it survives a broker restart).
    """

    kind: BrokerKind = "rabbitmq"
    start_timeout: float = 60.0

    def __init__(self, *, installation: Installation | None = None) -> None:
        #: Where the node's programs come from (default: this machine's rabbitmq-server).
        self.installation = installation or Installation()

    def check_prerequisites(self) -> None:
        """Raise BrokerStartError unless rabbitmq-server and epmd are installed."""
        self.installation.check()
        server = self.installation.host_path(RABBITMQ_BIN / "rabbitmq-server")
        if not os.access(server, os.X_OK):
            raise BrokerStartError(f"{server} is missing: {_INSTALL_FIX}")
        if self.installation.epmd() is None:
            raise BrokerStartError(f"epmd (Erlang) is not on PATH: {_INSTALL_FIX}")

    def prepare(self, workdir: Path) -> LaunchPlan:
        """Pick free loopback ports and write config, plugins, cookie and certificates.

        Besides plain AMQP and HTTP there is an AMQPS listener and an HTTPS
        management listener with a throw-away CA (see :func:`secure_url`);
        a client certificate is checked when given, not required.
        """
        ports: list[int] = []
        while len(ports) < 6:
            port = free_port()
            if port not in ports:
                ports.append(port)
        amqp_port, dist_port, epmd_port, management_port, amqps_port, https_port = ports
        node = f"rabbit-harness-{amqp_port}@localhost"
        workdir = workdir.resolve()
        (workdir / "mnesia").mkdir(parents=True, exist_ok=True)
        (workdir / "log").mkdir(exist_ok=True)
        config = (
            f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {management_port}\n"
        )
        tls_extra: dict[str, str] = {}
        if openssl_available():
            pki = make_pki(workdir / "tls")
            files = (
                f"cacertfile = {pki.ca}\n",
                f"certfile = {pki.server_cert}\n",
                f"keyfile = {pki.server_key}\n",
            )
            config += f"listeners.ssl.default = 127.0.0.1:{amqps_port}\n"
            config += "".join(f"ssl_options.{line}" for line in files)
            config += "ssl_options.verify = verify_peer\n"
            config += "ssl_options.fail_if_no_peer_cert = false\n"
            config += f"management.ssl.ip = 127.0.0.1\nmanagement.ssl.port = {https_port}\n"
            config += "".join(f"management.ssl.{line}" for line in files)
            tls_extra = {
                "amqps_port": str(amqps_port),
                "management_tls": f"https://127.0.0.1:{https_port}/",
                "tls.ca": str(pki.ca),
                "tls.client_cert": str(pki.client_cert),
                "tls.client_key": str(pki.client_key),
            }
        (workdir / "rabbitmq.conf").write_text(config)
        # trace_vhosts is what `rabbitmqctl trace_on` sets at run time; set here it also
        # holds after a restart.
        (workdir / "advanced.config").write_text('[{rabbit, [{trace_vhosts, [<<"/">>]}]}].\n')
        (workdir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        # An empty env file keeps /etc/rabbitmq/rabbitmq-env.conf out of the picture.
        (workdir / "rabbitmq-env.conf").write_text("")
        cookie = workdir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        installation = self.installation
        version = installation.version()
        info_extra = {
            **({ROOT_KEY: str(installation.root)} if installation.root is not None else {}),
            **({"version": version} if version is not None else {}),
            "management": f"http://127.0.0.1:{management_port}/",
            "node": node,
            "log": str(workdir / "log" / f"{node}.log"),
            "data": str(workdir),
            "epmd_port": str(epmd_port),
            "dist_port": str(dist_port),
            **tls_extra,
        }
        url = f"amqp://guest:guest@127.0.0.1:{amqp_port}/"
        env = {
            **ctl_env(BrokerInfo(kind="rabbitmq", url=url, provider="local", extra=info_extra)),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            # Set, it would make the script exec erl with a shell reading stdin.
            "RABBITMQ_ALLOW_INPUT": "",
        }
        preload = workdir / "preload.erl"
        preload.write_text(_PRELOAD_SCRIPT)
        if not any(c.isspace() or c in "\"'\\" for c in str(preload)):
            # Only the server gets it (ERL_AFLAGS runs before `-s rabbit boot`), not the CLI.
            env["ERL_AFLAGS"] = f'-eval file:script(\\"{preload}\\")'
        epmd = installation.epmd() or "epmd"
        server = RABBITMQ_BIN / "rabbitmq-server"
        # The node must not boot before its private epmd listens (it would fail to
        # register); wait for it, bounded, then become the server.
        start = (
            "i=0; "
            f'until "{epmd}" -port "$ERL_EPMD_PORT" -names >/dev/null 2>&1; do '
            "i=$((i+1)); "
            'if [ "$i" -ge 200 ]; then '
            'echo "epmd on port $ERL_EPMD_PORT did not start" >&2; exit 1; fi; '
            "sleep 0.05; done; "
            f'exec "{server}"'
        )
        return LaunchPlan(
            argv=installation.command(["/bin/sh", "-c", start], binds=[workdir]),
            url=url,
            env=env,
            companions=[
                installation.command([epmd, "-port", str(epmd_port), "-address", "127.0.0.1"])
            ],
            extra=info_extra,
        )

    def wait_ready(self, info: BrokerInfo, timeout: float) -> None:
        """Wait for epmd registration, ``await_startup``, then a traced publish-and-consume."""
        deadline = time.monotonic() + timeout
        node = info.extra["node"]
        short_name = node.split("@", 1)[0]
        epmd_port = int(info.extra["epmd_port"])
        log = Path(info.extra["log"])

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerStartError(
                    f"RabbitMQ node {node} was not ready within {timeout:g} s; "
                    f"its log ({log}) ends with:\n{_tail(log)}"
                )
            return left

        data = Path(info.extra["data"])
        # Cheap polling first: each rabbitmqctl costs about a second of CPU.
        while short_name not in _epmd_names(epmd_port, timeout=min(1.0, remaining())):
            if (data / "erl_crash.dump").exists() or "BOOT FAILED" in _tail(log, lines=200):
                raise BrokerStartError(
                    f"RabbitMQ node {node} failed to boot; its log ({log}) ends with:\n"
                    f"{_tail(log)}\nits console ({data / 'broker.out'}) ends with:\n"
                    f"{_tail(data / 'broker.out')}"
                )
            time.sleep(0.05)
        left = remaining()
        try:
            rabbitmqctl(info, "await_startup", "--timeout", str(max(1, int(left))), timeout=left)
        except BrokerError as exc:
            raise BrokerStartError(
                f"RabbitMQ node {node} did not start: {exc}\n"
                f"its log ({log}) ends with:\n{_tail(log)}"
            ) from exc
        # The AMQPS listener too (when there is one), so a broken TLS set-up fails here.
        for url in (info.url, secure_url(info, client_cert=True)):
            if url is None:
                continue
            try:
                asyncio.run(_round_trip(url, within=remaining()))
            except (BrokerError, TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                raise BrokerStartError(
                    f"RabbitMQ node {node} is up but a publish-and-consume round trip through"
                    f" {redact_url(url)} failed: {exc!r}"
                ) from exc


async def _round_trip(url: str, *, within: float) -> None:
    """Declare a queue, publish to it, consume the message back and see its firehose trace."""
    async with asyncio.timeout(within):
        connection = await _connect_amqp(url, within=within)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            trace = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await trace.bind(TRACE_EXCHANGE, routing_key="publish.#")
            token = secrets.token_hex(8)
            queue = await channel.declare_queue(f"harness-ready-{token}", exclusive=True)
            await channel.default_exchange.publish(
                aio_pika.Message(body=token.encode()), routing_key=queue.name, mandatory=True
            )
            got = await _get(queue)
            await got.ack()
            if got.body != token.encode():
                raise BrokerError(f"the round trip returned {got.body!r}, not {token!r}")
            traced = await _get(trace)
            routed = traced.headers.get("routed_queues")
            if not isinstance(routed, list) or queue.name not in routed:
                raise BrokerError(f"the firehose traced {traced.headers!r}, not the round trip")
            await queue.delete(if_unused=False, if_empty=False)
        finally:
            await connection.close()


async def _get(queue: AbstractQueue) -> AbstractIncomingMessage:
    """The next message on ``queue``; polls until the caller's deadline cancels it."""
    while True:
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.01)
