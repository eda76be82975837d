#!/usr/bin/env bash
# Sync between real processes through a real relay on 127.0.0.1:
# pair two stores with the link; a put on A appears on B; B offline while A
# writes 10,000 keys and deletes some, B catches up; concurrent writes on both
# converge; counters incremented on both sides sum; a third device joins later
# and receives everything; the relay keeps nothing on disk.
#
# usage: sync_test.sh <path to masq binary>   (MASQ_PLUGIN_PATH reaches the plugins)
set -uo pipefail
masq=$1
work=$(mktemp -d /tmp/masq-sync-XXXXXX)
. "$(dirname "$0")/processes.sh"
cd "$work"
key_count() { "$masq" ls --config "$1" "$2" 2>/dev/null | wc -l; }
count_is() { [ "$(key_count "$1" "$2")" = "$3" ]; }
start_sync() { "$masq" sync --config "$1" --quiet >"$1.sync.log" 2>&1 & pids+=($!); eval "sync_$2=$!"; }

mkdir relay-cwd
(cd relay-cwd && exec "$masq" relay --port 0 >../relay.out 2>../relay.err) & relay_pid=$!; pids+=($relay_pid)
wait_for 10 "relay start" grep -q 'ws://' relay.out
url=$(grep -o 'ws://[^ ]*' relay.out)

for d in a b c; do "$masq" init --config $d.json --data-dir $d --name dev-$d >/dev/null || fail "init $d"; done

pair() { # offerer joiner
    "$masq" pair --config "$1.json" --relay "$url" --no-qr >"pair-$1-$2.out" 2>&1 &
    local offer=$!
    wait_for 10 "pairing link" grep -q '^masq://' "pair-$1-$2.out"
    "$masq" join --config "$2.json" "$(grep '^masq://' "pair-$1-$2.out")" >"join-$2.out" 2>&1 || fail "$2 could not join $1: $(cat "join-$2.out")"
    wait $offer || fail "masq pair ($1) did not succeed"
}
pair a b
grep -q '"url": "ws://' b.json || fail "join did not record the relay in b's config"
grep -q '"url": "ws://' a.json || fail "pair --relay did not record the relay in a's config"

# 1. live: a put on A appears on B
start_sync a.json A; start_sync b.json B
"$masq" put --config a.json notes hello "from A" || fail "put"
wait_for 15 "a put on A reaching B" value_is b.json notes hello "from A"

# 1b. photo-sized data: a value of exactly max_value_bytes (1 MiB, more than
# a relay frame carries once sealed) and one batch of eight 900 KB values
# (one commit of 7 MB) cross the relay as fragments.
head -c 1048576 /dev/urandom >photo.bin
"$masq" put --config a.json photos big <photo.bin || fail "put of a 1 MiB value"
python3 -c "
import base64, os
for i in range(8): print('p%d\t%s' % (i, base64.b64encode(os.urandom(675000)).decode()))" >album.tsv
"$masq" import --config a.json album --batch 100 <album.tsv >/dev/null || fail "import of eight 900 KB values in one commit"
wait_for 60 "a 1 MiB value reaching B" sh -c "\"$masq\" get --config b.json photos big 2>/dev/null | cmp -s - photo.bin"
wait_for 60 "a 7 MB commit reaching B" count_is b.json album 8
[ "$("$masq" get --config b.json album p7)" = "$(awk -F'\t' '$1=="p7"{print $2}' album.tsv)" ] || fail "a fragmented commit arrived damaged"

# 2. B offline; A writes 10,000 keys and deletes 500; B comes back and catches up
kill "$sync_B"; wait "$sync_B" 2>/dev/null
seq 1 10000 | awk '{printf "key-%05d\tvalue-%d\n", $1, $1}' | "$masq" import --config a.json bulk >/dev/null || fail "import"
seq 1 20 10000 | awk '{printf "key-%05d\n", $1}' | "$masq" import --config a.json bulk >/dev/null || fail "deletes"
"$masq" sync --config b.json --once --quiet --timeout 120 >/dev/null || fail "B's catch-up (sync --once) did not finish"
count_is b.json bulk 9500 || fail "B has $(key_count b.json bulk) bulk keys, expected 9500"
value_is b.json bulk key-00002 value-2 || fail "a value did not arrive"
"$masq" get --config b.json bulk key-00001 >/dev/null 2>&1 && fail "a deleted key survived on B"

# 3. concurrent writes to the same keys on both, and counters on both, while apart
kill "$sync_A"; wait "$sync_A" 2>/dev/null
for i in 1 2 3 4 5; do
    "$masq" put --config a.json clash k$i "A$i" >/dev/null
    "$masq" put --config b.json clash k$i "B$i" >/dev/null
done
"$masq" counter --config a.json app likes 7 >/dev/null
"$masq" counter --config b.json app likes 5 >/dev/null
"$masq" counter --config b.json app likes 1 >/dev/null
start_sync a.json A
"$masq" sync --config b.json --once --quiet --timeout 60 >/dev/null || fail "B's sync after concurrent writes"
wait_for 15 "A to receive B's writes" sh -c "[ \"\$('$masq' counter --config a.json app likes)\" = 13 ]"
[ "$("$masq" counter --config b.json app likes)" = 13 ] || fail "counters did not sum on B: $("$masq" counter --config b.json app likes)"
[ "$("$masq" ls --config a.json clash -v)" = "$("$masq" ls --config b.json clash -v)" ] || fail "concurrent writes did not converge"
[ "$(key_count a.json clash)" = 5 ] || fail "lost keys in the clash namespace"

# 4. a third device joins later and receives everything
pair a c
"$masq" sync --config c.json --once --quiet --timeout 120 >/dev/null || fail "C's first sync did not finish"
for ns in notes bulk clash; do
    [ "$("$masq" ls --config a.json $ns -v | md5sum)" = "$("$masq" ls --config c.json $ns -v | md5sum)" ] || fail "C's $ns differs from A's"
done
[ "$("$masq" counter --config c.json app likes)" = 13 ] || fail "C's counter is $("$masq" counter --config c.json app likes)"
"$masq" devices --config a.json | grep -q dev-c || fail "A does not list C"

# 5. the relay kept nothing on disk: an empty working directory, no open regular files
[ -z "$(ls -A relay-cwd)" ] || fail "the relay wrote files: $(ls -A relay-cwd)"
files=$(ls -l /proc/$relay_pid/fd 2>/dev/null | awk '$(NF-2) > 2 {print $NF}' | grep '^/' | grep -v -E '^/dev/|^/proc/' || true)
[ -z "$files" ] || fail "the relay holds files open: $files"
curl -sf "${url/ws:/http:}healthz" >/dev/null || fail "relay /healthz"
curl -sf "${url/ws:/http:}metrics" | grep -q 'masq_relay_deliveries_total [1-9]' || fail "relay /metrics shows no deliveries"

cd /; rm -rf "$work"
if [ "$failures" != 0 ]; then echo "sync_test: $failures failures"; exit 1; fi
echo "sync_test: all checks passed"
