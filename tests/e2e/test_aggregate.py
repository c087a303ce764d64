"""`aggregate` (per-worker combining, partial groups exchanged by key hash, merged) against
DuckDB's GROUP BY on the same files, at one worker, three workers and two processes of two
workers: every function on skewed keys (one customer holds 30% of the rows), null keys and
null values, two key columns, float keys with NaN and -0.0, no `by` (one row, even for an
empty input), `having`, and the steps after it (derive, a fitted standardize against
scikit-learn, partition_by), a join before it, and rows rejected before it. Then what cannot
run: an unknown column, an integer sum past int64, a `having` that is not a predicate:
exit 2, the step named, nothing committed; a spill directory without room: exit 1, named.
Every function again with `memory_mb = 0`, so that every group goes through the spill
files (partial groups by destination, sorted runs of merged groups, their k-way merge, the
rows' file the passes after the step read)."""

import json
import math
import os
import signal
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import weir_client
from sklearn.preprocessing import StandardScaler

from conftest import WEIR_BIN, read_output, write_job
from helpers import SHAPES_1_3_AND_2X2, Run, run_measuring_memory, shape_id


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("aggregate")
    rng = np.random.default_rng(36)
    events = root / "events"
    events.mkdir()
    rows = 12_000
    customer = rng.integers(0, 300, rows)
    customer[rng.random(rows) < 0.3] = 7  # a skewed key
    table = pa.table(
        {
            "customer_id": pa.array(customer, pa.int32(), mask=rng.random(rows) < 0.03),
            "day": pa.array(rng.integers(19_000, 19_003, rows).astype("datetime64[D]"), pa.date32()),
            "amount": pa.array(rng.lognormal(2, 1, rows) * rng.choice([-1, 1], rows), mask=rng.random(rows) < 0.05),
            "qty": pa.array(rng.integers(-5, 50, rows), pa.int16(), mask=rng.random(rows) < 0.05),
            "product": pa.array(rng.choice(["p%d" % i for i in range(40)], rows), mask=rng.random(rows) < 0.05),
            # Distinct instants, so that first/last have no ties.
            "ts": pa.array(rng.permutation(rows).astype(np.int64) * 1_000_003, pa.timestamp("us")),
            "key_f": pa.array(rng.choice([0.5, 1.5, np.nan, -0.0, 0.0], rows), mask=rng.random(rows) < 0.05),
        }
    )
    for index, (lo, hi) in enumerate([(0, 4_000), (4_000, 7_500), (7_500, rows)]):
        pq.write_table(table.slice(lo, hi - lo), events / f"part-{index}.parquet", row_group_size=1_000)
    customers = root / "customers"
    customers.mkdir()
    pq.write_table(
        pa.table({"customer_id": pa.array(np.arange(300), pa.int64()), "segment": rng.choice(["a", "b", "c"], 300)}),
        customers / "part-0.parquet",
    )
    return root


def job(root, out, steps, extra="", sink=""):
    return (
        f'name = "aggregate"\n[source]\nuri = "{root / "events"}"\n{extra}\n{steps}\n'
        f'[sink]\nuri = "{out}"\nmode = "overwrite"\n{sink}'
    )


def aggregate_step(by, aggs, having=None):
    entries = ", ".join(f'{name} = "{text}"' for name, text in aggs.items())
    by = ", ".join(f'"{b}"' for b in by)
    step = f'[[step]]\nop = "aggregate"\nby = [{by}]\naggs = {{ {entries} }}\n'
    return step + (f'having = "{having}"\n' if having else "")


def duckdb_rows(root, query):
    con = duckdb.connect()
    con.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet('{root / 'events'}/*.parquet')")
    con.execute(f"CREATE VIEW c AS SELECT * FROM read_parquet('{root / 'customers'}/*.parquet')")
    return con.sql(query).to_arrow_table()


