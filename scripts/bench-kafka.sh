#!/usr/bin/env bash
# Kafka throughput and delay, end to end, against a local broker this script starts (tansu,
# in-memory: the topics below hold about 1 GB in its RAM).
#
#   scripts/bench-kafka.sh                 # a 2,000,000-row replay
#   ROWS=500000 scripts/bench-kafka.sh     # smaller
#
# Prints: produce rows/s onto a 4-partition topic; stream rows/s from that pre-filled topic into
# SQLite with -w 1 and -w 2; and, with the producer held at RATE rows/s (default 20,000) while
# the stream runs, the delay from produce to durable store (median, p99) as the stream measured it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-2000000}
RATE=${RATE:-20000}
RATE_ROWS=${RATE_ROWS:-200000}
PARTITIONS=${PARTITIONS:-4}
dir=target/bench
mkdir -p "$dir"
cargo build --release --locked --quiet
bin=target/release/riskflow

services=$(mktemp -d)
trap './scripts/kafka.sh stop "$services"; rm -rf "$services"' EXIT
brokers=$(./scripts/kafka.sh start "$services")
echo "broker (tansu): $brokers"

input="$dir/replay_${ROWS}.csv"
[ -f "$input" ] || "$bin" gen --rows "$ROWS" --years 2008-2018 --quirks --out "$input" >/dev/null

echo "== produce $ROWS rows onto $PARTITIONS partitions"
"$bin" produce --input "$input" --brokers "$brokers" --topic bench --partitions "$PARTITIONS" </dev/null

for w in 1 2; do
    db="$dir/stream_w$w.db"
    rm -f "$db" "$db"-wal "$db"-shm
    echo "== stream the pre-filled topic into SQLite, -w $w"
    "$bin" stream --brokers "$brokers" --topic bench --group "bench-w$w" --store "sqlite:$db" -w "$w" --until-complete -q </dev/null |
        grep -v '^delay'
done

echo "== delay at $RATE rows/s ($RATE_ROWS rows; the stream is running before the producer starts)"
head -n $((RATE_ROWS + 1)) "$input" >"$dir/replay_rate.csv"
db="$dir/stream_rate.db"
rm -f "$db" "$db"-wal "$db"-shm
"$bin" stream --brokers "$brokers" --topic paced --store "sqlite:$db" -w 2 --until-complete -q </dev/null >"$dir/stream_rate.out" &
stream=$!
sleep 1
"$bin" produce --input "$dir/replay_rate.csv" --brokers "$brokers" --topic paced --partitions "$PARTITIONS" --rate "$RATE" </dev/null
wait "$stream"
cat "$dir/stream_rate.out"
