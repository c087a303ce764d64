"""`robust_scale` against scikit-learn's RobustScaler, `normalize` against its Normalizer,
fitted `bucketize` against its KBinsDiscretizer and `power` against its PowerTransformer,
at one worker and at two processes of two workers. The data has more values than the
quantile sketch holds (so the exact quantiles take later passes across workers), nulls, NaN,
an integer column and a skewed column with a long tail; fitted parameters are reused on
other data."""

import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.preprocessing import KBinsDiscretizer, Normalizer, PowerTransformer, RobustScaler

from conftest import data_files, read_output, write_job
from helpers import SHAPES_1_AND_2X2, shape_id


def write(folder, seed, files=3, rows=7_000):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    tables = []
    for index in range(files):
        income = rng.lognormal(10, 1.5, rows)  # skewed: a long right tail
        income[rng.random(rows) < 0.02] = np.nan
        table = pa.table(
            {
                "id": pa.array(np.arange(rows) + index * 100_000, pa.int64()),
                "income": pa.array(income, pa.float64(), mask=rng.random(rows) < 0.05),
                "age": pa.array(rng.integers(18, 90, rows), pa.int32(), mask=rng.random(rows) < 0.05),
                "score": pa.array(rng.normal(0, 1, rows), pa.float64()),
                "a": pa.array(rng.normal(0, 3, rows), pa.float64()),
                "b": pa.array(rng.integers(-5, 6, rows).astype(np.float64), pa.float64()),
                "c": pa.array(rng.exponential(2, rows), pa.float64(), mask=rng.random(rows) < 0.03),
            }
        )
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=2_000)
        tables.append(table)
    return pa.concat_tables(tables).sort_by("id")


STEPS = """
[[step]]
op = "robust_scale"
columns = ["income", "age"]

[[step]]
op = "robust_scale"
columns = ["score"]
quantile_range = [10.0, 90.0]
with_centering = false
output = "{col}_r"
"""


def job(src, out, extra=""):
    return f'name = "scalers"\n{extra}\n[source]\nuri = "{src}"\n{STEPS}\n[sink]\nuri = "{out}"\nmode = "overwrite"\n'


def column(table, name):
    return np.array(table.column(name).to_pandas(), dtype=np.float64)  # nulls as NaN


def sklearn_robust(train, data):
    """Each step's RobustScaler fitted on `train` (NaN ignored, as nulls are), applied to `data`."""
    first = RobustScaler().fit(np.column_stack([column(train, "income"), column(train, "age")]))
    second = RobustScaler(quantile_range=(10.0, 90.0), with_centering=False).fit(column(train, "score")[:, None])
    scaled = first.transform(np.column_stack([column(data, "income"), column(data, "age")]))
    return {"income": scaled[:, 0], "age": scaled[:, 1], "score_r": second.transform(column(data, "score")[:, None])[:, 0]}


def assert_scaled(got, want, data):
    for name, values in want.items():
        np.testing.assert_allclose(column(got, name), values, rtol=1e-12, atol=1e-12, err_msg=name)
    # Nulls stay null (not NaN); the raw score is kept beside its scaled copy.
    assert got.column("income").null_count == data.column("income").null_count
    assert got.column("score").to_pylist() == data.column("score").to_pylist()
    assert got.schema.field("age").type == pa.float64()


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_robust_scale_equals_scikit_learn(weir, tmp_path, shape):
    data = write(tmp_path / "src", 11)
    out = tmp_path / "out"
    weir("run", write_job(tmp_path / "job.toml", job(tmp_path / "src", out)), *shape, check=0)
    got = read_output(out).sort_by("id")
    assert_scaled(got, sklearn_robust(data, data), data)
    fitted = json.loads((out / "_weir" / "fitted.json").read_text())
    income = fitted["steps"][0]["params"]["columns"]["income"]
    assert income["exact"] is True and income["count"] == int(np.sum(~np.isnan(column(data, "income"))))

    # The same parameters on other data: scikit-learn's transform with the first fit.
    other = write(tmp_path / "other", 12, files=1, rows=3_000)
    again = tmp_path / "again"
    weir("run", write_job(tmp_path / "reuse.toml", job(tmp_path / "other", again, f'fitted = "{out}"')), *shape, check=0)
    assert_scaled(read_output(again).sort_by("id"), sklearn_robust(data, other), other)


