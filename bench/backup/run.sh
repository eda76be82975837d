#!/usr/bin/env bash
# Build libmasq and the SQLite plugin in release mode, then time masq_backup,
# masq_backup_verify and masq_restore of a 100,000-key store (1 KB values)
# beside SQLite's own online backup of the same file (`sqlite3 .backup`),
# in the same run; the ratios are printed. Arguments go to backup_bench:
#   [keys (100000)] [value bytes (1024)] [page size (0: SQLite's 4096)]
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product masq >&2
swift build -c release --product masq_storage_sqlite >&2
lib=$(swift build -c release --show-bin-path)
mkdir -p bench/backup/build
cc -std=c11 -O2 -Wall -Wextra -Iinclude bench/backup/backup_bench.c \
   -L"$lib" -lmasq -Wl,-rpath,"$lib" -lsqlite3 -o bench/backup/build/backup_bench
MASQ_PLUGIN_PATH="$lib" exec bench/backup/build/backup_bench "$@"
