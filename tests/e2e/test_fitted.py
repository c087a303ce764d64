"""Fitted steps (impute, standardize, minmax, clip) against scikit-learn and NumPy.

The data are scikit-learn's own datasets (breast cancer, wine) with nulls injected by a
seeded RNG, spread over several files and row groups so that every worker folds a
different part. Parameters are read from ``_weir/fitted.json`` and outputs with pyarrow;
the references are scikit-learn's ``SimpleImputer``, ``StandardScaler`` and
``MinMaxScaler``, NumPy's ``quantile`` and Python's exact ``statistics.pvariance``.
"""

import json
import statistics

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from conftest import read_output, write_dataset, write_job
from helpers import SHAPES_1_AND_2X2, as_matrix, fitted_column_params, fitted_steps, shape_id

RTOL = 1e-9


def frame_with_nulls(data: np.ndarray, names, seed: int, share: float = 0.08) -> pa.Table:
    """`data` as a table with an `id` column and a seeded share of nulls in every feature."""
    rng = np.random.default_rng(seed)
    columns = {"id": pa.array(np.arange(len(data), dtype=np.int64))}
    for j, name in enumerate(names):
        columns[name] = pa.array(data[:, j], mask=rng.random(len(data)) < share)
    return pa.table(columns)


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    return frame_with_nulls(data.data, names, seed=7), names


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_impute_then_standardize_matches_scikit_learn(weir, tmp_path, cancer, shape):
    table, names = cancer
    src = write_dataset(table, tmp_path / "src")
    medians, means = names[:15], names[15:]
    out = tmp_path / "out"
    job = write_job(
        tmp_path / "job.toml",
        f"""
name = "cancer"
[source]
uri = "{src}"
[[step]]
op = "impute"
columns = {json.dumps(medians)}
strategy = "median"
[[step]]
op = "impute"
columns = {json.dumps(means)}
[[step]]
op = "standardize"
columns = {json.dumps(names)}
[sink]
uri = "{out}"
""",
    )
    weir("run", job, *shape, check=0)

    raw = as_matrix(table, names)
    median_imputer = SimpleImputer(strategy="median").fit(raw[:, :15])
    mean_imputer = SimpleImputer(strategy="mean").fit(raw[:, 15:])
    imputed = np.hstack([median_imputer.transform(raw[:, :15]), mean_imputer.transform(raw[:, 15:])])
    scaler = StandardScaler().fit(imputed)

    fill_median, fill_mean, scale = fitted_column_params(out, 1), fitted_column_params(out, 2), fitted_column_params(out, 3)
    np.testing.assert_allclose([fill_median[n]["value"] for n in medians], median_imputer.statistics_, rtol=RTOL)
    assert all(fill_median[n]["exact"] for n in medians)
    np.testing.assert_allclose([fill_mean[n]["value"] for n in means], mean_imputer.statistics_, rtol=RTOL)
    np.testing.assert_allclose([scale[n]["mean"] for n in names], scaler.mean_, rtol=RTOL)
    np.testing.assert_allclose([scale[n]["var"] for n in names], scaler.var_, rtol=RTOL)
    np.testing.assert_allclose([scale[n]["scale"] for n in names], scaler.scale_, rtol=RTOL)

    result = read_output(out)
    assert result.num_rows == table.num_rows
    np.testing.assert_allclose(as_matrix(result, names), scaler.transform(imputed), rtol=RTOL, atol=1e-12)
    # The two imputes touch different columns, so they were fitted in one pass.
    assert [s["step"] for s in fitted_steps(out)] == [1, 2, 3]


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_minmax_clip_and_most_frequent_on_wine(weir, tmp_path, shape):
    data = load_wine()
    names = [n.replace("/", "_") for n in data.feature_names]
    table = frame_with_nulls(data.data, names, seed=11)
    # An integer column with nulls: most_frequent keeps it integer.
    rng = np.random.default_rng(3)
    table = table.append_column("grade", pa.array(rng.integers(0, 4, table.num_rows), type=pa.int32(), mask=rng.random(table.num_rows) < 0.2))
    src = write_dataset(table, tmp_path / "src", row_group=20)
    clipped, scaled = names[:6], names[6:]
    out = tmp_path / "out"
    job = write_job(
        tmp_path / "job.toml",
        f"""
name = "wine"
[source]
uri = "{src}"
[[step]]
op = "impute"
columns = ["grade"]
strategy = "most_frequent"
[[step]]
op = "clip"
columns = {json.dumps(clipped)}
quantiles = [0.05, 0.95]
[[step]]
op = "minmax"
columns = {json.dumps(scaled)}
range = [-1.0, 1.0]
[sink]
uri = "{out}"
""",
    )
    weir("run", job, *shape, check=0)
    result = read_output(out).sort_by("id")
    assert result.schema.field("grade").type == pa.int32()

    grade = table.column("grade").to_numpy(zero_copy_only=False).astype(float).reshape(-1, 1)
    mode = SimpleImputer(strategy="most_frequent").fit(grade)
    assert fitted_column_params(out, 1)["grade"]["value"] == mode.statistics_[0]
    np.testing.assert_array_equal(result.column("grade").to_numpy(), mode.transform(grade)[:, 0])

    raw = as_matrix(table, names)
    bounds = fitted_column_params(out, 2)
    for j, name in enumerate(clipped):
        column = raw[:, j]
        lo, hi = np.quantile(column[~np.isnan(column)], [0.05, 0.95])
        np.testing.assert_allclose([bounds[name]["lower"], bounds[name]["upper"]], [lo, hi], rtol=RTOL)
        expected = np.clip(column, lo, hi)  # NaN stays NaN
        got = result.column(name).to_numpy(zero_copy_only=False).astype(float)
        np.testing.assert_allclose(got, expected, rtol=RTOL)

    scaler = MinMaxScaler(feature_range=(-1, 1)).fit(raw[:, 6:])
    got = as_matrix(result, scaled)
    np.testing.assert_allclose(got, scaler.transform(raw[:, 6:]), rtol=RTOL, atol=1e-12)
    ranges = fitted_column_params(out, 3)
    np.testing.assert_allclose([ranges[n]["data_min"] for n in scaled], scaler.data_min_, rtol=0)
    np.testing.assert_allclose([ranges[n]["scale"] for n in scaled], scaler.scale_, rtol=RTOL)


