#!/usr/bin/env bash
# C tests against the headers and the built libmasq.so (swift build first):
# header compile checks (C11 and C++17), the API test on both storage plugins,
# the broken-plugin refusals, and the kill -9 crash test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lib=${MASQ_LIB_DIR:-$(cd "$root" && swift build --show-bin-path)}
out=$here/build
mkdir -p "$out"
strict=(-Wall -Wextra -Werror -pedantic -I"$root/include")

echo "== headers: C11 and C++17, strict"
cc -std=c11 "${strict[@]}" -o "$out/headers_c" "$here/headers.c" && "$out/headers_c"
c++ -std=c++17 "${strict[@]}" -o "$out/headers_cpp" "$here/headers.cpp" && "$out/headers_cpp"
for h in masq.h masq_plugin.h masq_crypto.h; do   # each header alone is self-contained
    echo "#include \"$h\"" | cc -std=c11 "${strict[@]}" -fsyntax-only -x c -
    echo "#include \"$h\"" | c++ -std=c++17 "${strict[@]}" -fsyntax-only -x c++ -
done

echo "== the SQLite plugin's page checksums (Sources/CMasqSQLiteChecksum): flipped bytes fail reads, old files still open"
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -I"$root/Sources/CMasqSQLiteChecksum/include" \
    "$root/Sources/CMasqSQLiteChecksum/checksum_vfs.c" "$here/checksum_vfs_test.c" -o "$out/checksum_vfs_test" -lsqlite3 -lpthread
scratch=$(mktemp -d /tmp/masq-cksum-XXXXXX)
"$out/checksum_vfs_test" "$scratch"
rm -rf "$scratch"

echo "== plugins: C reference plugin and broken fixtures"
make -s -C "$root/plugins/storage-memory" BUILD="$out/plugins"
"$here/plugins/build.sh" "$out/bad-plugins"

echo "== exports: libmasq.so exports exactly the functions masq.h declares"
declared=$(cat "$root/include/masq.h" "$root/include/masq_crypto.h" | grep -oE '\bmasq_[a-z0-9_]+\(' | tr -d '(' | sort -u)
exported=$(readelf --dyn-syms -W "$lib/libmasq.so" | awk '$5 == "GLOBAL" && $7 != "UND" {print $8}' | sed 's/@.*//' | sort -u)
if [ "$declared" != "$exported" ]; then
    diff <(echo "$declared") <(echo "$exported") || true
    echo "exports differ from masq.h" >&2
    exit 1
fi

link=(-L"$lib" -lmasq -Wl,-rpath,"$lib" -lpthread)
cc -std=c11 -Wall -Wextra -Werror -I"$root/include" -o "$out/api_test" "$here/api_test.c" "${link[@]}"
cc -std=c11 -Wall -Wextra -Werror -I"$root/include" -o "$out/crash_test" "$here/crash_test.c" "${link[@]}"
cc -std=c11 -Wall -Wextra -Werror -I"$root/include" -o "$out/security_test" "$here/security_test.c" "${link[@]}"
cc -std=c11 -Wall -Wextra -Werror -I"$root/include" -o "$out/blob_test" "$here/blob_test.c" "${link[@]}"
cc -std=c11 -Wall -Wextra -Werror -I"$root/include" -o "$out/backup_test" "$here/backup_test.c" "${link[@]}"
cc -std=c11 -Wall -Wextra -Werror -I"$root/include" -o "$out/share_test" "$here/share_test.c" "${link[@]}"
export MASQ_PLUGIN_PATH="$out/plugins:$lib"

echo "== api_test"
"$out/api_test" sqlite "$out/bad-plugins"
"$out/api_test" memory "$out/bad-plugins"

echo "== security_test (encryption at rest, devices, pairing, sessions, primitives)"
"$out/security_test"

echo "== blob_test (blobs: files and streams, ranges, dedup, collection, sealed chunks, bad input)"
"$out/blob_test"

echo "== share_test (sharing with another person through a Connectoid service on 127.0.0.1)"
rm -f "$out"/share-service.sqlite3*
"$lib/masq-cli" connectoid serve --port 0 --db "$out/share-service.sqlite3" >"$out/share-service.out" 2>&1 &
service_pid=$!
trap 'kill $service_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'http://' "$out/share-service.out" 2>/dev/null && break; sleep 0.1; done
"$out/share_test" "$(grep -o 'http://[^ ]*' "$out/share-service.out" | head -1)"
kill $service_pid 2>/dev/null || true
trap - EXIT

echo "== log_test (the config's log_level; the embedder's callback is never replaced)"
cc -std=c11 -Wall -Wextra -Werror -I"$root/include" -o "$out/log_test" "$here/log_test.c" "${link[@]}"
"$out/log_test"

echo "== host_test (every plugin against host tables of every length the header has had)"
make -s -C "$root/plugins/transport-lan" BUILD="$out/plugins"
cc -std=c11 -Wall -Wextra -Werror -I"$root/include" -o "$out/host_test" "$here/host_test.c" -ldl
"$out/host_test" "$lib" "$out/plugins"

echo "== backup_test (backup, restore, export; bad backup files; sessions renewed before sealing)"
"$out/backup_test"

echo "== crash_test (SIGKILL a writer, reopen, every acknowledged write is there)"
"$out/crash_test" "${CRASH_ROUNDS:-6}"
