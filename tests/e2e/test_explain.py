"""`explain`: per-row Shapley attributions of one ONNX model output, checked against an
independent reference.

The reference enumerates every coalition S of the features in Python, evaluates the model
with onnxruntime's Python API on z (z_j = x_j for j in S, else the background row's b_j),
averages over the background rows Weir saved in `_weir/fitted.json`, and weighs the
marginal contributions by |S|!(F-|S|-1)!/F!. Models are MLPs written node by node with
onnx.helper (tanh hidden layers, so features interact and sampling is not trivially exact),
in double precision where the check must be tight and in float32 otherwise.
"""

import json
from math import factorial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import read_output, write_dataset, write_job
from helpers import SHAPES_1_AND_2X2, fitted_steps, shape_id

# The double model (tests 1, 5, 6): 6 features, tanh hidden layer, outputs y [N, 1] and the
# hidden layer `hidden` [N, 8], so the job must name `output = "y"`.
DOUBLE_FEATURES = [f"x_{j}" for j in range(6)]
# The float32 model (permutation, shapes, fraction): 8 features, softmax over 2 classes,
# explained at output_index = 1.
FLOAT_FEATURES = [f"x_{j}" for j in range(8)]


# ---------------------------------------------------------------------------------------
# Models


def mlp(path: Path, features: int, hidden: int, *, dtype, seed: int, out_width=1, softmax=False, vector_output=False, hidden_output=False) -> Path:
    """x[N, F] -> tanh(x·W1 + b1)·W2 + b2, optionally softmax over the last axis.

    `vector_output` makes W2 one-dimensional, so y is [N]; `hidden_output` also exposes the
    hidden layer as a second float output `hidden` [N, H]."""
    np_type = np.float64 if dtype == TensorProto.DOUBLE else np.float32
    rng = np.random.default_rng(seed)
    w1 = rng.normal(scale=0.9, size=(features, hidden)).astype(np_type)
    b1 = rng.normal(scale=0.3, size=hidden).astype(np_type)
    if vector_output:
        w2, b2 = rng.normal(size=hidden).astype(np_type), np.array(rng.normal(), dtype=np_type)
    else:
        w2, b2 = rng.normal(size=(hidden, out_width)).astype(np_type), rng.normal(size=out_width).astype(np_type)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["logits" if softmax else "y"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], axis=-1))
    outputs = [helper.make_tensor_value_info("y", dtype, ["N"] if vector_output else ["N", out_width])]
    if hidden_output:
        outputs.append(helper.make_tensor_value_info("hidden", dtype, ["N", hidden]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", dtype, ["N", features])],
        outputs,
        initializer=[numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def double_model(path: Path) -> Path:
    return mlp(path, len(DOUBLE_FEATURES), 8, dtype=TensorProto.DOUBLE, seed=11, hidden_output=True)


def float_model(path: Path) -> Path:
    return mlp(path, len(FLOAT_FEATURES), 12, dtype=TensorProto.FLOAT, seed=5, out_width=2, softmax=True)


def two_input_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]), helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    return save(graph, path)


def int_input_model(path: Path, features: int) -> Path:
    """y[N, 1] = sum of float(x) for an int64 x[N, F]."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT), helper.make_node("ReduceSum", ["xf", "axes"], ["y"], keepdims=1)],
        "int_input",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[axes],
    )
    return save(graph, path)


def sum_model(path: Path, features: int) -> Path:
    """y[N, 1] = sum of x[N, F] (float): fine for explain, except for its width."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        "sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[axes],
    )
    return save(graph, path)


def save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


# ---------------------------------------------------------------------------------------
# The Python reference


