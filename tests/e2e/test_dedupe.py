"""`dedupe` against pandas' `drop_duplicates`, with duplicates spread across files,
row groups, workers and processes."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_output, write_job
from helpers import SHAPES_1_3_AND_2X2, shape_id


@pytest.fixture
def duplicated(tmp_path: Path):
    """Four files (in name order) whose rows repeat keys across all of them, with null keys
    and null order values."""
    rng = np.random.default_rng(99)
    src = tmp_path / "src"
    src.mkdir()
    frames = []
    start = 0
    for index, rows in enumerate([3_000, 1_500, 4_000, 2_500]):
        user = rng.integers(0, 800, rows)
        frame = pd.DataFrame(
            {
                "row_id": np.arange(start, start + rows),
                "user": pd.array(np.where(rng.random(rows) < 0.02, None, user.astype(object)), dtype="Int64"),
                "day": rng.choice(["mon", "tue", "wed"], rows),
                "updated": pd.array(np.where(rng.random(rows) < 0.05, None, rng.integers(0, 50, rows).astype(object)), dtype="Int64"),
            }
        )
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), src / f"part-{index}.parquet", row_group_size=700)
        frames.append(frame)
        start += rows
    return src, pd.concat(frames, ignore_index=True)


def run(weir, tmp_path, src, step, shape):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "dedupe"\n[source]\nuri = "{src}"\n{step}\n[sink]\nuri = "{out}"\nmode = "overwrite"\n')
    weir("run", job, *shape, check=0)
    return read_output(out).to_pandas()


@pytest.mark.parametrize("shape", SHAPES_1_3_AND_2X2, ids=shape_id)
def test_keep_first_matches_pandas(weir, tmp_path, duplicated, shape):
    src, frame = duplicated
    got = run(weir, tmp_path, src, '[[step]]\nop = "dedupe"\ncolumns = ["user", "day"]', shape)
    expected = frame.drop_duplicates(subset=["user", "day"], keep="first")
    assert sorted(got["row_id"]) == sorted(expected["row_id"])
    assert len(expected) < len(frame) / 3  # there were many duplicates to drop


@pytest.mark.parametrize("shape", SHAPES_1_3_AND_2X2, ids=shape_id)
@pytest.mark.parametrize("keep", ["max", "min"])
def test_keep_max_or_min_of_order_by_matches_pandas(weir, tmp_path, duplicated, shape, keep):
    src, frame = duplicated
    step = f'[[step]]\nop = "dedupe"\ncolumns = ["user"]\nkeep = "{keep}"\norder_by = "updated"'
    got = run(weir, tmp_path, src, step, shape)
    # Largest (or smallest) `updated` first, nulls last, ties in input order: a stable sort.
    ordered = frame.sort_values("updated", ascending=(keep == "min"), kind="stable", na_position="last")
    expected = ordered.drop_duplicates(subset=["user"], keep="first")
    assert sorted(got["row_id"]) == sorted(expected["row_id"])


def test_rows_after_a_dedupe_keep_their_shard_order_and_later_steps_apply(weir, tmp_path, duplicated):
    src, frame = duplicated
    step = '[[step]]\nop = "dedupe"\ncolumns = ["user"]\n[[step]]\nop = "filter"\nexpr = "day != \'tue\'"'
    got = run(weir, tmp_path, src, step, ["-w", "1"])
    expected = frame.drop_duplicates(subset=["user"], keep="first")
    expected = expected[expected["day"] != "tue"]
    # One worker reads the shards in order, so the output is in input order.
    assert list(got["row_id"]) == list(expected["row_id"])


def test_bad_dedupe_specs_name_the_step(weir, tmp_path, duplicated):
    src, _ = duplicated
    job = write_job(tmp_path / "bad.toml", f'name = "bad"\n[source]\nuri = "{src}"\n[[step]]\nop = "dedupe"\ncolumns = ["user"]\nkeep = "max"\n[sink]\nuri = "{tmp_path / "out"}"\n')
    proc = weir("run", job, check=2)
    assert "step 1 (dedupe)" in proc.stderr and "order_by" in proc.stderr, proc.stderr
