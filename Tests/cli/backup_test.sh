#!/usr/bin/env bash
# Backup, restore and export between real processes, with a real relay:
#   - a backup taken while another process writes to the same store is one
#     consistent snapshot (whole transactions only; `masq check` passes);
#   - device A writes k=1 and j, backs up, writes k=2 and deletes j, syncs
#     with B, and is lost; its backup is restored on a new machine (A');
#     A' syncs with B: both end with k=2 and j deleted (nothing lost, nothing
#     resurrected), A' runs under a new replica id, and what A' writes next
#     reaches B (and B's writes reach A');
#   - a recovery-key backup restores with the key typed in lower case with spaces;
#   - bad input: truncated, tampered, reordered, wrong passphrase, mistyped
#     recovery key, another format version, not a backup, a non-empty target:
#     each exits 1 with its message and leaves no data directory behind;
#   - export: one JSON line per live key, base64 values that decode to the values.
#
# usage: backup_test.sh <path to masq binary>   (MASQ_PLUGIN_PATH reaches the plugins)
set -uo pipefail
masq=$1
work=$(mktemp -d /tmp/masq-backup-XXXXXX)
. "$(dirname "$0")/processes.sh"
cd "$work"
export MASQ_BACKUP_PASSPHRASE="correct horse battery staple"
unset MASQ_RECOVERY_KEY MASQ_PASSPHRASE
key_count() { "$masq" ls --config "$1" "$2" 2>/dev/null | wc -l; }
replica() { "$masq" export --config "$1" - 2>/dev/null | head -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["replica"])'; }
absent() { ! "$masq" get --config "$1" "$2" "$3" >/dev/null 2>&1; }
# expect_failure NAME PATTERN CMD...: exit status 1 and PATTERN in the message
expect_failure() {
    local name=$1 pattern=$2
    shift 2
    "$@" >"$name.out" 2>&1
    local rc=$?
    [ "$rc" = 1 ] || fail "$name: exit status $rc, expected 1 ($(cat "$name.out"))"
    grep -qi -- "$pattern" "$name.out" || fail "$name: message lacks '$pattern': $(cat "$name.out")"
}

mkdir relay-cwd
(cd relay-cwd && exec "$masq" relay --port 0 >../relay.out 2>../relay.err) & pids+=($!)
wait_for 10 "relay start" grep -q 'ws://' relay.out
url=$(grep -o 'ws://[^ ]*' relay.out)

# --- 1. a consistent backup of a store another process is writing to ----------
"$masq" init --config w.json --data-dir w >/dev/null || fail "init w"
seq 1 20000 | awk '{printf "pre-%05d\tvalue %d %s\n", $1, $1, "0123456789abcdef0123456789abcdef0123456789abcdef"}' \
    | "$masq" import --config w.json pre --batch 5000 >/dev/null || fail "preload"
# A writer commits 100 keys per transaction, one process after another, until told to stop.
( b=0
  while [ ! -e stop-writer ]; do
      b=$((b + 1))
      seq 1 100 | awk -v b="$b" '{printf "b%05d-%03d\tx\n", b, $1}' | "$masq" import --config w.json live --batch 100 >/dev/null || exit 1
  done ) & writer=$!
wait_for 20 "the writer's first commits" sh -c "[ \$('$masq' ls --config w.json live | wc -l) -ge 300 ]"
"$masq" backup --config w.json live.bak >backup-live.out 2>&1 || fail "backup while another process writes: $(cat backup-live.out)"
sleep 0.5
touch stop-writer
wait $writer || fail "the writer failed while the backup ran (it must only wait)"
"$masq" restore --config w2.json --data-dir w2 live.bak >restore-live.out 2>&1 || fail "restore of the live backup: $(cat restore-live.out)"
n=$(key_count w2.json live)
total=$(key_count w.json live)
[ $((n % 100)) = 0 ] && [ "$n" -ge 300 ] || fail "the backup holds $n keys of a writer that commits 100 at a time: not one snapshot"
[ "$total" -gt "$n" ] || fail "the writer did not go on writing after the backup ($total keys, $n in the backup)"
[ "$(key_count w2.json pre)" = 20000 ] || fail "the restored store has $(key_count w2.json pre) of 20000 preloaded keys"
"$masq" check --config w2.json >check.out 2>&1 || fail "masq check of the restored store: $(cat check.out)"
echo "live backup: $n of the $total keys a concurrent writer committed, whole transactions only"

# --- 2. device A, its backup, more writes, then A is lost ---------------------
for d in a b; do "$masq" init --config $d.json --data-dir $d --name dev-$d >/dev/null || fail "init $d"; done
"$masq" pair --config a.json --relay "$url" --no-qr >pair.out 2>&1 & offer=$!
wait_for 10 "pairing link" grep -q '^masq://' pair.out
"$masq" join --config b.json "$(grep '^masq://' pair.out)" >join.out 2>&1 || fail "join: $(cat join.out)"
wait $offer || fail "masq pair did not succeed"

