"""Where a private RabbitMQ node's programs come from (``HARNESS_RABBITMQ_ROOT``), no broker.

The command prefix is run for real with stand-ins for ``mount``, ``mkdir`` and
``chroot`` that log their arguments, so quoting and argument passing are
checked as the shell executes them, without privileges.
"""

from __future__ import annotations

import os
import stat
import subprocess
import textwrap
from pathlib import Path, PurePosixPath

import pytest

from message_flow_harness import BrokerInfo, BrokerStartError, InvalidArgument
from message_flow_harness._drivers import driver
from message_flow_harness.brokers import _local
from message_flow_harness.brokers.rabbitmq import ROOT_ENV, Installation, RabbitRecipe

CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def fake_root(directory: Path, *, version: str = "4.0.5") -> Path:
    """A directory shaped like a Debian root holding rabbitmq-server ``version`` and epmd."""
    root = directory / "root"
    library = root / "usr/lib/rabbitmq/lib" / f"rabbitmq_server-{version}"
    (library / "sbin").mkdir(parents=True)
    (root / "usr/lib/rabbitmq/bin").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "tmp").mkdir()
    for program in (library / "sbin/rabbitmq-server", root / "usr/lib/erlang/bin/epmd"):
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    # Relative links, as Debian's packages make them: they resolve inside the root.
    (root / "usr/lib/rabbitmq/bin/rabbitmq-server").symlink_to(
        f"../lib/rabbitmq_server-{version}/sbin/rabbitmq-server"
    )
    (root / "usr/bin/epmd").symlink_to("../lib/erlang/bin/epmd")
    return root


