#!/usr/bin/env bash
# The project's test command (the README's second set-up command).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo fmt --all --manifest-path plugins/Cargo.toml -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
# The plugins' own unit tests run on the host.
cargo test --manifest-path plugins/Cargo.toml --target-dir plugins/target