"$masq" sync --config b.json --quiet >b.sync.log 2>&1 & sync_b=$!; pids+=($sync_b)
"$masq" put --config a.json notes k 1 && "$masq" put --config a.json notes j "to be deleted" || fail "puts on A"
"$masq" counter --config a.json app visits 3 >/dev/null
"$masq" sync --config a.json --once --quiet --timeout 60 >/dev/null || fail "A's first sync"
wait_for 15 "k=1 on B" value_is b.json notes k 1

"$masq" backup --config a.json a.bak >backup-a.out 2>&1 || fail "backup of A: $(cat backup-a.out)"
old_replica=$(replica a.json)
"$masq" put --config a.json notes k 2 && "$masq" del --config a.json notes j || fail "writes after the backup"
"$masq" counter --config a.json app visits 4 >/dev/null
"$masq" sync --config a.json --once --quiet --timeout 60 >/dev/null || fail "A's sync after the backup"
wait_for 15 "k=2 on B" value_is b.json notes k 2
absent b.json notes j || fail "j is still on B"
mv a a.lost; mv a.json a.lost.json     # the machine is gone

# --- 3. restore on a new machine, rejoin -------------------------------------
"$masq" restore --config a2.json --data-dir a2 a.bak >restore-a.out 2>&1 || fail "restore of A: $(cat restore-a.out)"
grep -q '"url": "ws://' a2.json || fail "the restored config lacks the relay"
value_is a2.json notes k 1 || fail "the restored store does not hold the backed-up k=1"
value_is a2.json notes j "to be deleted" || fail "the restored store does not hold the backed-up j"
new_replica=$(replica a2.json)
[ -n "$new_replica" ] && [ "$new_replica" != "$old_replica" ] || fail "the restored store kept replica $old_replica (new: $new_replica)"
"$masq" sync --config a2.json --once --quiet --timeout 60 >a2.sync.out 2>&1 || fail "A' sync: $(cat a2.sync.out)"
value_is a2.json notes k 2 || fail "A' did not take back k=2 from B: $("$masq" get --config a2.json notes k)"
absent a2.json notes j || fail "j was resurrected on A'"
sleep 1
value_is b.json notes k 2 || fail "B lost k=2"
absent b.json notes j || fail "j was resurrected on B"
[ "$("$masq" counter --config a2.json app visits)" = 7 ] || fail "A' counter is $("$masq" counter --config a2.json app visits), expected 7"
[ "$("$masq" counter --config b.json app visits)" = 7 ] || fail "B counter is $("$masq" counter --config b.json app visits), expected 7"
"$masq" put --config a2.json notes after "written on A'" || fail "put on A'"
"$masq" put --config b.json notes fromb "written on B" || fail "put on B"
"$masq" sync --config a2.json --once --quiet --timeout 60 >/dev/null || fail "A' second sync"
wait_for 15 "A' write reaching B" value_is b.json notes after "written on A'"
value_is a2.json notes fromb "written on B" || fail "B's write did not reach A'"
[ "$("$masq" ls --config a2.json notes -v)" = "$("$masq" ls --config b.json notes -v)" ] || fail "A' and B differ"
[ "$(replica a2.json)" = "$new_replica" ] || fail "A' changed replica id again"

# --- 4. recovery key ---------------------------------------------------------
"$masq" backup --config b.json --recovery-key rk.bak >rk.out 2>&1 || fail "recovery-key backup: $(cat rk.out)"
rk=$(grep -oE '([0-9A-Z]{4}-){13}[0-9A-Z]{4}' rk.out)
[ -n "$rk" ] || fail "no recovery key printed: $(cat rk.out)"
typed=$(echo "$rk" | tr 'A-Z-' 'a-z ')
MASQ_RECOVERY_KEY="$typed" "$masq" restore --config rk.json --data-dir rk rk.bak >rk-restore.out 2>&1 || fail "restore with the typed recovery key: $(cat rk-restore.out)"
value_is rk.json notes after "written on A'" || fail "the recovery-key restore lacks data"
wrong=$(python3 -c 'import sys; k = sys.argv[1]; print(k[:10] + ("Y" if k[10] != "Y" else "Z") + k[11:])' "$rk")
MASQ_RECOVERY_KEY="$wrong" expect_failure mistyped "typo" "$masq" restore --config x.json --data-dir x rk.bak
MASQ_BACKUP_PASSPHRASE=x expect_failure rk-needs-key "MASQ_RECOVERY_KEY\|recovery key" "$masq" restore --config x.json --data-dir x rk.bak </dev/null