def test_reuse_applies_parameters_fitted_on_another_dataset(weir, tmp_path, cancer):
    table, names = cancer
    train, test = table.slice(0, 400), table.slice(400)
    train_src, test_src = write_dataset(train, tmp_path / "train"), write_dataset(test, tmp_path / "test")
    steps = f"""
[[step]]
op = "impute"
columns = {json.dumps(names)}
strategy = "median"
FITTED
[[step]]
op = "standardize"
columns = {json.dumps(names)}
FITTED
"""
    fit_out, apply_out = tmp_path / "fit", tmp_path / "apply"
    fit_job = write_job(tmp_path / "fit.toml", f'name = "fit"\n[source]\nuri = "{train_src}"\n{steps.replace("FITTED", "")}[sink]\nuri = "{fit_out}"\n')
    weir("run", fit_job, "-w", "2", check=0)
    uri = fit_out / "_weir" / "fitted.json"
    apply_job = write_job(
        tmp_path / "apply.toml",
        f'name = "apply"\n[source]\nuri = "{test_src}"\n{steps.replace("FITTED", f"fitted = {json.dumps(str(uri))}")}[sink]\nuri = "{apply_out}"\n',
    )
    weir("run", apply_job, "-w", "2", check=0)

    imputer = SimpleImputer(strategy="median").fit(as_matrix(train, names))
    scaler = StandardScaler().fit(imputer.transform(as_matrix(train, names)))
    expected = scaler.transform(imputer.transform(as_matrix(test, names)))
    np.testing.assert_allclose(as_matrix(read_output(apply_out), names), expected, rtol=RTOL, atol=1e-12)
    # The applying run records what it reused.
    reused = fitted_steps(apply_out)
    assert [s["reused_from"] for s in reused] == [str(uri), str(uri)]

    # A standardize over other columns has no entry to reuse: exit 2, naming the step.
    bad = write_job(tmp_path / "bad.toml", apply_job.read_text().replace(f"columns = {json.dumps(names)}\nfitted", f"columns = {json.dumps(names[:3])}\nfitted", 1).replace(str(apply_out), str(tmp_path / "bad")))
    proc = weir("run", bad, check=2)
    assert "step 2 (standardize)" in proc.stderr and "no standardize step over columns" in proc.stderr, proc.stderr
    assert not (tmp_path / "bad" / "_SUCCESS").exists()

    # Another strategy than the one fitted: exit 2, saying both.
    other = write_job(tmp_path / "other.toml", apply_job.read_text().replace('strategy = "median"', 'strategy = "mean"').replace(str(apply_out), str(tmp_path / "other")))
    proc = weir("run", other, check=2)
    assert "step 1 (impute)" in proc.stderr and "strategy median" in proc.stderr and "asks for mean" in proc.stderr, proc.stderr


