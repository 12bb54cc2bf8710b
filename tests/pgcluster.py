"""A throwaway PostgreSQL cluster for the tests, made from the installed server binaries.

``initdb`` in a fresh directory, ``pg_ctl start`` on a free loopback port (its socket in that
directory too), one database per test, ``pg_ctl stop`` and the directory removed at the end.
The binaries are looked for on ``PATH``, then in Debian's ``/usr/lib/postgresql/<version>/bin``
(``.ci/run`` installs Debian's ``postgresql`` package when neither has them). PostgreSQL
refuses to run as root: under root the cluster belongs to, and runs as, the ``postgres`` user
the package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

__all__ = ["Cluster", "server_binary"]


def server_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not versions:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install "
                           "postgresql; '.ci/run' does it)")
    return versions[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One running PostgreSQL server; ``dsn(database)`` to reach it."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="conflux-pg-")
        self.data = os.path.join(self.base, "data")
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self._databases = 0

    def _run(self, *argv, timeout=60):
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout,
                              user=self.user.pw_uid if self.user else None,
                              group=self.user.pw_gid if self.user else None,
                              env={**os.environ, "LC_ALL": "C"})

    def start(self) -> "Cluster":
        self._run(server_binary("initdb"), "-D", self.data, "-U", "conflux", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        self._start()
        return self

    def _start(self) -> None:
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200")
        self._run(server_binary("pg_ctl"), "-D", self.data, "-o", options, "-w", "-t", "60",
                  "-l", os.path.join(self.base, "server.log"), "start")

    def halt(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions cut, or ``immediate``: as a crash); ``resume``
        starts it again on the same port."""
        self._run(server_binary("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop")

    def resume(self) -> None:
        self._start()

    def stop(self) -> None:
        try:
            self._run(server_binary("pg_ctl"), "-D", self.data, "-m", "immediate", "-w",
                      "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=conflux dbname={database}"

    def new_database(self) -> str:
        """A fresh, empty database's DSN."""
        import psycopg

        self._databases += 1
        name = f"t{self._databases}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)
