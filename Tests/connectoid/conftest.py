"""The two mailbox backends the conformance tests run against: the SQLite
file of one instance, and PostgreSQL shared by a fleet. The PostgreSQL server
is started here: initdb in a temporary folder, a loopback port, trust
authentication on 127.0.0.1 only, as an unprivileged user when the tests run
as root (postgres refuses root). Each service gets a database of its own.

MASQ_PG_BIN names the folder of initdb/postgres (default: found on PATH, else
/usr/lib/postgresql/*/bin). Without a PostgreSQL server on the machine the
PostgreSQL variants are skipped and say why (.ci/setup installs it)."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest


def pg_bin():
    env = os.environ.get("MASQ_PG_BIN")
    if env:
        return env
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(versions[-1]) if versions else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1."""

    def __init__(self):
        bin_dir = pg_bin()
        if not bin_dir or not os.path.exists(os.path.join(bin_dir, "postgres")):
            raise RuntimeError("no PostgreSQL server (initdb/postgres) on this machine: apt-get install postgresql")
        self.dir = tempfile.mkdtemp(prefix="masq-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.prefix = []
        if os.geteuid() == 0:
            # postgres will not run as root: hand the folder to an unprivileged user.
            user = "nobody"
            runuser = shutil.which("runuser") or shutil.which("setpriv")
            if not runuser:
                raise RuntimeError("running as root without runuser to drop to an unprivileged user")
            self.prefix = [runuser, "-u", user, "--"] if runuser.endswith("runuser") else \
                [runuser, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
            shutil.chown(self.dir, user)
        out = subprocess.run([*self.prefix, os.path.join(bin_dir, "initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                              "--no-sync", "-E", "UTF8", "--locale=C"], capture_output=True, text=True, cwd=self.dir)
        if out.returncode != 0:
            raise RuntimeError("initdb failed: " + out.stderr[-2000:])
        self.log = open(os.path.join(self.dir, "postgres.log"), "w")
        # fsync off: a test server (a crash loses nothing the tests need); small shared buffers.
        self.proc = subprocess.Popen([*self.prefix, os.path.join(bin_dir, "postgres"), "-D", self.data, "-p", str(self.port),
                                      "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                                      "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                      "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        self.psql = shutil.which("psql")
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited: " + open(os.path.join(self.dir, "postgres.log")).read()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if self.sql("SELECT 1").returncode == 0:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("postgres did not start")

    def sql(self, statement, database="postgres"):
        return subprocess.run([self.psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                               "-v", "ON_ERROR_STOP=1", "-tAc", statement], capture_output=True, text=True)

    def new_database(self):
        """A fresh database; its postgres:// URL."""
        name = "masq_" + uuid.uuid4().hex[:12]
        out = self.sql(f"CREATE DATABASE {name}")
        assert out.returncode == 0, out.stderr
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}?sslmode=disable"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_server = {"pg": None, "error": None}


@pytest.fixture(scope="session")
def postgres():
    if _server["pg"] is None and _server["error"] is None:
        try:
            _server["pg"] = Postgres()
        except Exception as e:   # noqa: BLE001 - reported as the skip reason
            _server["error"] = str(e)
    if _server["error"]:
        pytest.skip("PostgreSQL backend: " + _server["error"])
    yield _server["pg"]


def pytest_sessionfinish(session, exitstatus):
    if _server["pg"] is not None:
        _server["pg"].stop()
        _server["pg"] = None


BACKENDS = ["sqlite", "postgres"]


def store_args(backend, request):
    """The `masq connectoid serve` options naming a new, empty store of that
    backend, and a clean-up function."""
    if backend == "postgres":
        pg = request.getfixturevalue("postgres")
        return ["--store", pg.new_database()], lambda: None
    db = tempfile.mktemp(suffix=".sqlite3")

    def clean():
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
    return ["--db", db], clean
