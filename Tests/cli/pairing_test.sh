#!/usr/bin/env bash
# Pairing between real processes over real sockets on 127.0.0.1:
# `masq pair` prints a link and a QR code (decoded with zbarimg), a device with
# another secret is refused and stores nothing, the right device pairs, both
# list each other with matching fingerprints, removal works, links expire.
#
# usage: pairing_test.sh <path to masq binary>
set -uo pipefail
masq=$1
work=$(mktemp -d /tmp/masq-pairing-XXXXXX)
cd "$work"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Alice's store is encrypted at rest; Bob's and Carol's are not.
MASQ_NEW_PASSPHRASE=alice-pass "$masq" init --config a.json --data-dir ./a --name alice --passphrase >/dev/null || fail "init alice"
"$masq" init --config b.json --data-dir ./b --name bob >/dev/null || fail "init bob"
"$masq" init --config c.json --data-dir ./c --name carol >/dev/null || fail "init carol"
export MASQ_PASSPHRASE=alice-pass   # read only by the protected store's commands

wait_for_link() { # file
    for _ in $(seq 100); do grep -q '^masq://' "$1" 2>/dev/null && break; sleep 0.1; done
    grep '^masq://' "$1"
}

"$masq" pair --config a.json --qr-pgm a.pgm >a.out 2>a.err &
pair_pid=$!
link=$(wait_for_link a.out) || fail "no link printed"
grep -q '█' a.out || fail "no QR code drawn in the terminal"
[ "$(zbarimg --quiet --raw a.pgm 2>/dev/null)" = "$link" ] || fail "zbarimg did not decode the QR code to the link"
case "$link" in masq://pair/*\?via=tcp:127.0.0.1:*\#*) ;; *) fail "unexpected link shape: $link" ;; esac

# Carol holds a different (valid-looking) link pointing at Alice: refused.
"$masq" pair --config c.json --ttl 5 --no-qr >c.out 2>/dev/null &
carol_pid=$!
other=$(wait_for_link c.out)
kill "$carol_pid" 2>/dev/null
wrong="${other%%\?*}?via=${link#*via=}"; wrong="${wrong%%#*}#${other#*#}"
"$masq" join --config c.json "$wrong" >c.join 2>&1 && fail "a wrong secret paired"
grep -q "refused" c.join || { fail "no clear refusal for a wrong secret:"; cat c.join; }
[ "$(wc -l <c.join)" = 1 ] || fail "the refusal is not one line"
"$masq" devices --config c.json | grep -q "no paired devices" || fail "carol stored something"

# Bob has the right link.
"$masq" join --config b.json "$link" >b.join 2>&1 || { fail "bob could not join:"; cat b.join; }
wait "$pair_pid" || fail "masq pair did not exit 0 after pairing"
grep -q "paired with alice" b.join || fail "bob did not report alice"
grep -q "paired with bob" a.out || fail "alice did not report bob"

"$masq" devices --config a.json >a.devices || fail "devices on alice"
"$masq" devices --config b.json >b.devices || fail "devices on bob"
alice_fp=$(grep -A1 '^this device: alice' a.devices | sed -n 's/.*fingerprint: //p')
bob_fp=$(grep -A1 '^this device: bob' b.devices | sed -n 's/.*fingerprint: //p')
grep -A1 '^alice (device' b.devices | grep -qF "$alice_fp" || fail "bob's view of alice's fingerprint differs"
grep -A1 '^bob (device' a.devices | grep -qF "$bob_fp" || fail "alice's view of bob's fingerprint differs"

# The link was single-use: nobody listens any more, and Alice would refuse it anyway.
"$masq" join --config c.json "$link" >/dev/null 2>&1 && fail "a used link paired again"

bob_id=$(sed -n 's/^bob (device \([0-9a-f]*\)).*/\1/p' a.devices)
"$masq" devices remove --config a.json "$bob_id" >/dev/null || fail "remove bob"
"$masq" devices --config a.json | grep -q "no paired devices" || fail "bob still listed after removal"
"$masq" devices remove --config a.json "$bob_id" >/dev/null 2>&1; [ $? = 2 ] || fail "removing an unknown device should exit 2"

# A wrong passphrase is a clear error.
MASQ_PASSPHRASE=nope "$masq" devices --config a.json >/dev/null 2>a.wrong; [ $? = 1 ] || fail "wrong passphrase accepted"
grep -q "wrong passphrase" a.wrong || fail "no clear message for a wrong passphrase"

# An unused link expires and `masq pair` says so.
"$masq" pair --config b.json --ttl 1 --no-qr >/dev/null 2>b.expired; [ $? = 1 ] || fail "expired pair should exit 1"
grep -q "expired" b.expired || fail "no expiry message"

cd /; rm -rf "$work"
if [ "$failures" != 0 ]; then echo "pairing_test: $failures failures"; exit 1; fi
echo "pairing_test: all checks passed"
