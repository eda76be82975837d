#!/usr/bin/env bash
# The abuse suite (Tests/abuse, issue 14.5), long version: each attack phase
# lasts ABUSE_SECONDS (default 30; CI runs the same tests with a few
# seconds), against the binaries of a build. Prints, per server, the line for
# the issue note:
#
#   relay: peak RSS +X MiB over baseline, N legitimate failures of M, p99 Y ms
#
# followed by what each attack did, and pytest's verdict (a failed check
# names the server's weakness; the figures are printed either way).
#
# Usage:
#   bench/abuse/run.sh [BIN_DIR] [pytest args...]
#
#   BIN_DIR  directory holding masq-cli, masqd and the plugins (*.so), e.g.
#            .build/release or a snapshot; default: $MASQ_BIN's directory,
#            else .build/release. This script builds nothing.
#   pytest args, e.g. -k relay to run one server only.
#
# Environment: ABUSE_SECONDS (per phase, default 30), MASQ_BIN, MASQD,
# MASQ_PLUGIN_PATH (override the files taken from BIN_DIR).
#
# Everything runs on loopback addresses (127.0.0.0/8). The attackers share
# the machine's cores with the servers, so latencies are for this box under
# that load, not for a server alone. About 3-4 x ABUSE_SECONDS per server.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

bin=""
if [ $# -gt 0 ] && [ -d "$1" ]; then bin=$(cd "$1" && pwd); shift; fi
if [ -z "$bin" ]; then
    if [ -n "${MASQ_BIN:-}" ]; then bin=$(cd "$(dirname "$MASQ_BIN")" && pwd); else bin="$root/.build/release"; fi
fi
export MASQ_BIN=${MASQ_BIN:-$bin/masq-cli}
export MASQD=${MASQD:-$bin/masqd}
export MASQ_PLUGIN_PATH=${MASQ_PLUGIN_PATH:-$bin}
export ABUSE_SECONDS=${ABUSE_SECONDS:-30}
for f in "$MASQ_BIN" "$MASQD"; do
    [ -x "$f" ] || { echo "not found: $f (give the build's directory: bench/abuse/run.sh BIN_DIR)" >&2; exit 2; }
done
python3 -c "import pytest, websockets, requests, cryptography" 2>/dev/null \
    || { echo "needs Python packages: pytest websockets requests cryptography" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "abuse suite: $ABUSE_SECONDS s per phase; masq-cli $MASQ_BIN, masqd $MASQD, plugins $MASQ_PLUGIN_PATH" >&2
echo "$(nproc) cores, $(uname -srm)" >&2
cd "$root"
status=0
python3 -m pytest -s -q -p no:cacheprovider -W ignore::DeprecationWarning --tb=line Tests/abuse "$@" || status=$?
exit $status
