#!/usr/bin/env bash
# A store written by the SQLite plugin before long values moved to their own
# table (every value inline in kv, no `ext` column: the fixture in
# fixtures/sqlite-inline-values, made with that plugin) opens with today's
# plugin: its values read back, the table is migrated (v renamed value, ext
# added), new long values go to `big`, overwrites and deletes work, `masq
# check` finds no damage, and two processes opening an old file at once both
# open it.
# Usage: Tests/cli/upgrade_test.sh path/to/masq-cli   (plugins beside it or on MASQ_PLUGIN_PATH)
set -euo pipefail
masq=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here/fixtures/sqlite-inline-values" "$work/store"
chmod 700 "$work/store"
chmod 600 "$work/store"/*   # git keeps no modes but the executable bit
cat > "$work/c.json" <<JSON
{ "masq": 1, "data_dir": "$work/store", "storage": { "plugin": "sqlite" } }
JSON
fail() { echo "upgrade_test: FAIL: $*" >&2; exit 1; }
long=$(python3 -c "
import random; r=random.Random(5); print(''.join(r.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(20000)), end='')")
[ "$("$masq" get --config "$work/c.json" app long)" = "$long" ] || fail "the inline long value does not read back"
[ "$("$masq" get --config "$work/c.json" app short)" = "hello" ] || fail "the short value does not read back"
[ "$("$masq" counter --config "$work/c.json" app visits)" = "3" ] || fail "the counter does not read back"
"$masq" put --config "$work/c.json" app long2 "$long"
[ "$("$masq" get --config "$work/c.json" app long2)" = "$long" ] || fail "a new long value does not read back"
"$masq" put --config "$work/c.json" app long "now short"
[ "$("$masq" get --config "$work/c.json" app long)" = "now short" ] || fail "an inline long value cannot be overwritten"
"$masq" del --config "$work/c.json" app long2
if "$masq" get --config "$work/c.json" app long2 >/dev/null 2>&1; then fail "a deleted long value is still there"; fi
"$masq" put --config "$work/c.json" app long3 "$long"
[ "$("$masq" ls --config "$work/c.json" app | tr '\n' ' ')" = "long long3 short visits " ] || fail "keys: $("$masq" ls --config "$work/c.json" app | tr '\n' ' ')"
"$masq" check --config "$work/c.json" >/dev/null || fail "masq check found damage"
python3 - "$work/store/masq.db" <<'PY' || fail "layout"
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
cols = [r[1] for r in db.execute("PRAGMA table_info(kv)")]
assert cols == ["k", "value", "ext"], cols   # v renamed: a plugin of the old layout refuses the file
big = db.execute("SELECT count(*) FROM big").fetchone()[0]
assert big == 1, big          # long3 (long2 was deleted with its row; the old inline value was overwritten short)
PY
# Two processes opening an old file at once: the migration runs once, both open.
for round in 1 2 3 4 5 6; do
    rm -rf "$work/race"
    cp -r "$here/fixtures/sqlite-inline-values" "$work/race"
    chmod 700 "$work/race"; chmod 600 "$work/race"/*
    sed "s|$work/store|$work/race|" "$work/c.json" > "$work/race.json"
    "$masq" ls --config "$work/race.json" app > "$work/race1.out" 2>&1 & first=$!
    "$masq" ls --config "$work/race.json" app > "$work/race2.out" 2>&1 || fail "a second process opening the old file at once: $(cat "$work/race2.out")"
    wait $first || fail "a first process opening the old file at once: $(cat "$work/race1.out")"
done
echo "upgrade_test: ok (inline values of the old layout read, new long values in their own table, check clean)"
