"""Orders with a skewed amount (nulls), an item count, an age (nulls), a colour (six
categories and nulls), a plan and a timestamp, in three files; and `model.onnx`, a
LogisticRegression trained on scikit-learn's version of the job's transform (`features`),
exported with skl2onnx."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUMERIC = ["amount", "log_amount", "per_item", "age", "hour"]


def table() -> pa.Table:
    rng = np.random.default_rng(34)
    n = 6_000
    amount = rng.lognormal(3, 1, n)
    ts = np.datetime64("2026-03-28T00:00:00") + rng.integers(0, 3 * 86_400, n).astype("timedelta64[s]")
    return pa.table(
        {
            "id": np.arange(n, dtype=np.int64),
            "amount": pa.array(amount, mask=rng.random(n) < 0.05),
            "n_items": pa.array(rng.integers(1, 9, n), pa.int64()),
            "age": pa.array(rng.normal(40, 12, n), mask=rng.random(n) < 0.08),
            "color": pa.array(rng.choice(["red", "green", "blue", "teal", "olive", "plum"], n), mask=rng.random(n) < 0.03),
            "plan": pa.array(rng.choice(["free", "pro", "team"], n)),
            "ts": pa.array(ts, pa.timestamp("us")),
        }
    )


def features(data: pa.Table):
    """scikit-learn's transform, in the job's column order: the one-hot colour columns, the
    plan's code, then the five scaled numbers."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, RobustScaler

    amount = data["amount"].to_numpy(zero_copy_only=False).astype(float)
    derived = {
        "amount": amount,
        "log_amount": np.log1p(amount),
        "per_item": amount / data["n_items"].to_numpy(),
        "age": data["age"].to_numpy(zero_copy_only=False).astype(float),
    }
    imputed = SimpleImputer(strategy="mean").fit_transform(np.column_stack(list(derived.values())))
    hour = data["ts"].to_numpy().astype("datetime64[h]").astype(np.int64) % 24
    numeric = RobustScaler().fit_transform(np.column_stack([imputed, hour]))
    color = np.array(data["color"].to_pylist(), dtype=object).reshape(-1, 1)
    onehot = OneHotEncoder(sparse_output=False, handle_unknown="ignore").fit(color)
    plan = OrdinalEncoder().fit_transform(np.array(data["plan"].to_pylist(), dtype=object).reshape(-1, 1))
    return np.column_stack([onehot.transform(color), plan, numeric]), list(onehot.get_feature_names_out(["color"]))


def labels(data: pa.Table) -> np.ndarray:
    age = data["age"].to_numpy(zero_copy_only=False).astype(float)
    return ((np.nan_to_num(age, nan=40) > 42) ^ (np.array(data["color"].to_pylist()) == "red")).astype(int)


def model(data: pa.Table):
    from sklearn.linear_model import LogisticRegression

    x, _ = features(data)
    return LogisticRegression(max_iter=1_000).fit(x, labels(data))


def make(folder: Path) -> None:
    from skl2onnx import to_onnx

    data = table()
    directory = folder / "data"
    directory.mkdir(parents=True)
    for index, (lo, hi) in enumerate([(0, 2_500), (2_500, 4_000), (4_000, data.num_rows)]):
        pq.write_table(data.slice(lo, hi - lo), directory / f"part-{index}.parquet", row_group_size=700)
    x, _ = features(data)
    onnx_model = to_onnx(model(data), x[:1].astype(np.float32), options={"zipmap": False})
    (folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