def model_fn(model: Path, output="y", output_index=0):
    """f(z) for a float64 matrix z, by onnxruntime's Python API in the model's input type,
    as float64: the chosen output's column `output_index`."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    source = session.get_inputs()[0]
    dtype = np.float64 if source.type == "tensor(double)" else np.float32

    def f(z: np.ndarray) -> np.ndarray:
        y = session.run([output], {source.name: np.ascontiguousarray(z, dtype=dtype)})[0]
        return y.reshape(len(z), -1)[:, output_index].astype(np.float64)

    return f


def exact_shapley(f, x: np.ndarray, background: np.ndarray):
    """Interventional Shapley values of f at the rows of x against `background`, by
    enumerating all 2^F coalitions. Returns (phi [rows, F], base, f(x) [rows])."""
    rows, width = x.shape
    n = len(background)
    masks = np.arange(2**width)
    bits = ((masks[:, None] >> np.arange(width)) & 1).astype(bool)  # [M, F]
    values = []
    chunk_rows = max(1, 2_000_000 // (len(masks) * n))
    for lo in range(0, rows, chunk_rows):
        chunk = x[lo : lo + chunk_rows]
        z = np.where(bits[None, :, None, :], chunk[:, None, None, :], background[None, None, :, :])  # [R, M, n, F]
        values.append(f(z.reshape(-1, width)).reshape(len(chunk), len(masks), n).mean(axis=2))
    v = np.concatenate(values)  # [rows, M]: v(S) with S the bits of the mask
    size = bits.sum(axis=1)
    weight = np.array([factorial(s) * factorial(width - s - 1) / factorial(width) for s in range(width)])
    phi = np.zeros((rows, width))
    for i in range(width):
        without = masks[~bits[:, i]]
        phi[:, i] = (weight[size[without]] * (v[:, without | (1 << i)] - v[:, without])).sum(axis=1)
    return phi, v[:, 0], v[:, -1]


# ---------------------------------------------------------------------------------------
# Data, jobs and outputs


def feature_table(rng, rows: int, features, start=0, nulls=(), nans=(), loc=0.0) -> pa.Table:
    """An `id`, a string `tag` and float64 features; `nulls`/`nans`: (row, feature index)."""
    x = rng.normal(loc=loc, size=(rows, len(features)))
    null_mask = np.zeros_like(x, dtype=bool)
    for r, j in nulls:
        null_mask[r, j] = True
    for r, j in nans:
        x[r, j] = np.nan
    ids = np.arange(start, start + rows, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "tag": pa.array([f"r{i}" for i in ids]),
            **{name: pa.array(x[:, j], mask=null_mask[:, j]) for j, name in enumerate(features)},
        }
    )


def single_file(table: pa.Table, directory: Path, row_group=100) -> Path:
    directory.mkdir(parents=True)
    pq.write_table(table, directory / "part-0.parquet", row_group_size=row_group)
    return directory


def explain_job(path: Path, src: Path, out: Path, model: str, fields: str, features='["x_*"]') -> Path:
    return write_job(
        path,
        f'name = "explain"\n[source]\nuri = "{src}"\n[[step]]\nop = "explain"\nmodel = "{model}"\n'
        f"features = {features}\n{fields}\n[sink]\nuri = \"{out}\"\nmode = \"overwrite\"\n",
    )


def matrix(table: pa.Table, names) -> np.ndarray:
    """Columns as a float64 matrix, NaN for nulls (rows in the table's order)."""
    return np.column_stack([table.column(n).to_numpy(zero_copy_only=False).astype(float) for n in names])


def explain_step(out: Path) -> dict:
    steps = [s for s in fitted_steps(out) if s["op"] == "explain"]
    assert len(steps) == 1, fitted_steps(out)
    return steps[0]


def background_of(out: Path, features) -> np.ndarray:
    params = explain_step(out)["params"]
    assert params["features"] == list(features)
    background = np.array(params["background"], dtype=float)
    assert background.ndim == 2 and background.shape[1] == len(features)
    return background


def assert_background_from(background: np.ndarray, table: pa.Table, features, wanted: int):
    """Every background row is (bit for bit) a distinct row of `table` without a null or NaN
    feature, and there are min(wanted, complete rows) of them."""
    x = matrix(table, features)
    complete = x[~np.isnan(x).any(axis=1)]
    assert len(background) == min(wanted, len(complete)), (len(background), wanted, len(complete))
    assert len({tuple(b) for b in background}) == len(background), "background rows repeat"
    rows = {tuple(r) for r in complete}
    strangers = [b for b in background if tuple(b) not in rows]
    if strangers:
        b = strangers[0]
        nearest = complete[np.abs(complete - b).max(axis=1).argmin()]
        ulps = np.abs(b.view(np.int64) - nearest.view(np.int64))
        raise AssertionError(
            f"{len(strangers)} of {len(background)} background rows in fitted.json are not input rows; "
            f"the first, {b.tolist()}, is nearest to the input row {nearest.tolist()} "
            f"({ulps.tolist()} ulps apart per feature)"
        )


def same_column(a, b) -> bool:
    """Equal values, nulls and types, with NaN equal to NaN."""
    a, b = a.combine_chunks(), b.combine_chunks()
    if a.type != b.type or not a.is_valid().equals(b.is_valid()):
        return False
    if pa.types.is_floating(a.type):
        return np.array_equal(a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False), equal_nan=True)
    return a.equals(b)


def shap_names(features, prefix="shap_"):
    return [f"{prefix}{f}" for f in features] + [f"{prefix}base", f"{prefix}residual"]


def attributions(result: pa.Table, features):
    """(phi [rows, F], base, residual, explained mask) of a result sorted by id; NaN where null."""
    phi = matrix(result, [f"shap_{f}" for f in features])
    base = matrix(result, ["shap_base"])[:, 0]
    residual = matrix(result, ["shap_residual"])[:, 0]
    explained = ~np.isnan(base)
    return phi, base, residual, explained


def assert_nulls_exactly_where(result: pa.Table, features, explained: np.ndarray):
    """Explained rows have every shap column non-null; the others have every one null."""
    for name in shap_names(features):
        column = result.column(name)
        assert column.type == pa.float64(), (name, column.type)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        assert np.array_equal(valid, explained), f"{name}: nulls in the wrong rows"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain-models")
    return {"double": double_model(folder / "double.onnx"), "float": float_model(folder / "float.onnx")}


# ---------------------------------------------------------------------------------------
# 1. Exact parity with a double model


