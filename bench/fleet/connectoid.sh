#!/usr/bin/env bash
# Connectoid fleet benchmark: requests/s and p99 of `send` (1 KiB messages,
# every one distinct) and `check` (an empty mailbox) under wrk (1 thread,
# CONNS keep-alive connections, SECONDS_EACH per point) for:
#   sqlite      one instance on its SQLite file
#   postgres    one instance on PostgreSQL (a server started here, as
#               Tests/connectoid does; fsync off, as a test server)
#   haproxy-2   two instances on the same PostgreSQL database behind HAProxy
#               (the Connectoid part of deploy/haproxy.cfg)
# wrk, the services, HAProxy and PostgreSQL share the machine's cores: the
# figures are for this box (2 cores here), for the capacity model in
# docs/OPERATIONS.md, not for a service alone.
#
#   bench/fleet/connectoid.sh                       release build
#   MASQ_BIN=.build/debug/masq-cli bench/fleet/connectoid.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_EACH=${SECONDS_EACH:-5}
CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
haproxy=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
[ -x "$haproxy" ] || { echo "haproxy not found: apt-get install haproxy" >&2; exit 2; }
cd "$root"
if [ -z "${MASQ_BIN:-}" ]; then
    swift build -c release --product masq-cli >&2
    MASQ_BIN="$(swift build -c release --show-bin-path)/masq-cli"
fi
masq=$MASQ_BIN
work=$(mktemp -d /tmp/masq-bench-cfleet-XXXXXX)
trap 'exec 8>&- 2>/dev/null; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

mkfifo "$work/pg.hold"
python3 bench/fleet/pg.py 2 <"$work/pg.hold" >"$work/pg.out" 2>"$work/pg.err" &
exec 8>"$work/pg.hold"
for _ in $(seq 300); do grep -q '^pid' "$work/pg.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^pid' "$work/pg.out" || { echo "PostgreSQL did not start: $(cat "$work/pg.err")" >&2; exit 1; }
single_db=$(sed -n 1p "$work/pg.out")
fleet_db=$(sed -n 2p "$work/pg.out")

serve() { # name, store options...
    local name=$1; shift
    "$masq" connectoid serve --port 0 "$@" --log-level error --client-rate 10000000 --client-burst 10000000 \
        --mailbox-rate 100000000 --mailbox-burst 10000000 --max-messages 10000000 --max-connections-per-address 10000 >"$work/$name.out" &
    for _ in $(seq 100); do grep -q http "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
    grep -o 'http://[^ ]*' "$work/$name.out"
}
sqlite_url=$(serve sqlite --db "$work/svc.sqlite3")
pg_url=$(serve postgres --store "$single_db")
fleet1=$(serve fleet1 --store "$fleet_db")
fleet2=$(serve fleet2 --store "$fleet_db")
front=$(free_port)
python3 - "$root/deploy/haproxy.cfg" "$front" "$fleet1" "$fleet2" >"$work/haproxy.cfg" <<'PY'
import re, sys
cfg, port, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
text = open(cfg).read()
head, connectoid = text.split("# ---- relays")[0], text.split("# ---- Connectoid services")[1]
out = []
for line in (head + connectoid).splitlines():
    s = line.strip()
    if re.match(r"(log /dev/log|user |group |stats socket)", s) or s.startswith("server connectoid"):
        continue
    if s == "maxconn 200000":
        line = "    maxconn 9000"
    if s == "bind :7080":
        line = f"    bind 127.0.0.1:{port}"
    out.append(line)
print("\n".join(out))
for i, u in enumerate(urls):
    print(f"    server connectoid{i + 1} {u.split('//')[1].rstrip('/')}")
PY
"$haproxy" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
sleep 4
BENCH_URL=$sqlite_url BENCH_WORK=$work python3 bench/connectoid/client.py prepare

printf "%-10s %-12s %10s %10s\n" store request "req/s" p99 | tee "$work/results"
for target in "sqlite $sqlite_url" "postgres $pg_url" "haproxy-2 http://127.0.0.1:$front/"; do
    set -- $target
    for script in send check-empty; do
        wrk -t1 -c"$CONNS" -d"${SECONDS_EACH}s" --latency -s "$work/$script.lua" "$2" >"$work/wrk.txt" 2>&1 || true
        rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
        p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
        non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
        printf "%-10s %-12s %10.0f %10s %s\n" "$1" "$script" "${rps:-0}" "${p99:--}" "${non2xx:+($non2xx non-2xx)}" | tee -a "$work/results"
    done
done
