#!/usr/bin/env bash
# Scale-out and backfill throughput (issue 6's figures):
#
#   scripts/bench-cluster.sh                          # 5,000,000 generated rows
#   ROWS=1000000 scripts/bench-cluster.sh             # smaller
#   PAIRS=8 BENCH_DIR=/dev/shm/rf scripts/bench-cluster.sh
#   RUN_ARGS="--epoch-rows 65536" scripts/bench-cluster.sh
#
# `run dataflows/features.toml` into CSV (so that the store is not the bound: parse + features)
# as 1 process × 1 worker, 1 × 2 and 2 × 1 (two processes on loopback), then a backfill of
# version 2 over 2008-2011 into a SQLite store holding the run's versions. Prints wall-clock
# records/s for each; a cluster's time is that of its slowest process.
#
# With PAIRS=N it then times N alternating pairs of a 1 × 2 run and a 2 × 1 run and prints the
# median and range of the pairs' ratios (2 × 1's time over 1 × 2's): on a shared VM whose speed
# drifts between minutes, one run of each says little about that ratio. BENCH_DIR puts the
# input and outputs elsewhere (a tmpfs keeps disk writeback out of the timings). RUN_ARGS are
# added to every `run` (not to the backfill).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-5000000}
PAIRS=${PAIRS:-0}
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"
cargo build --release --locked --quiet
bin=$PWD/target/release/riskflow
input="$dir/rejected_${ROWS}.csv"
[ -f "$input" ] || "$bin" gen --rows "$ROWS" --years 2007-2018 --quirks --out "$input" >/dev/null

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

seconds() { # a shell command; prints its wall-clock seconds
    local start end
    rm -f "$dir"/c[0-9][0-9].csv "$dir"/c[0-9][0-9].csv.dead_letter.csv
    sync # the previous run's output still being written back to disk would slow this one
    start=$(date +%s.%N)
    bash -c "$*" >/dev/null
    end=$(date +%s.%N)
    python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$end"
}

timed() { # label, then a shell command
    local label=$1 took
    shift
    took=$(seconds "$@")
    python3 -c "import sys; t = float(sys.argv[1]); print(f'{sys.argv[2]:<40} {t:7.2f} s {int(sys.argv[3]) / t:>12,.0f} records/s')" \
        "$took" "$label" "$ROWS"
}

echo "riskflow run dataflows/features.toml -> CSV, $ROWS generated records"
run="$bin run dataflows/features.toml --input $input -q ${RUN_ARGS:-}"
timed "1 process x 1 worker" "$run --store csv:$dir/c11.csv -w 1"
one_by_two="$run --store csv:$dir/c12.csv -w 2"
timed "1 process x 2 workers" "$one_by_two"
hosts="$dir/hosts"
printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$(free_port)" "$(free_port)" >"$hosts"
two_by_one="$run --store csv:$dir/c21.csv -w 1 -n 2 -p 0 --hostfile $hosts & $run --store csv:$dir/c21.csv -w 1 -n 2 -p 1 --hostfile $hosts; wait"
timed "2 processes x 1 worker (loopback)" "$two_by_one"

if [ "$PAIRS" -gt 0 ]; then
    echo "alternating pairs: a 1 x 2 run, then a 2 x 1 run"
    ratios=()
    for pair in $(seq "$PAIRS"); do
        one=$(seconds "$one_by_two")
        two=$(seconds "$two_by_one")
        ratios+=("$(python3 -c "import sys; print(float(sys.argv[2]) / float(sys.argv[1]))" "$one" "$two")")
        printf 'pair %2d: 1 x 2 %5.2f s, 2 x 1 %5.2f s, 2 x 1 / 1 x 2 %.2fx\n' "$pair" "$one" "$two" "${ratios[-1]}"
    done
    python3 -c "import statistics, sys; r = sorted(map(float, sys.argv[1:])); print(f'2 x 1 / 1 x 2 (time): median {statistics.median(r):.2f}x, pairs {r[0]:.2f}x-{r[-1]:.2f}x')" "${ratios[@]}"
fi

echo "riskflow backfill --version 2 --years 2008-2011 -> SQLite holding the run's versions"
db="$dir/backfill.db"
rm -f "$db" "$db"-wal "$db"-shm
"$bin" run dataflows/features.toml --input "$input" --store "sqlite:$db" -w 2 -q >/dev/null
timed "backfill v2 over 2008-2011, -w 2" "$bin backfill --version 2 --years 2008-2011 --input $input --store sqlite:$db -w 2 -q"
