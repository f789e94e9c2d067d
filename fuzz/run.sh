#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, starting from the committed corpus.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]     (default 30)
#
# cargo-fuzz needs nightly features; the stable toolchain provides them with RUSTC_BOOTSTRAP=1.
# New inputs go to a scratch directory, so the committed corpus only changes by hand. A crash
# leaves its input in fuzz/artifacts/TARGET/ and fails the run.
set -euo pipefail
seconds=${1:-30}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "fuzz/run.sh: seconds must be a whole number" >&2; exit 2; }
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target"
    echo "== fuzz $target for ${seconds}s (corpus: fuzz/corpus/$target)"
    log="$scratch/$target.log"
    if ! cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz/run.sh: $target failed (a crash leaves its input in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    grep -E "^Done [0-9]+ runs" "$log" || { tail -n 20 "$log" >&2; echo "fuzz/run.sh: $target did not run" >&2; exit 1; }
done
