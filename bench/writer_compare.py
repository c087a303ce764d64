"""Weir's Parquet writer against pyarrow's on the same table.

    .venv/bin/python bench/writer_compare.py DATA_DIR [--weir target/release/weir] [--reps 3]

DATA_DIR is any Parquet dataset (the peers workload's output, say, or bench/data/score-*/data).
pyarrow: the whole dataset is read into memory first (not timed), then written with Weir's
writer settings (zstd at parquet-rs's default level 1, no dictionary for float columns, row
groups of 131,072 rows) by `pq.write_table`, one thread, timed alone. Weir: a job that only
selects every column, run with one worker and `--json`; its `write (encode + upload)`
stage is the time spent encoding and writing the same rows (batches of 8,192 rows, as the
engine writes them). Prints one JSON object per repetition and the medians.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROW_GROUP = 131_072


def pyarrow_write(table, out: Path) -> float:
    no_dictionary = [f.name for f in table.schema if str(f.type) in ("float", "double", "halffloat")]
    dictionary = [f.name for f in table.schema if f.name not in no_dictionary]
    started = time.perf_counter()
    pq.write_table(
        table,
        out,
        compression="zstd",
        compression_level=1,
        use_dictionary=dictionary,
        row_group_size=ROW_GROUP,
    )
    return time.perf_counter() - started


def weir_write(weir: str, data: Path, out: Path, work: Path) -> float:
    columns = pq.read_schema(next(iter(sorted(data.glob("*.parquet"))))).names
    job = work / "select.toml"
    job.write_text(
        f'name = "writer-compare"\n[source]\nuri = "{data}"\n'
        f'[[step]]\nop = "select"\ncolumns = {json.dumps(columns)}\n'
        f'[sink]\nuri = "{out}"\nmode = "overwrite"\n'
    )
    proc = subprocess.run([weir, "run", str(job), "--workers", "1", "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"weir exited {proc.returncode}:\n{proc.stderr}")
    stages = {s["stage"]: s["worker_seconds"] for s in json.loads(proc.stdout)["stages"]}
    return stages["write (encode + upload)"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--weir", default=str(Path(__file__).resolve().parents[1] / "target" / "release" / "weir"))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    args.data = args.data.resolve()
    table = pq.read_table(args.data)
    runs = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for rep in range(args.reps):
            weir_s = weir_write(args.weir, args.data, work / "out-weir", work)
            pyarrow_s = pyarrow_write(table, work / "pyarrow.parquet")
            run = {"rep": rep, "rows": table.num_rows, "weir_write_s": weir_s, "pyarrow_write_s": pyarrow_s}
            runs.append(run)
            print(json.dumps(run), flush=True)
    weir_s = statistics.median(r["weir_write_s"] for r in runs)
    pyarrow_s = statistics.median(r["pyarrow_write_s"] for r in runs)
    print(json.dumps({"median_weir_write_s": weir_s, "median_pyarrow_write_s": pyarrow_s, "weir_over_pyarrow": weir_s / pyarrow_s}))


if __name__ == "__main__":
    sys.exit(main())
