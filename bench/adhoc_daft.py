"""The Daft peer of the ad-hoc scoring benchmark (bench/adhoc_score.py): `daft.read_parquet`
→ a batch UDF running onnxruntime → `write_parquet` (zstd), written in the style of
bench/peers_daft.py (a `@daft.cls` holding the ONNX Runtime session, which does not pickle,
with a `@daft.method.batch` method).

    bench/.venv-peers/bin/python bench/adhoc_daft.py DATA_DIR MODEL OUT_DIR
        [--batch-size 65536] [--max-concurrency 1] [--use-process auto|yes|no]

Output, the same content as Weir's job in bench/score.sh (a `score` step keeps every input
column and appends the model's outputs): `id`, `f_00..f_31` and the probabilities `p_0`,
`p_1` (float32; Daft declares every column nullable, Weir declares p_0/p_1 not null). The
UDF returns a struct {p_0, p_1} that `unnest=True` expands into the two columns, so the
model runs once per batch. Written with `write_parquet(compression="zstd")` (Daft's native
writer; its file and row-group sizes are Daft's defaults).

Choices, measured at 1M rows on the 2-core benchmark machine while other benchmarks were
running (load average 2-4: only differences beyond that noise count):
- `--max-concurrency 1`: one instance of the class. Daft's own threads already keep both
  cores busy reading, moving and writing; a second instance (one per core) was 15-25%
  slower (about 4.4-6.4 s against 3.6-4.7 s).
- `--batch-size 65536` rows per UDF call: 8192 (Weir's `batch_size`) was about 20% slower,
  as each call has a fixed cost; 131072 was no faster. The UDF's own work (building the
  tensor, `session.run`, the struct) is about 0.55 s of the 3-4 s at 1M rows; reading and
  writing alone (no UDF) take Daft about 1.4 s; the rest is Daft moving the batches
  through the UDF.
- `--use-process auto` (Daft decides whether the instance runs in a process of its own):
  forcing either was no faster.
- One ONNX Runtime intra-op thread per session, as Weir's job (`intra_op_threads = 1`).
- Returning the struct and unnesting it cost nothing measurable against returning one
  column.

Prints one JSON object: the files written and the seconds taken.
"""

import argparse
import json
import time
from pathlib import Path

import daft
import numpy as np
import onnxruntime as ort
import pyarrow as pa
from daft import col

parser = argparse.ArgumentParser()
parser.add_argument("data", type=Path)
parser.add_argument("model")
parser.add_argument("out", type=Path)
parser.add_argument("--batch-size", type=int, default=65536)
parser.add_argument("--max-concurrency", type=int, default=1)
parser.add_argument("--use-process", choices=["auto", "yes", "no"], default="auto")
args = parser.parse_args()

started = time.perf_counter()
features = [f"f_{i:02d}" for i in range(32)]
probabilities = daft.DataType.struct({"p_0": daft.DataType.float32(), "p_1": daft.DataType.float32()})
use_process = {"auto": None, "yes": True, "no": False}[args.use_process]


@daft.cls(max_concurrency=args.max_concurrency, use_process=use_process)
class Scorer:
    def __init__(self, path: str):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    @daft.method.batch(return_dtype=probabilities, unnest=True, batch_size=args.batch_size)
    def __call__(self, *columns):
        x = np.column_stack([c.to_arrow().to_numpy(zero_copy_only=False) for c in columns]).astype(np.float32, copy=False)
        p = self.session.run(None, {self.input: x})[0]
        return pa.StructArray.from_arrays([pa.array(p[:, 0]), pa.array(p[:, 1])], names=["p_0", "p_1"])


scorer = Scorer(args.model)
df = daft.read_parquet(str(args.data / "*.parquet"))
df = df.select(*df.column_names, scorer(*[col(f) for f in features]))
args.out.mkdir(parents=True, exist_ok=True)
for old in args.out.glob("*.parquet"):
    old.unlink()
written = df.write_parquet(str(args.out), compression="zstd").to_pydict()
print(json.dumps({"files": len(next(iter(written.values()), [])), "seconds": time.perf_counter() - started}))