# --- 5. bad input ------------------------------------------------------------
size=$(stat -c %s a.bak)
head -c $((size - 7)) a.bak >cut.bak
expect_failure truncated "truncated" "$masq" restore --config x.json --data-dir x cut.bak
head -c 140 a.bak >header-only.bak
expect_failure header-only "truncated" "$masq" restore --config x.json --data-dir x header-only.bak
python3 - a.bak tampered.bak <<'EOF'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[200] ^= 0x01
open(sys.argv[2], "wb").write(data)
EOF
expect_failure tampered "does not authenticate" "$masq" restore --config x.json --data-dir x tampered.bak
python3 - a.bak header.bak version.bak <<'EOF'
import sys, hashlib
data = bytearray(open(sys.argv[1], "rb").read())
h = bytearray(data); h[30] ^= 1; open(sys.argv[2], "wb").write(h)
v = bytearray(data); v[8] = 2; open(sys.argv[3], "wb").write(v)
EOF
expect_failure header-damaged "header is damaged" "$masq" restore --config x.json --data-dir x header.bak
expect_failure other-version "format version 2" "$masq" restore --config x.json --data-dir x version.bak
# Two chunks swapped (a backup of several chunks).
"$masq" backup --config w.json big.bak >/dev/null 2>&1 || fail "backup of w"
python3 - big.bak swapped.bak <<'EOF'
import sys, struct
data = open(sys.argv[1], "rb").read()
head, pos, chunks = data[:132], 132, []
while pos < len(data):
    word = struct.unpack(">I", data[pos:pos + 4])[0]
    n = word & 0x7fffffff
    chunks.append(data[pos:pos + 4 + n]); pos += 4 + n
assert len(chunks) >= 3, len(chunks)
chunks[0], chunks[1] = chunks[1], chunks[0]
open(sys.argv[2], "wb").write(head + b"".join(chunks))
EOF
expect_failure reordered "does not authenticate" "$masq" restore --config x.json --data-dir x swapped.bak
python3 - big.bak dropped.bak <<'EOF'
import sys, struct
data = open(sys.argv[1], "rb").read()
head, pos, chunks = data[:132], 132, []
while pos < len(data):
    n = struct.unpack(">I", data[pos:pos + 4])[0] & 0x7fffffff
    chunks.append(data[pos:pos + 4 + n]); pos += 4 + n
open(sys.argv[2], "wb").write(head + b"".join(chunks[:-1]))   # the final chunk cut off at a boundary
EOF
expect_failure dropped-final "truncated" "$masq" restore --config x.json --data-dir x dropped.bak
MASQ_BACKUP_PASSPHRASE="wrong" expect_failure wrong-passphrase "wrong passphrase" "$masq" restore --config x.json --data-dir x a.bak
head -c 4096 /dev/urandom >random.bin
expect_failure not-a-backup "not a Masq backup" "$masq" restore --config x.json --data-dir x random.bin
"$masq" restore --config x.json --data-dir x nothing-here.bak >missing.out 2>&1
[ $? = 2 ] && grep -q "cannot read" missing.out || fail "a missing backup file: $(cat missing.out) (exit status 2 expected)"
[ ! -e x ] && [ ! -e x.json ] || fail "a failed restore left x or x.json behind"
ls -A | grep -q 'restoring' && fail "a failed restore left a temporary directory: $(ls -A | grep restoring)"
# A target that is not empty is refused before anything is read, and kept as it was.
mkdir -p full && echo precious >full/file
expect_failure not-empty "not empty" "$masq" restore --config full.json --data-dir full a.bak
[ "$(cat full/file)" = precious ] && [ "$(ls -A full)" = file ] || fail "a refused restore touched the target"
expect_failure existing-store "not empty" "$masq" restore --config b.json a.bak
value_is b.json notes k 2 || fail "a refused restore into B changed it"
expect_failure overwrite "exists" "$masq" backup --config b.json a.bak
"$masq" restore --verify a.bak >verify.out 2>&1 || fail "verify: $(cat verify.out)"
grep -q "intact" verify.out || fail "verify says: $(cat verify.out)"

# --- 6. export ---------------------------------------------------------------
"$masq" export --config b.json b.jsonl 2>/dev/null || fail "export"
expect_failure export-exists "exists" "$masq" export --config b.json b.jsonl
python3 - b.jsonl "$(key_count b.json notes)" <<'EOF' || fail "export content"
import base64, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert lines[0]["masq_export"] == 1, lines[0]
assert lines[-1] == {"masq_export_end": True, "records": len(lines) - 2}, lines[-1]
records = {(r["ns"], base64.b64decode(r["key_b64"])): r for r in lines[1:-1]}
assert base64.b64decode(records[("notes", b"k")]["value_b64"]) == b"2"
assert base64.b64decode(records[("notes", b"after")]["value_b64"]) == "written on A'".encode()
assert ("notes", b"j") not in records
assert records[("app", b"visits")]["counter"] is True and base64.b64decode(records[("app", b"visits")]["value_b64"]) == b"7"
assert sum(1 for k in records if k[0] == "notes") == int(sys.argv[2])
for r in records.values():
    assert r["ts"] > 1_600_000_000_000 and len(r["hlc"]) == 16 and len(r["replica"]) == 16
EOF
[ "$("$masq" export --config b.json - 2>/dev/null | wc -l)" = "$(wc -l <b.jsonl)" ] || fail "export to stdout differs"
[ "$(stat -c %a b.jsonl)" = 600 ] && [ "$(stat -c %a a.bak)" = 600 ] || fail "export or backup is readable by others"

cd /; rm -rf "$work"
if [ "$failures" != 0 ]; then echo "backup_test: $failures failures"; exit 1; fi
echo "backup_test: all checks passed"
