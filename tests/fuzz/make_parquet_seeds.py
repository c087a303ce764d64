"""Writes the Parquet seed corpus of the fuzz harness (`corpus/parquet/`): small files, each
exercising another part of the reader (types, codecs, encodings, page versions, nulls,
dictionaries, several row groups, nested and duplicate columns, zero rows). The files are
committed; rerun this only to change them:

    .venv/bin/python tests/fuzz/make_parquet_seeds.py
"""

import datetime
import decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "corpus" / "parquet"
ROWS = 40


def flat(rows=ROWS):
    ids = list(range(rows))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "age": pa.array([None if i % 7 == 0 else float(i) * 1.5 for i in ids], pa.float64()),
            "score": pa.array([float("nan") if i % 11 == 0 else i / 3 for i in ids], pa.float32()),
            "small": pa.array([i % 100 - 50 for i in ids], pa.int8()),
            "country": pa.array([None if i % 5 == 0 else ["DE", "FR", "US"][i % 3] for i in ids], pa.string()),
            "email": pa.array([f"user{i}@example.com" for i in ids], pa.string()),
            "active": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
            "ts": pa.array([datetime.datetime(2024, 1, 1) + datetime.timedelta(hours=i) for i in ids], pa.timestamp("us", tz="UTC")),
            "day": pa.array([datetime.date(2024, 1, 1) + datetime.timedelta(days=i) for i in ids], pa.date32()),
            "amount": pa.array([decimal.Decimal(i) / 100 for i in ids], pa.decimal128(10, 2)),
        }
    )


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    table = flat()
    pq.write_table(table, OUT / "flat-snappy-2rg.parquet", row_group_size=ROWS // 2, compression="snappy")
    pq.write_table(table, OUT / "flat-zstd-dict.parquet", compression="zstd", use_dictionary=True)
    pq.write_table(table, OUT / "flat-plain-v2.parquet", compression="none", use_dictionary=False, data_page_version="2.0")
    pq.write_table(table, OUT / "flat-gzip-stats-off.parquet", compression="gzip", write_statistics=False)
    pq.write_table(table.select(["id", "age", "score"]), OUT / "delta-bss.parquet", compression="lz4", use_dictionary=False,
                   column_encoding={"id": "DELTA_BINARY_PACKED", "age": "BYTE_STREAM_SPLIT", "score": "BYTE_STREAM_SPLIT"})
    pq.write_table(table.select(["id", "email"]), OUT / "delta-strings-brotli.parquet", compression="brotli", use_dictionary=False,
                   column_encoding={"email": "DELTA_BYTE_ARRAY"})
    pq.write_table(pa.table({"id": pa.array(range(8), pa.int64()), "gone": pa.nulls(8)}), OUT / "null-column.parquet")
    pq.write_table(pa.table([pa.array(range(6)), pa.array(range(6))], names=["x", "x"]), OUT / "duplicate-names.parquet")
    pq.write_table(flat(0), OUT / "zero-rows.parquet")
    nested = pa.table({"id": pa.array(range(6)), "tags": pa.array([["a"], [], None, ["b", "c"], ["d"], []]),
                       "point": pa.array([{"x": i, "y": float(i)} for i in range(6)])})
    pq.write_table(nested, OUT / "nested.parquet")
    wide = pa.table({f"f_{i}": pa.array([float(i * r) for r in range(5)], pa.float32()) for i in range(24)})
    pq.write_table(wide, OUT / "wide-float32.parquet", row_group_size=2)
    # Structs nested past and near the reader's depth limit (64), without pyarrow's own
    # schema in the footer (whose reader has a depth limit of its own).
    for depth in (80, 300):
        column = pa.array([1, 2, 3])
        for _ in range(depth):
            column = pa.StructArray.from_arrays([column], names=["f"])
        pq.write_table(pa.table({"id": pa.array([1, 2, 3]), "s": column}), OUT / f"deep-{depth}.parquet", store_schema=False)
    for path in sorted(OUT.iterdir()):
        print(path.name, path.stat().st_size)


if __name__ == "__main__":
    main()
