"""Writes the ONNX seed corpus of the fuzz harness (`corpus/onnx/`): a linear regression and
a logistic regression (skl2onnx), a small gradient-boosted tree ensemble and a random forest
regressor (the two tree encodings), and an MLP made
with `onnx.helper`: the node kinds and initializers Weir's graph reader follows. The files
are committed; rerun this only to change them:

    .venv/bin/python tests/fuzz/make_onnx_seeds.py
"""

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

OUT = Path(__file__).resolve().parent / "corpus" / "onnx"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    plain = {"zipmap": False}
    models = {
        "linear.onnx": to_onnx(LinearRegression().fit(x, x[:, 0] * 2), x[:1], target_opset=17),
        "logistic.onnx": to_onnx(LogisticRegression().fit(x, y), x[:1], target_opset=17, options=plain),
        "trees.onnx": to_onnx(GradientBoostingClassifier(n_estimators=3, max_depth=2).fit(x, y), x[:1], target_opset=17, options=plain),
        "forest.onnx": to_onnx(RandomForestRegressor(n_estimators=2, max_depth=2, random_state=0).fit(x, x[:, 2]), x[:1], target_opset=17),
    }
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], rng.normal(size=8).astype(np.float32).tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.1, -0.2])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]), helper.make_node("Relu", ["z"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])]
    graph = helper.make_graph(nodes, "mlp", inputs, outputs, [w, b])
    models["mlp.onnx"] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for name, model in models.items():
        (OUT / name).write_bytes(model.SerializeToString())
        print(name, (OUT / name).stat().st_size)


if __name__ == "__main__":
    main()