def logging_tools(directory: Path) -> Path:
    """A PATH directory whose mount, mkdir and chroot append their argv to ``calls.log``."""
    tools = directory / "tools"
    tools.mkdir()
    log = directory / "calls.log"
    for name in ("mount", "mkdir", "chroot"):
        script = tools / name
        script.write_text(
            textwrap.dedent(f"""\
                #!/bin/sh
                {{ printf '%s' {name}; for a in "$@"; do printf ' [%s]' "$a"; done; echo; }} \\
                    >> '{log}'
                """)
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return tools


def test_without_a_root_commands_and_paths_are_unchanged() -> None:
    host = Installation()
    assert host.command([CTL, "status"], binds=[Path("/tmp/node")]) == [CTL, "status"]
    assert host.host_path(CTL) == Path(CTL)
    assert host.slot == "rabbitmq"


def test_the_root_comes_from_the_environment() -> None:
    assert Installation.from_env({}) == Installation()
    assert Installation.from_env({ROOT_ENV: " "}) == Installation()
    found = Installation.from_env({ROOT_ENV: "/opt/rabbitmq4-root"})
    assert found.root == Path("/opt/rabbitmq4-root")
    with pytest.raises(InvalidArgument, match="absolute path"):
        Installation.from_env({ROOT_ENV: "rabbitmq4-root"})


def test_paths_inside_the_root_map_to_paths_under_it() -> None:
    inside = Installation(root=Path("/opt/r4"))
    assert inside.host_path(CTL) == Path("/opt/r4/usr/lib/rabbitmq/bin/rabbitmqctl")
    assert inside.host_path(PurePosixPath("/usr/bin/epmd")) == Path("/opt/r4/usr/bin/epmd")
    with pytest.raises(InvalidArgument, match="not an absolute path"):
        inside.host_path("usr/bin/epmd")


def test_the_command_prefix_mounts_the_workdir_at_its_own_path_then_chroots(
    tmp_path: Path,
) -> None:
    root = tmp_path / "the root"
    workdir = tmp_path / "node's work dir"
    argv = Installation(root=root).command([CTL, "eval", 'io:format("a b").'], binds=[workdir])
    assert argv[:2] == ["unshare", "--mount"]
    assert argv[-3:] == [CTL, "eval", 'io:format("a b").']
    shell = argv.index("/bin/sh")
    tools = logging_tools(tmp_path)
    # Run what unshare would run, in this namespace, with the logging stand-ins.
    subprocess.run(
        argv[shell:],
        env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"},
        check=True,
        timeout=10,
    )
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == [
        f"mount [-t] [tmpfs] [-o] [mode=1777] [tmpfs] [{root}/tmp]",
        f"mount [--rbind] [/proc] [{root}/proc]",
        f"mount [--rbind] [/dev] [{root}/dev]",
        f"mount [--rbind] [/sys] [{root}/sys]",
        f"mkdir [-p] [{root}{workdir}]",
        f"mount [--bind] [{workdir}] [{root}{workdir}]",
        f'chroot [{root}] [{CTL}] [eval] [io:format("a b").]',
    ]


def test_a_failing_mount_stops_the_command_before_chroot(tmp_path: Path) -> None:
    tools = logging_tools(tmp_path)
    (tools / "mount").write_text("#!/bin/sh\nexit 32\n")
    argv = Installation(root=tmp_path / "root").command([CTL, "status"])
    done = subprocess.run(
        argv[argv.index("/bin/sh") :],
        env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"},
        check=False,
        timeout=10,
    )
    assert done.returncode == 32
    assert not (tmp_path / "calls.log").exists()  # neither mkdir nor chroot ran


def test_each_root_has_its_own_local_broker_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(ROOT_ENV, raising=False)
    system = _local.run_dir("rabbitmq")
    assert system == tmp_path / "cache/run/rabbitmq"
    monkeypatch.setenv(ROOT_ENV, "/opt/rabbitmq4-root")
    first = _local.run_dir("rabbitmq")
    monkeypatch.setenv(ROOT_ENV, "/opt/other-root")
    second = _local.run_dir("rabbitmq")
    assert len({system, first, second}) == 3
    assert driver("rabbitmq").local_slot() == second.name
    assert _local.run_dir("kafka").name == "kafka"  # the other kinds keep theirs


def test_the_driver_recipe_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_root(tmp_path)
    monkeypatch.setenv(ROOT_ENV, str(root))
    recipe = driver("rabbitmq").recipe()
    assert isinstance(recipe, RabbitRecipe)
    assert recipe.installation == Installation(root=root)


def test_a_recipe_in_a_root_wraps_the_node_and_epmd_and_reports_the_roots_version(
    tmp_path: Path,
) -> None:
    root = fake_root(tmp_path, version="4.0.5")
    recipe = RabbitRecipe(installation=Installation(root=root))
    recipe.check_prerequisites()
    workdir = tmp_path / "work"
    plan = recipe.prepare(workdir)
    assert plan.argv[0] == "unshare"
    assert plan.argv[-3:-1] == ["/bin/sh", "-c"]
    assert 'exec "/usr/lib/rabbitmq/bin/rabbitmq-server"' in plan.argv[-1]
    assert f"mount --bind {workdir.resolve()} " in plan.argv[plan.argv.index("/bin/sh") + 2]
    (epmd,) = plan.companions
    assert epmd[0] == "unshare"
    assert epmd[epmd.index("harness-rabbitmq-root") + 1] == "/usr/bin/epmd"
    assert plan.extra["root"] == str(root)
    assert plan.extra["version"] == "4.0.5"
    info = BrokerInfo(kind="rabbitmq", url=plan.url, provider="local", extra=plan.extra)
    assert Installation.of(info) == Installation(root=root)


def test_a_root_without_rabbitmq_names_the_fix(tmp_path: Path) -> None:
    recipe = RabbitRecipe(installation=Installation(root=tmp_path))
    with pytest.raises(BrokerStartError, match="install-rabbitmq4"):
        recipe.check_prerequisites()


def test_the_version_is_read_from_the_installations_library(tmp_path: Path) -> None:
    assert Installation(root=fake_root(tmp_path, version="4.1.2")).version() == "4.1.2"
    assert Installation(root=tmp_path / "empty").version() is None


def test_a_container_runs_the_image_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from message_flow_harness.brokers.rabbitmq import _docker

    monkeypatch.delenv(_docker.IMAGE_ENV, raising=False)
    assert _docker.image_from_env() == "rabbitmq:3.10-management"
    monkeypatch.setenv(_docker.IMAGE_ENV, "rabbitmq:4.0-management")
    assert _docker.image_from_env() == "rabbitmq:4.0-management"
