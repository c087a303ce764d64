"""scikit-learn's pipeline (derived columns by NumPy, SimpleImputer, OneHotEncoder,
OrdinalEncoder, RobustScaler) and the LogisticRegression behind `model.onnx`: the
probabilities Weir's `score` gives equal `predict_proba` on scikit-learn's transform within
1e-5 (the model runs in float32), and the transformed columns equal scikit-learn's."""

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds


def case_data():
    path = Path(__file__).with_name("make_data.py")
    spec = importlib.util.spec_from_file_location("feature_pipeline_make_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(out: Path, data: Path) -> None:
    case = case_data()
    source = ds.dataset(data, format="parquet").to_table().sort_by("id")
    x, onehot_names = case.features(source)
    want = case.model(source).predict_proba(x)[:, 1]
    got = ds.dataset(out, format="parquet").to_table().sort_by("id")
    assert got["id"].to_pylist() == source["id"].to_pylist()
    names = onehot_names + ["plan"] + case.NUMERIC
    assert [n for n in got.column_names if n.startswith("color_")] == onehot_names
    transformed = np.column_stack([got[n].to_numpy() for n in names])
    np.testing.assert_allclose(transformed, x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got["p_1"].to_numpy(), want, rtol=0, atol=1e-5)
    assert 0.2 < want.mean() < 0.8 and want.std() > 0.1, "the model separates the classes"
