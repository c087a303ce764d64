"""`hash_encode` against scikit-learn's FeatureHasher(input_type="dict") on the same rows (each
row the dictionary of its non-null values), at one worker and at two processes of two
workers: strings with accents and empty ones, integers with nulls, floats with NaN,
booleans; with and without alternate signs."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.feature_extraction import FeatureHasher

from conftest import read_output, write_job
from helpers import SHAPES_1_AND_2X2, shape_id

CITIES = ["Zürich", "Berlin", "berlin", "", "São Paulo", "東京"]
COLUMNS = ["city", "device", "clicks", "spend", "member"]


def write(folder, seed, files=3, rows=600):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    tables = []
    for index in range(files):
        spend = rng.normal(10, 5, rows)
        spend[rng.random(rows) < 0.03] = np.nan
        table = pa.table(
            {
                "id": pa.array(np.arange(rows) + index * 10_000, pa.int64()),
                "city": pa.array(rng.choice(CITIES, rows), pa.string(), mask=rng.random(rows) < 0.05),
                "device": pa.array(rng.choice(["ios", "android", "web"], rows), pa.string()),
                "clicks": pa.array(rng.integers(0, 20, rows), pa.int32(), mask=rng.random(rows) < 0.1),
                "spend": pa.array(spend, pa.float64(), mask=rng.random(rows) < 0.05),
                "member": pa.array(rng.random(rows) < 0.5, pa.bool_()),
            }
        )
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=200)
        tables.append(table)
    return pa.concat_tables(tables).sort_by("id")


def sklearn_hashed(table, n_features, alternate_sign):
    rows = [{name: value for name, value in row.items() if name != "id" and value is not None} for row in table.to_pylist()]
    hasher = FeatureHasher(n_features=n_features, input_type="dict", alternate_sign=alternate_sign)
    return hasher.transform(rows).toarray()


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_hash_encode_equals_feature_hasher(weir, tmp_path, shape):
    data = write(tmp_path / "src", 5)
    steps = (
        '[[step]]\nop = "hash_encode"\ncolumns = ["city", "device", "clicks", "spend", "member"]\n'
        'n_features = 32\nkeep_inputs = true\n'
        '[[step]]\nop = "hash_encode"\ncolumns = ["city", "device", "clicks", "spend", "member"]\n'
        'n_features = 7\nalternate_sign = false\noutput = "unsigned"\n'
    )
    text = f'name = "h"\n[source]\nuri = "{tmp_path / "src"}"\n{steps}[sink]\nuri = "{tmp_path / "out"}"\n'
    weir("run", write_job(tmp_path / "job.toml", text), *shape, check=0)
    got = read_output(tmp_path / "out").sort_by("id")
    # The second step drops its inputs (the first kept them): what is left is the id and both hashes.
    assert got.column_names == ["id"] + [f"hash_{i}" for i in range(32)] + [f"unsigned_{i}" for i in range(7)]
    for prefix, n, signed in [("hash", 32, True), ("unsigned", 7, False)]:
        mine = np.column_stack([got.column(f"{prefix}_{i}").to_numpy() for i in range(n)])
        want = sklearn_hashed(data, n, signed)
        assert np.isnan(want).any(), "the data holds a NaN spend, added as NaN"
        np.testing.assert_allclose(mine, want, rtol=1e-12, atol=0, equal_nan=True, err_msg=prefix)


def test_hash_encode_refuses_what_it_cannot_hash(weir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"tags": pa.array([[1, 2], [3]]), "x": [1.0, 2.0]}), src / "a.parquet")
    step = '[[step]]\nop = "hash_encode"\ncolumns = ["tags"]\nn_features = 4\n'
    text = f'name = "h"\n[source]\nuri = "{src}"\n{step}[sink]\nuri = "{tmp_path / "out"}"\n'
    proc = weir("validate", write_job(tmp_path / "job.toml", text), check=2)
    assert "column 'tags'" in proc.stderr and "step 1 (hash_encode)" in proc.stderr
    proc = weir("validate", write_job(tmp_path / "zero.toml", text.replace("n_features = 4", "n_features = 0")), check=2)
    assert "n_features must be within 1 and 1024" in proc.stderr
