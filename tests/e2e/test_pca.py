"""`pca` against scikit-learn's ``PCA(svd_solver="full")``.

The data are scikit-learn's digits (64 pixel columns, three of them constant zero, so the
covariance is rank-deficient) and a seeded Gaussian sample with a known covariance, spread
over several files and row groups so that every worker folds a different part. Parameters
come from ``_weir/fitted.json``, outputs are read with pyarrow.

What is compared, and why: Weir eigendecomposes the covariance, scikit-learn takes the SVD
of the centred data. Both are exact up to rounding, but an eigenvector is only determined
up to an error of about ``eps * largest variance / gap to its neighbours``, and a component
with zero variance (rank deficiency) is any vector of the null space. So components,
variances and projections are compared (1e-6 relative, plus an absolute tolerance of 1e-6
of each quantity's own scale for entries near zero) only for components whose variance is
above 1e-9 of the largest and differs from its neighbours' by more than 0.1 %; the others
must only be finite. The maximum relative errors seen are printed (``pytest -s``).
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import read_output, write_dataset, write_job
from helpers import SHAPES_1_AND_2X2, as_matrix, fitted_step_params, fitted_steps, shape_id

RTOL = 1e-6


def frame(data: np.ndarray, names, dtype=None) -> pa.Table:
    columns = {"id": pa.array(np.arange(len(data), dtype=np.int64))}
    for j, name in enumerate(names):
        columns[name] = pa.array(data[:, j] if dtype is None else data[:, j].astype(dtype))
    return pa.table(columns)


def pca_step(columns, components, **options) -> str:
    lines = ['[[step]]', 'op = "pca"', f"columns = {json.dumps(columns)}", f"components = {components}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def run(weir, tmp_path: Path, src: Path, steps: str, shape, name="out", check=0):
    out = tmp_path / name
    job = write_job(
        tmp_path / f"{name}.toml",
        f'name = "pca"\n[source]\nuri = "{src}"\n{steps}[sink]\nuri = "{out}"\n',
    )
    proc = weir("run", job, *shape, check=check)
    return out, proc


def comparable(variance: np.ndarray, floor=1e-9, gap=1e-3) -> np.ndarray:
    """Indices of components determined well enough by rounding to compare (see above)."""
    variance = np.asarray(variance)
    neighbours = np.minimum(
        np.abs(np.diff(variance, prepend=np.inf)), np.abs(np.diff(variance, append=-np.inf))
    )
    return np.flatnonzero((variance > floor * variance[0]) & (neighbours > gap * variance))


def rel_err(got, want, scale) -> float:
    return float(np.max(np.abs(np.asarray(got) - want) / (np.abs(want) + scale)))


def assert_close(got, want, rtol, scale, what=""):
    """|got - want| <= rtol * (|want| + scale), where `scale` (broadcast per column) sets the
    absolute tolerance for entries near zero."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    bad = np.abs(got - want) > rtol * (np.abs(want) + scale)
    assert not bad.any(), f"{what}: {bad.sum()} of {bad.size} differ; worst relative error {rel_err(got, want, scale)}"


def check_pca(params: dict, result: pa.Table, reference: PCA, fitted_on: np.ndarray, output: str, label: str,
              transformed: np.ndarray = None, mean_atol: float = None) -> None:
    """Compares Weir's fitted parameters and projections with a fitted scikit-learn PCA
    (`mean_atol`: the absolute tolerance of the mean, by default 1e-12 of the data's spread)."""
    k = reference.n_components_
    assert params["n_components"] == k and len(params["components"]) == k
    components = np.array(params["components"])
    variance = np.array(params["explained_variance"])
    ratio = np.array(params["explained_variance_ratio"])
    assert np.all(np.isfinite(components)) and np.all(np.isfinite(variance)) and np.all(variance >= 0)
    spread = np.abs(reference.mean_).max() + fitted_on.std(axis=0).max()
    atol = 1e-12 * spread if mean_atol is None else mean_atol
    np.testing.assert_allclose(params["mean"], reference.mean_, rtol=1e-12, atol=atol)
    assert params["n_samples"] == len(fitted_on)

    idx = comparable(reference.explained_variance_)
    assert len(idx) > 0
    top = reference.explained_variance_[0]
    np.testing.assert_allclose(variance[idx], reference.explained_variance_[idx], rtol=RTOL)
    np.testing.assert_allclose(ratio[idx], reference.explained_variance_ratio_[idx], rtol=RTOL)
    # The rest (rank deficiency, near-ties) is only as exact as rounding allows.
    np.testing.assert_allclose(variance, reference.explained_variance_, rtol=RTOL, atol=1e-9 * top)
    np.testing.assert_allclose(components[idx], reference.components_[idx], rtol=RTOL, atol=RTOL)

    got = as_matrix(result, [f"{output}_{i}" for i in range(k)])
    assert np.all(np.isfinite(got))
    want = reference.transform(fitted_on) if transformed is None else transformed
    scale = want.std(axis=0)
    assert_close(got[:, idx], want[:, idx], RTOL, scale[idx], f"{label} projections")
    big = np.abs(reference.components_[idx]) >= 1e-3
    errors = {
        "components (abs, unit vectors)": float(np.abs(components[idx] - reference.components_[idx]).max()),
        "components (rel, |entry| >= 1e-3)": rel_err(components[idx][big], reference.components_[idx][big], 0),
        "variance": rel_err(variance[idx], reference.explained_variance_[idx], 0),
        "ratio": rel_err(ratio[idx], reference.explained_variance_ratio_[idx], 0),
        "projections (abs / column std)": float((np.abs(got[:, idx] - want[:, idx]) / scale[idx]).max()),
    }
    print(f"\n{label}: compared {len(idx)}/{k} components; max relative errors {errors}")


