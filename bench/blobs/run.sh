#!/usr/bin/env bash
# Blob sync benchmark (issue 15.5): BLOB_TOTAL_MB (default 1024) of
# BLOB_FILE_MB files (default 4 MiB, random bytes) from device A to device B
# through a local `masq relay`, beside copying the same files over one plain
# TCP connection on 127.0.0.1 in the same run. Prints a side-by-side table:
# time until B holds every byte (`masq sync --once` on B, which returns once
# every blob is whole; then every blob is read back and its SHA-256 compared
# with the source), MB/s, peak RSS of A's sync service, of B's sync and of the
# relay (the kernel's high-water mark, ru_maxrss), CPU seconds of each during
# the transfer, the bytes the relay carried, and the ratio blobs / TCP.
# Goals (issue 15.5): >= 100 MB/s on this box, RSS < 200 MiB; they are printed
# beside the figures, never asserted: the exit status is non-zero only when
# the transfer did not finish in its bound or bytes came back different.
#
# Usage:
#   bench/blobs/run.sh [BIN_DIR]
#
#   BIN_DIR  directory holding masq-cli and the plugins (*.so): .build/release
#            (default when it exists, else .build/debug), or a snapshot. This
#            script builds nothing.
#
# Environment:
#   BLOB_TOTAL_MB   MiB to send (default 1024; 64 for a quick run)
#   BLOB_FILE_MB    MiB per file (default 4; fractions allowed, e.g. 0.5)
#   BLOB_TIMEOUT    seconds B's catch-up may take (default 120 + BLOB_TOTAL_MB)
#   RELAY_ARGS      extra `masq relay` options (default: none, the relay's defaults)
#   BLOB_WORKDIR    where the temporary directory goes (default /tmp; needs
#                   about 5 x BLOB_TOTAL_MB free)
#   BLOB_KEEP=1     keep the work directory (stores, logs) for a look afterwards
#   MASQ_BIN, MASQ_PLUGIN_PATH  override the files taken from BIN_DIR
#
# Everything binds to 127.0.0.1; every wait is bounded.
# Example: BLOB_TOTAL_MB=64 bench/blobs/run.sh /tmp/snap
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

bin=""
if [ $# -gt 0 ]; then
    [ -d "$1" ] || { echo "not a directory: $1" >&2; exit 2; }
    bin=$(cd "$1" && pwd); shift
fi
if [ -z "$bin" ]; then
    if [ -x "$root/.build/release/masq-cli" ]; then bin="$root/.build/release"; else bin="$root/.build/debug"; fi
fi
export MASQ_BIN=${MASQ_BIN:-$bin/masq-cli}
export MASQ_PLUGIN_PATH=${MASQ_PLUGIN_PATH:-$bin}
[ -x "$MASQ_BIN" ] || { echo "not found: $MASQ_BIN (give the build's directory: bench/blobs/run.sh BIN_DIR)" >&2; exit 2; }
ls "$MASQ_PLUGIN_PATH"/libmasq_transport_relay.so >/dev/null 2>&1 \
    || { echo "no relay plugin in $MASQ_PLUGIN_PATH (libmasq_transport_relay.so; e.g. swift build -c release --product masq_transport_relay)" >&2; exit 2; }
ls "$MASQ_PLUGIN_PATH"/libmasq_storage_sqlite.so >/dev/null 2>&1 \
    || { echo "no storage plugin in $MASQ_PLUGIN_PATH (libmasq_storage_sqlite.so; e.g. swift build -c release --product masq_storage_sqlite)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 2; }

exec python3 "$root/bench/blobs/blobs.py"
