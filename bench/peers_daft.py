"""The Daft peer of bench/peers.py: impute (mean) → standardize → PCA (8) → score → Parquet,
written the way Daft's documentation suggests (aggregations for the statistics, column
expressions for the transforms, a `@daft.cls` batch method holding the ONNX Runtime
session, which does not pickle).

    bench/.venv-peers/bin/python bench/peers_daft.py DATA_DIR MODEL OUT_DIR
"""

import sys
from pathlib import Path

import daft
import numpy as np
import onnxruntime as ort
from daft import col

data, model, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
features = [f"f_{i:02d}" for i in range(32)]
df = daft.read_parquet(str(data / "*.parquet"))

# Pass 1: the means of the present values; nulls take them.
means = df.agg(*[col(f).mean().alias(f) for f in features]).to_pydict()
df = df.with_columns({f: col(f).fill_null(means[f][0]) for f in features})

# Pass 2: population standard deviations of the imputed columns.
squares = df.agg(*[((col(f) - means[f][0]) * (col(f) - means[f][0])).mean().alias(f) for f in features]).to_pydict()
scales = {f: (np.sqrt(squares[f][0]) or 1.0) for f in features}
df = df.with_columns({f: (col(f) - means[f][0]) / scales[f] for f in features})

# Pass 3: the covariance of the standardized columns, then its eigenvectors in NumPy.
pairs = [(i, j) for i in range(32) for j in range(i, 32)]
sums = df.agg(*[(col(features[i]) * col(features[j])).sum().alias(f"c{i}_{j}") for i, j in pairs], col("id").count().alias("n")).to_pydict()
n = sums["n"][0]
covariance = np.zeros((32, 32))
for i, j in pairs:
    covariance[i, j] = covariance[j, i] = sums[f"c{i}_{j}"][0] / (n - 1)
values, vectors = np.linalg.eigh(covariance)
components = vectors[:, np.argsort(values)[::-1][:8]].T
components *= np.sign(components[np.arange(8), np.argmax(np.abs(components), axis=1)])[:, None]

# Pass 4: project, score, write.
df = df.with_columns(
    {f"pc_{k}": sum((col(f) * float(components[k, j]) for j, f in enumerate(features)), daft.lit(0.0)) for k in range(8)}
)


@daft.cls
class Scorer:
    def __init__(self, path: str):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    @daft.method.batch(return_dtype=daft.DataType.float32(), batch_size=8192)
    def __call__(self, *pcs):
        x = np.column_stack([p.to_arrow().to_numpy(zero_copy_only=False) for p in pcs]).astype(np.float32)
        return self.session.run(None, {"x": x})[0][:, 0]


scorer = Scorer(model)
df = df.select("id", "category", *[f"pc_{k}" for k in range(8)], scorer(*[col(f"pc_{k}") for k in range(8)]).alias("score"))
out.mkdir(parents=True, exist_ok=True)
for old in out.glob("*.parquet"):
    old.unlink()
df.write_parquet(str(out), compression="zstd")
