"""Writes demo/churn.onnx, the model demo/score.toml scores the cleaned demo output with: a
logistic model of the standardized age, income and tenure, p = sigmoid(x·w + b), written
node by node with onnx.helper. Its weights are made up for the demo (short tenure, youth and
a low income make churn likelier), not trained. Run with any Python that has onnx; the
file is committed, so the demo itself needs no Python."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).parent / "churn.onnx"


def main():
    w = np.array([[-0.4], [-0.3], [-1.2]], dtype=np.float32)  # age, income, tenure_months
    b = np.array([-1.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["margin0"]),
            helper.make_node("Add", ["margin0", "b"], ["margin"]),
            helper.make_node("Sigmoid", ["margin"], ["p"]),
        ],
        "churn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10, producer_name="weir-demo")
    onnx.checker.check_model(model)
    OUT.write_bytes(model.SerializeToString())


if __name__ == "__main__":
    main()
