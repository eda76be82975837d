#!/usr/bin/env bash
# A tour of Masq today: build, create a store, write and read from the CLI
# and from C, list plugins, swap the storage backend by editing config, then
# pair a second device through a local relay and keep the two in sync.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
echo "== installing what is missing (.ci/setup: Debian packages and the tests' Python modules)"
bash .ci/setup
echo "== building (swift build; first time takes a minute or two)"
swift build 2>&1 | tail -1
bin=$(swift build --show-bin-path)
make -s -C plugins/storage-memory BUILD="$bin"     # the C reference plugin, beside the others
masq() { "$bin/masq-cli" "$@"; }

demo=$(mktemp -d /tmp/masq-demo-XXXXXX)
export MASQ_CONFIG=$demo/config.json
echo; echo "== masq init"
masq init --data-dir "$demo/data"
echo; echo "== put / get / ls"
masq put notes greeting "hello from masq"
echo '{"title": "groceries", "items": ["bread", "cheese"]}' | masq put notes list/1
masq put todo today "write the sync engine"
masq get notes greeting; echo
masq ls
masq ls notes -v
echo; echo "== plugins on the search path"
masq plugins
echo; echo "== swap the backend by editing $MASQ_CONFIG (no rebuild)"
sed -i 's/"plugin": "sqlite"/"plugin": "memory"/' "$MASQ_CONFIG"
masq put scratch k "lives only in this process"
masq ls scratch || true
sed -i 's/"plugin": "memory"/"plugin": "sqlite"/' "$MASQ_CONFIG"
echo "back on sqlite:"; masq ls notes
echo; echo "== the same store from C (examples/hello.c against libmasq.so)"
cc -std=c11 -Iinclude examples/hello.c -L"$bin" -lmasq -Wl,-rpath,"$bin" -o "$demo/hello"
"$demo/hello" "$demo/hello-data"
echo; echo "== sync: a relay on 127.0.0.1 and a second device"
trap 'kill $(jobs -p) 2>/dev/null' EXIT           # background jobs run the binary itself, so this reaches them
"$bin/masq-cli" relay --port 0 --log-level error >"$demo/relay.out" &
for _ in $(seq 100); do grep -q ws:// "$demo/relay.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'ws://[^ ]*' "$demo/relay.out")
echo "relay: $url"
masq init --config "$demo/laptop.json" --data-dir "$demo/laptop" --name laptop >/dev/null
"$bin/masq-cli" pair --relay "$url" --no-qr >"$demo/pair.out" &
for _ in $(seq 100); do grep -q '^masq://' "$demo/pair.out" 2>/dev/null && break; sleep 0.1; done
masq join --config "$demo/laptop.json" "$(grep '^masq://' "$demo/pair.out")"
wait %2
masq devices --config "$demo/laptop.json"
"$bin/masq-cli" sync --quiet >/dev/null &           # this device keeps syncing
masq sync --config "$demo/laptop.json" --once       # the laptop catches up and exits
echo "on the laptop:"; masq ls --config "$demo/laptop.json" notes -v
masq put --config "$demo/laptop.json" notes from-laptop "written on the laptop"
masq sync --config "$demo/laptop.json" --once --quiet
for _ in $(seq 50); do masq get notes from-laptop >/dev/null 2>&1 && break; sleep 0.1; done
echo "back on the first device:"; masq get notes from-laptop; echo
masq status
echo; echo "demo files are in $demo"
