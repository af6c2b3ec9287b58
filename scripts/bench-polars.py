#!/usr/bin/env python3
"""The features job done by Polars, for a same-machine, same-file comparison with riskflow's
`csv:` export (issue 2's yardstick).

    python3 scripts/bench-polars.py INPUT.csv OUTPUT.csv [RECORDS]

Reads the rejected-loans CSV lazily, keeps the rows from 2008 on, and adds what the default
plan's last version stores: ma50 = ema(50) (`ewm_mean(span=50, adjust=False, ignore_nulls=True)`)
and ma100 = sma(100) (`rolling_mean(100, min_samples=1)`, the mean of the non-null scores), plus
the row number; then streams the result to CSV. It does less than riskflow (one version, no dead
letters: the input must be well formed, no `feature_stats`). Prints records/s (the query only:
not Python's start nor the import) and peak RSS; RECORDS saves counting the input's lines.
"""
import resource
import sys
import time

import polars as pl

source, target = sys.argv[1], sys.argv[2]
start = time.perf_counter()
score = pl.col("Risk_Score")
(
    pl.scan_csv(source, infer_schema_length=10_000)
    .with_row_index("_row", offset=1)
    .filter(pl.col("Application Date").str.slice(0, 4).cast(pl.Int32) >= 2008)
    .with_columns(
        score.ewm_mean(span=50, adjust=False, ignore_nulls=True).alias("ma50"),
        score.rolling_mean(100, min_samples=1).alias("ma100"),
    )
    .sink_csv(target)
)
elapsed = time.perf_counter() - start
records = int(sys.argv[3]) if len(sys.argv) > 3 else sum(1 for _ in open(source, "rb")) - 1
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"polars: {records:,} records in {elapsed:.2f} s, {records / elapsed:,.0f} records/s, peak RSS {rss_mb:.0f} MB")
