"""pyarrow's filter; read back as a hive-partitioned dataset by pyarrow."""

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds


def check(out: Path, data: Path) -> None:
    table = ds.dataset(data, format="parquet").to_table()
    want = table.filter(pc.greater(table["amount"], 0)).sort_by("id")
    got = ds.dataset(out, format="parquet", partitioning="hive").to_table().sort_by("id")
    day = got["day"]
    if not pa.types.is_date32(day.type):
        day = pc.cast(pc.strptime(pc.cast(day, pa.string()), format="%Y-%m-%d", unit="s"), pa.date32())
    region = got["region"]
    if pa.types.is_dictionary(region.type):
        region = region.cast(region.type.value_type)
    assert got["id"].to_pylist() == want["id"].to_pylist()
    assert got["amount"].to_pylist() == want["amount"].to_pylist()
    assert day.to_pylist() == want["day"].to_pylist()
    assert region.to_pylist() == want["region"].to_pylist()