def by_key(table: pa.Table, keys) -> dict:
    """Rows by their key tuple (NaN keys as the string 'nan', so that they compare)."""
    def key(row):
        return tuple("nan" if isinstance(row[k], float) and math.isnan(row[k]) else row[k] for k in keys)
    rows = {}
    for row in table.to_pylist():
        assert key(row) not in rows, f"two rows for the group {key(row)}"
        rows[key(row)] = row
    return rows


def assert_same_groups(got: pa.Table, want: pa.Table, keys, rel=1e-12):
    assert got.column_names == want.column_names
    got_rows, want_rows = by_key(got, keys), by_key(want, keys)
    assert got_rows.keys() == want_rows.keys()
    for group, want_row in want_rows.items():
        for column, expected in want_row.items():
            value = got_rows[group][column]
            if isinstance(expected, float) and not math.isnan(expected):
                assert value == pytest.approx(expected, rel=rel, abs=1e-9), (group, column)
            elif isinstance(expected, float):
                assert isinstance(value, float) and math.isnan(value), (group, column)
            else:
                assert value == expected, (group, column)


FUNCTIONS = {
    "n": "count(*)",
    "c": "count(amount)",
    "total": "sum(amount)",
    "units": "sum(qty)",
    "mean": "avg(amount)",
    "mean_qty": "avg(qty)",
    "hi": "max(ts)",
    "lo": "min(amount)",
    "top": "max(product)",
    "sd": "stddev_pop(amount)",
    "ssd": "stddev_samp(qty * 2)",
    "vp": "var_pop(qty)",
    "vs": "var_samp(amount)",
    "k": "count(distinct product)",
    "first_amount": "first(amount order by ts)",
    "last_amount": "last(amount order by ts)",
    "newest_product": "first(product order by ts desc)",
}

# DuckDB's sum of integers is a HUGEINT: Weir's is an int64 (docs/jobs.md).
DUCKDB_FUNCTIONS = {**FUNCTIONS, "units": "sum(qty)::BIGINT"}


@pytest.mark.parametrize("memory", ["in_memory", "spilled"])
@pytest.mark.parametrize("shape", SHAPES_1_3_AND_2X2, ids=shape_id)
def test_every_function_equals_duckdbs(weir, tmp_path, data, shape, memory):
    """`spilled`: with `memory_mb = 0` every worker writes its partial groups to local disk
    after every batch and its merged groups as a sorted run after every chunk received, so
    the groups reach the output only through the spill files and their k-way merge."""
    out = tmp_path / "out"
    steps = aggregate_step(["customer_id", "day"], FUNCTIONS) + ("memory_mb = 0\n" if memory == "spilled" else "")
    spill_dir = tmp_path / "spill"
    extra = f'spill_dir = "{spill_dir}"\nspill_keep_free_mb = 0'
    proc = weir("run", write_job(tmp_path / "job.toml", job(data, out, steps, extra=extra)), *shape, "--json", check=0)
    stages = {stage["stage"]: stage for stage in json.loads(proc.stdout)["stages"]}
    spilled = stages.get("step 1 aggregate: spill groups to local disk")
    assert (spilled is not None) == (memory == "spilled"), stages
    # What moved: every group crossed the exchange at least once (each worker sends its
    # partial groups, so there are at least as many as groups and at most one per row),
    # serialized; spilled, every partial and merged group was written at least once.
    exchange = stages["step 1 aggregate: exchange + merge groups"]
    groups = duckdb_rows(data, "SELECT count(DISTINCT (customer_id, day)) AS g FROM e").column("g")[0].as_py()
    assert groups <= exchange["rows"] <= 12_000 and exchange["bytes"] > exchange["rows"] * 8, exchange
    if spilled is not None:
        assert spilled["rows"] >= 2 * groups and spilled["bytes"] > spilled["rows"] * 8, spilled
    assert not any(spill_dir.rglob("*")) if spill_dir.exists() else True, "spill files were left behind"
    got = read_output(out)
    select = ", ".join(f"{text} AS {name}" for name, text in DUCKDB_FUNCTIONS.items())
    want = duckdb_rows(data, f"SELECT customer_id, day, {select} FROM e GROUP BY ALL")
    assert got.num_rows == want.num_rows > 900
    assert got.schema.field("units").type == pa.int64() and got.schema.field("hi").type == pa.timestamp("us")
    assert_same_groups(got, want, ["customer_id", "day"])
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    assert manifest["rows"] == want.num_rows


