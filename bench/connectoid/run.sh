#!/usr/bin/env bash
# Connectoid service benchmark, on 127.0.0.1, in one run:
#
#   1. HTTP paths under wrk (1 thread, CONNS connections, keep-alive, SECONDS
#      each): GET /healthz (the HTTP stack alone: the reference), send (JSON +
#      SQLite insert), check of an empty mailbox, check of a mailbox with a
#      pending question (handed out again, no P-384 work). Requests/s, p99 and
#      the ratio to /healthz.
#   2. The challenge path: check + receive cycles, each spending a question,
#      so the service seals a new one (a P-384 key pair + ECDH) and the client
#      opens it (ECDH), beside `openssl speed ecdhp384` on the same machine.
#   3. Draining a mailbox of MESSAGES messages with receive limit 1 and 100:
#      batching is how a client spreads one challenge over many messages.
#
# wrk comes from Debian (apt-get install wrk); the cycle client is Python
# (`cryptography`), whose ECDH is OpenSSL's. The load shares the 2 cores with
# the service, so figures are for this box, not for the service alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_EACH=${SECONDS_EACH:-5}
CONNS=${CONNS:-32}
MESSAGES=${MESSAGES:-2000}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }

cd "$root"
swift build -c release --product masq-cli >&2
masq="$(swift build -c release --show-bin-path)/masq-cli"
work=$(mktemp -d /tmp/masq-bench-connectoid-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

"$masq" connectoid serve --port 0 --db "$work/svc.sqlite3" --log-level error --client-rate 10000000 --client-burst 10000000 \
    --mailbox-rate 100000000 --mailbox-burst 10000000 --max-messages 10000000 --max-receive 100 >"$work/svc.out" &
for _ in $(seq 100); do grep -q http "$work/svc.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' "$work/svc.out")
export BENCH_URL=$url BENCH_WORK=$work MESSAGES SECONDS_EACH

# Mailbox keys for the wrk scripts, and a mailbox with a pending question.
python3 "$root/bench/connectoid/client.py" prepare

run_wrk() { # name, script-or-empty, path
    local out="$work/wrk-$1.txt"
    if [ -n "$2" ]; then wrk -t1 -c"$CONNS" -d"${SECONDS_EACH}s" --latency -s "$2" "$url" >"$out"
    else wrk -t1 -c"$CONNS" -d"${SECONDS_EACH}s" --latency "${url%/}$3" >"$out"; fi
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$out")
    p99=$(awk '$1 == "99%" {print $2}' "$out")
    echo "$1 $rps $p99"
}

echo "== HTTP paths (wrk -t1 -c$CONNS, ${SECONDS_EACH}s each)"
results=()
results+=("$(run_wrk healthz "" /healthz)")
results+=("$(run_wrk send "$work/send.lua")")
results+=("$(run_wrk check-empty "$work/check-empty.lua")")
results+=("$(run_wrk check-pending "$work/check-pending.lua")")
base=$(echo "${results[0]}" | awk '{print $2}')
printf "%-16s %12s %10s %8s\n" path "req/s" p99 "ratio"
for r in "${results[@]}"; do
    set -- $r
    printf "%-16s %12.0f %10s %8.2f\n" "$1" "$2" "$3" "$(python3 -c "print($2 / $base)")"
done

echo
echo "== challenge path: check + receive, a new question each time"
ecdh=$(openssl speed -seconds 2 ecdhp384 2>/dev/null | awk '/ecdh \(nistp384\)/ {print $NF}')
python3 "$root/bench/connectoid/client.py" cycles "$ecdh"

echo
echo "== draining $MESSAGES messages"
python3 "$root/bench/connectoid/client.py" drain
