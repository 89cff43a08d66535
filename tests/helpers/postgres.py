"""A private PostgreSQL server for the test suite, started once per session.

The server refuses to run as root, and CI runs as root: then initdb and the server run as
the `postgres` user that Debian's package creates (or `nobody`), in a folder of their own
under /tmp (pytest's temp folders are private to root). As a normal user they run as that
user. The server listens on 127.0.0.1 at a free port and on a socket in its folder, with
durability off (fsync, synchronous commit, full page writes): a test's data dies with the
session anyway, and these cut a commit from milliseconds to microseconds."""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SPEED = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def find_bindir() -> Path | None:
    """The newest installed server's binaries: $OLLAMA_Q_PG_BINDIR, Debian's
    /usr/lib/postgresql/<major>/bin, or wherever `initdb` is on the PATH; None if none
    (also if $OLLAMA_Q_PG_BINDIR holds no `initdb`: set to an empty folder, it makes a run
    without the server)."""
    env = os.environ.get("OLLAMA_Q_PG_BINDIR")
    if env:
        return Path(env) if (Path(env) / "initdb").exists() else None
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                    key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _server_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and there is no postgres or nobody user to run the server as")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster in a temporary folder; `start`, `stop` and `restart` it at will (tests
    of a server restart mid-run do), `close` stops it and removes the folder. `durable`
    keeps the server's default durability (benchmarks compare it with LMDB's fsync)."""

    def __init__(self, bindir: Path, *, durable: bool = False, listen: str = "127.0.0.1") -> None:
        """`listen`: the server's listen_addresses (tests/netns/ serves other namespaces)."""
        self.bindir = bindir
        self.durable = durable
        self.listen = listen
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="ollama-q-pg-"))
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.running = False
        atexit.register(self.close)  # a session ended by a signal leaves no server behind

    def _run(self, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        proc = subprocess.run([str(self.bindir / args[0]), *args[1:]], cwd=self.root, capture_output=True,
                              text=True, timeout=120, **kwargs)
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")

    def start(self) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                      "-E", "UTF8", "--locale=C")
        settings = {**({} if self.durable else SPEED), "listen_addresses": f"'{self.listen}'",
                    "unix_socket_directories": str(self.root)}
        for attempt in range(3):
            # The same port across restarts: a client reconnecting must find the server again.
            self.port = self.port or _free_port()
            options = " ".join(f"-c {k}={v}" for k, v in {**settings, "port": self.port}.items())
            try:
                self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log), "-o", options)
                break
            except RuntimeError:
                if attempt == 2 or self.running:
                    raise
                self.port = 0  # another process took the port between our probe and the start
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `immediate` is a crash as far as the clients can tell."""
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)
            self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.running:
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres", *, password: str | None = None) -> str:
        """A URL clients connect with. Authentication is `trust`, so a password is
        accepted and ignored: enough to test that one is never shown."""
        secret = f":{password}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """One statement outside a transaction (CREATE DATABASE needs that)."""
        import psycopg2

        conn = psycopg2.connect(self.url(dbname))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str, *, template: str = "template0") -> str:
        """A new database, a copy of `template` (file copy: quicker than the WAL strategy
        for a small template); its URL."""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
