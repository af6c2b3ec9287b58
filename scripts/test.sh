#!/usr/bin/env bash
# The whole test suite, on a fresh machine: unit tests, the integration tests (which drive the
# real binary over generated files and check the store against SQL and sequential oracles), and
# one quick pass over each criterion benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

cargo test --locked --all-targets
