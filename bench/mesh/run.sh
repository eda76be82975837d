#!/usr/bin/env bash
# Mesh benchmark, in one run on loopback: 8 `masq node` processes (release)
# on 127.0.0.2-9 formed by gossip; the origin (127.0.0.3) offers SOCKS5.
#
#   1. Throughput: SIZE_MB of random bytes from a local HTTP server, fetched
#      with curl directly over loopback TCP (the reference) and through the
#      origin's SOCKS5 front over a route of HOPS (>= 3) links: MB/s, ratio.
#      Then the other way: a Python client uploads SIZE_MB to a TCP sink,
#      directly and through the SOCKS5 front (its reference is a raw socket
#      pair, far faster than curl and http.server, hence a lower ratio).
#   2. Set-up: curl's time_pretransfer through SOCKS5 (the stream is
#      connected, the exit connected to the target) on a new route (forward
#      and return circuits built first; each request with its own SOCKS
#      credentials, so isolated) and on an existing route, against a direct
#      TCP connect, over REQUESTS small requests each.
#
# Knobs: SIZE_MB, REPS, HOPS, CELL, REQUESTS, PORT, GOSSIP_MS (300: the
# mesh forms fast; the nodes' default is 1000, which measured the same), and
# MASQ (a prebuilt masq-cli). All processes share the machine's 2 cores
# (the reference path has 2 processes, the mesh path 6 or more), so the
# ratio is for this box; the bench prints the nodes' CPU budget for 0.3x.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
SIZE_MB=${SIZE_MB:-100}
HOPS=${HOPS:-3}
REQUESTS=${REQUESTS:-20}
REPS=${REPS:-5}
CELL=${CELL:-4096}
GOSSIP_MS=${GOSSIP_MS:-300}
PORT=${PORT:-7701}
cd "$root"
# MASQ=path/to/masq-cli compares builds (A/B) without rebuilding.
if [ -z "${MASQ:-}" ]; then
    swift build -c release --product masq-cli >&2
    MASQ="$(swift build -c release --show-bin-path)/masq-cli"
