#!/usr/bin/env bash
# End-to-end throughput and peak memory of `riskflow run` on a generated file.
#
#   scripts/bench.sh                 # 5,000,000 rows, plain and gzip, SQLite and CSV, -w 1 and -w 2
#   ROWS=1000000 scripts/bench.sh    # smaller
#
# Prints one line per configuration: records/s over the whole run (read, parse, features, store)
# and the peak resident memory of the process; then SQLite alone loading as many rows of the
# store's shape (scripts/sqlite-ceiling.c), the yardstick for the SQLite lines.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-5000000}
WORKERS=${WORKERS:-"1 2"}
dir=target/bench
mkdir -p "$dir"
cargo build --release --locked --quiet
bin=target/release/riskflow

for ext in csv csv.gz; do
    file="$dir/rejected_${ROWS}.$ext"
    [ -f "$file" ] || "$bin" gen --rows "$ROWS" --years 2007-2018 --quirks --out "$file" >/dev/null
done

measure() { # label, then the command
    local label=$1
    shift
    python3 - "$label" "$ROWS" "$@" <<'PY'
import resource, subprocess, sys, time
label, rows, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
start = time.perf_counter()
subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
elapsed = time.perf_counter() - start
rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{label:<34} {elapsed:7.2f} s {rows / elapsed:>12,.0f} records/s  peak RSS {rss_mb:7.1f} MB")
PY
}

echo "riskflow run dataflows/features.toml, $ROWS generated records (2007-2018, with quirks)"
for ext in csv csv.gz; do
    for store in csv sqlite; do
        for w in $WORKERS; do
            out="$dir/out_${w}.$store"
            rm -f "$out" "$out"-wal "$out"-shm "$out".dead_letter.csv
            # The previous run's output still being written back to disk would slow this one.
            sync
            if [ "$store" = sqlite ]; then url="sqlite:$out"; else url="csv:$out"; fi
            measure "input .$ext -> $store, -w $w" "$bin" run dataflows/features.toml --input "$dir/rejected_${ROWS}.$ext" --store "$url" -w "$w" -q
        done
    done
done

# SQLite alone, none of riskflow's code (scripts/sqlite-ceiling.c): the textbook bulk load of as
# many rows of the store's shape into the same schema, built against the SQLite riskflow bundles.
sqlite_dir=$(cargo metadata --format-version 1 --locked | python3 -c 'import json, os, sys
print(next(os.path.dirname(p["manifest_path"]) for p in json.load(sys.stdin)["packages"] if p["name"] == "libsqlite3-sys"))')/sqlite3
ceiling="$dir/sqlite-ceiling"
[ "$ceiling" -nt scripts/sqlite-ceiling.c ] ||
    cc -O2 -I "$sqlite_dir" scripts/sqlite-ceiling.c "$sqlite_dir/sqlite3.c" -o "$ceiling" -lpthread -ldl -lm
rm -f "$dir/ceiling.db" "$dir/ceiling.db-wal" "$dir/ceiling.db-shm"
sync
echo "SQLite alone (scripts/sqlite-ceiling.c): $("$ceiling" "$dir/ceiling.db" "$ROWS")"
rm -f "$dir/ceiling.db" "$dir/ceiling.db-wal" "$dir/ceiling.db-shm"

# The yardstick of issue 2: the same job in Polars (scripts/bench-polars.py) against riskflow's
# CSV export, alternately, on one well-formed file (Polars stops at a malformed record).
# POLARS=0 skips it; Polars is installed into target/bench/venv when Python lacks it.
[ "${POLARS:-1}" = 0 ] && exit 0
python=python3
if ! python3 -c 'import polars' 2>/dev/null; then
    [ -x "$dir/venv/bin/python" ] || python3 -m venv "$dir/venv"
    "$dir/venv/bin/python" -c 'import polars' 2>/dev/null || "$dir/venv/bin/pip" install -q polars
    python="$dir/venv/bin/python"
fi
clean="$dir/clean_${ROWS}.csv"
[ -f "$clean" ] || "$bin" gen --rows "$ROWS" --years 2007-2018 --out "$clean" >/dev/null
echo "the same well-formed file, alternately (riskflow -w 2 into csv:, Polars $("$python" -c 'import polars; print(polars.__version__)'))"
for round in 1 2 3; do
    sync
    measure "riskflow, round $round" "$bin" run dataflows/features.toml --input "$clean" --store "csv:$dir/out_clean.csv" -w 2 -q
    sync
    "$python" scripts/bench-polars.py "$clean" "$dir/out_polars.csv" "$ROWS"
done