def test_exact_double_model_equals_python_enumeration(weir, tmp_path, models):
    """method = "exact" on a double-precision MLP equals the Python enumeration of all 2^6
    coalitions (onnxruntime, the background read from fitted.json) to 1e-9; shap_base is the
    mean model output over the background, the residual is ~0 and base + Σphi = f(x); rows
    with a null or NaN feature get nulls in every shap column; every input row and column is
    kept unchanged; the background is made of distinct complete input rows. The model path is
    relative to the job file, and `output` picks y among two float outputs."""
    rng = np.random.default_rng(101)
    table = feature_table(rng, 300, DOUBLE_FEATURES, nulls=[(5, 0), (77, 3), (150, 5), (151, 1)], nans=[(200, 2)])
    src = single_file(table, tmp_path / "src", row_group=64)
    model = tmp_path / "model.onnx"
    model.write_bytes(models["double"].read_bytes())
    out = tmp_path / "out"
    job = explain_job(tmp_path / "job.toml", src, out, "model.onnx", 'output = "y"\nmethod = "exact"\nbackground = 20')
    weir("run", job, check=0)

    result = read_output(out).sort_by("id")
    assert result.column_names == table.column_names + shap_names(DOUBLE_FEATURES)
    assert result.num_rows == table.num_rows
    for name in table.column_names:
        assert same_column(result.column(name), table.column(name)), f"input column {name} changed"

    background = background_of(out, DOUBLE_FEATURES)

    x = matrix(result, DOUBLE_FEATURES)
    complete = ~np.isnan(x).any(axis=1)
    assert complete.sum() == 295
    assert_nulls_exactly_where(result, DOUBLE_FEATURES, complete)

    f = model_fn(model, "y")
    want_phi, want_base, want_fx = exact_shapley(f, x[complete], background)
    phi, base, residual, _ = attributions(result, DOUBLE_FEATURES)
    phi, base, residual = phi[complete], base[complete], residual[complete]
    error = np.abs(phi - want_phi).max()
    assert error < 1e-9, f"max |phi - exact| = {error:.3e}"
    assert np.abs(phi).max() > 0.1, "attributions too small for the check to mean much"
    np.testing.assert_allclose(base, f(background).mean(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(want_base, f(background).mean(), rtol=0, atol=1e-12)
    assert np.abs(residual).max() < 1e-9
    np.testing.assert_allclose(base + phi.sum(axis=1) + residual, want_fx, rtol=0, atol=1e-9)
    assert_background_from(background, table, DOUBLE_FEATURES, 20)


def test_exact_equals_the_shap_packages_exact_explainer(weir, tmp_path, models):
    """method = "exact" equals the `shap` package's own exact interventional explainer
    (`shap.explainers.Exact` over `shap.maskers.Independent` holding the same background,
    read from fitted.json) on a double-precision MLP, to 1e-9, and so does the base value."""
    import shap

    rng = np.random.default_rng(202)
    table = feature_table(rng, 120, DOUBLE_FEATURES)
    src = single_file(table, tmp_path / "src", row_group=50)
    out = tmp_path / "out"
    job = explain_job(tmp_path / "job.toml", src, out, str(models["double"]), 'output = "y"\nmethod = "exact"\nbackground = 15')
    weir("run", job, check=0)

    result = read_output(out).sort_by("id")
    background = background_of(out, DOUBLE_FEATURES)
    x = matrix(result, DOUBLE_FEATURES)
    f = model_fn(models["double"], "y")
    explainer = shap.explainers.Exact(f, shap.maskers.Independent(background, max_samples=len(background)))
    explanation = explainer(x)
    phi, base, residual, _ = attributions(result, DOUBLE_FEATURES)
    error = np.abs(phi - explanation.values).max()
    assert error < 1e-9, f"max |weir - shap| = {error:.3e}"
    assert np.abs(phi).max() > 0.1, "attributions too small for the check to mean much"
    np.testing.assert_allclose(base, explanation.base_values, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["logistic", "linear-regression"])
def test_linear_models_equal_the_shap_packages_linear_explainer(weir, tmp_path, kind):
    """A scikit-learn LogisticRegression or LinearRegression converted with skl2onnx (one
    LinearClassifier / LinearRegressor node) is explained from its coefficients
    (method = "linear"; `auto` picks it for the regressor, whose output is the raw score):
    the attributions and base value equal `shap.LinearExplainer` over
    `shap.maskers.Independent` with the same background within 1e-5 (for the classifier, of
    the log-odds, as shap explains it); base + Σ values is the model's raw score; the
    same at 1 worker and 2 x 2."""
    import shap
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rng = np.random.default_rng(606)
    features = [f"x_{j}" for j in range(5)]
    table = feature_table(rng, 3_000, features)
    x_all = matrix(table, features)
    if kind == "logistic":
        y = (x_all @ [1.5, -2.0, 0.5, 0.0, 1.0] + rng.normal(size=len(x_all)) > 0).astype(int)
        model = LogisticRegression().fit(x_all, y)
        onnx_model = to_onnx(model, x_all[:1].astype(np.float32), options={"zipmap": False})
        fields = 'output = "probabilities"\noutput_index = 1\nmethod = "linear"\nbackground = 50'
    else:
        y = x_all @ [1.5, -2.0, 0.5, 0.0, 1.0] + 3.0 + rng.normal(size=len(x_all))
        model = LinearRegression().fit(x_all, y)
        onnx_model = to_onnx(model, x_all[:1].astype(np.float32))
        fields = 'method = "auto"\nmax_evals = 4\nbackground = 50'
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(onnx_model.SerializeToString())
    src = write_dataset(table, tmp_path / "src", row_group=200)
    results = []
    for shape in SHAPES_1_AND_2X2:
        out = tmp_path / f"out-{shape_id(shape)}"
        weir("run", explain_job(tmp_path / f"{shape_id(shape)}.toml", src, out, str(model_path), fields, '["x_*"]'), *shape, check=0)
        results.append((read_output(out).sort_by("id"), background_of(out, features)))
    (one, background), (two, _) = results
    for name in shap_names(features):
        assert same_column(one.column(name), two.column(name)), f"{name} differs between shapes"

    explainer = shap.LinearExplainer(model, shap.maskers.Independent(background, max_samples=len(background)))
    x = matrix(one, features)
    want = explainer.shap_values(x)
    phi, base, residual, explained = attributions(one, features)
    assert explained.all()
    error = np.abs(phi - want).max()
    assert error < 1e-5, f"max |weir - shap.LinearExplainer| = {error:.2e}"
    assert np.abs(phi).max() > 0.5
    np.testing.assert_allclose(base, explainer.expected_value, rtol=0, atol=1e-5)
    assert np.abs(residual).max() < 1e-9
    raw = model.decision_function(x) if kind == "logistic" else model.predict(x)
    np.testing.assert_allclose(base + phi.sum(axis=1), raw, rtol=0, atol=1e-4)


TREE_MODELS = ["gradient-boosting-classifier", "gradient-boosting-regressor", "random-forest-classifier", "random-forest-regressor"]


@pytest.mark.parametrize("kind", TREE_MODELS)
def test_tree_ensembles_equal_the_shap_packages_interventional_tree_explainer(weir, tmp_path, kind):
    """scikit-learn gradient boosting and random forest classifiers and regressors converted
    with skl2onnx (TreeEnsembleClassifier / TreeEnsembleRegressor) are explained by
    interventional TreeSHAP over the trees read from the graph: attributions and base value
    equal `shap.TreeExplainer(model, background, feature_perturbation="interventional")`
    within 1e-5 (the raw score: log-odds for gradient boosting, as shap explains it, the
    probability of class 1 for the forest), additivity holds, and 1 worker equals 2 x 2.
    `auto` picks the tree method when the output is the raw score (no post-transform); the
    gradient boosting classifier's probabilities go through a sigmoid, so it asks for
    method = "tree"."""
    import shap
    from skl2onnx import to_onnx
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    rng = np.random.default_rng(707)
    features = [f"x_{j}" for j in range(6)]
    table = feature_table(rng, 2_000, features)
    x_all = matrix(table, features)
    signal = x_all @ [1.5, -2.0, 0.5, 0.0, 1.0, 0.7] + x_all[:, 0] * x_all[:, 1]
    classifier = "classifier" in kind
    y = (signal + rng.normal(size=len(x_all)) > 0).astype(int) if classifier else signal
    model = {
        "gradient-boosting-classifier": GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0),
        "gradient-boosting-regressor": GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0),
        "random-forest-classifier": RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0),
        "random-forest-regressor": RandomForestRegressor(n_estimators=15, max_depth=5, random_state=0),
    }[kind].fit(x_all.astype(np.float32), y)
    options = {"zipmap": False} if classifier else None
    onnx_model = to_onnx(model, x_all[:1].astype(np.float32), options=options)
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(onnx_model.SerializeToString())
    method = "tree" if kind == "gradient-boosting-classifier" else "auto"
    fields = f'method = "{method}"\nmax_evals = 4\nbackground = 40'
    if classifier:
        fields = 'output = "probabilities"\noutput_index = 1\n' + fields
    src = write_dataset(table, tmp_path / "src", row_group=250)
    results = []
    for shape in SHAPES_1_AND_2X2:
        out = tmp_path / f"out-{shape_id(shape)}"
        job = explain_job(tmp_path / f"{shape_id(shape)}.toml", src, out, str(model_path), fields)
        weir("run", job, *shape, check=0)
        results.append((read_output(out).sort_by("id"), background_of(out, features)))
    (one, background), (two, _) = results
    for name in shap_names(features):
        assert same_column(one.column(name), two.column(name)), f"{name} differs between shapes"

    explainer = shap.TreeExplainer(model, data=background, feature_perturbation="interventional")
    x = matrix(one, features)
    want = explainer.shap_values(x.astype(np.float32), check_additivity=False)
    expected = np.atleast_1d(explainer.expected_value)
    if classifier and kind.startswith("random"):
        want, expected = want[..., 1], expected[1]
    else:
        expected = expected[0]
    phi, base, residual, explained = attributions(one, features)
    assert explained.all()
    error = np.abs(phi - want).max()
    print(f"{kind}: max |weir - shap.TreeExplainer| = {error:.2e}")
    assert error < 1e-5, f"max |weir - shap.TreeExplainer| = {error:.2e}"
    assert np.abs(phi).max() > 0.05
    np.testing.assert_allclose(base, expected, rtol=0, atol=1e-5)
    assert np.abs(residual).max() < 1e-9


