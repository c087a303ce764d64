"""`score` against onnxruntime's Python API, on models the tests build: scikit-learn models
converted with skl2onnx (zipmap off) and an MLP graph written with onnx.helper."""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor

from conftest import read_output, write_job
from helpers import SCORE_FEATURES, helper_mlp, onnx_reference

ROWS = 2_500
TOL = 1e-5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Features with an `id`, over three files and several row groups."""
    rng = np.random.default_rng(42)
    x = rng.normal(size=(ROWS, len(SCORE_FEATURES)))
    src = tmp_path_factory.mktemp("score") / "src"
    src.mkdir()
    table = pa.table({"id": np.arange(ROWS), **{name: x[:, j] for j, name in enumerate(SCORE_FEATURES)}})
    for index, (lo, hi) in enumerate([(0, 900), (900, 1_700), (1_700, ROWS)]):
        pq.write_table(table.slice(lo, hi - lo), src / f"part-{index}.parquet", row_group_size=333)
    return src, x


def sklearn_model(kind: str, x: np.ndarray, path: Path) -> Path:
    rng = np.random.default_rng(7)
    y_class = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + rng.normal(scale=0.3, size=len(x)) > 0).astype(int)
    y_multi = np.digitize(x[:, 0] + x[:, 3], [-0.7, 0.7])
    if kind == "logistic":
        model = LogisticRegression(max_iter=500).fit(x, y_multi)
    elif kind == "mlp_classifier":
        model = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0).fit(x, y_class)
    elif kind == "mlp_regressor":
        model = MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(x, x[:, 0] * 2 - x[:, 4])
    elif kind == "gradient_boosting":
        model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y_multi)
    else:
        raise ValueError(kind)
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    onx = to_onnx(model, x[:1].astype(np.float32), options=options, target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return path


def score_job(tmp_path: Path, src: Path, model: Path, extra: str = "", inputs: str = "", name="job.toml") -> Path:
    out = tmp_path / "out"
    inputs = inputs or f"inputs = {{ {onnx.load(str(model)).graph.input[0].name} = {json.dumps(SCORE_FEATURES)} }}"
    return write_job(
        tmp_path / name,
        f'name = "score"\n[source]\nuri = "{src}"\n[[step]]\nop = "score"\nmodel = "{model}"\n{inputs}\n{extra}\n'
        f'[sink]\nuri = "{out}"\nmode = "overwrite"\n',
    )


def columns_of(table: pa.Table, output: str, width: int) -> np.ndarray:
    if width == 1:
        return table.column(output).to_numpy().reshape(-1, 1)
    return np.column_stack([table.column(f"{output}_{j}").to_numpy() for j in range(width)])


@pytest.mark.parametrize("kind", ["logistic", "mlp_classifier", "mlp_regressor", "gradient_boosting", "helper_mlp"])
@pytest.mark.parametrize(
    "shape, batch_size",
    [(["-w", "1"], 64), (["-w", "1"], 8192), (["-p", "2", "-w", "2"], 100)],
    ids=["1worker-batch64", "1worker-batch8192", "2procs-x-2workers-batch100"],
)
def test_scores_match_onnxruntime_python(weir, tmp_path, dataset, kind, shape, batch_size):
    src, x = dataset
    model = helper_mlp(tmp_path / "m.onnx") if kind == "helper_mlp" else sklearn_model(kind, x, tmp_path / "m.onnx")
    job = score_job(tmp_path, src, model, extra=f"batch_size = {batch_size}")
    weir("run", job, *shape, check=0)
    result = read_output(tmp_path / "out").sort_by("id")
    assert result.num_rows == ROWS
    expected = onnx_reference(model, x)
    for name, values in expected.items():
        values = values.reshape(len(x), -1)
        got = columns_of(result, name, values.shape[1])
        if values.dtype.kind in "iu":
            np.testing.assert_array_equal(got, values)
        else:
            np.testing.assert_allclose(got, values, rtol=TOL, atol=TOL)
    manifest = json.loads((tmp_path / "out" / "_weir" / "manifest.json").read_text())
    assert manifest["models"] == [
        {"uri": str(model), "sha256": hashlib.sha256(model.read_bytes()).hexdigest(), "bytes": model.stat().st_size}
    ]


def test_outputs_can_be_named_and_dropped(weir, tmp_path, dataset):
    src, x = dataset
    model = sklearn_model("logistic", x, tmp_path / "m.onnx")
    job = score_job(tmp_path, src, model, extra='outputs = { probabilities = ["p_low", "p_mid", "p_high"] }')
    weir("run", job, check=0)
    result = read_output(tmp_path / "out").sort_by("id")
    assert result.column_names == ["id", *SCORE_FEATURES, "p_low", "p_mid", "p_high"]
    probabilities = onnx_reference(model, x)["probabilities"]
    np.testing.assert_allclose(result.column("p_high").to_numpy(), probabilities[:, 2], rtol=TOL, atol=TOL)


def test_nulls_in_inputs_error_skip_or_nan(weir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    x = np.arange(12, dtype=float).reshape(2, 6)
    table = pa.table({"id": [0, 1], **{n: pa.array([x[0, j], None if j == 2 else x[1, j]]) for j, n in enumerate(SCORE_FEATURES)}})
    pq.write_table(table, src / "x.parquet")
    model = helper_mlp(tmp_path / "m.onnx")
    proc = weir("run", score_job(tmp_path, src, model), check=2)
    assert "column 'f2'" in proc.stderr and "on_null" in proc.stderr, proc.stderr
    weir("run", score_job(tmp_path, src, model, extra='on_null = "skip"'), check=0)
    assert read_output(tmp_path / "out").column("id").to_pylist() == [0]
    weir("run", score_job(tmp_path, src, model, extra='on_null = "nan"'), check=0)
    fed = x.copy()
    fed[1, 2] = np.nan
    got = columns_of(read_output(tmp_path / "out"), "y", 3)
    np.testing.assert_allclose(got, onnx_reference(model, fed)["y"], rtol=TOL, atol=TOL, equal_nan=True)


def test_bad_models_and_mappings_exit_2_with_precise_messages(weir, tmp_path, dataset):
    src, x = dataset
    model = helper_mlp(tmp_path / "m.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(model.read_bytes()[:200])
    cases = [
        (score_job(tmp_path, src, tmp_path / "missing.onnx", inputs=f"inputs = {{ x = {json.dumps(SCORE_FEATURES)} }}", name="a.toml"), ["missing.onnx"]),
        (score_job(tmp_path, src, corrupt, inputs=f"inputs = {{ x = {json.dumps(SCORE_FEATURES)} }}", name="b.toml"), ["corrupt.onnx", "cannot load"]),
        (score_job(tmp_path, src, model, inputs=f"inputs = {{ features = {json.dumps(SCORE_FEATURES)} }}", name="c.toml"), ["no input 'features'", "x"]),
        (score_job(tmp_path, src, model, inputs=f"inputs = {{ x = {json.dumps(SCORE_FEATURES[:4])} }}", name="d.toml"), ["input 'x'", "[batch, 6]", "[batch, 4]"]),
        (score_job(tmp_path, src, model, inputs='inputs = { x = ["id", "f1", "f2", "f3", "f4", "f5"] }\nsha256 = "00"', name="e.toml"), ["sha256", "pins 00"]),
    ]
    for job, needles in cases:
        proc = weir("run", job, check=2)
        assert all(n in proc.stderr for n in needles) and "step 1 (score)" in proc.stderr, (needles, proc.stderr)
        assert not (tmp_path / "out" / "_SUCCESS").exists()
    # validate runs the same checks without reading data.
    proc = weir("validate", cases[3][0], check=2)
    assert "[batch, 4]" in proc.stderr

    # A string column cannot feed a float tensor.
    text_src = tmp_path / "text"
    text_src.mkdir()
    pq.write_table(pa.table({"id": [0], **{n: ["1.0"] if n == "f0" else [1.0] for n in SCORE_FEATURES}}), text_src / "t.parquet")
    proc = weir("run", score_job(tmp_path, text_src, model, name="f.toml"), check=2)
    assert "column 'f0'" in proc.stderr and "cast it" in proc.stderr, proc.stderr


@pytest.mark.parametrize("shape", [["-w", "1"], ["-p", "2", "-w", "2"]], ids=["1worker", "2procs-x-2workers"])
def test_impute_standardize_pca_score_chain_equals_scikit_learn_and_onnxruntime(weir, tmp_path, shape):
    """The whole chain of the design's example job against the same pipeline built from
    scikit-learn (SimpleImputer → StandardScaler → PCA) and onnxruntime's Python API."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x, y = data.data, data.target
    rng = np.random.default_rng(12)
    names = [f"c{j:02d}" for j in range(x.shape[1])]
    masked = np.where(rng.random(x.shape) < 0.05, np.nan, x)
    src = tmp_path / "src"
    src.mkdir()
    table = pa.table({"id": np.arange(len(x)), **{n: pa.array(masked[:, j], from_pandas=True) for j, n in enumerate(names)}})
    for index, (lo, hi) in enumerate([(0, 200), (200, 390), (390, len(x))]):
        pq.write_table(table.slice(lo, hi - lo), src / f"part-{index}.parquet", row_group_size=64)

    prep = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), PCA(n_components=8, svd_solver="full"))
    features = prep.fit_transform(masked)
    classifier = LogisticRegression(max_iter=1000).fit(features, y)
    model = tmp_path / "churn.onnx"
    onx = to_onnx(classifier, features[:1].astype(np.float32), options={id(classifier): {"zipmap": False}}, target_opset=17)
    model.write_bytes(onx.SerializeToString())

    out = tmp_path / "out"
    job = write_job(
        tmp_path / "job.toml",
        f"""
name = "chain"
[source]
uri = "{src}"
[[step]]
op = "impute"
columns = ["c*"]
strategy = "median"
[[step]]
op = "standardize"
columns = ["c*"]
[[step]]
op = "pca"
columns = ["c*"]
components = 8
output = "pc"
[[step]]
op = "score"
model = "{model}"
inputs = {{ X = ["pc_*"] }}
outputs = {{ probabilities = ["p_benign_0", "p_benign_1"], label = "label" }}
[sink]
uri = "{out}"
""",
    )
    weir("run", job, *shape, check=0)
    result = read_output(out).sort_by("id")
    expected = onnx_reference(model, features)
    got = np.column_stack([result.column(c).to_numpy() for c in ["p_benign_0", "p_benign_1"]])
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.column("label").to_numpy(), expected["label"])
    pcs = np.column_stack([result.column(f"pc_{j}").to_numpy() for j in range(8)])
    np.testing.assert_allclose(pcs, features, rtol=1e-6, atol=1e-6)


