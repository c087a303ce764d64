"""The PySpark peer of bench/peers.py: impute (mean) → standardize → PCA (8) → score →
Parquet, with MLlib's `Imputer`, `StandardScaler` and `PCA`, and the model in a pandas UDF
that keeps one ONNX Runtime session per Python worker.

    PYSPARK_PYTHON=bench/.venv-peers/bin/python SPARK_LOCAL_IP=127.0.0.1 \
      bench/.venv-peers/bin/python bench/peers_spark.py DATA_DIR MODEL OUT_DIR

Two differences from scikit-learn, handled so that the scores agree with the other
systems: MLlib's `StandardScaler` divides by the sample standard deviation (ddof = 1, a
relative change of 5e-7 at 1M rows, well inside the 1e-4 check), and its `PCA` does not
fix the components' signs, so the UDF flips each component to scikit-learn's convention
(largest |loading| positive) before scoring.
"""

import sys
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.ml import Pipeline
from pyspark.ml.feature import PCA, Imputer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

data, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
spark = (
    SparkSession.builder.master("local[*]")
    .config("spark.driver.memory", "6g")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.shuffle.partitions", "4")
    .config("spark.sql.parquet.compression.codec", "zstd")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
features = [f"f_{i:02d}" for i in range(32)]
df = spark.read.parquet(data)

pipeline = Pipeline(
    stages=[
        Imputer(strategy="mean", inputCols=features, outputCols=features),
        VectorAssembler(inputCols=features, outputCol="features"),
        StandardScaler(withMean=True, withStd=True, inputCol="features", outputCol="scaled"),
        PCA(k=8, inputCol="scaled", outputCol="pcs"),
    ]
)
fitted = pipeline.fit(df)
components = fitted.stages[-1].pc.toArray().T  # 8 × 32
signs = np.sign(components[np.arange(8), np.argmax(np.abs(components), axis=1)])


@pandas_udf("float")
def score(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    for pcs in batches:
        x = (np.stack(pcs.to_numpy()) * signs).astype(np.float32)
        yield pd.Series(session.run(None, {"x": x})[0][:, 0])


projected = fitted.transform(df).withColumn("pc", vector_to_array("pcs"))
result = projected.select(
    "id",
    "category",
    *[(F.col("pc")[k] * float(signs[k])).alias(f"pc_{k}") for k in range(8)],
    score(F.col("pc")).alias("score"),
)
result.write.mode("overwrite").parquet(out)
spark.stop()