def affine_model(path: Path, kind: str, coef: np.ndarray, intercept: float) -> Path:
    """`kind`: MatMul + Add + Sigmoid, or one Gemm (transB = 1, alpha 2, beta 0.5) with no link."""
    f = len(coef)
    if kind == "matmul-add-sigmoid":
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["y"]),
        ]
        init = {"w": coef.reshape(f, 1), "b": np.array([intercept])}
    else:
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=2.0, beta=0.5)]
        init = {"w": (coef / 2).reshape(1, f), "b": np.array([intercept * 2])}
    graph = helper.make_graph(
        nodes,
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in init.items()],
    )
    return save(graph, path)


@pytest.mark.parametrize("kind", ["matmul-add-sigmoid", "gemm"])
def test_affine_graphs_are_explained_from_their_weights(weir, tmp_path, kind):
    """A graph that is one affine map (MatMul + Add, or Gemm with transB, alpha and beta) with
    an optional elementwise link is explained by the linear method from the initializers:
    attributions of the score before the link equal `shap.LinearExplainer` given the same
    coefficients and the same background within 1e-5; `auto` picks it when there is no
    link; base + Σ values is the pre-link score, which through the link gives onnxruntime's
    output."""
    import shap

    rng = np.random.default_rng(808)
    features = [f"x_{j}" for j in range(5)]
    table = feature_table(rng, 1_000, features)
    coef = np.array([1.5, -2.0, 0.25, 0.0, 0.75], dtype=np.float32).astype(np.float64)
    intercept = float(np.float32(0.3))
    model_path = affine_model(tmp_path / "model.onnx", kind, coef, intercept)
    method = "linear" if kind == "matmul-add-sigmoid" else "auto"
    src = write_dataset(table, tmp_path / "src", row_group=200)
    out = tmp_path / "out"
    weir("run", explain_job(tmp_path / "job.toml", src, out, str(model_path), f'method = "{method}"\nmax_evals = 4\nbackground = 30'), check=0)
    result = read_output(out).sort_by("id")
    background = background_of(out, features)
    x = matrix(result, features)
    explainer = shap.LinearExplainer((coef, intercept), shap.maskers.Independent(background, max_samples=len(background)))
    phi, base, residual, explained = attributions(result, features)
    assert explained.all()
    error = np.abs(phi - explainer.shap_values(x)).max()
    assert error < 1e-5, f"max |weir - shap.LinearExplainer| = {error:.2e}"
    np.testing.assert_allclose(base, explainer.expected_value, rtol=0, atol=1e-5)
    assert np.abs(residual).max() < 1e-9
    score = model_fn(model_path, "y")(x)
    total = base + phi.sum(axis=1)
    np.testing.assert_allclose(total, x @ coef + intercept, rtol=0, atol=1e-9)
    linked = 1 / (1 + np.exp(-total)) if kind == "matmul-add-sigmoid" else total
    np.testing.assert_allclose(linked, score, rtol=0, atol=1e-5)


