"""50,001 skewed values with ties and 3% nulls: beyond the sketch's 8,192 exact values."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make(folder: Path) -> None:
    rng = np.random.default_rng(29)
    n = 50_001
    table = pa.table({"id": np.arange(n, dtype=np.int64), "x": pa.array(np.round(rng.exponential(3.0, n), 1), mask=rng.random(n) < 0.03)})
    data = folder / "data"
    data.mkdir(parents=True)
    pq.write_table(table, data / "x.parquet", row_group_size=4_000)
