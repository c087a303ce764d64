"""`join` (a broadcast hash join with another input of the job, `[inputs.NAME]`) against
DuckDB's joins on the same files, at one worker, three workers and two processes of two
workers: inner, left, semi and anti on skewed keys (one key holds 30% of the events), null
keys on both sides, keys missing from either side, a duplicated key (two matches), keys of
different integer widths, float keys with NaN and -0.0, and a brought column whose name is
taken. Then what cannot run: a duplicate under `validate`, an unknown input, keys that do
not compare, an input past `broadcast_max_mb`: exit 2, the step named, nothing committed."""

import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_output, write_job
from helpers import SHAPES_1_3_AND_2X2, shape_id


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("join")
    rng = np.random.default_rng(35)
    events = root / "events"
    events.mkdir()
    rows = 9_000
    customer = rng.integers(0, 400, rows)
    customer[rng.random(rows) < 0.3] = 7  # a skewed key
    table = pa.table(
        {
            "event_id": np.arange(rows, dtype=np.int64),
            "customer_id": pa.array(customer, pa.int32(), mask=rng.random(rows) < 0.03),
            "amount": rng.lognormal(2, 1, rows),
            "score": rng.normal(size=rows),
            "key_f": pa.array(rng.choice([0.5, 1.5, np.nan, -0.0, 2.5], rows), mask=rng.random(rows) < 0.05),
        }
    )
    for index, (lo, hi) in enumerate([(0, 3_000), (3_000, 5_500), (5_500, rows)]):
        pq.write_table(table.slice(lo, hi - lo), events / f"part-{index}.parquet", row_group_size=1_000)
    customers = root / "customers"
    customers.mkdir()
    ids = np.arange(0, 380, dtype=np.int64)  # 380..399 never match
    ids = np.append(ids, [7, 12])  # two matches for 7 and 12; a null key below
    count = len(ids) + 1
    right = pa.table(
        {
            "customer_id": pa.array(list(ids) + [None], pa.int64()),
            "segment": pa.array(rng.choice(["a", "b", "c"], count), mask=rng.random(count) < 0.1),
            "score": rng.normal(size=count),
            "key_f": pa.array(rng.choice([0.5, 0.0, np.nan, 9.0], count)),
        }
    )
    pq.write_table(right.slice(0, 200), customers / "part-0.parquet")
    pq.write_table(right.slice(200), customers / "part-1.parquet")
    return root


def job(root, out, step, extra=""):
    return (
        f'name = "join"\n[source]\nuri = "{root / "events"}"\n'
        f'[inputs.customers]\nuri = "{root / "customers"}"\n{extra}\n'
        f'[[step]]\nop = "join"\nwith = "customers"\n{step}\n'
        f'[sink]\nuri = "{out}"\nmode = "overwrite"\n'
    )


QUERIES = {
    "inner": "SELECT e.*, c.segment, c.score AS score_right, c.key_f AS key_f_right FROM e JOIN c USING (customer_id)",
    "left": "SELECT e.*, c.segment, c.score AS score_right, c.key_f AS key_f_right FROM e LEFT JOIN c USING (customer_id)",
    "semi": "SELECT e.* FROM e SEMI JOIN c USING (customer_id)",
    "anti": "SELECT e.* FROM e ANTI JOIN c USING (customer_id)",
}


def duckdb_rows(root, query):
    con = duckdb.connect()
    con.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet('{root / 'events'}/*.parquet')")
    con.execute(f"CREATE VIEW c AS SELECT * FROM read_parquet('{root / 'customers'}/*.parquet')")
    return con.sql(query).to_arrow_table()


def canonical(table: pa.Table) -> list:
    """Rows as sortable tuples (None and NaN made comparable)."""
    def value(v):
        if v is None:
            return (0, 0)
        if isinstance(v, float) and np.isnan(v):
            return (1, 0)
        return (2, v)
    return sorted(tuple(value(v) for v in row.values()) for row in table.to_pylist())


@pytest.mark.parametrize("shape", SHAPES_1_3_AND_2X2, ids=shape_id)
@pytest.mark.parametrize("how", list(QUERIES))
def test_each_kind_of_join_equals_duckdbs(weir, tmp_path, data, shape, how):
    out = tmp_path / "out"
    weir("run", write_job(tmp_path / "job.toml", job(data, out, f'on = ["customer_id"]\nhow = "{how}"')), *shape, check=0)
    got = read_output(out)
    want = duckdb_rows(data, QUERIES[how])
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows and canonical(got) == canonical(want)
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    (other,) = manifest["other_inputs"]
    assert other["name"] == "customers" and sorted(f["uri"].rsplit("/", 1)[1] for f in other["files"]) == [
        "part-0.parquet",
        "part-1.parquet",
    ]


def test_float_keys_match_as_duckdb_compares_them(weir, tmp_path, data):
    """NaN matches NaN and -0.0 matches 0.0 (DuckDB's float equality in joins); a null never."""
    out = tmp_path / "out"
    step = 'left_on = ["key_f"]\nright_on = ["key_f"]\nhow = "inner"\ncolumns = ["segment"]'
    weir("run", write_job(tmp_path / "job.toml", job(data, out, step)), "-w", "3", check=0)
    want = duckdb_rows(data, "SELECT e.*, c.segment FROM e JOIN c ON e.key_f = c.key_f")
    got = read_output(out)
    assert got.num_rows == want.num_rows and canonical(got) == canonical(want)


def test_joins_that_cannot_run_fail_naming_the_step_and_commit_nothing(weir, tmp_path, data):
    out = tmp_path / "out"

    def refused(name, step, *needles, extra=""):
        proc = weir("run", write_job(tmp_path / f"{name}.toml", job(data, out, step, extra)), "-w", "2", check=2)
        for needle in needles:
            assert needle in proc.stderr, (name, proc.stderr)
        assert not (out / "_weir" / "manifest.json").exists(), name

    refused("validate", 'on = ["customer_id"]\nvalidate = "many_to_one"', "step 1 (join)", "input 'customers' has the key (7) more than once")
    unknown = job(data, out, 'on = ["customer_id"]').replace('with = "customers"', 'with = "nope"')
    proc = weir("run", write_job(tmp_path / "unknown.toml", unknown), check=2)
    assert "no step reads it" in proc.stderr, proc.stderr
    refused("types", 'left_on = ["amount"]\nright_on = ["segment"]', "step 1 (join)", "join key 'amount' is Float64 here and Utf8")
    refused("size", 'on = ["customer_id"]\nbroadcast_max_mb = 0', "[inputs.customers]", "broadcast_max_mb")
    refused("shuffle", 'on = ["customer_id"]\nstrategy = "shuffle"', "step 1 (join)", "not built yet")
