#!/usr/bin/env bash
# Relay fleet benchmark: what HAProxy costs in front of the relays.
#
# Three `masq relay` instances behind HAProxy running deploy/haproxy.cfg
# (addresses rewritten to loopback, as Tests/fleet does). The fan-out load
# generator of bench/relay (one publisher, SUBS subscribers in one room,
# 1 KiB messages, offered deliveries per second = RATES) runs twice per
# point: through HAProxy, and straight to the relay HAProxy routes that
# room to. Printed: delivered/s, p50/p99 latency, delivery ratio, and the
# ratio of HAProxy to direct. Also: the RSS of HAProxy and of a relay
# holding IDLE idle connections through HAProxy (memory per connection on
# each side, for the capacity model in docs/OPERATIONS.md).
#
# Everything binds to 127.0.0.1; the load generator, HAProxy and the relay
# share the machine's cores, so figures are for this box (2 cores here).
#
#   bench/fleet/run.sh                 release build (swift build -c release)
#   MASQ_BIN=.build/debug/masq-cli bench/fleet/run.sh    a build at hand
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
RATES=${RATES:-"20000 100000 300000"}
SUBS=${SUBS:-"10 100"}
IDLE=${IDLE:-2000}
RUN_SECONDS=${RUN_SECONDS:-3}
haproxy=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
[ -x "$haproxy" ] || { echo "haproxy not found: apt-get install haproxy" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"

cd "$root"
if [ -z "${MASQ_BIN:-}" ]; then
    swift build -c release --product masq-cli >&2
    MASQ_BIN="$(swift build -c release --show-bin-path)/masq-cli"
fi
masq=$MASQ_BIN
mkdir -p bench/fleet/build
cc -std=c11 -O2 -Wall -Wextra bench/relay/loadgen.c -o bench/fleet/build/loadgen
loadgen="$root/bench/fleet/build/loadgen"

work=$(mktemp -d /tmp/masq-bench-fleet-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

relay_ports=()
relay_pids=()
for i in 1 2 3; do
    "$masq" relay --port 0 --rate 10000000 --send-buffer 1048576 --threads 1 --log-level error >"$work/relay$i.out" &
    relay_pids+=($!)
    for _ in $(seq 100); do grep -q ws:// "$work/relay$i.out" 2>/dev/null && break; sleep 0.1; done
    relay_ports+=("$(grep -o 'ws://[^ ]*' "$work/relay$i.out" | sed 's|.*:\([0-9]*\)/|\1|')")
done
front=$(free_port)
python3 - "$root/deploy/haproxy.cfg" "$front" "$work/haproxy.sock" "${relay_ports[@]}" >"$work/haproxy.cfg" <<'PY'
import re, sys
cfg, port, sock, relays = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
out = []
for line in open(cfg).read().split("# ---- Connectoid services")[0].splitlines():
    s = line.strip()
    if re.match(r"(log /dev/log|user |group |stats socket)", s) or s.startswith("server relay"):
        continue
    if s == "maxconn 200000":
        line = "    maxconn 9000"
    if s == "bind :7070":
        line = f"    bind 127.0.0.1:{port}"
    out.append(line)
    if s == "global":
        out.append(f"    stats socket {sock} mode 600 level admin")
print("\n".join(out))
for i, p in enumerate(relays):
    print(f"    server relay{i + 1} 127.0.0.1:{p}")
PY
"$haproxy" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
sleep 5   # three health checks

# The relay HAProxy sends the load generator's path (/) to.
routed=$(python3 - "$work/haproxy.sock" "$front" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
s.recv(4096)
a = socket.socket(socket.AF_UNIX); a.connect(sys.argv[1]); a.sendall(b"show table relays\n")
data = b""
while chunk := a.recv(65536): data += chunk
for line in data.decode().splitlines():
    if "key=/ " in line:
        print(line.split("server_key=")[1].strip().replace("relay", ""))
PY
)
direct_port=${relay_ports[$((routed - 1))]}
echo "HAProxy on $front routes / to relay$routed (port $direct_port)" >&2

results="$work/results"
: >"$results"
echo "== fan-out: 1 KiB messages, ${RUN_SECONDS}s per point ==" >&2
for subs in $SUBS; do
    for rate in $RATES; do
        for path in haproxy direct; do
            port=$([ $path = haproxy ] && echo "$front" || echo "$direct_port")
            publish=$((rate / subs))
            if line=$(timeout 120 "$loadgen" fanout --proto masq --port "$port" --subs "$subs" --rate "$publish" --seconds "$RUN_SECONDS" 2>"$work/err"); then
                echo "path=$path $line" | tee -a "$results" >&2
            else
                echo "path=$path subs=$subs offered=$rate failed: $(head -c 200 "$work/err")" | tee -a "$results" >&2
            fi
            sleep 0.5
        done
    done
done

echo "== $IDLE idle connections through HAProxy ==" >&2
haproxy_before=$(rss_kib $haproxy_pid)
relay_before=$(rss_kib "${relay_pids[$((routed - 1))]}")
mkfifo "$work/hold"
"$loadgen" idle --proto masq --port "$front" --conns "$IDLE" <"$work/hold" >"$work/idle" 2>&1 &
idle_pid=$!
exec 9>"$work/hold"
for _ in $(seq 600); do grep -q ready "$work/idle" 2>/dev/null && break; sleep 0.1; done
sleep 1
haproxy_after=$(rss_kib $haproxy_pid)
relay_after=$(rss_kib "${relay_pids[$((routed - 1))]}")
exec 9>&-
wait $idle_pid 2>/dev/null || true
echo "idle conns=$IDLE haproxy_before_kib=$haproxy_before haproxy_after_kib=$haproxy_after relay_before_kib=$relay_before relay_after_kib=$relay_after" >>"$results"

python3 - "$results" <<'PY'
import sys
fan, idle, failed = {}, None, []
for line in open(sys.argv[1]):
    if "failed" in line:
        failed.append(line.strip()); continue
    kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
    if line.startswith("idle"):
        idle = kv
    else:
        fan[(int(kv["subs"]), int(float(kv["offered"])), kv["path"])] = kv
print("\nFan-out through HAProxy beside the same relay direct (1 publisher, 1 KiB messages; offered = deliveries/s)")
print(f"{'subs':>4} {'offered/s':>10} {'path':<8} {'delivered/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}  haproxy/direct")
for (subs, offered) in sorted({(s, o) for (s, o, _) in fan}):
    d = fan.get((subs, offered, "direct"))
    for p in ("haproxy", "direct"):
        k = fan.get((subs, offered, p))
        if not k: continue
        rel = f"{float(k['rate']) / max(1.0, float(d['rate'])):.2f}x rate, p99 {float(k['p99_ms']) / max(0.001, float(d['p99_ms'])):.1f}x" if d and p == "haproxy" else ""
        print(f"{subs:>4} {offered:>10} {p:<8} {float(k['rate']):>11.0f} {float(k['p50_ms']):>8.2f} {float(k['p99_ms']):>8.2f} {float(k['ratio']):>6.3f}  {rel}")
if idle:
    n = int(idle["conns"])
    h = (int(idle["haproxy_after_kib"]) - int(idle["haproxy_before_kib"])) / n
    r = (int(idle["relay_after_kib"]) - int(idle["relay_before_kib"])) / n
    print(f"\n{n} idle WebSocket connections through HAProxy: HAProxy +{h:.1f} KiB per connection, relay +{r:.1f} KiB per connection")
for f in failed:
    print(f)
PY
