# Shared by the CLI tests that run several masq processes: sourced after
# `masq` is set and the working directory is the test's own.
#   fail MESSAGE              count a failure (the test exits 1 at its end)
#   pids+=($!)                processes killed when the test exits
#   wait_for S WHAT CMD...    retry CMD every 0.1 s for S seconds, else fail
#   value_is CONFIG NS KEY V  the store of CONFIG holds V at NS/KEY
failures=0
pids=()
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

wait_for() { # seconds, description, command...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    fail "timed out waiting for: $what"
    return 1
}
value_is() { [ "$("$masq" get --config "$1" "$2" "$3" 2>/dev/null)" = "$4" ]; }
