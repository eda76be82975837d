#!/usr/bin/env bash
# Sharing with another person through real Connectoid services on 127.0.0.1,
# with real processes: Alice shares a namespace by link, Bob accepts it; both
# write and converge (deletes and concurrent writes included); the fingerprint
# matches on both sides; a private namespace stays private; a read-only share
# refuses Bob's writes; a second claimant of a used link is told it was
# intercepted and Alice is warned; one of two services dies and sharing goes
# on through the other; unshare ends it on both sides; bad links are refused.
#
# usage: share_test.sh <path to masq binary>   (MASQ_PLUGIN_PATH reaches the plugins)
set -uo pipefail
masq=$1
work=$(mktemp -d /tmp/masq-share-XXXXXX)
. "$(dirname "$0")/processes.sh"
cd "$work"
absent() { ! "$masq" get --config "$1" "$2" "$3" >/dev/null 2>&1; }
start_sync() { "$masq" sync --config "$1.json" --quiet >"$1.sync.log" 2>&1 & pids+=($!); eval "sync_$1=$!"; }

serve() { # name
    "$masq" connectoid serve --port 0 --db "$1.sqlite3" >"$1.out" 2>"$1.err" & pids+=($!); eval "svc_$1=$!"
    wait_for 10 "service $1" grep -q 'http://' "$1.out"
}
serve s1; serve s2
url1=$(grep -o 'http://[^ ]*' s1.out); url2=$(grep -o 'http://[^ ]*' s2.out)
curl -sf "$url1" | grep -q '"retention_seconds":3600' || fail "GET of the service does not publish its limits"

for who in alice bob mallory; do
    "$masq" init --config $who.json --data-dir $who --name $who >/dev/null || fail "init $who"
    python3 - "$who.json" "$url1" "$url2" <<'PY'
import json, sys
path, a, b = sys.argv[1:]
config = json.load(open(path))
config["sharing"] = {"services": [a, b], "resend_ms": 2000,
                     "transport": {"plugin": "connectoid", "options": {"interval_ms": 200, "timeout_ms": 3000}}}
json.dump(config, open(path, "w"), indent=2)
PY
done

# 1. Alice shares "notes" read-write; Bob accepts and gets what is there.
"$masq" put --config alice.json notes hello "from alice" || fail "put"
"$masq" put --config alice.json private secret "not shared" || fail "put"
"$masq" share --config alice.json notes --no-qr >share1.out 2>&1 || fail "share: $(cat share1.out)"
link1=$(grep '^masq://share/' share1.out)
[ -n "$link1" ] || fail "no link printed: $(cat share1.out)"
case "$link1" in *"connectoid="*"#"*) ;; *) fail "link lacks connectoid= or its #secret: $link1" ;; esac
start_sync alice
"$masq" accept --config bob.json "$link1" --as notes --wait 30 >accept1.out 2>&1 || fail "accept: $(cat accept1.out)"
grep -q "accepted: namespace notes (read-write), 1 key" accept1.out || fail "accept output: $(cat accept1.out)"
value_is bob.json notes hello "from alice" || fail "Bob did not receive Alice's key"
absent bob.json private secret || fail "a namespace Alice did not share reached Bob"
fa=$("$masq" shares --config alice.json | grep ' notes ' | grep -o 'fingerprint [0-9 ]*' | head -1)
fb=$("$masq" shares --config bob.json | grep ' notes ' | grep -o 'fingerprint [0-9 ]*' | head -1)
[ -n "$fa" ] && [ "$fa" = "$fb" ] || fail "fingerprints differ or missing: '$fa' vs '$fb'"

