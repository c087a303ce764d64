"""Writes Weir's bundled demo dataset (demo/data/*.parquet): raw customer events with the
usual problems of raw data: numbers stored as strings, nulls, junk values, negative ages.
Run with any Python that has pyarrow and numpy; the files are committed, so the demo
itself needs no Python."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).parent / "data"


def events(rng, start, rows):
    ids = np.arange(start, start + rows, dtype=np.int64)
    age = rng.integers(-3, 95, rows).astype(np.int32)
    income = np.round(rng.lognormal(10.5, 0.6, rows), 2)
    tenure = np.char.mod("%d", rng.integers(0, 120, rows)).astype(object)
    tenure[rng.random(rows) < 0.02] = "unknown"
    country = rng.choice(np.array(["DE", "FR", "US", "JP", "BR", "IN"]), rows)
    mask = lambda p: rng.random(rows) < p  # noqa: E731
    return pa.table(
        {
            "customer_id": ids,
            "age": pa.array(age, mask=mask(0.05)),
            "income": pa.array(income, mask=mask(0.10)),
            "tenure_months": pa.array(tenure, type=pa.string(), mask=mask(0.03)),
            "country": pa.array(country, mask=mask(0.04)),
            "email": pa.array([f"customer{i}@example.com" for i in ids], mask=mask(0.2)),
        }
    )


def main():
    rng = np.random.default_rng(2026)
    OUT.mkdir(exist_ok=True)
    start = 0
    for index, rows in enumerate([40_000, 25_000, 35_000]):
        pq.write_table(events(rng, start, rows), OUT / f"events-{index}.parquet", row_group_size=10_000, compression="zstd")
        start += rows


if __name__ == "__main__":
    main()
