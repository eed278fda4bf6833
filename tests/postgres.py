"""A throwaway PostgreSQL server for the tests, from Debian's ``postgresql`` package.

On a cluster the ablation's workers share one Optuna study in PostgreSQL and teams run the MLflow
server on PostgreSQL; the tests run both against a real server, started once per session
(``postgres_server`` in conftest) and stopped at its end:

- binaries: ``/usr/lib/postgresql/<version>/bin`` (the newest there; ``.ci/run`` installs the
  package). Where there are none, the tests that need a server are skipped.
- user: ``initdb`` and ``postgres`` refuse to run as root, so as root they run as the package's
  ``postgres`` system user (``subprocess``'s ``user=``: the process started is the server itself,
  stopped by its pid), in a fresh folder of that user's under /tmp, removed at the end.
- network: TCP on 127.0.0.1 only, on a free port; no Unix socket.
- logins: passwords (scram-sha-256) for every connection. The admin's password reaches initdb in
  a 0600 file (``--pwfile``), the test role's in SQL over the connection: no password is ever on a
  command line, where ``ps`` would show it.

Each test gets a database of its own, owned by the test role: :meth:`PostgresServer.create_database`
returns its URL, ``postgresql://fakeface:<password>@127.0.0.1:<port>/<name>``.
"""

from __future__ import annotations

import itertools
import os
import pwd
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HOST = "127.0.0.1"
ADMIN = "fakeface_admin"
ROLE = "fakeface"
START_TIMEOUT_S = 60
#: Speed over durability: a test server's data is thrown away anyway.
SETTINGS = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and postgres, or None."""
    found = [b for b in Path("/usr/lib/postgresql").glob("*/bin")
             if (b / "initdb").is_file() and (b / "postgres").is_file()]
    return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0, default=None)


@dataclass
class PostgresServer:
    """A running server; :meth:`create_database` gives each test a fresh database."""

    port: int
    process: subprocess.Popen
    root: Path
    admin_password: str = field(repr=False)
    password: str = field(repr=False)
    _names: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, database: str) -> str:
        """The test role's URL of ``database`` (it holds the password: keep it in the environment)."""
        return f"postgresql://{ROLE}:{self.password}@{HOST}:{self.port}/{database}"

    def connect(self, database: str = "postgres", *, admin: bool = False):  # noqa: ANN201 - psycopg2 connection
        import psycopg2

        user, password = (ADMIN, self.admin_password) if admin else (ROLE, self.password)
        return psycopg2.connect(host=HOST, port=self.port, user=user, password=password, dbname=database,
                                connect_timeout=5)

    def create_database(self, prefix: str = "test") -> str:
        """A new, empty database owned by the test role; returns its URL."""
        from psycopg2 import sql

        name = f"{prefix}_{next(self._names)}"
        statement = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE))
        connection = self.connect(admin=True)
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()
        return self.url(name)

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the server's pid), SIGKILL if it hangs; then remove its folder."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _pick_port(port_free: Callable[[int], bool]) -> int:
    """A free port below the kernel's ephemeral range (an outgoing connection cannot take it)."""
    rng = random.Random()
    while True:
        port = rng.randrange(10000, _ephemeral_low())
        if port_free(port):
            return port


def start(port_free: Callable[[int], bool]) -> PostgresServer:
    """initdb a fresh cluster and start its server; raises if it does not come up.

    Callers skip first where :func:`binaries` finds none.
    """
    bin_dir = binaries()
    assert bin_dir is not None, "no PostgreSQL binaries: check binaries() first"
    as_root = os.geteuid() == 0
    # As root: the package's system user (initdb refuses root); otherwise this user.
    account = pwd.getpwnam("postgres") if as_root else pwd.getpwuid(os.geteuid())
    run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if as_root else {}
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": account.pw_dir or "/"}

    root = Path(tempfile.mkdtemp(prefix="fakeface-pg-", dir="/tmp" if as_root else None))
    os.chown(root, account.pw_uid, account.pw_gid)
    admin_password, password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    try:
        pwfile = root / "admin-password"
        pwfile.touch(mode=0o600)
        pwfile.write_text(admin_password + "\n")
        os.chown(pwfile, account.pw_uid, account.pw_gid)
        initdb = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", ADMIN, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
            cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False, **run_as,
        )
        pwfile.unlink()
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
        for _ in range(3):  # another program may take the chosen port first
            server = _start_server(bin_dir, root, _pick_port(port_free), run_as, env, admin_password, password)
            if server is not None:
                break
        else:
            raise RuntimeError("PostgreSQL did not start on any of 3 free ports:\n"
                               + (root / "server.log").read_text(errors="replace")[-3000:])
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(server.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {(HOST, server.port)}, f"PostgreSQL listens on {listening}, not only {HOST}"
        connection = server.connect(admin=True)
        connection.autocommit = True
        with connection.cursor() as cursor:  # the password travels in the SQL, not in any argv
            cursor.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (password,))
        connection.close()
    except BaseException:
        server.stop()
        raise
    return server


def _start_server(bin_dir: Path, root: Path, port: int, run_as: dict, env: dict[str, str],
                  admin_password: str, password: str) -> PostgresServer | None:
    """The server on ``port``, once it takes logins; None if the port was taken meanwhile."""
    import psycopg2

    settings = [arg for key, value in {**SETTINGS, "port": str(port)}.items() for arg in ("-c", f"{key}={value}")]
    with open(root / "server.log", "ab") as log:
        process = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(root / "data"), *settings],
                                   cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, **run_as)
    server = PostgresServer(port, process, root, admin_password, password)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if "could not bind" in server.log() or "already in use" in server.log():
                return None
            raise RuntimeError(f"PostgreSQL exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            server.connect(admin=True).close()
            return server
        except psycopg2.OperationalError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"PostgreSQL took no login within {START_TIMEOUT_S} s:\n{server.log()[-3000:]}")
