#!/usr/bin/env bash
# The phone page as a Masq device (issue 18.7), in a real browser: initial
# sync of N keys from a CLI store into the page (peer mode: IndexedDB +
# WebCrypto, through `masq relay`; goal >= 5,000 keys/s), then get/put latency
# (median, p90, p99 of OPS calls from page JS) in peer mode beside daemon mode
# (the same page on masqd's localhost WebSocket), in the same run, with the
# ratio. Everything on 127.0.0.1; every wait is bounded. Prints figures, no
# timed assertions; not part of CI.
#
# Usage:
#   bench/browser/run.sh [BIN_DIR]
#
#   BIN_DIR  directory holding masq-cli, masqd and the plugins (*.so), e.g.
#            .build/release, .build/debug or a snapshot; default .build/release
#            if it holds masq-cli, else .build/debug. This script builds nothing.
#
# Environment: N (keys synced, default 10000), VALUE_BYTES (default 64), OPS
# (gets and puts per mode, default 1000), WARMUP (default 50), SYNC_TIMEOUT
# (seconds, default 600), KEEP=1 (keep the temporary directory), MASQ_BIN,
# MASQD, MASQ_PLUGIN_PATH (override the files taken from BIN_DIR).
#
# Needs: Debian's chromium and chromium-driver; python3 with selenium,
# websockets and bindings/python (pip install selenium websockets
# ./bindings/python). About a minute with the defaults.
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
export MASQD=${MASQD:-$bin/masqd}
export MASQ_PLUGIN_PATH=${MASQ_PLUGIN_PATH:-$bin}
for f in "$MASQ_BIN" "$MASQD"; do
    [ -x "$f" ] || { echo "not found: $f (give the build's directory: bench/browser/run.sh BIN_DIR)" >&2; exit 2; }
done
command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } \
    || { echo "needs chromium and chromedriver (apt-get install chromium chromium-driver)" >&2; exit 2; }
python3 -c "import selenium, websockets, pytest, masq.daemon" 2>/dev/null \
    || { echo "needs Python packages: selenium websockets pytest, and bindings/python (pip install ./bindings/python)" >&2; exit 2; }

echo "browser bench: masq-cli $MASQ_BIN, masqd $MASQD, plugins $MASQ_PLUGIN_PATH" >&2
echo "$(nproc) cores, $(uname -srm), $(chromium --version 2>/dev/null || chromium-browser --version 2>/dev/null)" >&2
cd "$root"
exec python3 "$root/bench/browser/bench.py" "$@"
