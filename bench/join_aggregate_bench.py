"""The join + aggregate benchmark (#35): transactions joined to customers and aggregated per
customer into Parquet, Weir against DuckDB, Polars, Daft and PySpark on the same data and
semantics, interleaved repetitions, every group cross-checked with DuckDB's.

    .venv/bin/python bench/join_aggregate_bench.py [--rows 10000000] [--reps 3] [--systems KEYS]
                                                   [--weir target/release/weir]
    .venv/bin/python bench/join_aggregate_bench.py --setup    (installs the peers, see below)

(KEYS are comma-separated out of weir2p, weir2, duckdb, duckdb_arg_max, polars, daft, spark;
run it with ./.venv's Python from tests/run.sh, which has pyarrow and numpy for the data and
the checks.)

Data, generated here when missing (seeded NumPy, written with pyarrow under
bench/data/join-aggregate-ROWS/; zstd, row groups of 128 Ki rows):
- `transactions/`: ROWS rows in 4 files. `customer_id` int64, skewed: 30% of the rows
  belong to one customer, the rest are uniform over ROWS / 50 ids, of which 1% are absent
  from `customers` (their rows drop out of the inner join); the ids are a bijective scramble
  of 0..ROWS/50 (large, sparse, not in order). `amount` float64: log-normal prices rounded
  to cents, 2% nulls. `ts` timestamp[us] (no time zone), distinct on every row, spread over
  about 12.7 days in no relation to the files' order.
- `customers/`: ROWS / 50 rows in one file, in a seeded random order: `customer_id` int64,
  unique (the transactions' ids but the absent 1%, and as many ids no transaction has);
  `segment` string, one of 5 values of unequal frequency.

Workload, the same semantics for every system (DuckDB's):

    SELECT customer_id, segment, count(*) AS n, sum(amount) AS total, avg(amount) AS avg_amount,
           max(amount) AS max_amount, stddev_pop(amount) AS sd, last(amount ORDER BY ts) AS last_amount
    FROM transactions JOIN customers USING (customer_id) GROUP BY customer_id, segment

written as zstd Parquet (level 1 where the writer takes a level). Nulls are ignored by every
aggregate but `count(*)` and `last`: `last_amount` is the amount (null or not) of the group's
row with the latest `ts`; a group whose amounts are all null has a null `total`, `avg_amount`,
`max_amount` and `sd`; `sd` of one value is 0.

Systems (keys in brackets), each a whole process timed by `/usr/bin/time -f '%e %M'`:
- Weir, 2 processes x 1 worker and 1 process x 2 workers [weir2p, weir2]: `weir run JOB
  --json` with `[inputs.customers]`, a `join` step (`with = "customers"`, `on =
  ["customer_id"]`, `columns = ["segment"]`: a broadcast hash join) and an `aggregate` step
  (STEPS; the job is written next to the data).
- DuckDB [duckdb]: the query above in `COPY (...) TO 'OUT/data.parquet' (FORMAT parquet,
  COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 131072)`, `threads` = the machine's
  cores. This is the reference of the checks and of the ratios.
- DuckDB with `arg_max_null(amount, ts)` [duckdb_arg_max]: the same query with DuckDB's
  other spelling of `last_amount` (`arg_max_null` keeps a null `amount`, as `last` does;
  `arg_max` would skip it): a plain aggregate state instead of an ordered aggregate, which
  collects and sorts each group's rows. Same results (checked), so the faster of the two is
  DuckDB's time for this job.
- Polars [polars]: lazy `scan_parquet` of both → `join(how="inner", on="customer_id")` →
  `group_by("customer_id", "segment").agg(...)` → `sink_parquet` (zstd level 1, 131,072-row
  groups), on all cores (Polars' default). `n` is `pl.len()` cast to Int64 (Polars' count
  is UInt32); `total` is `sum` only where the group has a non-null amount (Polars' `sum` of
  nothing is 0, SQL's is null); `sd` is `std(ddof=0)`; `last_amount` is
  `amount.sort_by("ts").last()`.
- Daft [daft]: `read_parquet` of both → `join(on="customer_id")` → `groupby(...).agg(...)`
  (`count("all")` cast to int64, `sum`, `mean`, `max`, `stddev(ddof=0)`) → `write_parquet`
  (zstd). Daft has no ordered aggregate, `max_by` or `last` in an aggregation (its
  `last_value` is a window function only): `last_amount` is found by a second join, of each
  group's `max(ts)` to the transactions on (`customer_id`, `ts`), which picks exactly the
  latest row because `ts` is distinct (with ties it would give one row per tie). So Daft
  reads the transactions twice; the result is the same (checked).
- PySpark [spark]: local[*], `spark.read.parquet` of both → `join(on="customer_id")` →
  `groupBy(...).agg(count(lit(1)), sum, avg, max, stddev_pop, max_by(amount, ts))` →
  `write.parquet` (zstd level 1). `max_by` keeps a null `amount` at the latest `ts`, as
  `last(... ORDER BY ts)` does; Spark chooses its own join (a broadcast under
  `spark.sql.autoBroadcastJoinThreshold`, 10 MiB, else a sort-merge join, with adaptive
  execution's skew handling). Spark's JVM is a process /usr/bin/time does not see: its peak
  RSS is not reported.
The hand-written Rust floor of #35 is not part of this benchmark yet.

The peers run this very file (`join_aggregate_bench.py peer KEY DATA OUT`, which imports
only its engine) with the first Python of bench/.venv-peers and ./.venv that imports the
engine; a peer neither has is skipped with a note. Their wall time includes starting Python
and importing the engine (and Spark's JVM); the time each measured inside itself
(`inner_s`: from before the first read to after the write) is recorded beside it.

Peers' setup (bench/peers.sh's pinned set, plus Polars at ./.venv's version):

    .venv/bin/python bench/join_aggregate_bench.py --setup

creates bench/.venv-peers if missing and runs `pip install` of PEER_PACKAGES into it (the
same set as bench/encoders_bench.py's, so the two share the venv). PySpark needs Java 17+
on the PATH.

Every repetition runs every system once, in the order above rotated by one system per
repetition (as bench/peers.py does). Each output is read back with pyarrow and compared with
DuckDB's (else the first system's that ran), on every group, then deleted: the same column
names in the same order, the same set of (`customer_id`, `segment`) groups, and in every
group `n` and `last_amount` exactly, `total`, `avg_amount`, `max_amount` and `sd` within
1e-9 relative (null = null). A disagreement is recorded and printed with the group and both
values, not fatal; a failed run (non-zero exit) is recorded with its last lines of stderr.

Report: wall time per system as the best of --reps (and the median), each system's best
wall divided by DuckDB's, peak RSS, rows/s (transaction rows over the best wall) and the
groups written, in bench/results/join-aggregate-ROWS.json and .md, rewritten after every
repetition. The machine's load average is recorded before every run.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# Every system, in the order the first repetition runs them (later ones rotate it).
SYSTEM_KEYS = ["weir2p", "weir2", "duckdb", "duckdb_arg_max", "polars", "daft", "spark"]
# Whose output the others are checked against (and whose time the ratios divide by), in
# order of preference.
REFERENCE_KEYS = ["duckdb", "duckdb_arg_max"]
# The module each peer imports.
PEER_MODULES = {"duckdb": "duckdb", "duckdb_arg_max": "duckdb", "polars": "polars", "daft": "daft", "spark": "pyspark"}
# Spark's JVM is a process the driver does not wait for: /usr/bin/time cannot see its memory.
RSS_UNMEASURED = {"spark"}
RELATIVE_TOLERANCE = 1e-9
ROW_GROUP_ROWS = 128 * 1024
ZSTD_LEVEL = 1
FILES = 4
SEED = 20261208
# Interpreters a peer may run under, in order of preference (--setup makes the first).
PEERS_VENV = BENCH / ".venv-peers"
PEER_PYTHONS = [PEERS_VENV / "bin" / "python", Path(sys.executable)]
# bench/peers.sh's set (the same venv serves both), plus Polars at ./.venv's version (as
# bench/encoders_bench.py pins them).
PEER_PACKAGES = [
    "daft==0.7.26", "pyspark==4.3.0", "ray[data]==2.52.0", "matplotlib==3.10.7", "pandas==2.3.3", "numpy==2.3.4",
    "pyarrow==21.0.0", "onnxruntime==1.31.1", "duckdb==2.0.1",
    "scikit-learn==1.7.2", "polars==2.1.0", "datasketches==5.2.0",
]

# The data.
CUSTOMERS_PER_ROW = 1 / 50
HOT_SHARE = 0.30
ABSENT_SHARE = 0.01
AMOUNT_NULLS = 0.02
SEGMENTS = ["consumer", "small business", "enterprise", "public sector", "non-profit"]
SEGMENT_WEIGHTS = [0.50, 0.25, 0.15, 0.07, 0.03]
# customer_id = scramble(index): multiplication by an odd constant is a bijection modulo 2**62.
ID_MULTIPLIER = 0x9E3779B97F4A7C15
ID_MASK = (1 << 62) - 1
# ts = TS_BASE + scramble(row) microseconds, distinct for fewer than 2**40 rows.
TS_MULTIPLIER = 0x5851F42D4C957F2D
TS_MASK = (1 << 40) - 1
TS_BASE_US = int(datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc).timestamp()) * 1_000_000

# The workload: the output columns after the keys, as SQL (Weir's and DuckDB's text).
KEYS = ["customer_id", "segment"]
AGGS = {
    "n": "count(*)",
    "total": "sum(amount)",
    "avg_amount": "avg(amount)",
    "max_amount": "max(amount)",
    "sd": "stddev_pop(amount)",
    "last_amount": "last(amount order by ts)",
}
OUTPUT_COLUMNS = [*KEYS, *AGGS]
# Compared exactly; the other aggregates within RELATIVE_TOLERANCE.
EXACT = {"customer_id", "segment", "n", "last_amount"}
STEPS = f"""[[step]]
op = "join"
with = "customers"
on = ["customer_id"]
columns = ["segment"]

