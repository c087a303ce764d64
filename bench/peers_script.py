"""The hand-written single-process peer of bench/peers.py: what a skilled Python user would
write for impute (mean) → standardize → PCA (8) → score → Parquet.

    python bench/peers_script.py DATA_DIR MODEL OUT_DIR

pyarrow reads the features into one NumPy matrix; NumPy computes the means, scales and the
covariance's eigenvectors (scikit-learn's sign convention); onnxruntime scores batches of
8192 rows with one thread; pyarrow writes one zstd Parquet file.
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

data, model, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
table = pq.read_table(data)
names = [n for n in table.column_names if n.startswith("f_")]
x = np.column_stack([table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])

means = np.nanmean(x, axis=0)
x = np.where(np.isnan(x), means, x)
x -= x.mean(axis=0)
scale = x.std(axis=0)
scale[scale == 0] = 1.0
x /= scale
covariance = (x.T @ x) / (len(x) - 1)
values, vectors = np.linalg.eigh(covariance)
order = np.argsort(values)[::-1][:8]
components = vectors[:, order].T
signs = np.sign(components[np.arange(8), np.argmax(np.abs(components), axis=1)])
components *= signs[:, None]
pcs = (x @ components.T).astype(np.float32)

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
scores = np.concatenate([session.run(None, {"x": pcs[lo : lo + 8192]})[0] for lo in range(0, len(pcs), 8192)])

columns = {"id": table.column("id"), "category": table.column("category")}
columns.update({f"pc_{j}": pa.array(pcs[:, j].astype(np.float64)) for j in range(8)})
columns["score"] = pa.array(scores[:, 0])
out.mkdir(parents=True, exist_ok=True)
pq.write_table(pa.table(columns), out / "part-0.parquet", compression="zstd")
