"""The same cleaning with pyarrow.compute."""

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds


def check(out: Path, data: Path) -> None:
    table = ds.dataset(data, format="parquet").to_table()
    score = pc.cast(pc.if_else(pc.match_substring_regex(table["score"], r"^-?[0-9.]+$"), table["score"], None), pa.float64())
    table = table.set_column(table.column_names.index("score"), "score", score)
    keep = pc.and_(
        pc.greater_equal(table["age"], 18),
        pc.or_kleene(pc.is_in(table["country"], pa.array(["DE", "FR"])), pc.is_valid(table["income"])),
    )
    filtered = table.filter(pc.fill_null(keep, False))
    want = filtered.filter(pc.is_valid(filtered["score"]))
    want = want.rename_columns(["contact" if c == "email" else c for c in want.column_names]).sort_by("id")
    got = ds.dataset(out, format="parquet").to_table().sort_by("id")
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows > 0
    for name in want.column_names:
        assert got[name].to_pylist() == want[name].to_pylist(), name
