"""A throwaway PostgreSQL server on loopback for the tests (no pytest dependency).

    with postgres_server(tmpdir) as url:  # postgresql://sandbox@127.0.0.1:PORT/optuna
        ...

The URL is the bare form users type (SQLAlchemy >= 2.1 maps it to psycopg 3, which the sweep extra installs);
`driver="psycopg2"` names another driver in it (`server.libpq_url` always holds the bare form).

The server gets a fresh data directory under `tmpdir` (trust authentication, superuser `sandbox`), listens on
127.0.0.1 only, on a free port, with its unix socket inside that directory, so nothing global is touched. On exit it
is stopped (`pg_ctl stop -m immediate`) and the directory is removed. PostgreSQL refuses to run as root: as root,
initdb and pg_ctl run as the `postgres` system user (created by Debian's postgresql package).

Any failure to start raises RuntimeError with a message that says what is missing or what went wrong.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

INSTALL_HINT = "install Debian's postgresql package: apt-get install -y postgresql"
USER = "sandbox"
DATABASE = "optuna"
DRIVER: str | None = None  # SQLAlchemy driver named in the URL (None: the bare postgresql://)
RUN_AS = "postgres"  # the system user that runs the server when we are root
START_TIMEOUT = 30.0  # seconds until the server must accept connections


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name)) or (0,)


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: `pg_config --bindir`, else the newest
    /usr/lib/postgresql/*/bin, else wherever PATH finds initdb."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True)
            candidates.append(Path(out.stdout.strip()))
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        candidates.append(Path(bindir))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bindir
    missing = "initdb" if not any(os.access(b / "initdb", os.X_OK) for b in candidates) else "pg_ctl"
    raise RuntimeError(f"PostgreSQL binaries not found ({missing}); {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traversable_by_others(path: Path) -> bool:
    """Whether every directory from / down to `path` can be entered by another (unprivileged) user."""
    for p in [path, *path.parents]:
        try:
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


class PostgresServer:
    """start() / stop() of one throwaway server; `url` is set once it runs."""

    def __init__(self, tmpdir: str | os.PathLike, start_timeout: float = START_TIMEOUT, driver: str | None = DRIVER):
        self.tmpdir = Path(tmpdir)
        self.start_timeout = start_timeout
        self.driver = driver
        self.root: Path | None = None
        self.url: str | None = None  # SQLAlchemy URL, postgresql+DRIVER://sandbox@127.0.0.1:PORT/optuna
        self.libpq_url: str | None = None  # postgresql://sandbox@127.0.0.1:PORT/optuna (psql, libpq, psycopg)
        self.port: int | None = None
        self._bindir: Path | None = None

    # ----------------------------------------------------------------------------------------------- helpers
    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", RUN_AS, "--", *argv]
        return ["su", RUN_AS, "-s", "/bin/sh", "-c", shlex.join(argv)]

    def _run(self, argv: list[str], what: str, timeout: float = 120.0, as_server: bool = True) -> str:
        cmd = self._as_server_user(argv) if as_server else argv
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGHOST/PGPORT/... of the caller
        env.update(LC_ALL="C", LANG="C")
        try:
            out = subprocess.run(
                cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"PostgreSQL {what} timed out after {timeout:.0f} s: {shlex.join(cmd)}") from exc
        except OSError as exc:
            raise RuntimeError(f"PostgreSQL {what} could not run ({shlex.join(cmd)}): {exc}") from exc
        if out.returncode != 0:
            detail = (out.stderr or out.stdout).strip()[-2000:]
            raise RuntimeError(f"PostgreSQL {what} failed (exit {out.returncode}): {shlex.join(cmd)}\n{detail}")
        return out.stdout

    def _log_tail(self) -> str:
        log = self.root / "server.log" if self.root else None
        if log and log.exists():
            return "\n" + log.read_text(errors="replace")[-2000:]
        return ""

    def _make_root(self) -> Path:
        """A dedicated directory for data, socket and log. As root it belongs to the server user, in a place that
        user can reach (the given tmpdir when its parents can be entered, else the system temp directory)."""
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return Path(tempfile.mkdtemp(prefix="postgres-", dir=self.tmpdir))
        try:
            user = pwd.getpwnam(RUN_AS)
        except KeyError:
            raise RuntimeError(
                f"running as root but there is no '{RUN_AS}' system user to run PostgreSQL as; {INSTALL_HINT}"
            ) from None
        base = self.tmpdir if _traversable_by_others(self.tmpdir.resolve()) else Path(tempfile.gettempdir())
        root = Path(tempfile.mkdtemp(prefix="postgres-", dir=base))
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chmod(root, 0o700)
        return root

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> str:
        bindir = find_bindir()
        self.root = self._make_root()
        try:
            return self._start(bindir)
        except BaseException:
            self.stop()
            raise

    def _start(self, bindir: Path) -> str:
        self._bindir = bindir
        data, sockdir, log = self.root / "data", self.root / "socket", self.root / "server.log"
        initdb_help = self._run([str(bindir / "initdb"), "--help"], "initdb --help")
        initdb = [str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", USER, "-E", "UTF8", "--locale=C"]
        if "--no-sync" in initdb_help:
            initdb.append("--no-sync")
        self._run(initdb, "initdb")
        # trust, and only over 127.0.0.1 and the private unix socket in sockdir (the server listens on nothing else)
        (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\nlocal all all trust\n")
        self._run(["mkdir", "-p", "-m", "0700", str(sockdir)], "mkdir of the socket directory")

        for attempt in range(3):  # the free port can be taken between free_port() and the server's bind
            port = free_port()
            opts = f"-h 127.0.0.1 -p {port} -k {shlex.quote(str(sockdir))} -F -c max_connections=50"
            pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts]
            try:
                self._run([*pg_ctl, "-w", "-t", str(int(self.start_timeout)), "start"], "server start", timeout=90)
            except RuntimeError as exc:
                if attempt == 2 or "could not bind" not in self._log_tail():
                    raise RuntimeError(f"{exc}{self._log_tail()}") from None
                continue
            break
        self.port = port

        self._wait_ready(port)
        self._create_database(bindir, port)
        self.libpq_url = f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}"
        scheme = f"postgresql+{self.driver}" if self.driver else "postgresql"
        self.url = f"{scheme}://{USER}@127.0.0.1:{port}/{DATABASE}"
        return self.url

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections on 127.0.0.1:{port} within "
                        f"{self.start_timeout:.0f} s{self._log_tail()}"
                    ) from None
                time.sleep(0.1)

    def _create_database(self, bindir: Path, port: int) -> None:
        createdb = bindir / "createdb"
        if os.access(createdb, os.X_OK):
            argv = [str(createdb), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE]
            self._run(argv, "createdb", timeout=60, as_server=False)
            return
        try:
            import psycopg
        except ImportError:
            raise RuntimeError(f"neither {createdb} nor psycopg is there to create the database") from None
        conn = psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", autocommit=True)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            data = self.root / "data"
            if self._bindir is not None and (data / "postmaster.pid").exists():  # also after a start that timed out
                pg_ctl = [str(self._bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                with contextlib.suppress(RuntimeError):
                    self._run(pg_ctl, "server stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root, self.url, self.libpq_url = None, None, None


@contextlib.contextmanager
def postgres_server(
    tmpdir: str | os.PathLike, start_timeout: float = START_TIMEOUT, driver: str | None = DRIVER
) -> Iterator[str]:
    """Start a throwaway PostgreSQL server; yields `postgresql://sandbox@127.0.0.1:PORT/optuna`."""
    server = PostgresServer(tmpdir, start_timeout, driver)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
