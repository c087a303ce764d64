"""The DuckDB peer of the ad-hoc scoring benchmark (bench/adhoc_score.py): DuckDB reads the
Parquet files, onnxruntime scores every batch, the scores are written beside the inputs as
zstd Parquet — what someone who reaches for DuckDB to "score a large dataset ad hoc" writes.

    bench/.venv-peers/bin/python bench/adhoc_duckdb.py DATA_DIR MODEL OUT_DIR
        [--workers 2] [--duckdb-threads 1] [--batch-size 32768] [--model-batch 8192]
        [--writer pyarrow|duckdb]

Output, the same content as Weir's job in bench/score.sh (a `score` step keeps every input
column and appends the model's outputs): `id` (int64), `f_00..f_31` (float32) and the two
probabilities `p_0`, `p_1` (float32, declared not null as Weir declares them), zstd at
level 1 (the default level of both Weir's Rust writer and Arrow C++), row groups of 128 Ki
rows, dictionary encoding only for `id` (Weir turns it off for float columns), one file
`part-N.parquet` per input file.

How it runs. The choices were measured at 1M rows on the 2-core benchmark machine while
other benchmarks were running (load average 2-4), so only differences beyond that noise
count:
- `--workers 2` threads (one per core), each taking the next input file from a shared
  queue and running its own DuckDB connection (`threads = --duckdb-threads`, 1), its own
  ONNX Runtime session (1 intra-op thread, like Weir's `intra_op_threads = 1`) and its own
  writer. DuckDB's scan, `session.run` and pyarrow's writer release the GIL, so the two
  threads use both cores. One worker over a 2-thread DuckDB scan (`--workers 1
  --duckdb-threads 2`) was within the noise of it (about 1.4-2.0 s either way, the same
  CPU time, 130 MiB less memory); two workers are kept because they also spread the
  Python-side work (scoring and encoding, most of the CPU time) over both cores
  instead of leaving it on one thread.
- Each worker streams `SELECT * FROM read_parquet(file)` as Arrow record batches with
  `to_arrow_reader(batch_size)` (DuckDB 2.0's name for `fetch_record_batch`, which it
  deprecates) at `--batch-size 32768` rows a batch: 8192 was 5-10% slower (more Python
  round trips), 65536 and 131072 no faster and 10-15% more memory. Every batch is scored in
  slices of `--model-batch 8192` rows (Weir's `batch_size`; scoring whole batches was no
  faster).
- Writer: pyarrow's `ParquetWriter` (`--writer pyarrow`, the default), buffering scored
  batches into 128 Ki-row row groups. The alternative, `--writer duckdb`, hands the scored
  batches back to DuckDB as an Arrow stream and writes them with
  `COPY ... TO ... (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE
  131072)` (it declares p_0/p_1 nullable); it was 5-15% slower, so it is kept only for
  comparison.

Prints one JSON object: rows and seconds.
"""

import argparse
import json
import queue
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 128 * 1024

parser = argparse.ArgumentParser()
parser.add_argument("data", type=Path)
parser.add_argument("model")
parser.add_argument("out", type=Path)
parser.add_argument("--workers", type=int, default=2)
parser.add_argument("--duckdb-threads", type=int, default=1)
parser.add_argument("--batch-size", type=int, default=32768)
parser.add_argument("--model-batch", type=int, default=8192)
parser.add_argument("--writer", choices=["pyarrow", "duckdb"], default="pyarrow")
args = parser.parse_args()

started = time.perf_counter()
files = sorted(args.data.glob("*.parquet"))
args.out.mkdir(parents=True, exist_ok=True)
for old in args.out.glob("*.parquet"):
    old.unlink()
todo: queue.Queue = queue.Queue()
for index, path in enumerate(files):
    todo.put((index, path))


def new_session():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])


def scored_batches(con, session, path: Path):
    """Yields (output schema, batch) pairs: every input column, then p_0 and p_1."""
    input_name = session.get_inputs()[0].name
    reader = con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_reader(args.batch_size)
    features = [name for name in reader.schema.names if name.startswith("f_")]
    schema = reader.schema.append(pa.field("p_0", pa.float32(), nullable=False)).append(
        pa.field("p_1", pa.float32(), nullable=False)
    )
    for batch in reader:
        x = np.column_stack([batch.column(name).to_numpy() for name in features])
        probabilities = np.concatenate(
            [session.run(None, {input_name: x[lo : lo + args.model_batch]})[0] for lo in range(0, len(x), args.model_batch)]
        )
        yield schema, pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array(probabilities[:, 0]), pa.array(probabilities[:, 1])], schema=schema
        )


def write_pyarrow(con, session, index: int, path: Path) -> int:
    writer, pending, pending_rows, rows = None, [], 0, 0

    def flush():
        writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP_ROWS)

    for schema, batch in scored_batches(con, session, path):
        if writer is None:
            writer = pq.ParquetWriter(
                args.out / f"part-{index}.parquet", schema, compression="zstd", compression_level=1, use_dictionary=["id"]
            )
        pending.append(batch)
        pending_rows += batch.num_rows
        rows += batch.num_rows
        if pending_rows >= ROW_GROUP_ROWS:
            flush()
            pending, pending_rows = [], 0
    if pending:
        flush()
    if writer is not None:
        writer.close()
    return rows


def write_duckdb(con, session, index: int, path: Path) -> int:
    batches = scored_batches(con, session, path)
    first = next(batches, None)
    if first is None:
        return 0
    schema = first[0]
    counted = [0]

    def stream():
        for _, batch in [first, *batches]:
            counted[0] += batch.num_rows
            yield batch

    writer = duckdb.connect(config={"threads": args.duckdb_threads})
    writer.register("scored", pa.RecordBatchReader.from_batches(schema, stream()))
    target = args.out / f"part-{index}.parquet"
    writer.execute(
        f"COPY (SELECT * FROM scored) TO '{target}' "
        f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
    )
    writer.close()
    return counted[0]


def worker(results: list, errors: list):
    try:
        con = duckdb.connect(config={"threads": args.duckdb_threads})
        session = new_session()
        write = write_pyarrow if args.writer == "pyarrow" else write_duckdb
        while True:
            try:
                index, path = todo.get_nowait()
            except queue.Empty:
                break
            results.append(write(con, session, index, path))
        con.close()
    except BaseException as error:  # re-raised in the main thread
        errors.append(error)


results: list = []
errors: list = []
threads = [threading.Thread(target=worker, args=(results, errors)) for _ in range(args.workers)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
if errors:
    raise errors[0]
print(json.dumps({"rows": sum(results), "seconds": time.perf_counter() - started, "workers": args.workers, "writer": args.writer}))
