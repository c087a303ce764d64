"""The Ray Data peer of bench/peers.py: impute (mean) → standardize → PCA (8) → score →
Parquet, with Ray's `SimpleImputer` and `StandardScaler` preprocessors, the covariance
summed from `map_batches` partials (Ray has no PCA preprocessor), and the model in an actor
pool of `map_batches` whose actors each hold one ONNX Runtime session.

    bench/.venv-peers/bin/python bench/peers_ray.py DATA_DIR MODEL OUT_DIR

On 2 CPUs an actor pool of 2 hangs unless each actor asks for half a CPU (seen on these
machines), hence `num_cpus=0.5`.
"""

import shutil
import sys

import numpy as np
import ray
from ray.data.preprocessors import SimpleImputer, StandardScaler

data, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
features = [f"f_{i:02d}" for i in range(32)]
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False

ds = ray.data.read_parquet(data)
ds = SimpleImputer(columns=features, strategy="mean").fit_transform(ds)
ds = StandardScaler(columns=features).fit_transform(ds).materialize()


def cross_products(batch):
    x = np.column_stack([batch[f] for f in features])
    return {"xtx": [(x.T @ x).ravel()], "n": [len(x)]}


parts = ds.map_batches(cross_products, batch_format="numpy", batch_size=65536).take_all()
n = sum(p["n"] for p in parts)
covariance = sum(p["xtx"] for p in parts).reshape(32, 32) / (n - 1)
values, vectors = np.linalg.eigh(covariance)
components = vectors[:, np.argsort(values)[::-1][:8]].T
components *= np.sign(components[np.arange(8), np.argmax(np.abs(components), axis=1)])[:, None]


class Scorer:
    def __init__(self, path, components):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.components = components

    def __call__(self, batch):
        x = np.column_stack([batch[f] for f in features])
        pcs = x @ self.components.T
        scores = self.session.run(None, {"x": pcs.astype(np.float32)})[0][:, 0]
        result = {"id": batch["id"], "category": batch["category"]}
        result.update({f"pc_{k}": pcs[:, k] for k in range(8)})
        result["score"] = scores
        return result


scored = ds.map_batches(
    Scorer,
    fn_constructor_args=(model, components),
    batch_size=8192,
    batch_format="numpy",
    concurrency=2,
    num_cpus=0.5,
)
shutil.rmtree(out, ignore_errors=True)
scored.write_parquet(out, compression="zstd")
ray.shutdown()