def test_float_keys_group_as_duckdb_groups_them_and_no_by_is_one_row(weir, tmp_path, data):
    """NaN is one group and -0.0 is 0.0 (DuckDB's grouping); without `by`, one row, also
    for an input that a filter empties (count 0, the rest null)."""
    out = tmp_path / "out"
    steps = aggregate_step(["key_f"], {"n": "count(*)", "k": "count(distinct key_f)", "s": "sum(qty)"})
    weir("run", write_job(tmp_path / "floats.toml", job(data, out, steps)), "-w", "3", check=0)
    want = duckdb_rows(data, "SELECT key_f, count(*) AS n, count(DISTINCT key_f) AS k, sum(qty)::BIGINT AS s FROM e GROUP BY ALL")
    assert read_output(out).num_rows == want.num_rows == 5  # 0.5, 1.5, 0 (and -0), NaN, null
    assert_same_groups(read_output(out), want, ["key_f"])

    aggs = {"n": "count(*)", "total": "sum(amount)", "hi": "max(product)", "sd": "stddev_samp(amount)"}
    for name, where in [("all", "true"), ("none", "false")]:
        steps = f'[[step]]\nop = "filter"\nexpr = "{where}"\n' + aggregate_step([], aggs)
        weir("run", write_job(tmp_path / f"{name}.toml", job(data, out, steps)), "-p", "2", "-w", "2", check=0)
        select = ", ".join(f"{text} AS {alias}" for alias, text in aggs.items())
        want = duckdb_rows(data, f"SELECT {select} FROM e WHERE {where}")
        got = read_output(out)
        assert got.num_rows == 1, name
        assert_same_groups(got, want, [])


@pytest.mark.parametrize("shape", [["-w", "3"], ["-p", "2", "-w", "2"]], ids=shape_id)
def test_join_aggregate_having_then_derive_standardize_and_partitions(weir, tmp_path, data, shape):
    """The steps after an aggregate read its groups: a derive, a standardize fitted on the
    groups (against scikit-learn's StandardScaler on DuckDB's groups) and partition_by."""
    out = tmp_path / "out"
    steps = (
        '[[step]]\nop = "join"\nwith = "customers"\non = ["customer_id"]\n'
        + aggregate_step(["segment", "customer_id"], {"n": "count(*)", "total": "sum(amount)"}, having="n >= 20")
        + '[[step]]\nop = "derive"\ncolumns = { mean = "total / n" }\n'
        + '[[step]]\nop = "standardize"\ncolumns = ["total", "mean"]\n'
    )
    extra = f'[inputs.customers]\nuri = "{data / "customers"}"\n'
    weir("run", write_job(tmp_path / "job.toml", job(data, out, steps, extra, 'partition_by = ["segment"]\n')), *shape, check=0)
    want = duckdb_rows(
        data,
        "SELECT segment, customer_id, count(*) AS n, sum(amount) AS total FROM e JOIN c USING (customer_id) "
        "GROUP BY ALL HAVING count(*) >= 20 ORDER BY segment, customer_id",
    ).to_pandas()
    want["mean"] = want["total"] / want["n"]
    want[["total", "mean"]] = StandardScaler().fit_transform(want[["total", "mean"]])
    assert len(want) > 100
    got = weir_client.read_table(str(out)).to_pandas()  # partition columns restored
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("segment=")) == ["segment=a", "segment=b", "segment=c"]
    got = got.astype({"segment": str}).sort_values(["segment", "customer_id"]).reset_index(drop=True)
    assert list(got["customer_id"]) == list(want["customer_id"]) and list(got["n"]) == list(want["n"])
    np.testing.assert_allclose(got[["total", "mean"]].to_numpy(), want[["total", "mean"]].to_numpy(), rtol=1e-9, atol=1e-12)
    fitted = json.loads((out / "_weir" / "fitted.json").read_text())
    assert [step["op"] for step in fitted["steps"]] == ["standardize"]