[[step]]
op = "aggregate"
by = {json.dumps(KEYS)}
aggs = {{ {", ".join(f"{name} = {json.dumps(text)}" for name, text in AGGS.items())} }}
"""


def duckdb_query(transactions: str, customers: str, arg_max: bool = False) -> str:
    aggs = dict(AGGS, last_amount="arg_max_null(amount, ts)") if arg_max else AGGS
    selected = ", ".join([*KEYS, *(f"{text} AS {name}" for name, text in aggs.items())])
    return (
        f"SELECT {selected} FROM read_parquet('{transactions}') AS transactions JOIN read_parquet('{customers}') AS customers USING (customer_id) "
        f"GROUP BY {', '.join(KEYS)}"
    )


# ---------------------------------------------------------------------------------------
# The peers (run as `join_aggregate_bench.py peer KEY DATA OUT`; they import only their engine).


def peer_duckdb(data: Path, out: Path, arg_max: bool = False) -> dict:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(config={"threads": os.cpu_count()})
    quoted = lambda path: str(path).replace("'", "''")  # noqa: E731
    query = duckdb_query(quoted(data / "transactions" / "*.parquet"), quoted(data / "customers" / "*.parquet"), arg_max)
    con.execute(
        f"COPY ({query}) TO '{quoted(out / 'data.parquet')}' "
        f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL}, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
    )
    con.close()
    return {"engine": "duckdb", "version": duckdb.__version__, "threads": os.cpu_count(), "inner_s": time.perf_counter() - started}


def peer_duckdb_arg_max(data: Path, out: Path) -> dict:
    return peer_duckdb(data, out, arg_max=True)


def peer_polars(data: Path, out: Path) -> dict:
    import polars as pl

    started = time.perf_counter()
    transactions = pl.scan_parquet(str(data / "transactions" / "*.parquet"))
    customers = pl.scan_parquet(str(data / "customers" / "*.parquet")).select("customer_id", "segment")
    amount = pl.col("amount")
    (
        transactions.join(customers, on="customer_id", how="inner")
        .group_by(KEYS)
        .agg(
            n=pl.len().cast(pl.Int64),
            # Polars' sum of no value is 0; SQL's is null.
            total=pl.when(amount.count() > 0).then(amount.sum()),
            avg_amount=amount.mean(),
            max_amount=amount.max(),
            sd=amount.std(ddof=0),
            last_amount=amount.sort_by("ts").last(),
        )
        .sink_parquet(str(out / "data.parquet"), compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS)
    )
    return {"engine": "polars", "version": pl.__version__, "threads": pl.thread_pool_size(), "inner_s": time.perf_counter() - started}


def peer_daft(data: Path, out: Path) -> dict:
    import daft
    from daft import col

    started = time.perf_counter()
    transactions = daft.read_parquet(str(data / "transactions" / "*.parquet"))
    customers = daft.read_parquet(str(data / "customers" / "*.parquet")).select("customer_id", "segment")
    groups = (
        transactions.join(customers, on="customer_id", how="inner")
        .groupby(*KEYS)
        .agg(
            col("amount").count("all").cast(daft.DataType.int64()).alias("n"),
            col("amount").sum().alias("total"),
            col("amount").mean().alias("avg_amount"),
            col("amount").max().alias("max_amount"),
            col("amount").stddev(ddof=0).alias("sd"),
            col("ts").max().alias("last_ts"),
        )
    )
    # No `last` in an aggregation: the amount of the row with the group's latest ts (ts is
    # distinct, so exactly one row).
    latest = transactions.select("customer_id", col("ts").alias("last_ts"), col("amount").alias("last_amount"))
    (
        groups.join(latest, on=["customer_id", "last_ts"], how="inner")
        .select(*OUTPUT_COLUMNS)
        .write_parquet(str(out), compression="zstd")
    )
    return {"engine": "daft", "version": daft.__version__, "inner_s": time.perf_counter() - started}


def peer_spark(data: Path, out: Path) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import pyspark
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    cores = os.cpu_count()
    spark = (
        SparkSession.builder.master("local[*]")
        .config("spark.driver.memory", "8g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(2 * cores))
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.hadoop.parquet.compression.codec.zstd.level", str(ZSTD_LEVEL))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter()
    transactions = spark.read.parquet(str(data / "transactions"))
    customers = spark.read.parquet(str(data / "customers")).select("customer_id", "segment")
    (
        transactions.join(customers, on="customer_id", how="inner")
        .groupBy(*KEYS)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("amount").alias("total"),
            F.avg("amount").alias("avg_amount"),
            F.max("amount").alias("max_amount"),
            F.stddev_pop("amount").alias("sd"),
            F.max_by("amount", "ts").alias("last_amount"),
        )
        .write.mode("overwrite")
        .parquet(str(out))
    )
    inner = time.perf_counter() - started
    spark.stop()
    return {"engine": "pyspark", "version": pyspark.__version__, "threads": cores, "inner_s": inner}


PEERS = {"duckdb": peer_duckdb, "duckdb_arg_max": peer_duckdb_arg_max, "polars": peer_polars, "daft": peer_daft, "spark": peer_spark}


def peer_python(key: str):
    """The first interpreter of PEER_PYTHONS that imports the peer's engine, with the engine's
    version, or None."""
    module = PEER_MODULES[key]
    for python in PEER_PYTHONS:
        if not python.exists():
            continue
        proc = subprocess.run([str(python), "-c", f"import {module}; print({module}.__version__)"], capture_output=True, text=True)
        if proc.returncode == 0:
            return str(python), proc.stdout.strip()
    return None


def setup():
    """bench/.venv-peers with PEER_PACKAGES (as bench/peers.sh makes it, plus Polars)."""
    if not (PEERS_VENV / "bin" / "python").exists():
        subprocess.run(["python3", "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(PEERS_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *PEER_PACKAGES], check=True
    )


# ---------------------------------------------------------------------------------------
# The data.


def scrambled_ids(indices):
    """customer_id of each index: a bijection of 0..2**62-1, so distinct indices give distinct ids."""
    import numpy as np

    return ((indices.astype(np.uint64) * np.uint64(ID_MULTIPLIER)) & np.uint64(ID_MASK)).astype(np.int64)


def customer_layout(rows: int):
    """(customer count, which of the transactions' id indices are absent from customers (a
    bool per index), the hot customer's index)."""
    import numpy as np

    count = max(2, round(rows * CUSTOMERS_PER_ROW))
    rng = np.random.default_rng([SEED, count])
    absent = rng.random(count) < ABSENT_SHARE
    hot = int(rng.integers(0, count))
    absent[hot] = False
    return count, absent, hot


