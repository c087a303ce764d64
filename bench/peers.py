"""The peers benchmark: one workload, several systems, interleaved repetitions.

    bench/peers.sh [--size S|M|L] [--reps 3]      (sets up bench/.venv-peers, then runs this)

Workload (issue "Benchmarks side by side with the peers"): the seeded dataset of
`gen_data.py` (S = 1M, M = 10M, L = 50M rows; 32 float features with 5% nulls, an id, a
category) → impute (mean) → standardize → PCA (8 components) → score an 8 → 64 → 1 MLP
built here with onnx.helper → zstd Parquet.

Systems measured so far:
- Weir at 1 and 2 workers, and 2 processes × 1 worker;
- `script`: the hand-written single-process Python a skilled user would write (pyarrow to
  read, NumPy for the statistics and the projection, onnxruntime in batches, pyarrow to
  write);
- Daft (`peers_daft.py`), PySpark (`peers_spark.py`, MLlib + a pandas UDF) and Ray Data
  (`peers_ray.py`, preprocessors + an actor pool), run from the peers' own venv,
  bench/.venv-peers.
- the floor (`floor/`, a Rust binary): decode, arithmetic, `session.run` and encode, each
  alone on one thread; "wall vs floor" divides by the sum of its stage times.

Every system's scores are compared on the same ids (max |difference| ≤ 1e-4), each run is
timed as a whole process by /usr/bin/time (wall seconds, peak RSS), and the results go to
bench/results/peers-SIZE.json and bench/results/peers-SIZE.md with the date and machine.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pyarrow.compute as pc
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SIZES = {"S": 1_000_000, "M": 10_000_000, "L": 50_000_000}
BATCH = 8192
# The peers' own virtual environment (bench/peers.sh makes it).
PEERS_PYTHON = BENCH / ".venv-peers" / "bin" / "python"


def mlp(path: Path):
    rng = np.random.default_rng(11)
    init = {
        "w1": rng.normal(scale=0.3, size=(8, 64)),
        "b1": rng.normal(scale=0.1, size=64),
        "w2": rng.normal(scale=0.3, size=(64, 1)),
        "b2": rng.normal(scale=0.1, size=1),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["a1"]),
            helper.make_node("Add", ["a1", "b1"], ["z1"]),
            helper.make_node("Relu", ["z1"], ["h1"]),
            helper.make_node("MatMul", ["h1", "w2"], ["a2"]),
            helper.make_node("Add", ["a2", "b2"], ["z2"]),
            helper.make_node("Sigmoid", ["z2"], ["score"]),
        ],
        "peers_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in init.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def weir_job(data: Path, model: Path, out: Path) -> str:
    return f"""name = "peers"
