"""The peer of Weir's `score` step: onnxruntime's Python API on the same model, batch size
and thread count.

    python bench/score_python.py DIR [--model-only] [--batch-size 8192] [--threads 1]

End to end (default): read DIR/data with pyarrow, one file at a time, score every batch
with `session.run`, write the probabilities beside the inputs with pyarrow (zstd), like
the Weir job in score.sh. `--model-only` times `session.run` alone over the rows already
in memory: the floor of the model's own cost.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

parser = argparse.ArgumentParser()
parser.add_argument("dir", type=Path)
parser.add_argument("--model-only", action="store_true")
parser.add_argument("--batch-size", type=int, default=8192)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()

options = ort.SessionOptions()
options.intra_op_num_threads = args.threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(str(args.dir / "mlp.onnx"), options, providers=["CPUExecutionProvider"])
features = [f"f_{j:02d}" for j in range(32)]
files = sorted((args.dir / "data").glob("*.parquet"))

if args.model_only:
    x = np.concatenate([np.column_stack([pq.read_table(f, columns=[c]).column(c).to_numpy() for c in features]) for f in files])
    started = time.perf_counter()
    for lo in range(0, len(x), args.batch_size):
        session.run(None, {"x": x[lo : lo + args.batch_size]})
    elapsed = time.perf_counter() - started
    print(f"model only: {len(x)} rows in {elapsed:.3f} s ({len(x) / elapsed:,.0f} rows/s)")
else:
    out = args.dir / "out-python"
    out.mkdir(exist_ok=True)
    rows = 0
    for index, path in enumerate(files):
        parquet = pq.ParquetFile(path)
        writer = None
        for batch in parquet.iter_batches(batch_size=args.batch_size):
            x = np.column_stack([batch.column(c).to_numpy() for c in features])
            (probabilities,) = session.run(None, {"x": x})
            scored = pa.RecordBatch.from_arrays(
                [*batch.columns, pa.array(probabilities[:, 0]), pa.array(probabilities[:, 1])],
                names=[*batch.schema.names, "p_0", "p_1"],
            )
            if writer is None:
                writer = pq.ParquetWriter(out / f"part-{index}.parquet", scored.schema, compression="zstd")
            writer.write_batch(scored)
            rows += batch.num_rows
        writer.close()
    print(f"end to end: {rows} rows")
