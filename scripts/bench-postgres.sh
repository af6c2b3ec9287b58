#!/usr/bin/env bash
# End-to-end throughput of `riskflow run` into PostgreSQL (both dialects), next to the original
# design's own way on the same server and file: COPY the CSV into a staging table, then
# `INSERT INTO target SELECT …, AVG(risk_score) OVER (ORDER BY … ROWS BETWEEN 49 PRECEDING AND
# CURRENT ROW)`, with AVG over float8 and over numeric; and the server's own ceiling for these
# rows: the rows riskflow stored, in COPY's binary format, loaded by the server from a file of
# its own (no client, no network, no staging) into an empty table with the same key.
#
#   scripts/bench-postgres.sh              # 5,000,000 rows
#   ROWS=1000000 scripts/bench-postgres.sh
#
# Starts a throwaway PostgreSQL 15 (scripts/postgres.sh, default settings) and removes it after.
# The file has no malformed rows (--quirks off), so that the original's COPY can load it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-5000000}
WORKERS=${WORKERS:-2}
dir=$(pwd)/target/bench
mkdir -p "$dir"
cargo build --release --locked --quiet
bin=target/release/riskflow
file="$dir/clean_${ROWS}.csv"
[ -f "$file" ] || "$bin" gen --rows "$ROWS" --years 2007-2018 --out "$file" >/dev/null

pg="$dir/postgres"
./scripts/postgres.sh stop "$pg"
trap './scripts/postgres.sh stop "$pg"' EXIT
server=$(./scripts/postgres.sh start "$pg")
psql="$(cat "$pg/bindir")/psql"
database() { # a fresh database; prints its URL
    PGOPTIONS="-c client_min_messages=warning" "$psql" "$server" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
    echo "${server%/*}/$1"
}
seconds() { python3 -c 'import time; print(time.perf_counter())'; }
report() { # label, start, end[, rows (default: the input's records)]
    python3 -c "import sys; label, t = sys.argv[1], float(sys.argv[3]) - float(sys.argv[2]); rows = int(sys.argv[4]); print(f'{label:<52} {t:7.2f} s {rows / t:>12,.0f} rows/s')" "$1" "$2" "$3" "${4:-$ROWS}"
}

echo "$ROWS generated rows (2007-2018) into PostgreSQL 15 (default settings), -w $WORKERS"
for dialect in postgres redshift; do
    url=$(database "bench_$dialect")
    [ "$dialect" = redshift ] && url="redshift://${url#postgres://}"
    start=$(seconds)
    "$bin" run dataflows/features.toml --input "$file" --store "$url" -w "$WORKERS" -q >/dev/null
    report "riskflow run, $dialect dialect" "$start" "$(seconds)"
done

for avg_type in float8 numeric; do
    url=$(database "bench_original_$avg_type")
    start=$(seconds)
    "$psql" "$url" -q -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE staging (pos BIGSERIAL, amount_requested TEXT, application_date TEXT, loan_title TEXT,
    risk_score TEXT, debt_to_income_ratio TEXT, zip_code TEXT, state TEXT, employment_length TEXT,
    policy_code TEXT);
\copy staging (amount_requested, application_date, loan_title, risk_score, debt_to_income_ratio, zip_code, state, employment_length, policy_code) FROM '$file' WITH (FORMAT csv, HEADER true)
CREATE TABLE target AS
SELECT amount_requested::float8, application_date::date, loan_title, risk_score::float8,
       debt_to_income_ratio, zip_code, state, employment_length, policy_code,
       AVG(risk_score::$avg_type) OVER (ORDER BY pos ROWS BETWEEN 49 PRECEDING AND CURRENT ROW) AS ma50,
       pos AS _row
FROM staging WHERE application_date >= '2008';
SQL
    report "original: COPY + INSERT … AVG($avg_type) OVER" "$start" "$(seconds)"
done

url="${server%/*}/bench_postgres"
rows_file="$(cat "$pg/cluster")/loan_features.bin"
stored=$("$psql" "$url" -qAt -v ON_ERROR_STOP=1 \
    -c "COPY loan_features TO '$rows_file' (FORMAT binary)" \
    -c "CREATE TABLE ceiling (LIKE loan_features INCLUDING INDEXES)" \
    -c "CHECKPOINT" -c "SELECT count(*) FROM loan_features")
start=$(seconds)
"$psql" "$url" -q -v ON_ERROR_STOP=1 -c "COPY ceiling FROM '$rows_file' (FORMAT binary)"
report "PostgreSQL alone: binary COPY of the $stored stored rows" "$start" "$(seconds)" "$stored"