def run_single_column(weir, tmp_path, values, step: str, name="x", check=0):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({name: pa.array(values, type=pa.float64())}), src / "data.parquet", row_group_size=3)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "edge"\n[source]\nuri = "{src}"\n{step}\n[sink]\nuri = "{out}"\n')
    proc = weir("run", job, "-w", "2", check=check)
    return proc, out


def test_huge_offsets_keep_the_variance_exact(weir, tmp_path):
    rng = np.random.default_rng(5)
    values = 1e12 + rng.random(5_000)
    _, out = run_single_column(weir, tmp_path, values, '[[step]]\nop = "standardize"\ncolumns = ["x"]')
    var = fitted_column_params(out, 1)["x"]["var"]
    exact = statistics.pvariance(values.tolist())  # exact rational arithmetic, then rounded
    assert abs(var - exact) <= 1e-9 * exact, (var, exact)
    naive = np.mean(values**2) - np.mean(values) ** 2
    assert abs(naive - exact) > 1e-3 * exact  # the naive formula would not have passed


def test_constant_column_scales_by_one(weir, tmp_path):
    _, out = run_single_column(weir, tmp_path, [3.5] * 7 + [None], '[[step]]\nop = "standardize"\ncolumns = ["x"]')
    assert fitted_column_params(out, 1)["x"]["scale"] == 1.0
    got = read_output(out).column("x").to_pylist()  # part files in worker order
    assert sorted(got, key=lambda v: v is None) == [0.0] * 7 + [None]


def test_single_row(weir, tmp_path):
    _, out = run_single_column(weir, tmp_path, [42.0], '[[step]]\nop = "minmax"\ncolumns = ["x"]')
    expected = MinMaxScaler().fit_transform(np.array([[42.0]]))[0, 0]
    assert read_output(out).column("x").to_pylist() == [expected]


@pytest.mark.parametrize(
    "values, step, message",
    [
        ([None, None, float("nan")], '[[step]]\nop = "impute"\ncolumns = ["x"]', "no non-missing value"),
        ([1.0, float("inf"), 2.0], '[[step]]\nop = "standardize"\ncolumns = ["x"]', "infinite"),
        ([1.0, float("-inf")], '[[step]]\nop = "minmax"\ncolumns = ["x"]', "infinite"),
    ],
    ids=["all-missing", "inf-standardize", "inf-minmax"],
)
def test_unfittable_columns_fail_naming_step_and_column(weir, tmp_path, values, step, message):
    proc, out = run_single_column(weir, tmp_path, values, step, check=2)
    assert "step 1" in proc.stderr and "column 'x'" in proc.stderr and message in proc.stderr, proc.stderr
    assert not (out / "_SUCCESS").exists()


def test_clip_holds_infinities_within_fitted_bounds(weir, tmp_path):
    values = [float("-inf"), *range(20), float("inf"), None]
    _, out = run_single_column(weir, tmp_path, values, '[[step]]\nop = "clip"\ncolumns = ["x"]\nquantiles = [0.1, 0.9]')
    present = np.array([v for v in values if v is not None])
    lo, hi = np.quantile(present, [0.1, 0.9])
    got = read_output(out).column("x").to_pylist()  # part files in worker order
    expected = sorted(np.clip(present, lo, hi).tolist()) + [None]
    assert sorted(got, key=lambda v: (v is None, v if v is not None else 0)) == expected


