#!/usr/bin/env bash
# Apps through masqd's localhost WebSocket beside the same operations
# through masq.h in-process, in one run, release builds: small puts and
# gets (100-byte values, 1,000 keys), 1 and 50 concurrent apps, each with
# one request outstanding. Prints requests/s, p50/p99 latency and the ratio
# masqd / in-process. The client and the daemon share this machine's cores.
#
# usage: bench/localws/run.sh [seconds per figure, default 3]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-3}
cd "$root"
for product in masq masqd masq_storage_sqlite masq_transport_localws; do swift build -c release --product $product >&2; done
lib=$(swift build -c release --show-bin-path)
mkdir -p bench/localws/build
cc -std=c11 -O2 -Wall -Wextra bench/localws/appbench.c -o bench/localws/build/appbench
cc -std=c11 -O2 -Wall -Wextra -Iinclude bench/localws/inproc.c -L"$lib" -lmasq -Wl,-rpath,"$lib" -pthread -o bench/localws/build/inproc

work=$(mktemp -d /tmp/masq-bench-localws-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
"$lib/masqd" --home "$work/home" --listen 127.0.0.1:0 --rate 1000000 --log-level error >"$work/masqd.out" &
for _ in $(seq 100); do grep -q listening "$work/masqd.out" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o '127.0.0.1:[0-9]*' "$work/masqd.out" | head -1 | cut -d: -f2)

# Register and approve 50 native apps (the user's clicks, through the manager API).
PYTHONPATH="$root/bindings/python" python3 - "$work/home" "$work/tokens" <<'PY'
import sys
from masq.daemon import DaemonClient
manager = DaemonClient.manager(home=sys.argv[1])
with open(sys.argv[2], "w") as out:
    for i in range(50):
        app = DaemonClient(manager.url, app_id=f"bench.{i}")
        app.register(f"bench {i}")
        manager.call("apps.approve", app=f"native:bench.{i}")
        assert app._approved.wait(10)
        out.write(f"native:bench.{i} {app.token}\n")
        app.close()
PY

results="$work/results"
for apps in 1 50; do
    for op in put get; do
        bench/localws/build/appbench --port "$port" --tokens "$work/tokens" --apps $apps --op $op --seconds "$seconds" | tee -a "$results" >&2
        bench/localws/build/inproc "$work/inproc" $op $apps "$seconds" | tee -a "$results" >&2
    done
done

python3 - "$results" <<'PY'
import sys
rows = [dict(f.split("=", 1) for f in line.split()) for line in open(sys.argv[1]) if line.startswith("path=")]
by = {(r["path"], r["op"], r["apps"]): r for r in rows}
print("\nSmall get/put (100-byte values): masqd's localhost WebSocket vs masq.h in-process")
print(f"{'op':<4} {'apps':>4} {'masqd req/s':>12} {'p50 ms':>8} {'p99 ms':>8}   {'in-process/s':>12} {'p50 ms':>8} {'p99 ms':>8}   {'ratio':>6}")
for apps in ("1", "50"):
    for op in ("put", "get"):
        d, i = by[("masqd", op, apps)], by[("inproc", op, apps)]
        print(f"{op:<4} {apps:>4} {float(d['rate']):>12.0f} {float(d['p50_ms']):>8.3f} {float(d['p99_ms']):>8.3f}   "
              f"{float(i['rate']):>12.0f} {float(i['p50_ms']):>8.3f} {float(i['p99_ms']):>8.3f}   {float(d['rate']) / float(i['rate']):>5.2f}x")
PY
