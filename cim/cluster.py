"""The embedded PostGIS cluster: a private PostgreSQL 15 server under ``$CIM_HOME/pg``.

Decisions:
- Layout: ``$CIM_HOME/pg/data`` (the cluster), ``$CIM_HOME/pg/run`` (Unix socket), ``$CIM_HOME/pg/server.log``
  and ``$CIM_HOME/pg/cluster.json`` (port, role, password). The server listens on that socket and on a free
  127.0.0.1 port chosen at first start (re-chosen if taken later).
- PostgreSQL refuses to run as root. When we are root the server runs as the system user
  ``settings.pg_user`` (default ``cim-pg``), created with ``useradd --system`` if missing, and owns
  ``$CIM_HOME/pg``. That user must be able to reach the folder; if a parent folder forbids it we stop with a
  message saying which one, rather than changing permissions of folders we do not own.
- Authentication: the socket folder is private to the server's user (mode 0700; root passes anyway), with
  ``trust``; TCP on 127.0.0.1 needs the generated password (scram-sha-256) kept in ``cluster.json`` (0600).
- Throwaway clusters (``settings.pg_fast``) turn off fsync and synchronous commit: tests only.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cim.settings import Settings

DATABASE = "cim"
ROLE = "cim"
PG_MAJOR = "15"


class ClusterError(RuntimeError):
    """The embedded cluster cannot be set up or started; the message says what to do."""


@dataclass(frozen=True)
class ClusterInfo:
    """Where a running embedded cluster can be reached."""

    data_dir: Path
    socket_dir: Path
    port: int
    password: str

    @property
    def url(self) -> str:
        """libpq URL over the Unix socket (no password needed there)."""
        return f"postgresql://{ROLE}@/{DATABASE}?host={self.socket_dir}&port={self.port}"

    @property
    def tcp_url(self) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"


def pg_bindir() -> Path:
    """The PostgreSQL 15 server binaries (Debian layout first, then PATH)."""
    debian = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
    if (debian / "pg_ctl").exists():
        return debian
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise ClusterError("PostgreSQL 15 server binaries not found (pg_ctl); install postgresql-15")


class EmbeddedCluster:
    """Create, start, stop and inspect the cluster under ``settings.home / 'pg'``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "pg"
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_file = self.root / "server.log"
        self.state_file = self.root / "cluster.json"
        self.bindir = pg_bindir()

    # ---- who runs the server -------------------------------------------------------------------------
    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _server_user(self) -> pwd.struct_passwd:
        if not self.as_root:
            return pwd.getpwuid(os.geteuid())
        name = self.settings.pg_user
        try:
            return pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(name)

    def _run_as_server_user(self, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        if self.as_root:
            args = ["runuser", "-u", self.settings.pg_user, "--", *args]
        return subprocess.run(args, text=True, capture_output=True, **kw)  # type: ignore[call-overload]

    def _check_reachable(self, user: pwd.struct_passwd) -> None:
        """Every parent of the cluster folder must be searchable by the server's user."""
        if not self.as_root:
            return
        for parent in reversed(self.root.parents):
            st = parent.stat()
            if st.st_uid == user.pw_uid:
                continue
            if not st.st_mode & 0o001 and not (st.st_gid == user.pw_gid and st.st_mode & 0o010):
                raise ClusterError(
                    f"PostgreSQL runs as system user {user.pw_name!r}, which cannot enter {parent} "
                    f"(mode {oct(st.st_mode & 0o777)}). Allow it (chmod o+x {parent}) or set CIM_HOME "
                    "to a folder it can reach."
                )

    # ---- state ---------------------------------------------------------------------------------------
    def _state(self) -> dict[str, object]:
        if self.state_file.exists():
            return dict(json.loads(self.state_file.read_text()))
        return {}

    def _write_state(self, state: dict[str, object]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".cluster.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_file)

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.initialised:
            return False
        res = self._run_as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status"])
        return res.returncode == 0

    def info(self) -> ClusterInfo:
        state = self._state()
        if not state:
            raise ClusterError(f"no embedded cluster under {self.root}; run `cim db up`")
        return ClusterInfo(self.data_dir, self.socket_dir, int(str(state["port"])), str(state["password"]))

    # ---- lifecycle -----------------------------------------------------------------------------------
    def init(self) -> None:
        """initdb once; re-running on an initialised cluster does nothing."""
        if self.initialised:
            return
        user = self._server_user()
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_reachable(user)
        password = secrets.token_urlsafe(24)
        # initdb needs an empty directory it can own.
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        for d in (self.root, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700)
        pwfile = self.root / ".pwfile"
        pwfile.write_text(password + "\n")
        try:
            for path in (self.root, self.data_dir, self.socket_dir, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(self.socket_dir, 0o700)
            res = self._run_as_server_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    ROLE,
                    "--pwfile",
                    str(pwfile),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise ClusterError(f"initdb failed:\n{res.stderr.strip()}")
        self._write_state({"port": free_port(), "password": password})

    def start(self) -> ClusterInfo:
        """Start the server if it is not running and wait until it accepts connections."""
        self.init()
        if self.is_running():
            return self.info()
        state = self._state()
        port = int(str(state["port"]))
        if not port_is_free(port):
            port = free_port()
            state["port"] = port
            self._write_state(state)
        if len(str(self.socket_dir)) > 90:
            raise ClusterError(f"socket folder path too long for a Unix socket: {self.socket_dir}")
        options = [
            f"-c port={port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories='{self.socket_dir}'",
            "-c unix_socket_permissions=0700",
            "-c shared_buffers=256MB",
            "-c work_mem=32MB",
            "-c maintenance_work_mem=256MB",
            "-c max_wal_size=2GB",
        ]
        if self.settings.pg_fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        res = self._run_as_server_user(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if res.returncode != 0:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ClusterError(f"PostgreSQL did not start: {res.stderr.strip()}\n{tail}")
        return self.info()

    def stop(self) -> bool:
        """Stop cleanly (fast shutdown: running transactions roll back). Returns whether it was running."""
        if not self.is_running():
            return False
        res = self._run_as_server_user(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
        )
        if res.returncode != 0:
            raise ClusterError(f"pg_ctl stop failed: {res.stderr.strip()}")
        return True

    def destroy(self) -> None:
        """Stop and delete the cluster and its data (``cim db reset`` builds a new one afterwards)."""
        self.stop()
        if self.root.exists():
            shutil.rmtree(self.root)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
