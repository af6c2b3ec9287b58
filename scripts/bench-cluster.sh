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
# drifts between minutes, one run of each says little about that ratio. Each run's CPU time (user
# and system, of all its processes) is shown beside its wall-clock time: both shapes keep the two
# cores busy, so what 2 × 1 spends on crossing between its processes shows there, with less
# noise. BENCH_DIR puts the input and outputs elsewhere (a tmpfs keeps disk writeback out of the
# timings). RUN_ARGS are added to every `run` (not to the backfill).
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

seconds() { # a shell command; prints its wall-clock seconds and the CPU seconds of its processes
    rm -f "$dir"/c[0-9][0-9].csv "$dir"/c[0-9][0-9].csv.dead_letter.csv
    sync # the previous run's output still being written back to disk would slow this one
    python3 -c '
import resource, subprocess, sys, time
def cpu():  # of the children waited for so far (a launcher such as a pyenv shim has some)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime
before, start = cpu(), time.monotonic()
subprocess.run(["bash", "-c", sys.argv[1]], stdout=subprocess.DEVNULL, check=True)
print(time.monotonic() - start, cpu() - before)' "$*"
}

timed() { # label, then a shell command
    local label=$1 took
    shift
    took=$(seconds "$@")
    python3 -c "import sys; t, c = map(float, sys.argv[1].split()); print(f'{sys.argv[2]:<40} {t:7.2f} s {int(sys.argv[3]) / t:>12,.0f} records/s  (CPU {c:.2f} s)')" \
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
    pairs=()
    for pair in $(seq "$PAIRS"); do
        one=$(seconds "$one_by_two")
        two=$(seconds "$two_by_one")
        pairs+=("$one,$two")
        python3 -c "import sys; (t1, c1), (t2, c2) = (map(float, r.split()) for r in sys.argv[2:]); print(f'pair {int(sys.argv[1]):2}: 1 x 2 {t1:5.2f} s (CPU {c1:5.2f} s), 2 x 1 {t2:5.2f} s (CPU {c2:5.2f} s), 2 x 1 / 1 x 2 {t2 / t1:.2f}x (CPU {c2 / c1:.2f}x)')" \
            "$pair" "$one" "$two"
    done
    python3 -c '
import statistics, sys
pairs = [[list(map(float, run.split())) for run in pair.split(",")] for pair in sys.argv[1:]]
for what, i in (("time", 0), ("CPU", 1)):
    r = sorted(two[i] / one[i] for one, two in pairs)
    print(f"2 x 1 / 1 x 2 ({what}): median {statistics.median(r):.2f}x, pairs {r[0]:.2f}x-{r[-1]:.2f}x")' "${pairs[@]}"
fi

echo "riskflow backfill --version 2 --years 2008-2011 -> SQLite holding the run's versions"
db="$dir/backfill.db"
rm -f "$db" "$db"-wal "$db"-shm
"$bin" run dataflows/features.toml --input "$input" --store "sqlite:$db" -w 2 -q >/dev/null
timed "backfill v2 over 2008-2011, -w 2" "$bin backfill --version 2 --years 2008-2011 --input $input --store sqlite:$db -w 2 -q"
