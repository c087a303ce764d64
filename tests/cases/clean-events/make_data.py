"""Raw events: ids, ages (some negative), incomes with nulls, countries, scores as text
(some not numbers), emails; three files of several row groups."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make(folder: Path) -> None:
    rng = np.random.default_rng(101)
    n = 6_000
    score = np.char.mod("%.3f", rng.normal(0, 1, n)).astype(object)
    score[rng.random(n) < 0.05] = "n/a"
    table = pa.table(
        {
            "id": np.arange(n, dtype=np.int64),
            "age": rng.integers(-5, 90, n).astype(np.int32),
            "income": pa.array(rng.normal(50_000, 20_000, n), mask=rng.random(n) < 0.1),
            "country": rng.choice(np.array(["DE", "FR", "US", "JP"]), n),
            "score": pa.array(score, type=pa.string()),
            "email": [f"user{i}@example.com" for i in range(n)],
        }
    )
    data = folder / "data"
    data.mkdir(parents=True)
    for index, rows in enumerate(np.array_split(np.arange(n), 3)):
        pq.write_table(table.take(rows), data / f"part-{index}.parquet", row_group_size=700)