def generate(rows: int, out: Path):
    """`out`/transactions (ROWS rows in FILES files) and `out`/customers, chunk by chunk."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "transactions").mkdir(parents=True)
    (tmp / "customers").mkdir(parents=True)
    count, absent, hot = customer_layout(rows)

    # Customers: every index but the absent ones, and as many ids past the transactions' range.
    rng = np.random.default_rng([SEED, count, 1])
    indices = np.concatenate([np.flatnonzero(~absent), np.arange(count, count + int(absent.sum()))])
    indices = indices[rng.permutation(len(indices))]
    segments = pc.take(pa.array(SEGMENTS, pa.string()), pa.array(rng.choice(len(SEGMENTS), size=len(indices), p=SEGMENT_WEIGHTS)))
    customers = pa.table({"customer_id": pa.array(scrambled_ids(indices)), "segment": segments})
    pq.write_table(customers, tmp / "customers" / "part-000.parquet", compression="zstd", row_group_size=ROW_GROUP_ROWS)

    per_file = -(-rows // FILES)
    chunk_rows = 8 * ROW_GROUP_ROWS
    start = 0
    for index in range(FILES):
        file_rows = min(per_file, rows - start)
        if file_rows <= 0:
            break
        writer = None
        done = 0
        while done < file_rows:
            n = min(chunk_rows, file_rows - done)
            rng = np.random.default_rng([SEED, start + done])
            customer = np.where(rng.random(n) < HOT_SHARE, hot, rng.integers(0, count, n))
            amount = np.round(rng.lognormal(3.0, 1.0, n), 2)
            row = np.arange(start + done, start + done + n, dtype=np.uint64)
            ts = (row * np.uint64(TS_MULTIPLIER)) & np.uint64(TS_MASK)
            table = pa.table(
                {
                    "customer_id": pa.array(scrambled_ids(customer)),
                    "amount": pa.array(amount, mask=rng.random(n) < AMOUNT_NULLS),
                    "ts": pa.array(ts.astype(np.int64) + TS_BASE_US, pa.int64()).cast(pa.timestamp("us")),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(tmp / "transactions" / f"part-{index:03d}.parquet", table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            done += n
        writer.close()
        start += file_rows
    tmp.rename(out)


def find_data(rows: int) -> Path:
    """bench/data/join-aggregate-ROWS/data (transactions/ and customers/), generated when missing."""
    data = BENCH / "data" / f"join-aggregate-{rows}" / "data"
    if not any((data / "transactions").glob("*.parquet")) or not any((data / "customers").glob("*.parquet")):
        print(f"generating {rows:,} transactions under {data}", flush=True)
        shutil.rmtree(data, ignore_errors=True)
        generate(rows, data)
    return data


# ---------------------------------------------------------------------------------------
# The harness.


def weir_job(data: Path, out: Path) -> str:
    return f"""name = "bench-join-aggregate"

