#!/usr/bin/env bash
# Builds the Debian package of the router: target/debian/skyvine_VERSION-1_ARCH.deb.
#
#   deploy/build-deb.sh
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). Builds the release binary, writes its
# man pages (`skyvine man`), then packages binary, systemd unit, sample config, man pages and
# docs as listed in router/Cargo.toml [package.metadata.deb]. Prints the package's path.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
command -v cargo-deb >/dev/null ||
    { echo "build-deb.sh: cargo-deb missing: cargo install cargo-deb --locked" >&2; exit 1; }

cargo build --release -p skyvine-router
man=$target/release/man
rm -rf "$man"
"$target/release/skyvine" man --dir "$man" >/dev/null
gzip -9n "$man"/*.1
# --strip: the release profile keeps line tables for backtraces; the package does not need them.
cargo deb -p skyvine-router --no-build --strip
