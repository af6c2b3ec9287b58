#!/usr/bin/env bash
# The whole test suite, on a fresh machine: unit tests, the integration tests (which drive the
# real binary over generated files and a real Kafka-compatible broker, and check the store
# against SQL and sequential oracles), and one quick pass over each criterion benchmark.
#
# Starts the services the tests need (scripts/kafka.sh: tansu; scripts/postgres.sh: a throwaway
# PostgreSQL 15 cluster; scripts/moto.sh: moto for S3; all on free loopback ports) and stops
# them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

services=$(mktemp -d)
cleanup() {
    ./scripts/kafka.sh stop "$services/kafka" || true
    ./scripts/postgres.sh stop "$services/postgres" || true
    ./scripts/moto.sh stop "$services/moto" || true
    rm -rf "$services"
}
trap cleanup EXIT

RISKFLOW_TEST_BROKERS=$(./scripts/kafka.sh start "$services/kafka")
export RISKFLOW_TEST_BROKERS
echo "test broker (tansu): $RISKFLOW_TEST_BROKERS"
RISKFLOW_TEST_POSTGRES=$(./scripts/postgres.sh start "$services/postgres")
export RISKFLOW_TEST_POSTGRES
echo "test database (PostgreSQL): $RISKFLOW_TEST_POSTGRES"
RISKFLOW_TEST_MOTO=$(./scripts/moto.sh start "$services/moto")
export RISKFLOW_TEST_MOTO
echo "test AWS (moto): $RISKFLOW_TEST_MOTO"

cargo test --locked --all-targets
