"""Timestamps with a time zone: filters compare them with literals (read in the column's
zone unless they carry an offset), `head` prints them, and a cast to another unit keeps the
zone (stored in milliseconds for `timestamp[s]`, as Parquet has no seconds unit). The reference is pyarrow / Python's datetime."""

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import write_job

JOB = """name = "zoned"
[source]
uri = "{src}"
[[step]]
op = "filter"
expr = "ts >= '2024-01-02' and local < '2024-01-03T12:00:00' and ts != '2024-01-02T11:00:00+00:00'"
[[step]]
op = "cast"
columns = {{ ts = "timestamp[s]" }}
[sink]
uri = "{out}"
"""


def test_zoned_timestamps_filter_print_and_cast(weir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    utc, berlin = dt.timezone.utc, ZoneInfo("Europe/Berlin")
    instants = [dt.datetime(2024, 1, 1, tzinfo=utc) + dt.timedelta(hours=7 * i) for i in range(12)]
    table = pa.table({"id": list(range(12)), "ts": pa.array(instants, pa.timestamp("us", tz="UTC")), "local": pa.array(instants, pa.timestamp("ms", tz="Europe/Berlin"))})
    pq.write_table(table, src / "x.parquet")

    head = weir("head", src, "-n", "2", check=0).stdout
    assert "2024-01-01T07:00:00Z" in head and "2024-01-01T08:00:00+01:00" in head, head

    out = tmp_path / "out"
    weir("run", write_job(tmp_path / "job.toml", JOB.format(src=src, out=out)), check=0)
    got = pq.read_table(out).sort_by("id")
    # Parquet has no seconds unit: timestamp[s] is stored in milliseconds, zone kept.
    assert got.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert got.schema.field("local").type == pa.timestamp("ms", tz="Europe/Berlin")
    want = [
        i
        for i, t in enumerate(instants)
        if t >= dt.datetime(2024, 1, 2, tzinfo=utc)
        and t < dt.datetime(2024, 1, 3, 12, tzinfo=berlin)
        and t != dt.datetime(2024, 1, 2, 11, tzinfo=utc)
    ]
    assert got["id"].to_pylist() == want
    assert [t.astimezone(utc) for t in got["ts"].to_pylist()] == [instants[i] for i in want]
