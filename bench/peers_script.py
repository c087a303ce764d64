"""The hand-written single-process peer of bench/peers.py: what a skilled Python user would
write for impute (mean) → standardize → PCA (8) → score → Parquet, streaming so that it
runs at every size in bounded memory.

    python bench/peers_script.py DATA_DIR MODEL OUT_DIR

pyarrow streams record batches of 128 Ki rows; three passes over the data:
1. the sums and counts of the present values (the imputation means);
2. on the imputed, centred features: their sums and cross-products, from which follow the
   population standard deviations and the covariance of the standardized features, whose
   eigenvectors NumPy finds (scikit-learn's sign convention);
3. impute, standardize, project, score with onnxruntime (one thread, batches of 8192
   rows) and write one zstd Parquet file with pyarrow's ParquetWriter.
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

BATCH = 128 * 1024
SCORE_BATCH = 8192

data, model, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
dataset = ds.dataset(data, format="parquet")
names = [n for n in dataset.schema.names if n.startswith("f_")]


def features(batch) -> np.ndarray:
    """The batch's features as a float64 matrix, nulls as NaN."""
    return np.column_stack([batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])


# Pass 1: means of the present values.
sums = np.zeros(len(names))
counts = np.zeros(len(names))
for batch in dataset.to_batches(columns=names, batch_size=BATCH):
    x = features(batch)
    present = ~np.isnan(x)
    sums += np.where(present, x, 0.0).sum(axis=0)
    counts += present.sum(axis=0)
means = sums / counts

# Pass 2: moments of the imputed features, centred on the means (nulls become 0).
rows = 0
centred_sums = np.zeros(len(names))
products = np.zeros((len(names), len(names)))
for batch in dataset.to_batches(columns=names, batch_size=BATCH):
    x = np.nan_to_num(features(batch) - means, nan=0.0)
    rows += len(x)
    centred_sums += x.sum(axis=0)
    products += x.T @ x
shift = centred_sums / rows
scale = np.sqrt(np.diag(products) / rows - shift**2)
scale[scale == 0] = 1.0
covariance = (products - rows * np.outer(shift, shift)) / (rows - 1) / np.outer(scale, scale)
values, vectors = np.linalg.eigh(covariance)
order = np.argsort(values)[::-1][:8]
components = vectors[:, order].T
components *= np.sign(components[np.arange(8), np.argmax(np.abs(components), axis=1)])[:, None]
centre = means + shift

# Pass 3: transform, score, write.
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
out.mkdir(parents=True, exist_ok=True)
writer = None
for batch in dataset.to_batches(columns=["id", "category", *names], batch_size=BATCH):
    x = features(batch)
    x = np.where(np.isnan(x), means, x)
    pcs = ((x - centre) / scale) @ components.T
    pcs32 = pcs.astype(np.float32)
    scores = np.concatenate([session.run(None, {"x": pcs32[lo : lo + SCORE_BATCH]})[0] for lo in range(0, len(pcs32), SCORE_BATCH)])
    columns = {"id": batch.column("id"), "category": batch.column("category")}
    columns.update({f"pc_{j}": pa.array(pcs32[:, j].astype(np.float64)) for j in range(8)})
    columns["score"] = pa.array(scores[:, 0])
    table = pa.table(columns)
    if writer is None:
        writer = pq.ParquetWriter(out / "part-0.parquet", table.schema, compression="zstd")
    writer.write_table(table)
writer.close()
