#!/usr/bin/env bash
# The whole test suite, on a fresh machine: checks the toolchain, then runs every unit and
# integration test (the integration tests drive the real binary over generated files).
# Later services (PostgreSQL, Kafka, moto) are started here by their own scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

cargo build --all-targets --locked
cargo test --locked --all-targets 2>&1 | tee target/test-output.txt
# criterion benches compiled above; run them only as smoke tests (one iteration each)
cargo bench --locked --bench kernels --bench parser -- --test