[source]
uri = "{data}"
[[step]]
op = "impute"
columns = ["f_*"]
strategy = "mean"
[[step]]
op = "standardize"
columns = ["f_*"]
[[step]]
op = "pca"
columns = ["f_*"]
components = 8
output = "pc"
[[step]]
op = "score"
model = "{model}"
inputs = {{ x = ["pc_*"] }}
outputs = {{ score = "score" }}
batch_size = {BATCH}
[sink]
uri = "{out}"
mode = "overwrite"
"""


def timed(command, env=None) -> dict:
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "TIME %e %M", *command], capture_output=True, text=True, env=env, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{proc.stdout}\n{proc.stderr}")
    wall, rss = re.findall(r"TIME ([\d.]+) (\d+)", proc.stderr)[-1]
    return {"wall_s": float(wall), "peak_rss_mib": int(rss) / 1024, "stdout": proc.stdout}


def scores(out: Path) -> dict:
    files = sorted(p for p in out.glob("*.parquet"))
    table = pq.ParquetDataset(files).read(columns=["id", "score"])
    sample = table.filter(pc.equal(pc.bit_wise_and(table["id"], 1023), 0))
    return dict(zip(sample["id"].to_pylist(), sample["score"].to_pylist()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=SIZES, default="S")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    args = parser.parse_args()
    rows = SIZES[args.size]
    work = BENCH / "data" / f"peers-{args.size}"
    data = work / "data"
    if not data.exists():
        subprocess.run([sys.executable, str(BENCH / "gen_data.py"), str(rows), str(data), "--files", "4"], check=True)
    model = work / "mlp.onnx"
    mlp(model)
    job = work / "weir.toml"
    job.write_text(weir_job(data, model, work / "out-weir"))

    (work / "out-floor").mkdir(exist_ok=True)
    floor = str(REPO / "target" / "release" / "weir-bench-floor")
    systems = {
        "floor (Rust, stages alone, 1 thread)": (
            [floor, str(data), str(model), str(work / "out-floor" / "part-0.parquet")],
            work / "out-floor",
        ),
        "weir 1 worker": ([args.weir, "run", str(job), "--workers", "1", "--quiet"], work / "out-weir"),
        "weir 2 workers": ([args.weir, "run", str(job), "--workers", "2", "--quiet"], work / "out-weir"),
        "weir 2 processes x 1 worker": (
            [args.weir, "run", str(job), "--processes", "2", "--workers", "1", "--quiet"],
            work / "out-weir",
        ),
        "script (pyarrow + NumPy + onnxruntime)": (
            [sys.executable, str(BENCH / "peers_script.py"), str(data), str(model), str(work / "out-script")],
            work / "out-script",
        ),
        "Daft": (
            [str(PEERS_PYTHON), str(BENCH / "peers_daft.py"), str(data), str(model), str(work / "out-daft")],
            work / "out-daft",
        ),
        "PySpark (local[*])": (
            [str(PEERS_PYTHON), str(BENCH / "peers_spark.py"), str(data), str(model), str(work / "out-spark")],
            work / "out-spark",
        ),
        "Ray Data": (
            [str(PEERS_PYTHON), str(BENCH / "peers_ray.py"), str(data), str(model), str(work / "out-ray")],
            work / "out-ray",
        ),
    }
    # Spark's JVM and Ray's raylet and workers are processes the driver does not wait for:
    # /usr/bin/time cannot see their memory.
    rss_unmeasured = {"PySpark (local[*])", "Ray Data"}
    spark_env = dict(os.environ, PYSPARK_PYTHON=str(PEERS_PYTHON), SPARK_LOCAL_IP="127.0.0.1")
    runs = {name: [] for name in systems}
    reference = None
    for _ in range(args.reps):
        for name, (command, out) in systems.items():
            runs[name].append(timed(command, env=spark_env))
            got = scores(out)
            if reference is None:
                reference = got
            assert got.keys() == reference.keys(), f"{name} scored other rows"
            worst = max(abs(got[k] - reference[k]) for k in reference)
            assert worst <= 1e-4, f"{name}'s scores differ from the first system's by {worst}"

    results = []
    for name, measured in runs.items():
        wall = float(np.median([m["wall_s"] for m in measured]))
        rss = float(np.median([m["peak_rss_mib"] for m in measured]))
        if name in rss_unmeasured:
            rss = None
        results.append({"system": name, "wall_s": wall, "rows_per_s": rows / wall, "peak_rss_mib": rss, "runs": measured})
    weir_wall = next(r["wall_s"] for r in results if r["system"] == "weir 1 worker")
    floor_stages = [json.loads(m["stdout"]) for m in runs["floor (Rust, stages alone, 1 thread)"]]
    floor_s = float(np.median([f["total_s"] for f in floor_stages]))
    for result in results:
        result["ratio_to_weir_1_worker"] = result["wall_s"] / weir_wall
        result["ratio_to_floor"] = result["wall_s"] / floor_s
        for run in result["runs"]:
            run.pop("stdout", None)
    machine = {"cores": os.cpu_count(), "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30), "platform": platform.platform()}
    floor_breakdown = {k: float(np.median([f[k] for f in floor_stages])) for k in ("decode_s", "arithmetic_s", "model_s", "encode_s", "total_s")}
    report = {
        "date": datetime.date.today().isoformat(),
        "size": args.size,
        "rows": rows,
        "machine": machine,
        "floor_stages": floor_breakdown,
        "results": results,
    }
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"peers-{args.size}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"Peers, size {args.size} ({rows:,} rows), {report['date']}, {machine['cores']} cores, {machine['ram_gib']} GiB; median of {args.reps} interleaved runs",
        "",
        "| system | wall s | rows/s | peak RSS MiB | wall vs Weir 1 worker | wall vs floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        rss = "n/a" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        lines.append(
            f"| {r['system']} | {r['wall_s']:.2f} | {r['rows_per_s']:,.0f} | {rss} | "
            f"{r['ratio_to_weir_1_worker']:.2f} | {r['ratio_to_floor']:.2f} |"
        )
    lines += [
        "",
        "Floor stages (median seconds, summed as the floor): "
        + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in floor_breakdown.items()),
    ]
    (out_dir / f"peers-{args.size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
