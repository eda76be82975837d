#!/usr/bin/env bash
# Build the relay-frame fuzzer (libFuzzer + AddressSanitizer) and run it for
# a bounded time (default 30 s) from a seed corpus of valid frames.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$here/build
seconds=${1:-30}
mkdir -p "$out/corpus"
swiftc -sanitize=fuzzer,address -parse-as-library -O \
    "$root/Sources/MasqRelayProtocol/RelayFrame.swift" "$here/RelayFrameFuzz.swift" -o "$out/relay-frame-fuzz"
printf '\001\001\020AAAAAAAAAAAAAAAA' > "$out/corpus/join"
printf '\001\003\020AAAAAAAAAAAAAAAApayload' > "$out/corpus/send"
printf '\001\006\001A\000\000\000\002' > "$out/corpus/presence"
printf '\001\005\000\003too big' > "$out/corpus/error"
"$out/relay-frame-fuzz" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 "$out/corpus" 2>&1 | tail -12