[source]
uri = {json.dumps(str(data / "transactions"))}

[inputs.customers]
uri = {json.dumps(str(data / "customers"))}

{STEPS}
[sink]
uri = {json.dumps(str(out))}
mode = "overwrite"
"""


def timed(command) -> dict:
    """Runs `command` under /usr/bin/time (as bench/peers.py does); a failed run is recorded
    with its exit status and last lines instead of stopping the benchmark."""
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *command], capture_output=True, text=True, cwd=REPO)
    except OSError as error:
        return {"wall_s": float("nan"), "peak_rss_mib": 0.0, "load_before": load, "stdout": "", "failed": str(error)}
    found = re.findall(r"TIME ([\d.]+) (\d+)", proc.stderr)
    wall, rss = found[-1] if found else ("nan", "0")
    run = {"wall_s": float(wall), "peak_rss_mib": int(rss) / 1024, "load_before": round(load, 2), "stdout": proc.stdout}
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if not line.startswith("TIME ") and line.strip()][-5:]
        run["failed"] = f"exit {proc.returncode}: " + " | ".join(tail)
    return run


def last_json(stdout: str):
    """The last line of `stdout` that is a JSON object, or None."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def read_output(out: Path) -> dict:
    """The output's groups, bytes, columns (as `name: type`, as written) and the table with
    OUTPUT_COLUMNS in common types (int64 ids and counts, strings, float64 aggregates)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Not Weir's own bookkeeping under _weir/ (its manifest; staged files before a commit).
    files = sorted(f for f in out.rglob("*.parquet") if "_weir" not in f.relative_to(out).parts)
    if not files:
        raise ValueError(f"no Parquet files in {out}")
    tables = [pq.read_table(f) for f in files]
    schema = tables[0].schema
    types = {"customer_id": pa.int64(), "segment": pa.string(), "n": pa.int64()}
    missing = [name for name in OUTPUT_COLUMNS if name not in schema.names]
    if missing:
        raise ValueError(f"no column {', '.join(missing)} (the columns: {', '.join(schema.names)})")
    table = pa.concat_tables([t.select(OUTPUT_COLUMNS).cast(pa.schema([(name, types.get(name, pa.float64())) for name in OUTPUT_COLUMNS])) for t in tables])
    return {
        "rows": table.num_rows,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "columns": [f"{f.name}: {f.type}" for f in schema],
        "table": table,
    }


def compare(got: dict, reference: dict) -> dict:
    """Checks one output against the reference's on every group; the verdict goes into the run."""
    import numpy as np
    import pyarrow.compute as pc

    check = {"rows_written": got["rows"], "files": got["files"], "output_bytes": got["bytes"]}
    problems, disagreements = [], []
    names = [c.split(":")[0] for c in got["columns"]]
    reference_names = [c.split(":")[0] for c in reference["columns"]]
    if names != reference_names:
        problems.append(f"columns {names}, the reference's {reference_names}")
    suffix = "__got"
    joined = reference["table"].join(got["table"], keys=KEYS, join_type="full outer", right_suffix=suffix, coalesce_keys=True)
    only_reference = pc.is_null(joined[f"n{suffix}"])
    only_got = pc.is_null(joined["n"])
    for mask, what in ((only_reference, "missing"), (only_got, "extra")):
        found = joined.filter(mask)
        if found.num_rows:
            first = found.slice(0, 1).to_pylist()[0]
            problems.append(f"{found.num_rows} groups {what} (first: customer_id {first['customer_id']}, segment {first['segment']!r})")
    both = joined.filter(pc.invert(pc.or_(only_reference, only_got)))
    check["groups_checked"] = both.num_rows
    for name in AGGS:
        a, b = both[f"{name}{suffix}"], both[name]
        a_valid, b_valid = a.is_valid().to_numpy(zero_copy_only=False), b.is_valid().to_numpy(zero_copy_only=False)
        a_values = a.fill_null(0).to_numpy(zero_copy_only=False)
        b_values = b.fill_null(0).to_numpy(zero_copy_only=False)
        if name in EXACT:
            equal = a_values == b_values
        else:
            a_values, b_values = a_values.astype(np.float64), b_values.astype(np.float64)
            with np.errstate(invalid="ignore"):
                equal = (np.abs(a_values - b_values) <= RELATIVE_TOLERANCE * np.maximum(np.abs(a_values), np.abs(b_values))) | (
                    np.isnan(a_values) & np.isnan(b_values)
                )
        bad = np.flatnonzero((a_valid != b_valid) | (a_valid & b_valid & ~equal))
        if len(bad):
            i = int(bad[0])
            disagreements.append(
                {
                    "column": name,
                    "groups": len(bad),
                    "customer_id": both["customer_id"][i].as_py(),
                    "segment": both["segment"][i].as_py(),
                    "value": a[i].as_py(),
                    "reference_value": b[i].as_py(),
                }
            )
    if disagreements:
        check["disagreements"] = disagreements
        problems.append(
            "; ".join(
                f"{d['column']} differs in {d['groups']} groups (customer_id {d['customer_id']}: {d['value']!r} vs {d['reference_value']!r})"
                for d in disagreements
            )
        )
    if problems:
        check["check_failed"] = "; ".join(problems)
    return check


