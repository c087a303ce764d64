"""Hive-style partitions: `key=value` folders read as typed columns, and
`sink.partition_by` writing them, checked against independent writers and readers.

- A dataset written by pyarrow's `write_to_dataset(partition_cols=…)` is read with its
  partition columns (typed: date, integer, string with escaped characters, null), filtered
  on them, projected by `source.columns`; the result equals pyarrow's own reading of the
  dataset. `source.partitioning = "none"` leaves them out; files at different depths are
  refused by name.
- An output written with `partition_by` is read back with its partition columns intact by
  pyarrow (`ds.dataset(out, partitioning="hive")`), Polars (`pl.scan_parquet(out/**/*.parquet)`,
  hive_partitioning=True)`, as docs/output.md says), DuckDB (`read_parquet(…, hive_partitioning = true)`) and, when PySpark
  and Java are there (tests/spark_readers.sh), Spark (`spark.read.parquet(out)`); Weir reads it
  back too. Overwrite removes the old partitions' files and their emptied folders; append
  adds files to the same folders; bad `partition_by` columns are refused.
- A plain (unpartitioned) output: a directory read by pyarrow, Polars (docs/output.md's glob),
  DuckDB and Spark skips Weir's `_SUCCESS` and `_weir/` files.
"""

import datetime
import json
import os
import shutil

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import write_job

COUNTRIES = ["DE", "FR", "a/b", "x=y %"]


def events(rows=3_000, seed=4) -> pa.Table:
    rng = np.random.default_rng(seed)
    days = [datetime.date(2026, 11, 27) + datetime.timedelta(days=int(d)) for d in rng.integers(0, 4, rows)]
    country = rng.choice(np.array(COUNTRIES, dtype=object), rows)
    country[rng.random(rows) < 0.05] = None
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.normal(size=rows),
            "date": pa.array(days, type=pa.date32()),
            "bucket": pa.array(rng.integers(0, 3, rows), type=pa.int64()),
            "country": pa.array(country, type=pa.string()),
        }
    )


def normalise(table: pa.Table, columns) -> pa.Table:
    """Rows by id, the given columns, partition columns cast to the types Weir infers (readers
    infer int32 or dictionary-encoded strings for them)."""
    table = table.select(columns)
    for name, kind in (("date", pa.date32()), ("bucket", pa.int64()), ("country", pa.string())):
        if name in table.column_names:
            column = table[name]
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            if name == "date" and pa.types.is_string(column.type):
                column = pc.strptime(column, format="%Y-%m-%d", unit="s").cast(pa.date32())
            table = table.set_column(table.column_names.index(name), name, column.cast(kind))
    return table.sort_by("id")


def job(path, src, out, steps="", source="", sink=""):
    return write_job(path, f'name = "parts"\n[source]\nuri = "{src}"\n{source}\n{steps}\n[sink]\nuri = "{out}"\n{sink}\n')


@pytest.fixture
def hive_input(tmp_path):
    """`events()` written by pyarrow as a hive dataset partitioned by date, bucket, country."""
    table = events()
    src = tmp_path / "in"
    pq.write_to_dataset(table, src, partition_cols=["date", "bucket", "country"])
    return table, src


def test_partition_folders_are_typed_columns(weir, tmp_path, hive_input):
    table, src = hive_input
    out = tmp_path / "out"
    steps = '[[step]]\nop = "filter"\nexpr = "bucket >= 1 and date >= \'2026-11-28\' and country is not null"\n'
    weir("run", job(tmp_path / "job.toml", src, out, steps), "-w", "2", cwd=tmp_path, check=0)
    got = ds.dataset(out, format="parquet").to_table()
    assert got.schema.field("date").type == pa.date32() and got.schema.field("bucket").type == pa.int64()
    assert got.schema.field("country").type == pa.string()
    want = table.filter(
        (pc.field("bucket") >= 1) & (pc.field("date") >= datetime.date(2026, 11, 28)) & pc.field("country").is_valid()
    )
    assert normalise(got, ["id", "x", "date", "bucket", "country"]).equals(normalise(want, ["id", "x", "date", "bucket", "country"]))
    assert set(got["country"].to_pylist()) == {"DE", "FR", "a/b", "x=y %"}, "escaped folder names decode"

    # A projection may pick partition columns; `none` leaves them out.
    out2 = tmp_path / "projected"
    weir("run", job(tmp_path / "p.toml", src, out2, source='columns = ["id", "country"]'), cwd=tmp_path, check=0)
    projected = ds.dataset(out2, format="parquet").to_table()
    assert projected.column_names == ["id", "country"]
    assert normalise(projected, ["id", "country"]).equals(normalise(table, ["id", "country"])), "nulls: __HIVE_DEFAULT_PARTITION__"
    schema = weir("schema", src, cwd=tmp_path, check=0).stdout
    assert "date: Date32" in schema and "bucket: Int64" in schema and "country: Utf8" in schema
    out3 = tmp_path / "plain"
    weir("run", job(tmp_path / "n.toml", src, out3, source='partitioning = "none"'), cwd=tmp_path, check=0)
    assert ds.dataset(out3, format="parquet").to_table().column_names == ["id", "x"]


def test_files_at_different_depths_are_refused_by_name(weir, tmp_path, hive_input):
    _, src = hive_input
    stray = src / "stray.parquet"
    pq.write_table(pa.table({"id": [1], "x": [0.5]}), stray)
    proc = weir("run", job(tmp_path / "job.toml", src, tmp_path / "out"), cwd=tmp_path, check=2)
    assert "stray.parquet" in proc.stderr and "partition folders" in proc.stderr, proc.stderr


