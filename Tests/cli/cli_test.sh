#!/usr/bin/env bash
# The `masq` command line: every subcommand, exit statuses (0 ok, 1 error,
# 2 not found, 64 usage), one-line errors, --help everywhere, and switching
# the storage backend by editing the config (no rebuild).
#
# usage: cli_test.sh <path to masq binary>      (MASQ_PLUGIN_PATH may be set)
set -uo pipefail
masq=$1
work=$(mktemp -d /tmp/masq-cli-XXXXXX)
export MASQ_CONFIG=$work/config.json
failures=0

expect() { # description, expected status, command...
    local what=$1 want=$2
    shift 2
    "$@" >"$work/out" 2>"$work/err"
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: $what: exit $got, expected $want"; cat "$work/err"; failures=$((failures + 1))
    fi
}
expect_out() { # description, expected stdout
    if [ "$(cat "$work/out")" != "$2" ]; then
        echo "FAIL: $1: stdout was '$(cat "$work/out")', expected '$2'"; failures=$((failures + 1))
    fi
}
expect_one_line_error() { # description, fragment
    if [ "$(wc -l <"$work/err")" != 1 ] || ! grep -q -- "$2" "$work/err" || ! grep -q '^masq: ' "$work/err"; then
        echo "FAIL: $1: stderr should be one 'masq: ...' line containing '$2':"; cat "$work/err"; failures=$((failures + 1))
    fi
}

expect "help" 0 "$masq" --help
for sub in init put get del ls plugins; do expect "$sub --help" 0 "$masq" "$sub" --help; done
expect "version" 0 "$masq" --version
expect_out "version" "$(sed -n 's/^#define MASQ_VERSION_STRING "\(.*\)"/\1/p' "$(dirname "$0")/../../include/masq.h")"

expect "command before init" 1 "$masq" get notes k
expect_one_line_error "before init" "run \`masq init\`"

expect "init" 0 "$masq" init --data-dir "$work/data"
grep -q '"plugin": "sqlite"' "$MASQ_CONFIG" || { echo "FAIL: init did not write the sqlite config"; failures=$((failures + 1)); }
expect "init twice" 1 "$masq" init --data-dir "$work/data"
expect_one_line_error "init twice" "--force"
expect "init with an unknown plugin" 1 "$masq" init --config "$work/other.json" --storage nosuch
expect_one_line_error "unknown plugin" "libmasq_storage_nosuch.so"
[ ! -e "$work/other.json" ] || { echo "FAIL: a failed init wrote a config"; failures=$((failures + 1)); }

expect "put" 0 "$masq" put notes hello world
expect "get" 0 "$masq" get notes hello
expect_out "get" "world"
printf 'line one\nline two' | "$masq" put notes multi
expect "get stdin value" 0 "$masq" get notes multi
expect_out "stdin value" "$(printf 'line one\nline two')"
expect "get missing" 2 "$masq" get notes nope
expect_one_line_error "missing key" "no key 'nope'"
expect "ls namespaces" 0 "$masq" ls
expect_out "ls namespaces" "notes"
expect "ls keys" 0 "$masq" ls notes
expect_out "ls keys" "$(printf 'hello\nmulti')"
expect "ls prefix with values" 0 "$masq" ls notes --prefix hel -v
expect_out "ls values" "$(printf 'hello\tworld')"
expect "del" 0 "$masq" del notes hello
expect "get deleted" 2 "$masq" get notes hello
expect "del absent" 0 "$masq" del notes hello

expect "usage error" 64 "$masq" get notes
expect "bad namespace" 1 "$masq" put "$(printf 'bad\tname')" k v
expect_one_line_error "bad namespace" "control characters"
expect "oversized key" 1 "$masq" put notes "$(head -c 2000 /dev/zero | tr '\0' k)" v
expect_one_line_error "oversized key" "max_key_bytes"

expect "plugins" 0 "$masq" plugins
grep -q "sqlite .* ok" "$work/out" || { echo "FAIL: plugins does not list sqlite as ok"; failures=$((failures + 1)); }

# Switch the backend by editing the config: no rebuild, the same binary.
sed -i 's/"plugin": "sqlite"/"plugin": "memory"/' "$MASQ_CONFIG"
expect "put on memory" 0 "$masq" put notes k v
expect "memory forgets across processes" 2 "$masq" get notes k
sed -i 's/"plugin": "memory"/"plugin": "sqlite"/' "$MASQ_CONFIG"
expect "sqlite kept its data" 0 "$masq" get notes multi

# A corrupt config: a clear one-line error, and the stored data is untouched.
cp "$MASQ_CONFIG" "$work/good.json"
echo '{"storage": ' >"$MASQ_CONFIG"
expect "corrupt config" 1 "$masq" ls
expect_one_line_error "corrupt config" "not valid JSON"
cp "$work/good.json" "$MASQ_CONFIG"
expect "data survives a corrupt config" 0 "$masq" get notes multi

rm -rf "$work"
if [ "$failures" != 0 ]; then echo "cli_test: $failures failures"; exit 1; fi
echo "cli_test: all checks passed"
