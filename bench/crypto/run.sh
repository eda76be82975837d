#!/usr/bin/env bash
# Build libmasq in release mode, then run the crypto benchmark (sessions
# through masq.h beside raw OpenSSL figures from the same run).
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product masq >&2
lib=$(swift build -c release --show-bin-path)
mkdir -p bench/crypto/build
cc -std=c11 -O2 -Wall -Wextra -Iinclude bench/crypto/crypto_bench.c -L"$lib" -lmasq -Wl,-rpath,"$lib" -o bench/crypto/build/crypto_bench
exec bench/crypto/build/crypto_bench "$@"