@pytest.fixture(scope="module")
def digits():
    data = load_digits().data
    names = [f"px_{j}" for j in range(data.shape[1])]
    return frame(data, names, dtype=np.int16), names, data


def synthetic_sample(seed=20261201, rows=20_000, d=12):
    """A Gaussian sample with a known covariance Q diag(λ) Qᵀ and a mean far from 0."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    variances = np.array([50, 30, 20, 12, 8, 5, 3, 2, 1.2, 0.7, 0.4, 0.2])[:d]
    covariance = q @ np.diag(variances) @ q.T
    mean = np.linspace(-1e4, 1e4, d)
    mean[0] = 1e6
    return rng.multivariate_normal(mean, covariance, size=rows), covariance, variances


@pytest.fixture(scope="module")
def synthetic():
    data, covariance, variances = synthetic_sample()
    names = [f"f_{j}" for j in range(data.shape[1])]
    return frame(data, names), names, data, variances


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_digits_match_scikit_learn(weir, tmp_path, digits, shape):
    table, names, data = digits
    src = write_dataset(table, tmp_path / "src")
    out, _ = run(weir, tmp_path, src, pca_step(["px_*"], 64), shape)
    result = read_output(out)
    assert result.num_rows == len(data)
    assert result.column_names == ["id"] + [f"pc_{i}" for i in range(64)]
    reference = PCA(n_components=64, svd_solver="full").fit(data)
    params = fitted_step_params(out, 1)
    check_pca(params, result, reference, data, "pc", f"digits {'x'.join(shape)}")
    # Three constant pixels: three components with no variance, finite and unscaled.
    assert np.allclose(params["explained_variance"][-3:], 0, atol=1e-9)
    assert abs(sum(params["explained_variance_ratio"]) - 1) < 1e-12


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_known_covariance_matches_scikit_learn_plain_and_whitened(weir, tmp_path, synthetic, shape):
    table, names, data, variances = synthetic
    src = write_dataset(table, tmp_path / "src", row_group=1000)
    steps = pca_step(["f_*"], 8, keep_inputs=True) + pca_step(["f_*"], 8, whiten=True, output="w")
    out, _ = run(weir, tmp_path, src, steps, shape)
    result = read_output(out)
    # The first step keeps its inputs for the second, which drops them.
    assert result.column_names == ["id", *[f"pc_{i}" for i in range(8)], *[f"w_{i}" for i in range(8)]]
    plain = PCA(n_components=8, svd_solver="full").fit(data)
    whitened = PCA(n_components=8, whiten=True, svd_solver="full").fit(data)
    check_pca(fitted_step_params(out, 1), result, plain, data, "pc", f"synthetic {'x'.join(shape)}")
    check_pca(fitted_step_params(out, 2), result, whitened, data, "w", f"synthetic whitened {'x'.join(shape)}")
    # The fit sees the sample's covariance, close to the one it was drawn from.
    np.testing.assert_allclose(fitted_step_params(out, 1)["explained_variance"], variances[:8], rtol=0.05)
    # Both pca steps read the same inputs and the first writes only pc_*: one shared pass.
    assert [s["step"] for s in fitted_steps(out)] == [1, 2]


def test_a_fraction_keeps_what_scikit_learn_keeps(weir, tmp_path, synthetic):
    table, names, data, _ = synthetic
    src = write_dataset(table, tmp_path / "src", row_group=1000)
    steps = pca_step(["f_*"], 0.9, max_components=10, output_type="float32")
    out, _ = run(weir, tmp_path, src, steps, ["-p", "2", "-w", "2"])
    reference = PCA(n_components=0.9, svd_solver="full").fit(data)
    params = fitted_step_params(out, 1)
    # Variances 50, 30, 20, 12, 8 hold 91 % of the 131.5 in all.
    assert params["n_components"] == reference.n_components_ == 5
    result = read_output(out)
    assert result.schema.field("pc_0").type == pa.float32()
    for i in range(reference.n_components_, 10):
        assert result.column(f"pc_{i}").null_count == result.num_rows
    got = as_matrix(result, [f"pc_{i}" for i in range(reference.n_components_)])
    want = reference.transform(data)
    assert_close(got, want, 1e-6, want.std(axis=0), "float32 projections")
    np.testing.assert_allclose(params["explained_variance_ratio"], reference.explained_variance_ratio_, rtol=RTOL)


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_standardize_then_pca_matches_the_pipeline(weir, tmp_path, digits, shape):
    table, names, data = digits
    src = write_dataset(table, tmp_path / "src")
    steps = '[[step]]\nop = "standardize"\ncolumns = ["px_*"]\n' + pca_step(["px_*"], 20)
    out, _ = run(weir, tmp_path, src, steps, shape)
    pipeline = make_pipeline(StandardScaler(), PCA(n_components=20, svd_solver="full")).fit(data)
    scaled = pipeline[0].transform(data)
    check_pca(fitted_step_params(out, 2), read_output(out), pipeline[1], scaled, "pc", f"standardize+pca {'x'.join(shape)}",
              transformed=pipeline.transform(data))


def test_duplicated_and_constant_columns_give_finite_output(weir, tmp_path):
    rng = np.random.default_rng(5)
    a, b = rng.normal(3, 2, 3000), rng.normal(-1, 0.5, 3000)
    data = np.column_stack([a, a, b, np.full(3000, 4.25), 2 * a + b])
    names = ["a", "a_copy", "b", "constant", "mix"]
    src = write_dataset(frame(data, names), tmp_path / "src", row_group=400)
    out, _ = run(weir, tmp_path, src, pca_step(names, 5, whiten=True), ["-p", "2", "-w", "2"])
    params = fitted_step_params(out, 1)
    result = as_matrix(read_output(out), [f"pc_{i}" for i in range(5)])
    assert np.all(np.isfinite(result)) and np.all(np.isfinite(np.array(params["components"])))
    # Rank 2: two whitened components with unit variance, three with none, left unscaled.
    np.testing.assert_allclose(result[:, :2].var(axis=0, ddof=1), 1, rtol=1e-9)
    variance = np.array(params["explained_variance"])
    assert np.all(variance[2:] <= 1e-12 * variance[0]) and np.all(variance >= 0)
    assert np.abs(result[:, 2:]).max() < 1e-9
    reference = PCA(n_components=5, whiten=True, svd_solver="full").fit(data)
    np.testing.assert_allclose(np.array(params["components"])[:2], reference.components_[:2], rtol=RTOL, atol=1e-9)
    np.testing.assert_allclose(result[:, :2], reference.transform(data)[:, :2], rtol=RTOL, atol=1e-9)


def test_a_null_is_an_error_naming_the_column_unless_skipped(weir, tmp_path, synthetic):
    table, names, data, _ = synthetic
    rows = 4000
    mask = np.zeros(rows, dtype=bool)
    mask[[17, 2222, 3999]] = True
    holed = table.slice(0, rows).set_column(4, "f_3", pa.array(data[:rows, 3], mask=mask))
    src = write_dataset(holed, tmp_path / "src", row_group=500)
    _, proc = run(weir, tmp_path, src, pca_step(["f_*"], 3), ["-w", "2"], name="fails", check=2)
    assert "step 1 (pca)" in proc.stderr and "column 'f_3'" in proc.stderr and "null" in proc.stderr, proc.stderr
    assert not (tmp_path / "fails" / "_SUCCESS").exists()

    out, _ = run(weir, tmp_path, src, pca_step(["f_*"], 3, on_null="skip"), ["-p", "2", "-w", "2"], name="skips")
    complete = data[:rows][~mask]
    reference = PCA(n_components=3, svd_solver="full").fit(complete)
    result = read_output(out)
    assert result.num_rows == rows - 3
    check_pca(fitted_step_params(out, 1), result, reference, complete, "pc", "on_null=skip")


def test_reuse_on_another_dataset(weir, tmp_path):
    train, _, _ = synthetic_sample(seed=1)
    test, _, _ = synthetic_sample(seed=2, rows=3000)
    names = [f"f_{j}" for j in range(train.shape[1])]
    train_src = write_dataset(frame(train, names), tmp_path / "train", row_group=2000)
    test_src = write_dataset(frame(test, names), tmp_path / "test", row_group=700)
    fit_out, _ = run(weir, tmp_path, train_src, pca_step(["f_*"], 4, whiten=True), ["-w", "2"], name="fit")
    uri = fit_out / "_weir" / "fitted.json"
    out, _ = run(weir, tmp_path, test_src, pca_step(["f_*"], 4, whiten=True, fitted=str(uri)), ["-p", "2", "-w", "2"],
                 name="apply")
    reference = PCA(n_components=4, whiten=True, svd_solver="full").fit(train)
    got = as_matrix(read_output(out), [f"pc_{i}" for i in range(4)])
    want = reference.transform(test)
    assert_close(got, want, RTOL, want.std(axis=0), "reused projections")
    reused = fitted_steps(out)
    assert reused[0]["reused_from"] == str(uri) and reused[0]["params"] == fitted_step_params(fit_out, 1)

    # Asking for another number of components, or no whitening, is an error naming the step.
    for step, message in [(pca_step(["f_*"], 3, whiten=True, fitted=str(uri)), "hold 4 components"),
                          (pca_step(["f_*"], 4, fitted=str(uri)), "whiten = true")]:
        _, proc = run(weir, tmp_path, test_src, step, ["-w", "1"], name="mismatch", check=2)
        assert "step 1 (pca)" in proc.stderr and message in proc.stderr, proc.stderr


def test_a_thousand_and_twenty_four_columns(weir, tmp_path):
    """Wide inputs: the d² partials cross processes, and the leading components match."""
    rng = np.random.default_rng(9)
    rows, d = 2500, 1024
    latent = rng.normal(size=(rows, 6)) * np.array([40, 30, 20, 12, 8, 5])
    data = latent @ rng.normal(size=(6, d)) + rng.normal(scale=0.1, size=(rows, d))
    names = [f"x{j}" for j in range(d)]
    src = write_dataset(frame(data, names), tmp_path / "src", row_group=400)
    out, _ = run(weir, tmp_path, src, pca_step(["x*"], 6), ["-p", "2", "-w", "2"])
    reference = PCA(n_components=6, svd_solver="full").fit(data)
    check_pca(fitted_step_params(out, 1), read_output(out), reference, data, "pc", "1024 columns")


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_impute_standardize_pca_applied_as_one_map_match_the_pipeline(weir, tmp_path, synthetic, shape):
    # impute → standardize → pca, pca dropping its inputs: Weir fits the chain in one pass
    # and applies it as one map of the raw columns (the fills and scales folded into pca's
    # mean and weights). Nulls and NaN in every column, a mean far from 0 (1e6, ±1e4).
    from sklearn.impute import SimpleImputer

    _, names, data, _ = synthetic
    rng = np.random.default_rng(7)
    missing = rng.random(data.shape) < 0.05
    nan_not_null = rng.random(data.shape) < 0.5
    with_gaps = np.where(missing, np.nan, data)
    columns = {"id": pa.array(np.arange(len(data), dtype=np.int64))}
    for j, name in enumerate(names):
        null = missing[:, j] & ~nan_not_null[:, j]
        columns[name] = pa.array(with_gaps[:, j], mask=null)
    src = write_dataset(pa.table(columns), tmp_path / "src", row_group=3000)
    steps = '[[step]]\nop = "impute"\ncolumns = ["f_*"]\n[[step]]\nop = "standardize"\ncolumns = ["f_*"]\n'
    out, _ = run(weir, tmp_path, src, steps + pca_step(["f_*"], 6), shape)
    pipeline = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(), PCA(n_components=6, svd_solver="full"))
    pipeline.fit(with_gaps)
    result = read_output(out)
    assert result.column_names == ["id"] + [f"pc_{i}" for i in range(6)], result.column_names
    order = np.argsort(result.column("id").to_numpy())
    result = result.take(pa.array(order))
    scaled = pipeline[1].transform(pipeline[0].transform(with_gaps))
    # pca's mean is that of the standardized columns, 0 up to rounding: the chain derives it
    # from the raw columns' moments around 1e6, so it is 0 to about 1e-8 (of a unit scale).
    check_pca(fitted_step_params(out, 3), result, pipeline[2], scaled, "pc", f"impute+standardize+pca {'x'.join(shape)}",
              transformed=pipeline.transform(with_gaps), mean_atol=1e-7)
