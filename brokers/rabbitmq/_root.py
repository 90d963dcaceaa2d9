"""Where a private node's programs come from: this machine, or a Debian root of another release.

RabbitMQ 4.x and the Erlang it needs (Debian 13's) want a newer glibc than
Debian 12 has, so they live in a minimal Debian 13 root (``.ci/install-rabbitmq4``
builds one) named by ``HARNESS_RABBITMQ_ROOT``. :class:`Installation` is the
one place that knows about it. It does two things:

* a command prefix: :meth:`Installation.command` runs a program inside the
  root (``unshare`` gives it a private mount namespace, where ``/proc``,
  ``/dev``, ``/sys`` and the node's workdir are bind-mounted into the root at
  their own paths, then ``chroot``); the network is this machine's, so the
  node binds 127.0.0.1 on the ports the harness picked;
* a path mapping: :meth:`Installation.host_path` turns a path inside the
  root (``/usr/lib/rabbitmq/bin/rabbitmq-server``) into the one seen here.

The node's own files (config, cookie, data, logs) sit in its workdir, which
has the same path inside and outside, so the harness reads them unchanged.
Without a root both are the identity: the system's rabbitmq-server runs.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Final

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import BrokerStartError, InvalidArgument

ROOT_ENV: Final = "HARNESS_RABBITMQ_ROOT"
#: Where Debian's rabbitmq-server package keeps the node's scripts (inside a root, too).
RABBITMQ_LIB: Final = PurePosixPath("/usr/lib/rabbitmq")
#: The key of :attr:`BrokerInfo.extra` naming the root a local node runs in.
ROOT_KEY: Final = "root"
_ROOT_FIX: Final = "build it with `.ci/install-rabbitmq4` (root or sudo)"
#: Mounted into the root for every command: the kernel's views Erlang reads.
_SYSTEM_MOUNTS: Final = ("/proc", "/dev", "/sys")


@dataclass(frozen=True, kw_only=True)
class Installation:
    """The rabbitmq-server a private node runs: this machine's (``root=None``) or a root's."""

    root: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Installation:
        """The installation ``HARNESS_RABBITMQ_ROOT`` names (this machine's when unset or empty)."""
        value = (os.environ if environ is None else environ).get(ROOT_ENV, "").strip()
        if not value:
            return cls()
        root = Path(value)
        if not root.is_absolute():
            raise InvalidArgument(
                f"{ROOT_ENV}={value!r} is invalid: give the absolute path of a Debian root"
                f" holding rabbitmq-server, e.g. /opt/rabbitmq4-root ({_ROOT_FIX})"
            )
        return cls(root=root)

    @classmethod
    def of(cls, info: BrokerInfo) -> Installation:
        """The installation the local node ``info`` describes runs from."""
        root = info.extra.get(ROOT_KEY)
        return cls(root=Path(root)) if root else cls()

    @property
    def slot(self) -> str:
        """The local-broker slot: nodes of different installations are never shared."""
        if self.root is None:
            return "rabbitmq"
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return f"rabbitmq-root-{digest}"

    def host_path(self, path: str | PurePath) -> Path:
        """Where ``path``, as the node's programs see it, is on this machine."""
        inner = PurePosixPath(path)
        if self.root is None:
            return Path(inner)
        if not inner.is_absolute():
            raise InvalidArgument(f"{str(inner)!r} is not an absolute path inside {self.root}")
        return self.root / inner.relative_to("/")

    def command(self, argv: Sequence[str], *, binds: Sequence[Path] = ()) -> list[str]:
        """``argv`` (paths as the root sees them) as a command to run from here.

        ``binds`` are this machine's directories the command needs at their own
        paths (the node's workdir); a tmpfs over the root's ``/tmp`` keeps their
        mount points out of the root itself when they live under ``/tmp``.
        """
        if self.root is None:
            return list(argv)
        root = shlex.quote(str(self.root))
        lines = ["set -e", f"mount -t tmpfs -o mode=1777 tmpfs {root}/tmp"]
        lines += [f"mount --rbind {m} {root}{m}" for m in _SYSTEM_MOUNTS]
        for directory in binds:
            inner = shlex.quote(f"{self.root}{directory}")
            lines += [f"mkdir -p {inner}", f"mount --bind {shlex.quote(str(directory))} {inner}"]
        lines.append(f'exec chroot {root} "$@"')
        # Not root here: a user namespace maps this user to root inside, where mount works.
        mapping = [] if os.geteuid() == 0 else ["--map-root-user"]
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            *mapping,
            "--",
            "/bin/sh",
            "-c",
            "\n".join(lines),
            "harness-rabbitmq-root",
            *argv,
        ]

    def check(self) -> None:
        """Raise BrokerStartError unless the root holds rabbitmq-server and can be entered."""
        if self.root is None:
            return
        server = self.host_path(RABBITMQ_LIB / "bin" / "rabbitmq-server")
        if not os.access(server, os.X_OK):
            raise BrokerStartError(
                f"{ROOT_ENV}={self.root} holds no RabbitMQ ({server} is missing): {_ROOT_FIX},"
                f" or unset {ROOT_ENV} to run this machine's rabbitmq-server"
            )
        for tool in ("unshare", "chroot", "mount"):
            if shutil.which(tool) is None:
                raise BrokerStartError(
                    f"{tool} is not on PATH: running the node inside {self.root} needs it"
                    " (apt-get install util-linux coreutils mount)"
                )

    def epmd(self) -> str | None:
        """The path of ``epmd`` as the node's programs see it, or None if there is none."""
        if self.root is None:
            return shutil.which("epmd")
        for inner in ("/usr/bin/epmd", "/usr/lib/erlang/bin/epmd"):
            if os.access(self.host_path(inner), os.X_OK):
                return inner
        return None

    def version(self) -> str | None:
        """RabbitMQ's version in this installation, from its library directory's name."""
        library = self.host_path(RABBITMQ_LIB / "lib")
        prefix = "rabbitmq_server-"
        try:
            found = sorted(p.name for p in library.iterdir() if p.name.startswith(prefix))
        except OSError:
            return None
        return found[-1].removeprefix(prefix) if found else None
