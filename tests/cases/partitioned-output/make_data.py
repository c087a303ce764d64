"""Sales over five days in four regions (one of them null), written flat."""

import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make(folder: Path) -> None:
    rng = np.random.default_rng(5)
    n = 4_000
    days = [datetime.date(2026, 11, 25) + datetime.timedelta(days=int(d)) for d in rng.integers(0, 5, n)]
    region = rng.choice(np.array(["north", "south", "east/west", None], dtype=object), n)
    table = pa.table(
        {
            "id": np.arange(n, dtype=np.int64),
            "amount": rng.normal(10, 20, n),
            "day": pa.array(days, type=pa.date32()),
            "region": pa.array(region, type=pa.string()),
        }
    )
    data = folder / "data"
    data.mkdir(parents=True)
    pq.write_table(table, data / "sales.parquet", row_group_size=500)
