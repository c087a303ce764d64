"""Eight float features with 6% nulls, on different scales, in two files."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make(folder: Path) -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    columns = {"id": np.arange(n, dtype=np.int64)}
    for f in range(8):
        columns[f"f_{f}"] = pa.array(rng.normal(f * 10, 1 + f, n), mask=rng.random(n) < 0.06)
    table = pa.table(columns)
    data = folder / "data"
    data.mkdir(parents=True)
    pq.write_table(table.slice(0, 2_000), data / "a.parquet", row_group_size=600)
    pq.write_table(table.slice(2_000), data / "b.parquet", row_group_size=600)