def tree_ensemble_v5(v1_model, path: Path) -> Path:
    """The skl2onnx TreeEnsembleRegressor of `v1_model` rewritten as the opset-5
    `TreeEnsemble` op (shared node arrays, tree_roots, leaves apart, tensor attributes), the
    base value folded into the first tree's leaves."""
    node = v1_model.graph.node[0]
    a = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    modes = [m.decode() for m in a["nodes_modes"]]
    key = list(zip(a["nodes_treeids"], a["nodes_nodeids"]))
    interior = {k: i for i, k in enumerate(k for k, m in zip(key, modes) if m != "LEAF")}
    leaves = {k: i for i, k in enumerate(k for k, m in zip(key, modes) if m == "LEAF")}
    weights = np.zeros(len(leaves))
    for t, n, w in zip(a["target_treeids"], a["target_nodeids"], a["target_weights"]):
        weights[leaves[(t, n)]] += w
    base = a.get("base_values", [0.0])[0]
    for (t, n), i in leaves.items():
        if t == a["nodes_treeids"][0]:
            weights[i] += base
    fields = {"feature": [], "split": [], "true": [], "true_leaf": [], "false": [], "false_leaf": []}
    for k, m, f, v, yes, no in zip(key, modes, a["nodes_featureids"], a["nodes_values"], a["nodes_truenodeids"], a["nodes_falsenodeids"]):
        if m == "LEAF":
            continue
        assert m == "BRANCH_LEQ"
        fields["feature"].append(f)
        fields["split"].append(v)
        for side, child in (("true", yes), ("false", no)):
            child_key = (k[0], child)
            is_leaf = child_key in leaves
            fields[side].append(leaves[child_key] if is_leaf else interior[child_key])
            fields[f"{side}_leaf"].append(int(is_leaf))
    trees = sorted(set(a["nodes_treeids"]))
    v5 = helper.make_node(
        "TreeEnsemble",
        ["X"],
        ["variable"],
        domain="ai.onnx.ml",
        tree_roots=[interior[(t, 0)] for t in trees],
        nodes_featureids=fields["feature"],
        nodes_splits=numpy_helper.from_array(np.array(fields["split"], dtype=np.float32)),
        nodes_modes=numpy_helper.from_array(np.zeros(len(fields["feature"]), dtype=np.uint8)),
        nodes_truenodeids=fields["true"],
        nodes_trueleafs=fields["true_leaf"],
        nodes_falsenodeids=fields["false"],
        nodes_falseleafs=fields["false_leaf"],
        leaf_targetids=[0] * len(leaves),
        leaf_weights=numpy_helper.from_array(weights.astype(np.float32)),
        n_targets=1,
        aggregate_function=1,
        post_transform=0,
    )
    graph = helper.make_graph([v5], "tree_ensemble_v5", list(v1_model.graph.input), list(v1_model.graph.output))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)], ir_version=10)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_the_opset_5_tree_ensemble_op_equals_the_shap_packages_tree_explainer(weir, tmp_path):
    """A gradient boosting regressor written as the newer `TreeEnsemble` op (ai.onnx.ml
    opset 5; onnxruntime gives the same predictions as the skl2onnx model) is explained by
    interventional TreeSHAP (`auto`) equal to `shap.TreeExplainer` with the same background
    within 1e-5."""
    import shap
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(909)
    features = [f"x_{j}" for j in range(6)]
    table = feature_table(rng, 1_500, features)
    x_all = matrix(table, features).astype(np.float32)
    y = x_all @ [1.5, -2.0, 0.5, 0.0, 1.0, 0.7] + x_all[:, 0] * x_all[:, 1]
    model = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(x_all, y)
    v1 = to_onnx(model, x_all[:1])
    path = tree_ensemble_v5(v1, tmp_path / "model.onnx")
    predictions = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x_all})[0].ravel()
    np.testing.assert_allclose(predictions, model.predict(x_all), rtol=0, atol=1e-4)

    src = write_dataset(table, tmp_path / "src", row_group=250)
    out = tmp_path / "out"
    weir("run", explain_job(tmp_path / "job.toml", src, out, str(path), 'max_evals = 4\nbackground = 30'), check=0)
    result = read_output(out).sort_by("id")
    background = background_of(out, features)
    explainer = shap.TreeExplainer(model, data=background, feature_perturbation="interventional")
    x = matrix(result, features)
    want = explainer.shap_values(x.astype(np.float32), check_additivity=False)
    phi, base, residual, explained = attributions(result, features)
    assert explained.all()
    error = np.abs(phi - want).max()
    assert error < 1e-5, f"max |weir - shap.TreeExplainer| = {error:.2e}"
    np.testing.assert_allclose(base, np.atleast_1d(explainer.expected_value)[0], rtol=0, atol=1e-5)
    assert np.abs(residual).max() < 1e-9


# ---------------------------------------------------------------------------------------
# 2. Permutation sampling converges to the exact values


BUDGETS = [20, 80, 320, 1280, 5120]


@pytest.fixture(scope="module")
def float_rows(tmp_path_factory):
    """80 rows over two files for the float model, two of them with a null feature."""
    rng = np.random.default_rng(202)
    table = feature_table(rng, 80, FLOAT_FEATURES, nulls=[(3, 7), (40, 0)])
    src = tmp_path_factory.mktemp("explain-float") / "src"
    src.mkdir()
    pq.write_table(table.slice(0, 45), src / "part-0.parquet", row_group_size=20)
    pq.write_table(table.slice(45), src / "part-1.parquet", row_group_size=20)
    return src, table