# 2. Both write; changes flow both ways, deletes included; concurrent writes converge.
start_sync bob
"$masq" put --config bob.json notes from-bob "hi alice" || fail "bob put"
wait_for 20 "Bob's write reaching Alice" value_is alice.json notes from-bob "hi alice"
"$masq" put --config alice.json notes from-alice "hi bob" || fail "alice put"
wait_for 20 "Alice's write reaching Bob" value_is bob.json notes from-alice "hi bob"
"$masq" del --config alice.json notes hello || fail "alice del"
wait_for 20 "Alice's delete reaching Bob" absent bob.json notes hello
"$masq" put --config alice.json notes both "A" & "$masq" put --config bob.json notes both "B"; wait $!
wait_for 20 "concurrent writes converging" bash -c "[ \"\$('$masq' get --config alice.json notes both)\" = \"\$('$masq' get --config bob.json notes both)\" ]"
absent bob.json private secret || fail "the private namespace leaked"
# A value of the default maximum (1 MiB, 26 mailbox messages' worth) crosses as parts.
head -c 1048576 /dev/urandom >photo.bin
"$masq" put --config alice.json notes photo <photo.bin || fail "put of a 1 MiB value"
wait_for 60 "a 1 MiB value reaching Bob through the mailboxes" sh -c "\"$masq\" get --config bob.json notes photo 2>/dev/null | cmp -s - photo.bin"
"$masq" shares --config alice.json | grep -q "not shared through mailboxes" && fail "Alice warns that a 1 MiB value was not shared"

# 3. The used link again (Mallory): told it was intercepted; Alice is warned.
if "$masq" accept --config mallory.json "$link1" --wait 20 >mallory.out 2>&1; then fail "a second claimant was accepted"; fi
grep -q "intercepted" mallory.out || fail "the second claimant was not told: $(cat mallory.out)"
wait_for 10 "Alice warned of a second claimant" bash -c "'$masq' shares --config alice.json | grep -q 'second person'"
absent mallory.json notes from-alice || fail "Mallory got data"

# 4. Read-only: Bob may read "docs" but not write it.
"$masq" put --config alice.json docs readme "v1" || fail "put docs"
"$masq" share --config alice.json docs --read-only --no-qr >share2.out 2>&1 || fail "share docs"
link2=$(grep '^masq://share/' share2.out)
kill "$sync_bob"; wait "$sync_bob" 2>/dev/null
"$masq" accept --config bob.json "$link2" --as alice-docs --wait 30 >accept2.out 2>&1 || fail "accept docs: $(cat accept2.out)"
grep -q "read-only" accept2.out || fail "accept did not report read-only: $(cat accept2.out)"
value_is bob.json alice-docs readme "v1" || fail "Bob did not receive docs"
if "$masq" put --config bob.json alice-docs readme "hacked" 2>put.err; then fail "a write to a read-only share succeeded"; fi
grep -q "read-only" put.err || fail "the refusal does not say read-only: $(cat put.err)"
start_sync bob
"$masq" put --config alice.json docs readme "v2" || fail "put docs v2"
wait_for 20 "Alice's docs change reaching Bob" value_is bob.json alice-docs readme "v2"

# 5. Redundancy: service 1 dies; sharing goes on through service 2.
kill "$svc_s1"; wait "$svc_s1" 2>/dev/null
"$masq" put --config alice.json notes after-s1 "still here" || fail "put"
wait_for 30 "a change through the surviving service" value_is bob.json notes after-s1 "still here"

# 6. Unshare ends it on both sides; later changes do not flow.
id=$("$masq" shares --config bob.json | grep ' notes ' | awk '{print $1}')
"$masq" unshare --config bob.json "$id" >unshare.out 2>&1 || fail "unshare: $(cat unshare.out)"
"$masq" shares --config bob.json | grep -q ' notes ' && fail "Bob still lists the share"
wait_for 20 "Alice learning of the unshare" bash -c "! '$masq' shares --config alice.json | grep -q ' notes '"
"$masq" put --config alice.json notes after-unshare "x" || fail "put"
sleep 2
absent bob.json notes after-unshare || fail "a change flowed after unshare"
value_is bob.json notes from-alice "hi bob" || fail "Bob's copy was lost at unshare"

# 7. Bad links.
if "$masq" accept --config bob.json "not a link" --wait 1 2>bad.err; then fail "a bad link was accepted"; fi
grep -q "not a share link" bad.err || fail "bad link message: $(cat bad.err)"
if "$masq" accept --config bob.json "${link2%%#*}" --wait 1 2>bad.err; then fail "a link without its secret was accepted"; fi
grep -q "secret" bad.err || fail "missing-secret message: $(cat bad.err)"
if "$masq" share --config mallory.json notes --service ftp://x --no-qr 2>bad.err; then fail "a bad service URL was accepted"; fi

if [ "$failures" -gt 0 ]; then
    echo "share test: $failures failure(s); logs in $work"
    for f in *.sync.log; do echo "--- $f"; tail -20 "$f"; done
    exit 1
fi
rm -rf "$work"
echo "share test: ok"