def test_median_of_a_large_column_is_within_the_sketch_rank_bound(weir, tmp_path):
    """Beyond 8192 values the median comes from merged KLL sketches: its rank must be
    within 0.001 × n of the middle, whichever workers folded which rows."""
    rng = np.random.default_rng(17)
    values = rng.lognormal(3.0, 1.2, 300_000)
    src = tmp_path / "src"
    src.mkdir()
    for index, piece in enumerate(np.array_split(values, 3)):
        pq.write_table(pa.table({"x": piece}), src / f"part-{index}.parquet", row_group_size=20_000)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "big"\n[source]\nuri = "{src}"\n[[step]]\nop = "impute"\ncolumns = ["x"]\nstrategy = "median"\n[sink]\nuri = "{out}"\n')
    weir("run", job, "-p", "2", "-w", "2", check=0)
    entry = fitted_column_params(out, 1)["x"]
    assert entry["exact"] is False and entry["count"] == len(values)
    ordered = np.sort(values)
    lo, hi = np.searchsorted(ordered, entry["value"], "left"), np.searchsorted(ordered, entry["value"], "right")
    middle = (len(values) - 1) / 2
    rank_error = max(0.0, lo - middle, middle - hi) / len(values)
    assert rank_error <= 0.001, rank_error


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_exact_median_and_quantiles_equal_numpy_at_every_shape(weir, tmp_path, shape):
    """`exact = true`: beyond the sketch's 8192 values, the median and the clip bounds are
    found by selection over more passes, equal to numpy.median / numpy.quantile exactly,
    whatever the split among workers (nulls, NaN and many ties included)."""
    rng = np.random.default_rng(23)
    n = 120_001
    x = np.round(rng.lognormal(3.0, 1.2, n), 2)  # rounding makes ties
    x[rng.random(n) < 0.02] = np.nan
    y = rng.normal(0, 1, n)
    mask = rng.random(n) < 0.03
    src = tmp_path / "src"
    src.mkdir()
    table = pa.table({"id": np.arange(n), "x": x, "y": pa.array(y, mask=mask)})
    for index, piece in enumerate(np.array_split(np.arange(n), 4)):
        pq.write_table(table.take(piece), src / f"part-{index}.parquet", row_group_size=9_000)
    out = tmp_path / "out"
    steps = (
        '[[step]]\nop = "impute"\ncolumns = ["x", "y"]\nstrategy = "median"\nexact = true\n'
        '[[step]]\nop = "clip"\ncolumns = ["x", "y"]\nquantiles = [0.013, 0.987]\nexact = true\n'
    )
    job = write_job(tmp_path / "job.toml", f'name = "exact"\n[source]\nuri = "{src}"\n{steps}[sink]\nuri = "{out}"\n')
    weir("run", job, *shape, check=0)
    fills, bounds = fitted_column_params(out, 1), fitted_column_params(out, 2)
    present = {"x": x[~np.isnan(x)], "y": y[~mask]}
    for name, values in present.items():
        assert fills[name]["exact"] is True and fills[name]["count"] == len(values)
        assert fills[name]["value"] == float(np.median(values)), name
        imputed = np.where(np.isnan(x), np.median(values), x) if name == "x" else np.where(mask, np.median(values), y)
        lo, hi = np.quantile(imputed, [0.013, 0.987])
        assert bounds[name]["exact"] is True
        assert (bounds[name]["lower"], bounds[name]["upper"]) == (float(lo), float(hi)), name
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    assert manifest["passes"] >= 4, "each exact step took at least one pass more than its sketch"


@pytest.mark.parametrize(
    "step, message",
    [
        ('op = "impute"\ncolumns = ["x"]\nstrategy = "mean"\nexact = true', '`exact` is for strategy = "median"'),
        ('op = "clip"\ncolumns = ["x"]\nlower = 0.0\nexact = true', "`exact` is for fitted `quantiles`"),
    ],
)
def test_exact_where_it_means_nothing_is_refused(weir, tmp_path, step, message):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"x": [1.0, 2.0]}), src / "a.parquet")
    job = write_job(tmp_path / "job.toml", f'name = "e"\n[source]\nuri = "{src}"\n[[step]]\n{step}\n[sink]\nuri = "{tmp_path / "out"}"\n')
    proc = weir("validate", job, check=2)
    assert "step 1" in proc.stderr and message in proc.stderr, proc.stderr
