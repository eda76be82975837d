#!/usr/bin/env bash
# Initial sync of N keys (default 100,000, 100-byte values) between two stores
# through a local relay, with release builds: keys/s for the new device's
# catch-up (`masq sync --once`, wall clock), and the bytes the relay carried
# (its payload counter) relative to the payload bytes (keys + values).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
keys=${1:-100000}
cd "$root"
swift build -c release --product masq-cli >&2
swift build -c release --product masq_storage_sqlite >&2
swift build -c release --product masq_transport_relay >&2
bin=$(swift build -c release --show-bin-path)
masq="$bin/masq-cli"
work=$(mktemp -d /tmp/masq-bench-sync-XXXXXX)
cd "$work"
trap 'kill $(jobs -p) 2>/dev/null; cd /; rm -rf "$work"' EXIT

"$masq" relay --port 0 --log-level error >relay.out &
for _ in $(seq 100); do grep -q ws:// relay.out 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'ws://[^ ]*' relay.out)
metrics="${url/ws:/http:}metrics"
payload_counter() { curl -s "$metrics" | awk '/^masq_relay_payload_bytes_total/ {print $2}'; }

for d in a b; do "$masq" init --config $d.json --data-dir $d --name $d >/dev/null; done
"$masq" pair --config a.json --relay "$url" --no-qr >pair.out 2>&1 &
for _ in $(seq 100); do grep -q '^masq://' pair.out 2>/dev/null && break; sleep 0.1; done
"$masq" join --config b.json "$(grep '^masq://' pair.out)" >/dev/null
wait %2 2>/dev/null || true

python3 -c "
import sys
for i in range($keys): sys.stdout.write('key-%08d\t%s\n' % (i, ('v%08d' % i) * 11 + 'v'))
" >data.tsv
payload=$(awk -F'\t' '{n += length($1) + length($2)} END {print n}' data.tsv)
"$masq" import --config a.json bench <data.tsv >/dev/null
"$masq" sync --config a.json --quiet >/dev/null 2>&1 &
sleep 1
before=$(payload_counter)
start=$(date +%s.%N)
"$masq" sync --config b.json --once --quiet --timeout 600 >/dev/null
end=$(date +%s.%N)
after=$(payload_counter)
count=$("$masq" ls --config b.json bench | wc -l)
python3 - "$keys" "$count" "$start" "$end" "$before" "$after" "$payload" <<'PY'
import sys
keys, count, start, end, before, after, payload = sys.argv[1:]
seconds = float(end) - float(start)
wire = float(after) - float(before)
print(f"initial sync of {int(keys):,} keys ({int(payload):,} payload bytes) through a local relay")
print(f"  keys on the new device: {int(count):,}")
print(f"  time: {seconds:.2f} s  ->  {int(keys) / seconds:,.0f} keys/s   (target >= 50,000)")
print(f"  bytes through the relay: {wire:,.0f}  ->  {wire / int(payload):.3f} x payload   (target <= 1.3)")
PY
