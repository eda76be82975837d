"""Helper of bench/fleet/connectoid.sh: a throwaway PostgreSQL server (the
one Tests/connectoid starts: initdb in a temporary folder, 127.0.0.1, an
unprivileged user when run as root). Prints one postgres:// URL per
database asked for (argv[1]), then holds the server until stdin closes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "Tests" / "connectoid"))
from conftest import Postgres  # noqa: E402

pg = Postgres()
try:
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        print(pg.new_database(), flush=True)
    print(f"pid {pg.proc.pid}", flush=True)
    sys.stdin.read()
finally:
    pg.stop()
