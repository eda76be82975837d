#!/usr/bin/env bash
# A tour of Masq today: build, create a store, write and read from the CLI
# and from C, list plugins, and swap the storage backend by editing config.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
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
echo; echo "demo files are in $demo"
