#!/usr/bin/env bash
# Gossip at sizes no box here runs as processes: a model of N nodes in rounds
# (bench/mesh/gossip-sim.swift, built with swiftc -O), with the node's budgets
# (per-link credit, per-turn allowance, read cost, table cap, TTL, maximum
# age, tombstones) and some 80 records a frame (what fits in one link message).
# Side by side in one run, per size:
#
#   before: frames of the records heard most recently, every update decoded
#           before a version not newer is skipped, updates before new keys, a
#           new version every 5 rounds, a TTL of 15 rounds;
#   now:    news (taken in the last 3 rounds, up to half a frame) and then a
#           rotation over the whole table, versions not newer skipped at read
#           cost, updates and new keys in turn, a new version every 30
#           rounds, a TTL of 300 rounds.
#
# Prints the share of live nodes' records each node holds (mean, worst node),
# how long held records have been stale, and the ratio now / before.
# Real processes in the same regime: Tests/mesh/test_gossip_scale.py.
#
# Knobs: SIZES (node counts), ROUNDS, PER_FRAME, STOP_AT (a round at which 5%
# of nodes stop: prints how many of their records are still held at the end).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SIZES=${SIZES:-"500 1000 2000"}
ROUNDS=${ROUNDS:-1000}
PER_FRAME=${PER_FRAME:-80}
STOP_AT=${STOP_AT:-0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
swiftc -O "$here/gossip-sim.swift" -o "$work/gossip-sim"
common=(--rounds "$ROUNDS" --per-frame "$PER_FRAME" --stop-at "$STOP_AT")
held() { sed -n 's/.*held mean=\([0-9.]*\).*/\1/p'; }
for n in $SIZES; do
    before=$("$work/gossip-sim" --nodes "$n" "${common[@]}" --policy old --ttl 15 --version-every 5)
    now=$("$work/gossip-sim" --nodes "$n" "${common[@]}" --policy new --ttl 300 --version-every 30)
    echo "before: $before"
    echo "now:    $now"
    b=$(echo "$before" | head -1 | held)
    a=$(echo "$now" | head -1 | held)
    python3 -c "import sys; b, a = float(sys.argv[1]), float(sys.argv[2]); print('%s nodes: records held %.3f now, %.3f before: ratio %.2f' % (sys.argv[3], a, b, a / max(b, 1e-9)))" "$b" "$a" "$n"
done