def test_robust_scale_refuses_infinity_and_bad_ranges(weir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"x": [1.0, np.inf, 2.0]}), src / "a.parquet")
    step = '[[step]]\nop = "robust_scale"\ncolumns = ["x"]\n'
    text = f'name = "r"\n[source]\nuri = "{src}"\n{step}[sink]\nuri = "{tmp_path / "out"}"\n'
    proc = weir("run", write_job(tmp_path / "inf.toml", text), check=2)
    assert "column 'x' holds an infinite value" in proc.stderr and "step 1 (robust_scale)" in proc.stderr
    out = tmp_path / "out"
    assert not (out / "_SUCCESS").exists() and (not out.exists() or data_files(out) == [])
    bad = text.replace('columns = ["x"]\n', 'columns = ["x"]\nquantile_range = [75.0, 25.0]\n')
    proc = weir("validate", write_job(tmp_path / "bad.toml", bad), check=2)
    assert "quantile_range = [75, 25]" in proc.stderr


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_normalize_equals_scikit_learn(weir, tmp_path, shape):
    data = write(tmp_path / "src", 13, rows=2_000)
    steps = "".join(
        f'[[step]]\nop = "derive"\ncolumns = {{ {n}_a = "a", {n}_b = "b", {n}_c = "c" }}\n'
        f'[[step]]\nop = "normalize"\ncolumns = ["{n}_*"]\nnorm = "{n}"\n'
        for n in ["l1", "l2", "max"]
    )
    text = f'name = "n"\n[source]\nuri = "{tmp_path / "src"}"\n{steps}[sink]\nuri = "{tmp_path / "out"}"\n'
    weir("run", write_job(tmp_path / "job.toml", text), *shape, check=0)
    got = read_output(tmp_path / "out").sort_by("id")
    matrix = np.column_stack([column(data, name) for name in "abc"])
    missing = np.isnan(matrix).any(axis=1)  # only c has nulls here
    for norm in ["l1", "l2", "max"]:
        want = Normalizer(norm=norm).fit_transform(matrix[~missing])
        mine = np.column_stack([column(got, f"{norm}_{name}") for name in "abc"])
        np.testing.assert_allclose(mine[~missing], want, rtol=1e-12, atol=1e-15, err_msg=norm)
        # A row with a null in any of the columns has nulls in all of them.
        assert all(got.column(f"{norm}_{name}").null_count == int(missing.sum()) for name in "abc")


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_fitted_buckets_equal_kbins_discretizer(weir, tmp_path, shape):
    """`bucketize` with `n_bins` against KBinsDiscretizer(encode="ordinal"): `quantile` on a
    skewed column (exact quantiles past the sketch) and on one of three distinct values (its
    edges closer than 1e-8 dropped, so it gets fewer buckets), `uniform` on an integer column."""
    data = write(tmp_path / "src", 17)
    steps = (
        '[[step]]\nop = "derive"\ncolumns = { few = "cast(b > 0 as double) + cast(b > 3 as double)" }\n'
        '[[step]]\nop = "bucketize"\ncolumns = ["income", "few"]\nn_bins = 7\nstrategy = "quantile"\n'
        '[[step]]\nop = "bucketize"\ncolumns = ["age"]\nn_bins = 4\nstrategy = "uniform"\noutput = "{col}_bin"\n'
    )
    text = f'name = "k"\n[source]\nuri = "{tmp_path / "src"}"\n{steps}[sink]\nuri = "{tmp_path / "out"}"\n'
    weir("run", write_job(tmp_path / "job.toml", text), *shape, check=0)
    got = read_output(tmp_path / "out").sort_by("id")
    b = column(data, "b")
    few = (b > 0).astype(float) + (b > 3).astype(float)  # three values, skewed: repeated quantiles
    for name, strategy, bins in [("income", "quantile", 7), ("few", "quantile", 7), ("age_bin", "uniform", 4)]:
        values = few if name == "few" else column(data, name.removesuffix("_bin"))
        present = ~np.isnan(values)
        options = {"quantile_method": "linear"} if strategy == "quantile" else {}
        kbins = KBinsDiscretizer(n_bins=bins, encode="ordinal", strategy=strategy, subsample=None, **options)
        want = np.full(len(values), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "bins whose width are too small" for b
            want[present] = kbins.fit(values[present][:, None]).transform(values[present][:, None])[:, 0]
        np.testing.assert_array_equal(column(got, name), want, err_msg=name)
    assert len(np.unique(column(got, "few"))) < 7  # few's repeated edges were dropped


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_one_hot_buckets_equal_kbins_discretizer_and_later_steps_bind_to_them(weir, tmp_path, shape):
    """`encode = "onehot"` against KBinsDiscretizer(encode="onehot-dense"): a fitted quantile
    column whose repeated edges leave fewer buckets than asked (so the columns are known only
    once it is fitted, and the `select` after it is bound then), and fixed boundaries; the
    names are scikit-learn's (`few_0.0`, …); a null is 0.0 in every bucket column."""
    data = write(tmp_path / "src", 23)
    steps = (
        '[[step]]\nop = "derive"\ncolumns = { few = "cast(b > 0 as double) + cast(b > 3 as double)" }\n'
        '[[step]]\nop = "bucketize"\ncolumns = ["few", "income"]\nn_bins = 5\nencode = "onehot"\n'
        '[[step]]\nop = "bucketize"\ncolumns = ["age"]\nboundaries = [30, 60]\nencode = "onehot"\n'
        '[[step]]\nop = "select"\ncolumns = ["id", "few_*", "income_*", "age_*"]\n'
    )
    text = f'name = "k"\n[source]\nuri = "{tmp_path / "src"}"\n{steps}[sink]\nuri = "{tmp_path / "out"}"\n'
    weir("run", write_job(tmp_path / "job.toml", text), *shape, check=0)
    got = read_output(tmp_path / "out").sort_by("id")
    b = column(data, "b")
    names = ["id"]
    for name, values in [("few", (b > 0).astype(float) + (b > 3).astype(float)), ("income", column(data, "income"))]:
        present = ~np.isnan(values)
        kbins = KBinsDiscretizer(n_bins=5, encode="onehot-dense", strategy="quantile", subsample=None, quantile_method="linear")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "bins whose width are too small" for few
            kbins.fit(values[present][:, None])
        columns = list(kbins.get_feature_names_out([name]))
        want = np.zeros((len(values), len(columns)))
        want[present] = kbins.transform(values[present][:, None])
        np.testing.assert_array_equal(np.column_stack([got.column(c).to_numpy() for c in columns]), want, err_msg=name)
        names += columns
    assert len([n for n in names if n.startswith("few_")]) < 5  # its repeated edges were dropped
    age = column(data, "age")
    for bucket, (low, high) in enumerate([(-np.inf, 30), (30, 60), (60, np.inf)]):
        want = ((age >= low) & (age < high)).astype(float)  # NaN (a null) compares false: 0.0
        np.testing.assert_array_equal(got.column(f"age_{bucket}.0").to_numpy(), want)
        names.append(f"age_{bucket}.0")
    assert got.column_names == names


POWER_STEPS = """
[[step]]
op = "power"
columns = ["income", "age", "a"]

[[step]]
op = "power"
columns = ["c"]
standardize = false
output = "{col}_p"
"""


def power_job(src, out, extra=""):
    return f'name = "power"\n{extra}\n[source]\nuri = "{src}"\n{POWER_STEPS}\n[sink]\nuri = "{out}"\nmode = "overwrite"\n'


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_power_equals_scikit_learn(weir, tmp_path, shape):
    """λ within 1e-4 of PowerTransformer's (SciPy's maximum-likelihood search), the output
    within 1e-6, on a skewed column with nulls and NaN, an integer column, a column with
    negative values, and an unstandardized one kept beside its raw values; then the fitted
    parameters on other data."""
    data = write(tmp_path / "src", 17)
    out = tmp_path / "out"
    weir("run", write_job(tmp_path / "job.toml", power_job(tmp_path / "src", out)), *shape, check=0)
    got = read_output(out).sort_by("id")
    first = PowerTransformer(method="yeo-johnson", standardize=True).fit(
        np.column_stack([column(data, name) for name in ("income", "age", "a")])
    )
    second = PowerTransformer(method="yeo-johnson", standardize=False).fit(column(data, "c")[:, None])
    fitted = json.loads((out / "_weir" / "fitted.json").read_text())
    lambdas = [fitted["steps"][0]["params"]["columns"][name]["lambda"] for name in ("income", "age", "a")]
    np.testing.assert_allclose(lambdas, first.lambdas_, rtol=0, atol=1e-4)
    np.testing.assert_allclose(fitted["steps"][1]["params"]["columns"]["c_p"]["lambda"], second.lambdas_[0], rtol=0, atol=1e-4)

    def assert_transformed(got, data):
        want = first.transform(np.column_stack([column(data, name) for name in ("income", "age", "a")]))
        for index, name in enumerate(("income", "age", "a")):
            np.testing.assert_allclose(column(got, name), want[:, index], rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(column(got, "c_p"), second.transform(column(data, "c")[:, None])[:, 0], rtol=1e-6, atol=1e-6)
        assert got.column("income").null_count == data.column("income").null_count
        assert got.column("c").to_pylist() == data.column("c").to_pylist()
        assert got.schema.field("age").type == pa.float64()

    assert_transformed(got, data)
    other = write(tmp_path / "other", 18, files=1, rows=3_000)
    again = tmp_path / "again"
    weir("run", write_job(tmp_path / "reuse.toml", power_job(tmp_path / "other", again, f'fitted = "{out}"')), *shape, check=0)
    assert_transformed(read_output(again).sort_by("id"), other)


def test_a_column_with_one_present_value_scales_as_scikit_learn(weir, tmp_path):
    """Exact quantiles of a column holding one value (the rest null) at 2 workers: planning
    the quantile search once divided 0 by 0 and panicked (found by the job fuzz target)."""
    src = tmp_path / "src"
    src.mkdir()
    table = pa.table({"x": pa.array([None, 2.0, None, None], pa.float64())})
    pq.write_table(table, src / "a.parquet", row_group_size=2)
    text = f'name = "one"\n[source]\nuri = "{src}"\n[[step]]\nop = "robust_scale"\ncolumns = ["x"]\n[sink]\nuri = "{tmp_path / "out"}"\n'
    weir("run", write_job(tmp_path / "job.toml", text), "-w", "2", check=0)
    want = RobustScaler().fit_transform(column(table, "x")[:, None])[:, 0]
    np.testing.assert_array_equal(column(read_output(tmp_path / "out"), "x"), want)