def test_permutation_converges_to_exact_shapley_values(weir, tmp_path, models, float_rows):
    """method = "permutation" on a float32 softmax MLP (8 features, output_index = 1 of a
    [batch, 2] output) approaches the Python enumeration of all 2^8 coalitions as max_evals
    grows (the table budget -> error is printed and written to convergence.txt); the error
    at the largest budget is small and below the smallest budget's; additivity holds at
    every budget (|residual| < 1e-4, and base + Σphi = f(x) by onnxruntime)."""
    src, table = float_rows
    f = model_fn(models["float"], "y", output_index=1)
    x_all = matrix(table.sort_by("id"), FLOAT_FEATURES)
    complete = ~np.isnan(x_all).any(axis=1)
    background = None
    lines = ["max_evals  pairs  max_abs_err  mean_abs_err"]
    errors = {}
    for budget in BUDGETS:
        out = tmp_path / f"out-{budget}"
        fields = f'output = "y"\noutput_index = 1\nmethod = "permutation"\nmax_evals = {budget}\nbackground = 20\nseed = 7'
        weir("run", explain_job(tmp_path / f"job-{budget}.toml", src, out, models["float"], fields), check=0)
        result = read_output(out).sort_by("id")
        assert result.num_rows == table.num_rows
        this_background = background_of(out, FLOAT_FEATURES)
        if background is None:
            background = this_background
            want_phi, want_base, want_fx = exact_shapley(f, x_all[complete], background)
            scale = np.abs(want_phi).mean()
        else:
            assert np.array_equal(this_background, background), "the background depends on max_evals"
        assert_nulls_exactly_where(result, FLOAT_FEATURES, complete)
        phi, base, residual, _ = attributions(result, FLOAT_FEATURES)
        phi, base, residual = phi[complete], base[complete], residual[complete]
        assert np.abs(residual).max() < 1e-4, f"max_evals {budget}: |residual| up to {np.abs(residual).max():.3e}"
        np.testing.assert_allclose(base, want_base, rtol=0, atol=1e-5)
        np.testing.assert_allclose(base + phi.sum(axis=1), want_fx, rtol=0, atol=1e-4)
        error = np.abs(phi - want_phi)
        errors[budget] = (error.max(), error.mean())
        pairs = max(1, budget // (2 * (len(FLOAT_FEATURES) - 1)))
        lines.append(f"{budget:>9}  {pairs:>5}  {error.max():>11.5f}  {error.mean():>12.6f}")
    lines.append(f"mean |exact phi| = {scale:.5f}, max |exact phi| = {np.abs(want_phi).max():.5f}, rows = {complete.sum()}")
    report = "\n".join(lines)
    print("\nexplain: permutation error against the exact Shapley values\n" + report)
    (tmp_path / "convergence.txt").write_text(report + "\n")

    smallest, largest = errors[BUDGETS[0]], errors[BUDGETS[-1]]
    assert largest[0] < smallest[0] / 5 and largest[1] < smallest[1] / 5, report
    assert largest[0] < 0.03 * np.abs(want_phi).max(), report
    assert largest[1] < 0.02 * scale, report
    assert_background_from(background, table, FLOAT_FEATURES, 20)


def test_auto_is_exact_within_budget_else_permutation(weir, tmp_path, models, float_rows):
    """method = "auto" gives exactly what "exact" gives when 2^F <= max_evals (256 for 8
    features), and exactly what "permutation" gives at the same budget below that."""
    src, _ = float_rows

    def run(name, fields):
        out = tmp_path / name
        base = 'output = "y"\noutput_index = 1\nbackground = 12\nseed = 3\n'
        weir("run", explain_job(tmp_path / f"{name}.toml", src, out, models["float"], base + fields), check=0)
        return read_output(out).sort_by("id")

    for auto, other in [
        (run("auto-256", 'method = "auto"\nmax_evals = 256'), run("exact-256", 'method = "exact"\nmax_evals = 256')),
        (run("auto-255", 'method = "auto"\nmax_evals = 255'), run("perm-255", 'method = "permutation"\nmax_evals = 255')),
    ]:
        assert auto.equals(other)
    assert not run("exact", 'method = "exact"').equals(run("perm-255-again", 'method = "permutation"\nmax_evals = 255'))


# ---------------------------------------------------------------------------------------
# 3. Cluster shapes


@pytest.fixture(scope="module")
def many_rows(tmp_path_factory):
    """5,000 rows for the float model over three files of 50-row groups (and an empty file),
    some with a null or NaN feature."""
    rng = np.random.default_rng(303)
    nulls = [(int(r), int(r) % 8) for r in rng.choice(5_000, 40, replace=False)]
    nans = [(int(r), 3) for r in rng.choice(5_000, 10, replace=False)]
    table = feature_table(rng, 5_000, FLOAT_FEATURES, nulls=nulls, nans=nans)
    return write_dataset(table, tmp_path_factory.mktemp("explain-many") / "src"), table


def test_permutation_results_do_not_depend_on_the_cluster_shape(weir, tmp_path, models, many_rows):
    """The permutation job gives bit-identical attributions and the identical fitted.json
    background at 1 worker and at 2 processes x 2 workers over 5,000 rows in 100 row
    groups; its background is made of complete input rows; additivity holds on every row."""
    src, table = many_rows
    fields = 'output = "y"\noutput_index = 1\nmethod = "permutation"\nmax_evals = 64\nbackground = 16\nseed = 1'
    results, backgrounds = [], []
    for shape in SHAPES_1_AND_2X2:
        out = tmp_path / f"out-{shape_id(shape)}"
        weir("run", explain_job(tmp_path / f"{shape_id(shape)}.toml", src, out, models["float"], fields), *shape, check=0)
        results.append(read_output(out).sort_by("id"))
        backgrounds.append(explain_step(out)["params"]["background"])
        manifest = json.loads((out / "_weir" / "manifest.json").read_text())
        if "-p" in shape:
            assert len(manifest["files"]) > 1, "the 2 x 2 run did not split the work"
    one, two = results
    assert one.num_rows == two.num_rows == table.num_rows
    assert backgrounds[0] == backgrounds[1], "the background depends on the cluster shape"
    for name in one.column_names:
        assert same_column(one.column(name), two.column(name)), f"{name} differs between 1 worker and 2 x 2"
    x = matrix(one, FLOAT_FEATURES)
    complete = ~np.isnan(x).any(axis=1)
    assert complete.sum() == 5_000 - 50
    assert_nulls_exactly_where(one, FLOAT_FEATURES, complete)
    _, _, residual, _ = attributions(one, FLOAT_FEATURES)
    assert np.abs(residual[complete]).max() < 1e-4
    assert_background_from(np.array(backgrounds[0]), table, FLOAT_FEATURES, 16)


# ---------------------------------------------------------------------------------------
# 4. fraction


def test_fraction_explains_a_stable_share_of_rows_with_the_full_runs_values(weir, tmp_path, models):
    """fraction = 0.3 explains about 30% of 2,000 rows (within 20-40%), the same rows at
    1 worker and at 2 x 2 with identical values, and each explained row's attributions equal
    those of the full run (fraction = 1) on the same data, whose background is the same;
    rows with a null feature are never explained."""
    rng = np.random.default_rng(404)
    nulls = [(int(r), 2) for r in rng.choice(2_000, 20, replace=False)]
    table = feature_table(rng, 2_000, FLOAT_FEATURES, nulls=nulls)
    src = write_dataset(table, tmp_path / "src", row_group=100)
    fields = 'output = "y"\noutput_index = 1\nmethod = "permutation"\nmax_evals = 48\nbackground = 10\nseed = 9'

    def run(name, extra, shape):
        out = tmp_path / name
        weir("run", explain_job(tmp_path / f"{name}.toml", src, out, models["float"], fields + extra), *shape, check=0)
        return read_output(out).sort_by("id"), explain_step(out)["params"]["background"]

    full, full_background = run("full", "\nfraction = 1.0", ["-w", "1"])
    partial = [run(f"fraction-{shape_id(shape)}", "\nfraction = 0.3", shape) for shape in SHAPES_1_AND_2X2]
    x = matrix(full, FLOAT_FEATURES)
    complete = ~np.isnan(x).any(axis=1)
    full_explained = attributions(full, FLOAT_FEATURES)[3]
    assert np.array_equal(full_explained, complete)

    (one, one_background), (two, two_background) = partial
    assert one_background == two_background == full_background, "the background depends on fraction or shape"
    for name in one.column_names:
        assert same_column(one.column(name), two.column(name)), f"{name} differs between 1 worker and 2 x 2"
    explained = attributions(one, FLOAT_FEATURES)[3]
    share = explained.sum() / table.num_rows
    assert 0.2 <= share <= 0.4, f"fraction = 0.3 explained {share:.3f} of the rows"
    assert not (explained & ~complete).any(), "a row with a null feature was explained"
    assert_nulls_exactly_where(one, FLOAT_FEATURES, explained)
    for name in table.column_names:
        assert same_column(one.column(name), full.column(name))
    for name in shap_names(FLOAT_FEATURES):
        got = one.column(name).to_numpy(zero_copy_only=False)[explained]
        want = full.column(name).to_numpy(zero_copy_only=False)[explained]
        assert np.array_equal(got, want), f"{name}: explained rows differ from the full run's"


def test_where_explains_the_rows_a_filter_expression_keeps(weir, tmp_path, models):
    """where = "<filter expression>" explains exactly the complete rows that pyarrow's
    evaluation of the same condition keeps (x_0 > 0.5 or id < 100), with the full run's
    values, and nulls elsewhere."""
    rng = np.random.default_rng(505)
    table = feature_table(rng, 1_000, FLOAT_FEATURES, nulls=[(3, 1), (700, 4)])
    src = write_dataset(table, tmp_path / "src", row_group=100)
    fields = 'output = "y"\noutput_index = 1\nmethod = "permutation"\nmax_evals = 48\nbackground = 10'
    outs = {}
    for name, extra in [("full", ""), ("where", "\nwhere = \"x_0 > 0.5 or id < 100\"")]:
        outs[name] = tmp_path / name
        weir("run", explain_job(tmp_path / f"{name}.toml", src, outs[name], models["float"], fields + extra), check=0)
    full, some = (read_output(outs[n]).sort_by("id") for n in ("full", "where"))
    x = matrix(some, FLOAT_FEATURES)
    keep = pc.or_(pc.greater(some.column("x_0"), 0.5), pc.less(some.column("id"), 100))
    wanted = keep.to_numpy(zero_copy_only=False) & ~np.isnan(x).any(axis=1)
    wanted = np.where(pd_isnull(keep), False, wanted)
    explained = attributions(some, FLOAT_FEATURES)[3]
    assert 200 < wanted.sum() < 500
    assert np.array_equal(explained, wanted)
    assert_nulls_exactly_where(some, FLOAT_FEATURES, explained)
    for name in shap_names(FLOAT_FEATURES):
        got = some.column(name).to_numpy(zero_copy_only=False)[explained]
        want = full.column(name).to_numpy(zero_copy_only=False)[explained]
        assert np.array_equal(got, want), f"{name}: the where run differs from the full run"


def pd_isnull(array) -> np.ndarray:
    """Where a pyarrow boolean array is null."""
    return array.is_null().to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------
# 5. Reusing a fitted background


def test_fitted_reuses_an_earlier_runs_background(weir, tmp_path):
    """A job on other data with `fitted = "<first output>"` (or its _weir/fitted.json)
    explains against the first run's background: its fitted.json holds the same background
    with reused_from set, and its attributions equal the Python enumeration with that
    background to 1e-9 (a double model with a [batch] output)."""
    model = mlp(tmp_path / "vector.onnx", len(DOUBLE_FEATURES), 6, dtype=TensorProto.DOUBLE, seed=21, vector_output=True)
    rng = np.random.default_rng(505)
    first = feature_table(rng, 200, DOUBLE_FEATURES, nulls=[(9, 1)])
    second = feature_table(rng, 150, DOUBLE_FEATURES, start=10_000, loc=0.7, nulls=[(4, 4)])
    src1, src2 = single_file(first, tmp_path / "src1", 50), single_file(second, tmp_path / "src2", 50)
    fields = 'method = "exact"\nbackground = 15'
    out1 = tmp_path / "out1"
    weir("run", explain_job(tmp_path / "first.toml", src1, out1, model, fields), check=0)
    background = background_of(out1, DOUBLE_FEATURES)
    assert "reused_from" not in explain_step(out1) or explain_step(out1)["reused_from"] is None

    f = model_fn(model, "y")
    for name, fitted in [("out2", out1), ("out3", out1 / "_weir" / "fitted.json")]:
        out = tmp_path / name
        weir("run", explain_job(tmp_path / f"{name}.toml", src2, out, model, f'{fields}\nfitted = "{fitted}"'), check=0)
        step = explain_step(out)
        assert step["reused_from"] == str(fitted)
        assert np.array_equal(background_of(out, DOUBLE_FEATURES), background)
        result = read_output(out).sort_by("id")
        assert result.num_rows == second.num_rows
        x = matrix(result, DOUBLE_FEATURES)
        complete = ~np.isnan(x).any(axis=1)
        assert_nulls_exactly_where(result, DOUBLE_FEATURES, complete)
        want_phi, want_base, want_fx = exact_shapley(f, x[complete], background)
        phi, base, residual, _ = attributions(result, DOUBLE_FEATURES)
        assert np.abs(phi[complete] - want_phi).max() < 1e-9
        np.testing.assert_allclose(base[complete], want_base, rtol=0, atol=1e-9)
        assert np.abs(residual[complete]).max() < 1e-9
        np.testing.assert_allclose((base + phi.sum(axis=1))[complete], want_fx, rtol=0, atol=1e-9)
    # The second data set's own background would differ: the reuse is real.
    own = tmp_path / "own"
    weir("run", explain_job(tmp_path / "own.toml", src2, own, model, fields), check=0)
    assert not np.array_equal(background_of(own, DOUBLE_FEATURES), background)
    assert_background_from(background, first, DOUBLE_FEATURES, 15)


# ---------------------------------------------------------------------------------------
# 6. Bad specs


BAD_SPECS = {
    # case: (model, features, fields, what the message must say)
    "two-inputs": ("two_inputs", '["x_0", "x_1", "x_2"]', "", ["exactly one input"]),
    "int-input": ("int_input", '["x_0", "x_1", "x_2"]', "", ["input 'x'", "float or double"]),
    "no-output-index": ("float", '["x_*"]', 'output = "y"', ["output 'y' has 2 columns", "output_index"]),
    "output-index-out-of-range": ("float", '["x_*"]', 'output = "y"\noutput_index = 2', ["output_index = 2", "has 2 columns"]),
    "several-float-outputs": ("double", '["x_0", "x_1", "x_2", "x_3", "x_4", "x_5"]', "", ["several float outputs", "`output`"]),
    "unknown-output": ("double", '["x_0", "x_1", "x_2", "x_3", "x_4", "x_5"]', 'output = "nope"', ["no output 'nope'", "y, hidden"]),
    "missing-feature": ("float", '["x_0", "x_1", "x_2", "x_3", "x_4", "x_5", "x_6", "x_77"]', 'output = "y"\noutput_index = 1', ["'x_77'", "matches no column"]),
    "wrong-width": ("float", '["x_0", "x_1", "x_2"]', 'output = "y"\noutput_index = 1', ["input 'x'", "[batch, 3]"]),
    "exact-20-features": ("sum20", '["x_*"]', 'method = "exact"', ["20 features", "permutation"]),
    "fraction-0": ("float", '["x_*"]', 'output = "y"\noutput_index = 1\nfraction = 0.0', ["fraction = 0", "(0, 1]"]),
    "fraction-1.5": ("float", '["x_*"]', 'output = "y"\noutput_index = 1\nfraction = 1.5', ["fraction = 1.5", "(0, 1]"]),
    "linear-on-an-mlp": ("double", '["x_0", "x_1", "x_2", "x_3", "x_4", "x_5"]', 'output = "y"\nmethod = "linear"', ['method = "linear"', "LinearRegressor"]),
    "tree-on-an-mlp": ("double", '["x_0", "x_1", "x_2", "x_3", "x_4", "x_5"]', 'output = "y"\nmethod = "tree"', ['method = "tree"', "TreeEnsembleRegressor"]),
    "where-unknown-column": ("float", '["x_*"]', 'output = "y"\noutput_index = 1\nwhere = "nope > 1"', ["nope"]),
}


@pytest.mark.parametrize("case", list(BAD_SPECS), ids=list(BAD_SPECS))
def test_bad_specs_exit_2_with_a_clear_message_and_commit_nothing(weir, tmp_path, models, case):
    """Specs explain cannot honour exit 2 naming the step and the problem, and leave no
    committed output: a model with two inputs or an integer input, a [batch, 2] output
    without output_index or with one out of range, several float outputs and no `output`,
    an output the model lacks, a feature column that does not exist, features that do not
    match the input's width, method = "exact" over 20 features (the message points to
    "permutation"), and fraction = 0 or 1.5."""
    kind, features, fields, needles = BAD_SPECS[case]
    width = 20 if kind == "sum20" else len(FLOAT_FEATURES)
    names = [f"x_{j}" for j in range(width)]
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(606)
    pq.write_table(pa.table({"id": np.arange(30), **{n: rng.normal(size=30) for n in names}}), src / "x.parquet")
    model = {
        "two_inputs": lambda: two_input_model(tmp_path / "two.onnx"),
        "int_input": lambda: int_input_model(tmp_path / "int.onnx", 3),
        "sum20": lambda: sum_model(tmp_path / "sum20.onnx", 20),
        "float": lambda: models["float"],
        "double": lambda: models["double"],
    }[kind]()
    out = tmp_path / "out"
    job = explain_job(tmp_path / "job.toml", src, out, model, fields, features=features)
    proc = weir("run", job, check=2)
    message = proc.stderr
    assert "step 1 (explain)" in message and all(n in message for n in needles), (needles, message)
    assert "panicked" not in message
    assert not (out / "_SUCCESS").exists()
    assert not out.exists() or not list(out.rglob("*.parquet")), "a failed run left part files"
    # `weir validate` refuses the same spec without reading data.
    proc = weir("validate", job, check=2)
    assert all(n in proc.stderr for n in needles), (needles, proc.stderr)