def test_a_missing_onnx_runtime_library_says_how_to_install_it(weir, tmp_path, dataset):
    import os

    src, _ = dataset
    model = helper_mlp(tmp_path / "m.onnx")
    job = score_job(tmp_path, src, model, inputs=f"inputs = {{ x = {json.dumps(SCORE_FEATURES)} }}")
    env = dict(os.environ, ORT_DYLIB_PATH=str(tmp_path / "nowhere" / "libonnxruntime.so"))
    proc = weir("run", job, env=env, check=2)
    assert "ORT_DYLIB_PATH" in proc.stderr and "pip install onnxruntime==1.31.1" in proc.stderr, proc.stderr
    assert "panicked" not in proc.stderr


def int_model(path: Path) -> Path:
    """y = float(x) * 2 + 1 for an int64 input x of shape [N, 1]."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xf", "two"], ["m"]),
            helper.make_node("Add", ["m", "one"], ["y"]),
        ],
        "int_input",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(np.array([2.0], np.float32), "two"), numpy_helper.from_array(np.array([1.0], np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


INT_JOB = """name = "int-input"
[source]
uri = "{src}"
[[step]]
op = "score"
model = "{model}"
inputs = {{ x = ["v"] }}
outputs = {{ y = "y" }}
[sink]
uri = "{out}"
"""


@pytest.mark.parametrize("bad", [float("nan"), 1e300, -1e20, 2.5, float("inf")])
def test_an_integer_model_input_is_never_fed_a_value_the_cast_changed(weir, tmp_path, bad):
    model = int_model(tmp_path / "int.onnx")
    src = tmp_path / "src"
    src.mkdir()
    good = [0.0, 3.0, -7.0, 1e6]
    pq.write_table(pa.table({"id": np.arange(5), "v": pa.array(good + [bad], pa.float64())}), src / "x.parquet")
    proc = weir("run", write_job(tmp_path / "job.toml", INT_JOB.format(src=src, model=model, out=tmp_path / "out")), check=2)
    assert "'v'" in proc.stderr and "integer model input 'x'" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    # Integral floats are fed exactly: the same scores as onnxruntime's Python API.
    pq.write_table(pa.table({"id": np.arange(4), "v": pa.array(good, pa.float64())}), src / "x.parquet")
    weir("run", write_job(tmp_path / "ok.toml", INT_JOB.format(src=src, model=model, out=tmp_path / "ok")), check=0)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": np.array(good, np.int64).reshape(-1, 1)})[0][:, 0]
    got = read_output(tmp_path / "ok").sort_by("id")["y"].to_numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "fields, message",
    [
        ('inputs = { x = ["f0", "f0", "f1", "f2", "f3", "f4"] }\noutputs = { y = ["a", "b", "c"] }\n', "names column 'f0' twice"),
        ('inputs = { x = ["f*"] }\noutputs = { y = ["a", "b", "c"] }\nintra_op_threads = 2000\n', "intra_op_threads = 2000"),
    ],
    ids=["duplicate-input-column", "too-many-threads"],
)
def test_score_specs_that_would_misbehave_are_refused(weir, tmp_path, fields, message):
    model = helper_mlp(tmp_path / "mlp.onnx")
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({name: np.arange(4, dtype=np.float32) for name in SCORE_FEATURES}), src / "x.parquet")
    job = write_job(tmp_path / "job.toml", f'name = "s"\n[source]\nuri = "{src}"\n[[step]]\nop = "score"\nmodel = "{model}"\n{fields}[sink]\nuri = "{tmp_path / "out"}"\n')
    proc = weir("validate", job, check=2)
    assert message in proc.stderr and "step 1 (score)" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
