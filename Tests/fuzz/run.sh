#!/usr/bin/env bash
# Fuzz every decoder that reads what another party sends (Tests/fuzz/MasqFuzz):
# build masq-fuzz with libFuzzer + AddressSanitizer in its own build folder
# (.build-fuzz: only Masq's modules are instrumented), make the seed corpus
# (valid inputs from the encoders), then run each target for SECONDS.
# A crash, a sanitizer report or a failed round-trip check stops the run
# with the input saved in Tests/fuzz/build/crashes/<target>/.
#
# usage: Tests/fuzz/run.sh [SECONDS per target, default 10] [TARGET...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$here/build
seconds=${1:-10}
shift || true
cd "$root"

MASQ_FUZZ=1 swift build --scratch-path .build-fuzz --product masq-fuzz 2>&1 | grep -E "error|warning: unre|Compiling MasqFuzz|Build complete" || true
fuzz=$(MASQ_FUZZ=1 swift build --scratch-path .build-fuzz --show-bin-path)/masq-fuzz
[ -x "$fuzz" ] || { echo "fuzz: masq-fuzz did not build" >&2; exit 1; }

# Seeds come from the encoders (a replay build of the same targets writes them).
swift build --product masq-fuzz >/dev/null
replay=$(swift build --show-bin-path)/masq-fuzz
rm -rf "$out/seeds"; mkdir -p "$out/seeds" "$out/corpus" "$out/crashes"
"$replay" seeds "$out/seeds"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("$replay" list)
status=0
for t in "${targets[@]}"; do
    mkdir -p "$out/corpus/$t" "$out/crashes/$t"
    # Inputs that once failed are replayed first (Tests/fuzz/regressions/<target>/, committed).
    if [ -d "$here/regressions/$t" ]; then "$replay" run "$t" "$here/regressions/$t"; fi
    if ! MASQ_FUZZ_TARGET=$t "$fuzz" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
            -artifact_prefix="$out/crashes/$t/" -print_final_stats=1 "$out/corpus/$t" "$out/seeds/$t" >"$out/$t.log" 2>&1; then
        echo "fuzz $t: FAILED — see $out/$t.log and $out/crashes/$t/"
        tail -30 "$out/$t.log"
        status=1
        continue
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log")
    cov=$(grep -o 'cov: [0-9]*' "$out/$t.log" | tail -1)
    echo "fuzz $t: ${execs:-?} inputs in ${seconds}s, ${cov:-cov: ?}, no finding"
done
exit $status