def spark_session():
    """A local Spark session, or None where PySpark or Java is missing (an error instead
    under tests/spark_readers.sh, which sets WEIR_REQUIRE_SPARK)."""
    required = os.environ.get("WEIR_REQUIRE_SPARK") == "1"
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        assert not required, "PySpark is not installed"
        return None
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        assert not required, "Java is not installed"
        return None
    return SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()


def test_a_partitioned_output_reads_back_everywhere(weir, tmp_path):
    table = events(seed=8)
    src = tmp_path / "flat"
    src.mkdir()
    pq.write_table(table, src / "events.parquet", row_group_size=500)
    out = tmp_path / "out"
    path = job(tmp_path / "job.toml", src, out, sink='partition_by = ["date", "country"]\nmode = "overwrite"')
    weir("run", path, "-w", "3", cwd=tmp_path, check=0)
    columns = ["id", "x", "bucket", "date", "country"]
    want = normalise(table, columns)

    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    assert manifest["partition_by"] == ["date", "country"]
    assert all(f["path"].startswith("date=") and "/country=" in f["path"] for f in manifest["files"])
    assert (out / "date=2026-11-28" / "country=a%2Fb").is_dir(), "Hive escaping: '/' is %2F"
    stored = pq.read_schema(out / manifest["files"][0]["path"])
    assert stored.names == ["id", "x", "bucket"], "the files do not store the partition columns"

    by_pyarrow = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert normalise(by_pyarrow, columns).equals(want)
    by_polars = pl.scan_parquet(f"{out}/**/*.parquet", hive_partitioning=True).collect().to_arrow()
    assert normalise(by_polars, columns).equals(want)
    by_duckdb = duckdb.sql(f"select * from read_parquet('{out}/**/*.parquet', hive_partitioning = true)").arrow()
    by_duckdb = by_duckdb.read_all() if hasattr(by_duckdb, "read_all") else by_duckdb
    assert normalise(by_duckdb, columns).equals(want)
    spark = spark_session()
    if spark is not None:
        by_spark = pa.Table.from_pandas(spark.read.parquet(str(out)).toPandas(), preserve_index=False)
        assert normalise(by_spark, columns).equals(want)

    # Weir reads its own partitioned output back, partition columns included.
    again = tmp_path / "again"
    weir("run", job(tmp_path / "again.toml", out, again), cwd=tmp_path, check=0)
    assert normalise(ds.dataset(again, format="parquet").to_table(), columns).equals(want)

    # Overwrite with fewer rows: the old files go, and the folders they leave empty.
    smaller = table.filter(pc.field("date") == datetime.date(2026, 11, 27))
    pq.write_table(smaller, src / "events.parquet")
    weir("run", path, cwd=tmp_path, check=0)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("_")) == ["date=2026-11-27"]
    assert normalise(ds.dataset(out, format="parquet", partitioning="hive").to_table(), columns).equals(normalise(smaller, columns))

    # Append adds files to the same folders.
    appended = write_job(tmp_path / "append.toml", path.read_text().replace('mode = "overwrite"', 'mode = "append"'))
    weir("run", appended, cwd=tmp_path, check=0)
    twice = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert twice.num_rows == 2 * smaller.num_rows
    assert json.loads((out / "_weir" / "manifest.json").read_text())["generation"] == 3


@pytest.mark.parametrize(
    "partition_by, message",
    [
        ('["x"]', "column 'x' is Float64"),
        ('["nope"]', "no output column 'nope'"),
        ('["id", "id"]', "names 'id' twice"),
        ('["id", "k"]', "takes every output column"),
    ],
)
def test_bad_partition_columns_are_refused(weir, tmp_path, partition_by, message):
    src = tmp_path / "flat"
    src.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "k": [3, 4], "x": [0.5, 1.5]}), src / "a.parquet")
    steps = '[[step]]\nop = "select"\ncolumns = ["id", "k"]\n' if message.startswith("takes") else ""
    path = job(tmp_path / "job.toml", src, tmp_path / "out", steps=steps, sink=f"partition_by = {partition_by}")
    proc = weir("validate", path, cwd=tmp_path, check=2)
    assert message in proc.stderr, proc.stderr


def test_a_plain_output_directory_reads_in_every_reader(weir, tmp_path):
    table = events(rows=500, seed=2).select(["id", "x"])
    src = tmp_path / "flat"
    src.mkdir()
    pq.write_table(table, src / "a.parquet")
    out = tmp_path / "out"
    weir("run", job(tmp_path / "job.toml", src, out), "-w", "2", cwd=tmp_path, check=0)
    assert (out / "_SUCCESS").exists() and (out / "_weir" / "manifest.json").exists()
    want = table.sort_by("id")
    assert ds.dataset(out, format="parquet").to_table().sort_by("id").equals(want)
    assert pq.read_table(out).sort_by("id").equals(want)
    # Polars refuses a directory holding other files; docs/output.md's glob reads it.
    assert pl.scan_parquet(f"{out}/*.parquet").collect().to_arrow().sort_by("id").equals(want)
    got = duckdb.sql(f"select * from read_parquet('{out}/*.parquet')").arrow()
    got = got.read_all() if hasattr(got, "read_all") else got
    assert got.sort_by("id").equals(want)
    spark = spark_session()
    if spark is not None:
        by_spark = pa.Table.from_pandas(spark.read.parquet(str(out)).toPandas(), preserve_index=False)
        assert by_spark.sort_by("id").equals(want)
