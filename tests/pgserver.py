"""A real PostgreSQL server for tests and the bench: the distribution's binaries (`.ci/run`
installs them), a cluster made in a temp dir, listening on a loopback port and a socket in that
dir; one database per test (`fresh`). As root (CI), the server runs as the `postgres` user,
since PostgreSQL refuses to run as root."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

START_S = 30.0


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl, newest version first, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb is not None else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = binaries()
        assert bin_dir is not None, "PostgreSQL is not installed"
        self.bin = bin_dir
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pirouter-pg-"))
        self.data = self.folder / "data"
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.count = 0

    def _run(self, *args: str) -> None:
        command = [*(["runuser", "-u", "postgres", "--"] if self.user else []), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=START_S)

    def start(self) -> PostgresServer:
        """Make the cluster (the first time) and start the server; returns when it accepts."""
        if not self.data.exists():
            self._run(
                str(self.bin / "initdb"),
                *("-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"),
                *("-E", "UTF8"),
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder}"
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            *("-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w"),
            *("-t", str(int(START_S)), "start"),
        )
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def fresh(self) -> str:
        """A new empty database's URL."""
        import psycopg

        self.count += 1
        name = f"t{self.count}_{os.getpid()}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def kill(self) -> None:
        """Stop at once, as a crash would (no shutdown checkpoint); `start` brings it back."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