def test_rows_rejected_before_an_aggregate_reach_the_rejects_output(weir, tmp_path, data):
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    steps = (
        '[[step]]\nop = "derive"\ncolumns = { code = "case when qty < 0 then \'x\' else cast(qty as varchar) end" }\n'
        '[[step]]\nop = "cast"\ncolumns = { code = "int32" }\non_error = "reject"\n'
        + aggregate_step(["day"], {"n": "count(*)", "codes": "sum(code)"})
    )
    weir("run", write_job(tmp_path / "job.toml", job(data, out, steps, sink=f'rejects = "{rejects}"\n')), "-p", "2", "-w", "2", check=0)
    want = duckdb_rows(data, "SELECT day, count(*) AS n, sum(qty)::BIGINT AS codes FROM e WHERE qty IS NULL OR qty >= 0 GROUP BY ALL")
    assert_same_groups(read_output(out), want, ["day"])
    rejected = pq.read_table(rejects).num_rows
    assert rejected == duckdb_rows(data, "SELECT count(*) AS n FROM e WHERE qty < 0").column("n")[0].as_py() > 0


def test_aggregates_that_cannot_run_fail_naming_the_step_and_commit_nothing(weir, tmp_path, data):
    out = tmp_path / "out"

    def refused(name, steps, *needles):
        proc = weir("run", write_job(tmp_path / f"{name}.toml", job(data, out, steps)), "-w", "2", check=2)
        for needle in needles:
            assert needle in proc.stderr, (name, proc.stderr)
        assert not (out / "_weir" / "manifest.json").exists(), name

    refused("unknown", aggregate_step(["day"], {"s": "sum(amont)"}), "step 1 (aggregate)", "column 's'", "unknown column 'amont'")
    refused("not-a-function", aggregate_step(["day"], {"s": "amount + 1"}), "step 1 (aggregate)", "expected an aggregate function")
    refused("having", aggregate_step(["day"], {"n": "count(*)"}, having="n + 1"), "step 1 (aggregate)")
    overflow = '[[step]]\nop = "derive"\ncolumns = { big = "cast(9000000000000000000 as bigint)" }\n' + aggregate_step(["day"], {"s": "sum(big)"})
    refused("overflow", overflow, "step 2 (aggregate)", "aggregate 's': the sum of a group leaves int64's range")
    # Spilled groups that find their disk full (a reserve larger than the disk): exit 1,
    # the step and the directory named, nothing committed, no spill file left.
    spill_dir = tmp_path / "spill"
    full = write_job(tmp_path / "full.toml", job(data, out, aggregate_step(["customer_id"], {"n": "count(*)"}) + "memory_mb = 0\n",
                                              extra=f'spill_dir = "{spill_dir}"\nspill_keep_free_mb = 1000000000'))
    for shape in (["-w", "2"], ["-p", "2", "-w", "2"]):
        proc = weir("run", full, *shape, check=1)
        assert "step 1 (aggregate) failed" in proc.stderr and f"spill directory {spill_dir} has no room" in proc.stderr, proc.stderr
        assert not (out / "_weir" / "manifest.json").exists()
        assert not any(spill_dir.rglob("*.bin")), "spill files were left behind"


MEMORY_LIMIT = 384 << 20