def write_report(rows: int, reps: int, systems: dict, runs: dict, columns: dict, reference_key, notes: list, data: Path):
    """Writes results/join-aggregate-ROWS.{json,md} from the runs so far."""
    results = []
    for key, measured in runs.items():
        if not measured:
            continue
        name = systems[key][0]
        succeeded = [m for m in measured if "failed" not in m]
        result = {"system": name, "key": key, "reps": len(measured), "columns": columns.get(key)}
        if succeeded:
            walls = sorted(m["wall_s"] for m in succeeded)
            best = min(succeeded, key=lambda m: m["wall_s"])
            result.update(
                wall_s=walls[0],
                median_wall_s=walls[(len(walls) - 1) // 2],
                rows_per_s=rows / walls[0],
                peak_rss_mib=None if key in RSS_UNMEASURED else max(m["peak_rss_mib"] for m in succeeded),
            )
            reported = last_json(best.get("stdout"))
            if reported is not None:
                result["reported"] = reported
            for field in ("rows_written", "output_bytes", "groups_checked"):
                if field in best:
                    result[field] = best[field]
            bad = [m for m in succeeded if "check_failed" in m]
            if bad:
                result["check_failed"] = bad[0]["check_failed"]
                result["disagreements"] = bad[0].get("disagreements", [])
            result["checked"] = any("groups_checked" in m for m in succeeded)
        else:
            result["failed"] = measured[0]["failed"]
        result["runs"] = [{k: v for k, v in m.items() if k != "stdout"} for m in measured]
        results.append(result)
    by_key = {r["key"]: r for r in results}
    base = by_key.get(reference_key, {}).get("wall_s") if reference_key else None
    for result in results:
        if "wall_s" in result:
            result["ratio_to_duckdb"] = result["wall_s"] / base if base else None
    count, absent, _ = customer_layout(rows)
    machine = {
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "platform": platform.platform(),
        "cpu": cpu_model(),
    }
    report = {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "customers": count,
        "reps": reps,
        "data": str(data),
        "machine": machine,
        "workload": {
            "hot_customer_share": HOT_SHARE,
            "ids_absent_from_customers": int(absent.sum()),
            "amount_nulls": AMOUNT_NULLS,
            "segments": SEGMENTS,
            "weir_steps": STEPS,
            "duckdb_query": duckdb_query("transactions/*.parquet", "customers/*.parquet"),
        },
        "reference": reference_key,
        "relative_tolerance": RELATIVE_TOLERANCE,
        "notes": notes,
        "results": results,
    }
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"join-aggregate-{rows}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    loads = [m["load_before"] for measured in runs.values() for m in measured if "load_before" in m]
    reference_name = systems[reference_key][0] if reference_key else "no reference"
    lines = [
        f"Join + aggregate ({rows:,} transactions × {count:,} customers: inner join on `customer_id` bringing `segment`, "
        f"then per (`customer_id`, `segment`): count, sum, avg, max, stddev_pop, last by `ts` → zstd Parquet), "
        f"{report['date']}; best of {reps} interleaved run(s), the order rotated by one system each repetition.",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['ram_gib']} GiB, {machine['platform']}"
        + (f"; load average before the runs {min(loads):.1f}–{max(loads):.1f}" if loads else "")
        + ".",
        "",
        "| system | wall s (best) | median s | vs DuckDB | peak RSS MiB | rows/s | groups | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if "failed" in r:
            peak = max(run["peak_rss_mib"] for run in r["runs"])
            lines.append(f"| {r['system']} | failed: …{r['failed'][-200:]} | | | {peak:.0f} before it failed | | | |")
            continue
        if "check_failed" in r:
            check = f"**{r['check_failed'][:300]}**"
        elif r["key"] == reference_key:
            check = "reference"
        else:
            check = "same" if r.get("checked") else "not checked"
        rss = "n/a" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        ratio = "n/a" if r.get("ratio_to_duckdb") is None else f"{r['ratio_to_duckdb']:.2f}"
        groups = f"{r['rows_written']:,}" if "rows_written" in r else "n/a"
        lines.append(
            f"| {r['system']} | {r['wall_s']:.2f} | {r['median_wall_s']:.2f} | {ratio} | {rss} | {r['rows_per_s']:,.0f} | {groups} | {check} |"
        )
    inner = [f"{r['system']} {r['reported']['inner_s']:.2f} s" for r in results if "inner_s" in r.get("reported", {})]
    lines += [
        "",
        f"Check: every group against {reference_name}'s: the same (`customer_id`, `segment`) groups, `n` and `last_amount` "
        f"exactly, `total`, `avg_amount`, `max_amount` and `sd` within {RELATIVE_TOLERANCE:g} relative (null = null). "
        "Wall: the whole process (/usr/bin/time), Python's start and imports (Spark's JVM) included for the peers"
        + (f"; measured inside the peers' processes (best run): {', '.join(inner)}" if inner else "")
        + ". Peak RSS: the largest single process, the largest of the runs (not measured for Spark's JVM). "
        "rows/s: transaction rows over the best wall.",
        "",
        "Where a peer cannot say it identically: Polars' `sum` of no value is 0 (guarded to give null) and its count is "
        "UInt32 (cast); Daft has no `last` by an order in an aggregation, so it joins each group's `max(ts)` back to the "
        "transactions on (`customer_id`, `ts`) (exact here, `ts` being distinct; it reads the transactions twice); "
        "Spark's `last` by an order is `max_by(amount, ts)`; DuckDB's `arg_max_null(amount, ts)` is the same result as "
        "`last(amount ORDER BY ts)` without an ordered aggregate.",
        "",
        "Weir's job steps:",
        "",
        "```toml",
        STEPS.strip(),
        "```",
        "",
        "DuckDB: `COPY (" + report["workload"]["duckdb_query"] + ") TO … (FORMAT parquet, COMPRESSION zstd)`.",
    ]
    reference_columns = columns.get(reference_key) if reference_key else None
    if reference_columns:
        lines += ["", f"Output columns, {reference_name}: " + ", ".join(f"`{c}`" for c in reference_columns) + "."]
        for key, cols in columns.items():
            if key == reference_key or cols is None:
                continue
            differ = [c for c in cols if c not in reference_columns]
            lines.append(f"- {systems[key][0]}: " + ("the same names and types." if not differ else "writes " + ", ".join(f"`{c}`" for c in differ) + "."))
    lines += [f"\n{note}" for note in notes]
    (out_dir / f"join-aggregate-{rows}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument("--systems", default=None, help=f"comma-separated keys out of {','.join(SYSTEM_KEYS)} (default: all)")
    parser.add_argument("--setup", action="store_true", help="install the peers into bench/.venv-peers and exit")
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    keys = args.systems.split(",") if args.systems else list(SYSTEM_KEYS)
    unknown = set(keys) - set(SYSTEM_KEYS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEM_KEYS)}")
    notes = [f"Weir: {args.weir}."]
    pythons = {}
    for key in PEERS:
        if key not in keys:
            continue
        found = peer_python(key)
        if found is None:
            message = f"{key} was not run: neither bench/.venv-peers nor {sys.executable} imports {PEER_MODULES[key]} (see --setup)."
            print(message, flush=True)
            notes.append(message)
            keys.remove(key)
        else:
            pythons[key] = found[0]
            notes.append(f"{key}: {PEER_MODULES[key]} {found[1]} from {os.path.relpath(found[0], REPO)}.")

    data = find_data(args.rows)
    work = data.parent

    def weir(key: str, flags: list) -> list:
        job = work / f"join-aggregate-{key}.toml"
        job.write_text(weir_job(data, work / f"out-{key}"))
        return [args.weir, "run", str(job), "--json", *flags]

    def peer(key: str) -> list:
        return [pythons[key], str(Path(__file__).resolve()), "peer", key, str(data), str(work / f"out-{key}")]

    cores = os.cpu_count()
    every = {
        "weir2p": ("weir 2 processes x 1 worker", lambda: weir("weir2p", ["--processes", "2", "--workers", "1"])),
        "weir2": ("weir 2 workers", lambda: weir("weir2", ["--workers", "2"])),
        "duckdb": (f"DuckDB ({cores} threads, last ORDER BY)", lambda: peer("duckdb")),
        "duckdb_arg_max": (f"DuckDB ({cores} threads, arg_max_null)", lambda: peer("duckdb_arg_max")),
        "polars": ("Polars (lazy, streaming sink)", lambda: peer("polars")),
        "daft": ("Daft (last by a join back)", lambda: peer("daft")),
        "spark": (f"PySpark (local[{cores}])", lambda: peer("spark")),
    }
    systems = {key: (every[key][0], every[key][1](), work / f"out-{key}") for key in SYSTEM_KEYS if key in keys}
    reference_key = next((k for k in REFERENCE_KEYS if k in systems), next(iter(systems), None))

    runs = {key: [] for key in systems}
    columns = {}
    reference = None
    order = list(systems.items())
    for rep in range(args.reps):
        outputs = {}
        start = rep % max(len(order), 1)
        for key, (name, command, out) in order[start:] + order[:start]:
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            run = timed(command)
            if "failed" not in run:
                try:
                    got = read_output(out)
                    outputs[key] = (run, got)
                    columns.setdefault(key, got["columns"])
                except Exception as error:  # an unreadable output is this system's failure
                    run["failed"] = f"output unreadable: {error}"
            runs[key].append(run)
            outcome = run.get("failed") or "{:.2f} s, {:.0f} MiB".format(run["wall_s"], run["peak_rss_mib"])
            print(f"{name}: {outcome}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if reference is None:
            found = [k for k in [*REFERENCE_KEYS, *systems] if k in outputs]
            if found:
                reference_key = reference_key if reference_key in outputs else found[0]
                reference = outputs[reference_key][1]
        for key, (run, got) in outputs.items():
            if reference is not None:
                run.update(compare(got, reference))
                if "check_failed" in run:
                    print(f"{systems[key][0]}: CHECK FAILED: {run['check_failed']}", flush=True)
        write_report(args.rows, args.reps, systems, runs, columns, reference_key, notes, data)


if __name__ == "__main__":
    if sys.argv[1:2] == ["peer"]:
        if len(sys.argv) != 5 or sys.argv[2] not in PEERS:
            sys.exit(f"usage: {sys.argv[0]} peer {'|'.join(PEERS)} DATA_DIR OUT_DIR")
        print(json.dumps(PEERS[sys.argv[2]](Path(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()
