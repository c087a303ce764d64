"""Cleaning steps with `output = "{col}…"` keep the raw columns and add their results
beside them, equal to scikit-learn's SimpleImputer, StandardScaler, MinMaxScaler and
NumPy's clip on the same rows, at one worker and at two processes of two workers; the
parameters saved for the result columns are reused by a later run."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

from conftest import read_output, write_job
from helpers import SHAPES_1_AND_2X2, shape_id

STEPS = """
[[step]]
op = "cast"
columns = { amount_text = "float64" }
on_error = "null"
output = "{col}_num"

[[step]]
op = "impute"
columns = ["x", "y"]
strategy = "mean"
output = "{col}_filled"

[[step]]
op = "standardize"
columns = ["x_filled"]
output = "{col}_z"

[[step]]
op = "minmax"
columns = ["y_filled"]
output = "{col}_01"

[[step]]
op = "clip"
columns = ["x"]
lower = -1.0
upper = 1.0
output = "{col}_clipped"
"""


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    rng = np.random.default_rng(11)
    src = tmp_path_factory.mktemp("raw") / "src"
    src.mkdir()
    tables = []
    for index, rows in enumerate([1_500, 900, 1_100]):
        text = np.char.mod("%.3f", rng.normal(100, 20, rows)).astype(object)
        text[rng.random(rows) < 0.05] = "n/a"
        table = pa.table(
            {
                "id": pa.array(np.arange(rows) + index * 10_000, pa.int64()),
                "x": pa.array(rng.normal(0, 2, rows), mask=rng.random(rows) < 0.1),
                # NaN as well as nulls: both are missing to the fits, as to scikit-learn.
                "y": pa.array(np.where(rng.random(rows) < 0.03, np.nan, rng.normal(50, 5, rows)), mask=rng.random(rows) < 0.1),
                "amount_text": pa.array(text, pa.string()),
            }
        )
        pq.write_table(table, src / f"part-{index}.parquet", row_group_size=400)
        tables.append(table)
    return src, pa.concat_tables(tables)


def assert_same(got, want):
    """Equal columns, NaN equal to NaN (pyarrow's `equals` says NaN != NaN), nulls where
    they were."""
    assert got.null_count == want.null_count
    np.testing.assert_array_equal(got.to_numpy(zero_copy_only=False), want.to_numpy(zero_copy_only=False))


def run(weir, tmp_path, src, shape, fitted=""):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "raw"\n{fitted}\n[source]\nuri = "{src}"\n{STEPS}\n[sink]\nuri = "{out}"\nmode = "overwrite"\n')
    weir("run", job, *shape, check=0)
    return out, read_output(out).sort_by("id")


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_results_sit_beside_the_raw_columns_and_equal_scikit_learn(weir, tmp_path, raw, shape):
    src, table = raw
    out, got = run(weir, tmp_path, src, shape)
    table = table.sort_by("id")
    expected_names = ["id", "x", "y", "amount_text", "amount_text_num", "x_filled", "y_filled", "x_filled_z", "y_filled_01", "x_clipped"]
    assert got.column_names == expected_names
    for raw_column in ["x", "y", "amount_text"]:
        assert_same(got.column(raw_column), table.column(raw_column))
    amounts = [None if v == "n/a" else float(v) for v in table.column("amount_text").to_pylist()]
    assert got.column("amount_text_num").to_pylist() == amounts
    xy = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in ["x", "y"]]).astype(float)
    filled = SimpleImputer(strategy="mean").fit_transform(xy)
    np.testing.assert_allclose(got.column("x_filled").to_numpy(), filled[:, 0], rtol=1e-12)
    np.testing.assert_allclose(got.column("y_filled").to_numpy(), filled[:, 1], rtol=1e-12)
    np.testing.assert_allclose(got.column("x_filled_z").to_numpy(), StandardScaler().fit_transform(filled[:, [0]])[:, 0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.column("y_filled_01").to_numpy(), MinMaxScaler().fit_transform(filled[:, [1]])[:, 0], rtol=1e-9, atol=1e-12)
    x = table.column("x").to_numpy(zero_copy_only=False).astype(float)
    clipped = got.column("x_clipped").to_numpy(zero_copy_only=False).astype(float)
    np.testing.assert_array_equal(np.isnan(clipped), np.isnan(x))
    np.testing.assert_allclose(clipped[~np.isnan(x)], np.clip(x[~np.isnan(x)], -1, 1))
    # fitted.json keys the parameters by the result columns.
    fitted = json.loads((out / "_weir" / "fitted.json").read_text())
    assert [(s["op"], s["columns"]) for s in fitted["steps"]] == [("impute", ["x", "y"]), ("standardize", ["x_filled"]), ("minmax", ["y_filled"])]


def test_a_later_run_reuses_the_parameters_of_the_result_columns(weir, tmp_path, raw):
    src, _ = raw
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, trained = run(weir, tmp_path / "a", src, ["-w", "2"])
    _, reused = run(weir, tmp_path / "b", src, ["-w", "1"], fitted=f'fitted = "{first}"')
    assert reused.column_names == trained.column_names
    for column in trained.column_names:
        assert_same(reused.column(column), trained.column(column))


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_bucketize_equals_numpy_digitize(weir, tmp_path, raw, shape):
    src, table = raw
    boundaries = [-2.5, -1, 0, 0.5, 3]
    out = tmp_path / "out"
    text = (
        f'name = "buckets"\n[source]\nuri = "{src}"\n[[step]]\nop = "bucketize"\ncolumns = ["x", "y"]\n'
        f'boundaries = {boundaries}\noutput = "{{col}}_bucket"\n[sink]\nuri = "{out}"\n'
    )
    weir("run", write_job(tmp_path / "job.toml", text), *shape, check=0)
    got = read_output(out).sort_by("id")
    table = table.sort_by("id")
    for column in ["x", "y"]:
        values = table.column(column).to_numpy(zero_copy_only=False).astype(float)
        expected = np.where(np.isnan(values), np.nan, np.digitize(values, boundaries))
        np.testing.assert_array_equal(got.column(f"{column}_bucket").to_numpy(zero_copy_only=False), expected)
        assert_same(got.column(column), table.column(column))


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_maxabs_equals_scikit_learns_max_abs_scaler(weir, tmp_path, raw, shape):
    src, table = raw
    out = tmp_path / "out"
    text = f'name = "maxabs"\n[source]\nuri = "{src}"\n[[step]]\nop = "maxabs"\ncolumns = ["x", "y"]\n[sink]\nuri = "{out}"\n'
    weir("run", write_job(tmp_path / "job.toml", text), *shape, check=0)
    got = read_output(out).sort_by("id")
    table = table.sort_by("id")
    xy = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(float) for c in ["x", "y"]])
    # MaxAbsScaler ignores NaN in the fit and keeps it, as Weir keeps nulls.
    expected = MaxAbsScaler().fit_transform(xy)
    for i, column in enumerate(["x", "y"]):
        values = got.column(column).to_numpy(zero_copy_only=False).astype(float)
        np.testing.assert_allclose(values, expected[:, i], rtol=1e-15, equal_nan=True)
