#!/usr/bin/env bash
# The whole test suite, as README.md and CI run it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test

# The integration tests start the real binaries: build them first, once,
# with the whole workspace's features unified.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast

# The parsers that read untrusted input, fuzzed for a bounded time each.
scripts/fuzz.sh 20

# Manifests, alert rules and dashboards, validated offline.
ops/validate.sh