def test_two_million_groups_stay_under_a_memory_limit(tmp_path):
    """#35's memory criterion at CI's scale: 2,000,000 distinct keys aggregated by 2 workers
    with `memory_mb = 16`, in a memory cgroup of 384 MiB where one can be made (the peak
    resident set is asserted under it either way). The same job with everything in memory
    peaked at 675 MiB on the development machine, so the bound is the spilling's doing.
    Every group is checked against the input itself (each key once: count 1, sum = its x).
    `tests/scale/aggregate_memory.py` runs 20M keys under 1 GiB."""
    rows = 2_000_000
    rng = np.random.default_rng(2035)
    keys = rng.permutation(rows).astype(np.int64)
    x = rng.random(rows)
    src = tmp_path / "in"
    src.mkdir()
    for index in range(2):
        lo, hi = index * rows // 2, (index + 1) * rows // 2
        pq.write_table(pa.table({"k": keys[lo:hi], "x": x[lo:hi]}), src / f"part-{index}.parquet", row_group_size=100_000)
    out = tmp_path / "out"
    steps = aggregate_step(["k"], {"n": "count(*)", "s": "sum(x)"}) + "memory_mb = 16\n"
    job_file = write_job(tmp_path / "big.toml", f'name = "big"\n[source]\nuri = "{src}"\nspill_dir = "{tmp_path / "spill"}"\n{steps}[sink]\nuri = "{out}"\n')
    proc, peak, enforced = run_measuring_memory([WEIR_BIN, "run", job_file, "--workers", "2"], tmp_path, MEMORY_LIMIT)
    assert proc.returncode == 0, (proc.returncode, "killed by the cgroup's limit" if proc.returncode < 0 else proc.stderr)
    print(f"2M groups: peak resident {peak / 2**20:.0f} MiB (cgroup limit enforced: {enforced})")
    assert 0 < peak < MEMORY_LIMIT, f"peak resident set {peak / 2**20:.0f} MiB"
    got = read_output(out).sort_by("k")
    order = np.argsort(keys)
    assert got.num_rows == rows
    assert np.array_equal(got["k"].to_numpy(), keys[order])
    assert np.array_equal(got["n"].to_numpy(), np.ones(rows, dtype=np.int64))
    assert np.array_equal(got["s"].to_numpy(), x[order])


@pytest.mark.parametrize("shape", [["-w", "2"], ["-p", "2", "-w", "2"]], ids=shape_id)
def test_sigterm_while_spilled_groups_are_written_commits_nothing_and_removes_them(tmp_path, data, shape):
    """A run whose aggregate spills (`memory_mb = 0`: from its first batch on) is stopped by
    SIGTERM once the spill directory holds a groups file. Its spill files last until its
    final pass has written the groups, and a failpoint holds each batch that pass writes for
    300 ms, so the signal lands while they exist. It exits 143, commits nothing, and leaves
    no spill file."""
    out = tmp_path / "out"
    spill_dir = tmp_path / "spill"
    steps = aggregate_step(["customer_id", "day"], {"n": "count(*)", "s": "sum(amount)"}) + "memory_mb = 0\n"
    extra = f'spill_dir = "{spill_dir}"\nspill_keep_free_mb = 0'
    job_file = write_job(tmp_path / "term.toml", job(data, out, steps, extra=extra, sink="row_group_rows = 64\n"))
    env = {**os.environ, "FAILPOINTS": "part-batch-written=sleep(300)"}
    run = Run(job_file, *shape, env=env)
    try:
        seen = []
        deadline = time.time() + 120
        while run.proc.poll() is None and time.time() < deadline and not seen:
            seen = [p for p in spill_dir.rglob("groups-*.bin")] if spill_dir.exists() else []
            if seen:
                run.proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.01)
        rc = run.wait(timeout=120)
    finally:
        run.kill()
    assert seen, f"no groups file was seen: {run.describe()}"
    assert rc == 143, run.describe()
    assert not (out / "_weir" / "manifest.json").exists() and not (out / "_SUCCESS").exists()
    assert not any(spill_dir.rglob("*")), f"left behind: {list(spill_dir.rglob('*'))}"
