"""Data and model for the scoring benchmark (seeded; written under bench/data, never committed).

    python bench/score_setup.py ROWS DIR

writes DIR/data/part-*.parquet (ROWS rows: an int64 id and 32 float32 features, no nulls,
row groups of 128 Ki rows, 4 files) and DIR/mlp.onnx: a 32 → 64 → 64 → 2 MLP with a softmax,
the size of a typical tabular scoring model.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper

FEATURES = 32


def model(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    weights = {
        "w1": rng.normal(scale=0.2, size=(FEATURES, 64)),
        "b1": rng.normal(scale=0.1, size=64),
        "w2": rng.normal(scale=0.2, size=(64, 64)),
        "b2": rng.normal(scale=0.1, size=64),
        "w3": rng.normal(scale=0.2, size=(64, 2)),
        "b3": rng.normal(scale=0.1, size=2),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a1"]),
        helper.make_node("Add", ["a1", "b1"], ["z1"]),
        helper.make_node("Relu", ["z1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "w2"], ["a2"]),
        helper.make_node("Add", ["a2", "b2"], ["z2"]),
        helper.make_node("Relu", ["z2"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w3"], ["a3"]),
        helper.make_node("Add", ["a3", "b3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(onnx_model)
    path.write_bytes(onnx_model.SerializeToString())


def data(rows: int, directory: Path, files: int = 4):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    start = 0
    for index in range(files):
        n = rows // files + (1 if index < rows % files else 0)
        columns = {"id": np.arange(start, start + n, dtype=np.int64)}
        for j in range(FEATURES):
            columns[f"f_{j:02d}"] = rng.normal(size=n).astype(np.float32)
        pq.write_table(pa.table(columns), directory / f"part-{index}.parquet", row_group_size=128 * 1024, compression="zstd")
        start += n


if __name__ == "__main__":
    rows, out = int(sys.argv[1]), Path(sys.argv[2])
    model(out / "mlp.onnx")
    data(rows, out / "data")
