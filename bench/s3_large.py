"""Scoring a large dataset from one S3 bucket to another, with peak RSS measured.

    python bench/s3_large.py [ROWS] [WEIR_BIN]     (default 8,000,000 rows ≈ 1 GB; target/release/weir)

Starts a Garage server (the tests' harness, tests/e2e/garage.py) under bench/data/garage,
writes ROWS rows (an id and 32 float32 features, zstd Parquet) and the benchmark MLP
(bench/score_setup.py) into a bucket, runs `weir run` scoring them into another bucket
under /usr/bin/time, and prints the dataset size, the time and the peak RSS. Nothing is
asserted: the figures go to bench/README.md.
"""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))

from garage import Garage  # noqa: E402
from score_setup import data, model  # noqa: E402

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 8_000_000
weir = sys.argv[2] if len(sys.argv) > 2 else str(REPO / "target" / "release" / "weir")
work = REPO / "bench" / "data" / f"s3-large-{rows}"
if not (work / "mlp.onnx").exists():
    model(work / "mlp.onnx")
    data(rows, work / "data", files=8)
dataset_bytes = sum(p.stat().st_size for p in (work / "data").glob("*.parquet"))

root = work / "garage"
shutil.rmtree(root, ignore_errors=True)
server = Garage(root).start()
try:
    for name in ("raw", "models", "scored"):
        server.create_bucket(name)
    server.upload_dir(work / "data", "raw", "events")
    server.client().put_object(Bucket="models", Key="mlp.onnx", Body=(work / "mlp.onnx").read_bytes())
    job = work / "job.toml"
    job.write_text(
        'name = "s3-large"\n[source]\nuri = "s3://raw/events/"\n'
        '[[step]]\nop = "score"\nmodel = "s3://models/mlp.onnx"\ninputs = { x = ["f_*"] }\noutputs = { probabilities = "p" }\n'
        '[sink]\nuri = "s3://scored/events/"\nmode = "overwrite"\n'
    )
    run = subprocess.run(
        ["/usr/bin/time", "-f", "%e s wall, %M KiB peak RSS", weir, "run", str(job), "--workers", "2", "--quiet"],
        env=server.env(),
        capture_output=True,
        text=True,
    )
    print(run.stdout.strip())
    print(run.stderr.strip().splitlines()[-1])
    scored = sum(obj["Size"] for obj in server.client().list_objects_v2(Bucket="scored", Prefix="events/")["Contents"])
    print(f"dataset: {rows:,} rows, {dataset_bytes / 2**20:,.0f} MiB of Parquet in; {scored / 2**20:,.0f} MiB out")
finally:
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
