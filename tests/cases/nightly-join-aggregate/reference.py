"""The same pipeline in DuckDB (join, filter, group-by, having), NumPy and scikit-learn
(StandardScaler), scored by onnxruntime's Python API: Weir's groups, features and
probabilities equal them (features within 1e-9, probabilities within 1e-5: the model runs
in float32)."""

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime
import pyarrow.dataset as ds


def case_data():
    path = Path(__file__).with_name("make_data.py")
    spec = importlib.util.spec_from_file_location("nightly_join_aggregate_make_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(out: Path, data: Path) -> None:
    case = case_data()
    folder = data.parent
    groups, x = case.features(folder)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    got = ds.dataset(out, format="parquet").to_table().sort_by("customer_id")
    assert got["customer_id"].to_pylist() == groups["customer_id"].tolist() and len(groups) > 600
    assert got["segment"].to_pylist() == groups["segment"].tolist()
    transformed = np.column_stack([got[name].to_numpy() for name in case.FEATURES])
    np.testing.assert_allclose(transformed, x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got["p_1"].to_numpy(), probabilities[:, 1], rtol=0, atol=1e-5)
    assert got["label"].to_pylist() == label.tolist()
    assert 0.2 < probabilities[:, 1].mean() < 0.8, "the model separates the classes"