fi
masq=$MASQ
work=$(mktemp -d /tmp/masq-bench-mesh-XXXXXX)
# What curl receives lands in memory (tmpfs) when the box has one: the disk's
# writeback of hundreds of MB between runs is not what is measured, and it
# took CPU from whichever transfer came next.
out=$work
[ -d /dev/shm ] && [ -w /dev/shm ] && out=$(mktemp -d /dev/shm/masq-bench-mesh-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work" "$out"' EXIT

head -c $((SIZE_MB * 1000000)) /dev/urandom >"$work/big.bin"
echo small >"$work/small.txt"
(cd "$work" && exec python3 -m http.server 0 --bind 127.0.0.1 >"$work/http.out" 2>&1) &
server=$!
for _ in $(seq 50); do grep -q "port" "$work/http.out" 2>/dev/null && break; sleep 0.1; done
http=$(grep -o 'port [0-9]*' "$work/http.out" | awk '{print $2}')

# Every node on its own 127.0.0.x: relays keep hops apart per /32 (the default /16 would refuse them all).
common=(--port "$PORT" --hop-prefix-v4 32 --gossip-ms "$GOSSIP_MS" --hops "$HOPS" --cell-bytes "$CELL" --log-level warning)
"$masq" node --host 127.0.0.2 --data-dir "$work/n2" "${common[@]}" >"$work/n2.out" &
nodes=($!)
for _ in $(seq 50); do grep -q masq:// "$work/n2.out" 2>/dev/null && break; sleep 0.1; done
seed=$(grep -o 'masq://[^ ]*' "$work/n2.out")
for i in 3 4 5 6 7 8 9; do
    extra=()
    [ "$i" = 3 ] && extra+=(--socks 127.0.0.1:0)
    # The HTTP server and the upload sink listen on 127.0.0.1: exits connect there only when allowed.
    [ "$i" -ge 7 ] && extra+=(--exit --exit-allow 127.0.0.1/32)
    "$masq" node --host 127.0.0.$i --data-dir "$work/n$i" --seed "$seed" "${common[@]}" "${extra[@]}" >"$work/n$i.out" &
    nodes+=($!)
done
# CPU time (ticks) all nodes have used: what a mesh transfer costs the machine, per MB.
node_ticks() { for p in "${nodes[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
# The endpoints' CPU (ticks): the HTTP server's so far, and a command's own (its subshell's waited-for children).
server_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
ticks_of() { ("$@" && awk '{print $16 + $17}' "/proc/$BASHPID/stat"); }
for _ in $(seq 50); do grep -q socks5 "$work/n3.out" 2>/dev/null && break; sleep 0.1; done
socks=$(grep -o 'socks5 [0-9.:]*' "$work/n3.out" | awk '{print $2}')
for _ in $(seq 60); do curl -s --max-time 5 --socks5-hostname "$socks" "http://localhost:$http/small.txt" >/dev/null && break; sleep 0.5; done

echo "== $SIZE_MB MB, route of $HOPS+ hops, $CELL-byte cells (median of $REPS runs each, alternating)"
: >"$work/times"
for _ in $(seq "$REPS"); do
    s0=$(server_ticks)
    t0=$(date +%s.%N); k1=$(ticks_of curl -s "http://127.0.0.1:$http/big.bin" -o "$out/direct.bin"); t1=$(date +%s.%N)
    c1=$(node_ticks) s1=$(server_ticks)
    k2=$(ticks_of curl -s --socks5-hostname "$socks" "http://localhost:$http/big.bin" -o "$out/mesh.bin"); t2=$(date +%s.%N)
    c2=$(node_ticks) s2=$(server_ticks)
    cmp -s "$work/big.bin" "$out/mesh.bin" || { echo "the mesh transfer differs" >&2; exit 1; }
    echo "$t0 $t1 $t2 $((c2 - c1)) $((k1 + s1 - s0)) $((k2 + s2 - s1))" >>"$work/times"
done
python3 - "$work/times" "$SIZE_MB" "$work/n3/state.json" <<'PY'
import json, os, statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
mb = float(sys.argv[2])
# The route the transfers took (its length varies with the topology gossip formed: report it).
for line in json.load(open(sys.argv[3])).get("circuits", []):
    if line.get("role") == "origin" and line.get("route"):
        forward, back = line["route"].split(" back ")
        print("route: %d links forward, %d back" % (len(forward.split(">")), len(back.split(">")) + 1 if back else 1))
        break
direct = statistics.median(mb / (r[1] - r[0]) for r in rows)
mesh = statistics.median(mb / (r[2] - r[1]) for r in rows)
ms = lambda ticks: ticks * 1000 / os.sysconf("SC_CLK_TCK") / mb
nodes = ms(statistics.median(r[3] for r in rows))
ends_direct, ends_mesh = (ms(statistics.median(r[i] for r in rows)) for i in (4, 5))
print("direct loopback TCP  %8.1f MB/s" % direct)
print("mesh (SOCKS5, onion) %8.1f MB/s" % mesh)
print("ratio                %8.3f" % (mesh / direct))
print("node CPU per MB      %8.2f ms (every node process, median)" % nodes)
# The transfer is CPU-bound on a small box: at 0.3x of the direct rate, the
# cores give the whole path cores / (0.3 x direct) of CPU per MB; what curl
# and the HTTP server use through SOCKS5 leaves the nodes the rest.
cores = os.cpu_count()
budget = cores * 1000 / (0.3 * direct) - ends_mesh
print("endpoints CPU per MB %8.2f ms direct, %.2f ms through SOCKS5 (curl + HTTP server)" % (ends_direct, ends_mesh))
print("node CPU budget      %8.2f ms per MB for 0.3x on these %d cores (the nodes use %.2f)" % (budget, cores, nodes))
PY

echo
echo "== upload: $SIZE_MB MB from a Python client to a TCP sink, the same client directly and through SOCKS5 (median of $REPS)"
python3 "$root/bench/mesh/upload.py" "$socks" "$SIZE_MB" "$REPS"

echo
echo "== set-up, $REQUESTS requests each: a new route (fresh SOCKS credentials isolate each request), a stream on an existing route, a direct TCP connect"
for i in $(seq "$REQUESTS"); do
    curl -s -o /dev/null -w "%{time_pretransfer} %{time_total}\n" --proxy-user "bench$i:x" --socks5-hostname "$socks" "http://localhost:$http/small.txt" >>"$work/route.times"
    curl -s -o /dev/null -w "%{time_pretransfer} %{time_total}\n" --socks5-hostname "$socks" "http://localhost:$http/small.txt" >>"$work/stream.times"
    curl -s -o /dev/null -w "%{time_pretransfer} %{time_total}\n" "http://127.0.0.1:$http/small.txt" >>"$work/direct.times"
done
python3 - "$work/route.times" "$work/stream.times" "$work/direct.times" <<'PY'
import statistics, sys
def load(p):
    rows = [tuple(map(float, l.split())) for l in open(p) if l.strip()]
    return sorted(r[0] * 1000 for r in rows), sorted(r[1] * 1000 for r in rows)
q = lambda xs, f: xs[min(len(xs) - 1, int(len(xs) * f))]
for label, path in (("new route ready     ", sys.argv[1]), ("stream on a route   ", sys.argv[2]), ("direct TCP ready    ", sys.argv[3])):
    ready, total = load(path)
    print("%s median %6.2f ms  p90 %6.2f ms   (whole request median %6.2f ms)" % (label, statistics.median(ready), q(ready, .9), statistics.median(total)))
PY
