#!/usr/bin/env bash
# Build libmasq and the SQLite plugin in release mode, then run the storage
# benchmark (raw SQLite vs masq.h, same run). Arguments go to storage_bench.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product masq >&2
swift build -c release --product masq_storage_sqlite >&2
lib=$(swift build -c release --show-bin-path)
mkdir -p bench/storage/build
cc -std=c11 -O2 -Wall -Wextra -Iinclude bench/storage/storage_bench.c \
   -L"$lib" -lmasq -Wl,-rpath,"$lib" -lsqlite3 -o bench/storage/build/storage_bench
exec bench/storage/build/storage_bench "$@"
