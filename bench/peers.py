"""The peers benchmark: one workload, several systems, interleaved repetitions.

    bench/peers.sh [--size S|M|L] [--reps 3] [--systems KEYS] [--once KEYS]

(sets up bench/.venv-peers, then runs this; KEYS are comma-separated out of floor, weir1,
weir2, weir2p, weirbase, script, daft, spark, ray; `--once` runs those in the first
repetition only; `--baseline-weir BIN` adds weirbase: another build, e.g. main before a
change, at 2 processes × 1 worker, for a ratio measured in the same run)

Workload (issue "Benchmarks side by side with the peers"): the seeded dataset of
`gen_data.py` (S = 1M, M = 10M, L = 50M rows; 32 float features with 5% nulls, an id, a
category) → impute (mean) → standardize → PCA (8 components) → score an 8 → 64 → 1 MLP
built here with onnx.helper → zstd Parquet.

Systems (keys for --systems / --once in brackets):
- Weir at 1 and 2 workers, and 2 processes × 1 worker [weir1, weir2, weir2p], with
  `--json`, whose per-stage breakdown goes into the results;
- the hand-written single-process Python a skilled user would write [script]: pyarrow
  streams batches, NumPy computes the statistics and the projection, onnxruntime scores in
  batches, pyarrow writes;
- Daft [daft] (`peers_daft.py`), PySpark [spark] (`peers_spark.py`, MLlib + a pandas UDF)
  and Ray Data [ray] (`peers_ray.py`, preprocessors + an actor pool), run from the peers'
  own venv, bench/.venv-peers;
- the floor [floor] (`floor/`, a Rust binary): the best hand-written Rust program for
  exactly this workload, on all cores, streaming and decoding once: pass 1 decodes every
  row group (in parallel) and folds the exact sufficient statistics of the whole fit,
  keeping the decoded columns in memory; the fit is one eigendecomposition; pass 2
  projects (one affine map per row), scores (one ONNX Runtime session of one thread per
  thread) and writes one zstd Parquet file per thread with Weir's writer settings. "wall vs
  floor" divides by the floor's own wall time (its `total_s`). It holds the decoded input
  (peak RSS about 290 bytes a row, measured: 2.9 GB at M, 14.2 GB at L), so it runs by
  default at a size only where that fits in 80% of the machine's memory: at L too on a
  24 GiB machine.

Every repetition runs every system once, in the order of SYSTEM_KEYS rotated by one system
per repetition: on this VM a run straight after one that freed gigabytes of memory or wrote
gigabytes of output can be 20-30% slower, and a fixed order would hand that cost to the
same system every time. Every system's scores are compared on the same ids (max
|difference| ≤ 1e-4), each run is timed as a whole process by /usr/bin/time (wall
seconds, peak RSS; a failed run is recorded, not fatal), each output is deleted once
checked (L's are gigabytes), and the results go to bench/results/peers-SIZE.json and
bench/results/peers-SIZE.md with the date and machine.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
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
# The floor's peak resident memory per row, rounded up (it keeps the decoded input between
# its passes): 2.9 GB at 10M rows and 14.2 GB at 50M, measured.
FLOOR_BYTES_PER_ROW = 300
# Every system, in the order the first repetition runs them (later ones rotate it).
SYSTEM_KEYS = ["floor", "weir1", "weir2", "weir2p", "weirbase", "script", "daft", "spark", "ray"]
# Spark's JVM and Ray's raylet and workers are processes the driver does not wait for:
# /usr/bin/time cannot see their memory.
RSS_UNMEASURED = {"spark", "ray"}
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
    """Runs `command` under /usr/bin/time; a failed run (a crash, running out of memory) is
    recorded with its exit status and last lines instead of stopping the benchmark."""
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "TIME %e %M", *command], capture_output=True, text=True, env=env, cwd=REPO
    )
    found = re.findall(r"TIME ([\d.]+) (\d+)", proc.stderr)
    wall, rss = found[-1] if found else ("nan", "0")
    run = {"wall_s": float(wall), "peak_rss_mib": int(rss) / 1024, "stdout": proc.stdout}
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if not line.startswith("TIME ")][-5:]
        run["failed"] = f"exit {proc.returncode}: " + " | ".join(tail)
    return run


def scores(out: Path) -> dict:
    files = sorted(p for p in out.glob("*.parquet"))
    table = pq.ParquetDataset(files).read(columns=["id", "score"])
    sample = table.filter(pc.equal(pc.bit_wise_and(table["id"], 1023), 0))
    return dict(zip(sample["id"].to_pylist(), sample["score"].to_pylist()))


def median_run(runs: list) -> dict:
    """The run with the median wall time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return ordered[(len(ordered) - 1) // 2]


def stage_table(weir_json: dict) -> list:
    """Weir's own per-stage breakdown (`weir run --json`) as Markdown lines."""
    stages = weir_json["stages"]
    # The read-ahead's time overlaps the workers' own clocks: shares are of the workers' time.
    total = sum(s["worker_seconds"] for s in stages if "overlapped" not in s["stage"])
    lines = [
        f"{weir_json['passes']} passes over the source; worker-seconds summed over the workers:",
        "",
        "| stage | worker s | share |",
        "| --- | ---: | ---: |",
    ]
    for stage in stages:
        lines.append(f"| {stage['stage']} | {stage['worker_seconds']:.3f} | {100 * stage['worker_seconds'] / total:.1f}% |")
    return lines


def write_report(size: str, reps: int, once: set, systems: dict, runs: dict):
    """Writes results/peers-SIZE.{json,md} from the runs so far (after every repetition, so
    an interrupted benchmark keeps what it measured)."""
    rows = SIZES[size]
    runs = {key: [dict(run) for run in measured] for key, measured in runs.items() if measured}
    results = []
    for key, measured in runs.items():
        name = systems[key][0]
        succeeded = [m for m in measured if "failed" not in m]
        result = {"system": name, "key": key, "reps": len(measured), "runs": measured}
        if succeeded:
            wall = float(np.median([m["wall_s"] for m in succeeded]))
            rss = None if key in RSS_UNMEASURED else float(np.median([m["peak_rss_mib"] for m in succeeded]))
            result.update(wall_s=wall, rows_per_s=rows / wall, peak_rss_mib=rss)
            if key.startswith("weir") and median_run(succeeded).get("stdout"):
                result["weir_metrics"] = json.loads(median_run(succeeded)["stdout"])
        else:
            result["failed"] = measured[0]["failed"]
        results.append(result)
    by_key = {r["key"]: r for r in results}
    weir_wall = by_key.get("weir1", {}).get("wall_s")
    weir2p_wall = by_key.get("weir2p", {}).get("wall_s")
    floor_s = floor_breakdown = None
    if "wall_s" in by_key.get("floor", {}):
        # The floor's phases: decode_s is pass 1's wall (decode + the statistics),
        # arithmetic_s the fit's, pass2_s pass 2's; project_s, model_s and encode_s the time
        # each thread spent in them during pass 2 (summed over threads / threads); total_s
        # the floor's own wall time, the divisor of "wall vs floor".
        floor_stages = [json.loads(m["stdout"]) for m in runs["floor"] if "failed" not in m]
        keys = ["decode_s", "arithmetic_s", "model_s", "encode_s", "total_s"]
        keys += [k for k in ("pass2_s", "project_s", "threads") if all(k in f for f in floor_stages)]
        floor_breakdown = {k: float(np.median([f[k] for f in floor_stages])) for k in keys}
        floor_s = floor_breakdown["total_s"]
    for result in results:
        if "wall_s" in result:
            result["ratio_to_weir_1_worker"] = result["wall_s"] / weir_wall if weir_wall else None
            result["ratio_to_weir_2_processes"] = result["wall_s"] / weir2p_wall if weir2p_wall else None
            result["ratio_to_floor"] = result["wall_s"] / floor_s if floor_s else None
        for run in result["runs"]:
            run.pop("stdout", None)
    machine = {"cores": os.cpu_count(), "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30), "platform": platform.platform()}
    report = {
        "date": datetime.date.today().isoformat(),
        "size": size,
        "rows": rows,
        "machine": machine,
        "floor_stages": floor_breakdown,
        "results": results,
    }
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"peers-{size}.json").write_text(json.dumps(report, indent=2) + "\n")
    ratio = lambda value: "n/a" if value is None else f"{value:.2f}"  # noqa: E731
    lines = [
        f"Peers, size {size} ({rows:,} rows), {report['date']}, {machine['cores']} cores, {machine['ram_gib']} GiB; "
        f"median of {reps} interleaved runs, the order rotated by one system each repetition" + (f" (one run: {', '.join(sorted(once & set(systems)))})" if once & set(systems) else ""),
        "",
        "| system | wall s | rows/s | peak RSS MiB | wall vs Weir 1 worker | wall vs Weir 2 processes | wall vs floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if "failed" in r:
            peak = max(run["peak_rss_mib"] for run in r["runs"])
            lines.append(f"| {r['system']} | failed: {r['failed'][:120]} | | {peak:.0f} before it failed | | | |")
            continue
        rss = "n/a" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        lines.append(
            f"| {r['system']} | {r['wall_s']:.2f} | {r['rows_per_s']:,.0f} | {rss} | "
            f"{ratio(r['ratio_to_weir_1_worker'])} | {ratio(r.get('ratio_to_weir_2_processes'))} | {ratio(r['ratio_to_floor'])} |"
        )
    if floor_breakdown:
        phases = {k: v for k, v in floor_breakdown.items() if k != "threads"}
        threads = floor_breakdown.get("threads")
        lines += [
            "",
            "Floor phases (median seconds"
            + (f", {threads:.0f} threads" if threads else "")
            + "; decode = pass 1's wall, decoding and folding the statistics; arithmetic = the fit; "
            "pass2 = pass 2's wall; project, model and encode = each thread's time in them during "
            "pass 2; total = the floor's wall): "
            + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in phases.items()),
        ]
    elif "floor" not in systems:
        lines += ["", "The floor was not run: the decoded input it keeps in memory would not fit at this size."]
    for key in ("weir1", "weir2"):
        if "weir_metrics" in by_key.get(key, {}):
            lines += ["", f"Where {by_key[key]['system']}'s time went (its median run, `weir run --json`):", ""]
            lines += stage_table(by_key[key]["weir_metrics"])
    (out_dir / f"peers-{size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=SIZES, default="S")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument(
        "--baseline-weir",
        default=None,
        help="another weir binary (e.g. the main branch built before a change), run as system "
        "weirbase at 2 processes x 1 worker beside this one",
    )
    parser.add_argument(
        "--systems",
        default=None,
        help=f"comma-separated keys out of {','.join(SYSTEM_KEYS)} (default: all; the floor only where its memory fits)",
    )
    parser.add_argument(
        "--once",
        default="",
        help="comma-separated keys of systems run in the first repetition only (slow peers at M/L)",
    )
    args = parser.parse_args()
    rows = SIZES[args.size]
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    floor_fits = rows * FLOOR_BYTES_PER_ROW <= 0.8 * ram
    default_keys = [k for k in SYSTEM_KEYS if (floor_fits or k != "floor") and (args.baseline_weir or k != "weirbase")]
    keys = args.systems.split(",") if args.systems else default_keys
    once = set(filter(None, args.once.split(",")))
    unknown = (set(keys) | once) - set(SYSTEM_KEYS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEM_KEYS)}")
    work = BENCH / "data" / f"peers-{args.size}"
    data = work / "data"
    if not data.exists():
        subprocess.run([sys.executable, str(BENCH / "gen_data.py"), str(rows), str(data), "--files", "4"], check=True)
    model = work / "mlp.onnx"
    mlp(model)
    job = work / "weir.toml"
    job.write_text(weir_job(data, model, work / "out-weir"))

    floor = str(REPO / "target" / "release" / "weir-bench-floor")
    weir = [args.weir, "run", str(job), "--json"]
    every = {
        "floor": (
            "floor (Rust, streaming, decode once, all cores)",
            [floor, str(data), str(model), str(work / "out-floor")],
            work / "out-floor",
        ),
        "weir1": ("weir 1 worker", [*weir, "--workers", "1"], work / "out-weir"),
        "weir2": ("weir 2 workers", [*weir, "--workers", "2"], work / "out-weir"),
        "weir2p": ("weir 2 processes x 1 worker", [*weir, "--processes", "2", "--workers", "1"], work / "out-weir"),
        "weirbase": (
            "weir 2 processes x 1 worker, baseline build",
            [args.baseline_weir or "--baseline-weir-missing", "run", str(job), "--json", "--processes", "2", "--workers", "1"],
            work / "out-weir",
        ),
        "script": (
            "script (pyarrow + NumPy + onnxruntime)",
            [sys.executable, str(BENCH / "peers_script.py"), str(data), str(model), str(work / "out-script")],
            work / "out-script",
        ),
        "daft": (
            "Daft",
            [str(PEERS_PYTHON), str(BENCH / "peers_daft.py"), str(data), str(model), str(work / "out-daft")],
            work / "out-daft",
        ),
        "spark": (
            "PySpark (local[*])",
            [str(PEERS_PYTHON), str(BENCH / "peers_spark.py"), str(data), str(model), str(work / "out-spark")],
            work / "out-spark",
        ),
        "ray": (
            "Ray Data",
            [str(PEERS_PYTHON), str(BENCH / "peers_ray.py"), str(data), str(model), str(work / "out-ray")],
            work / "out-ray",
        ),
    }
    systems = {key: every[key] for key in SYSTEM_KEYS if key in keys}
    spark_env = dict(os.environ, PYSPARK_PYTHON=str(PEERS_PYTHON), SPARK_LOCAL_IP="127.0.0.1")
    runs = {key: [] for key in systems}
    reference = None
    order = list(systems.items())
    for rep in range(args.reps):
        # Each repetition starts one system further on, so that no system always runs right
        # after the same one (see the docstring).
        start = rep % max(len(order), 1)
        for key, (name, command, out) in order[start:] + order[:start]:
            if rep > 0 and key in once:
                continue
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            run = timed(command, env=spark_env)
            runs[key].append(run)
            outcome = run.get("failed") or "{:.2f} s, {:.0f} MiB".format(run["wall_s"], run["peak_rss_mib"])
            print(f"{name}: {outcome}", flush=True)
            if "failed" not in run:
                got = scores(out)
                if reference is None:
                    reference = got
                assert got.keys() == reference.keys(), f"{name} scored other rows"
                worst = max(abs(got[k] - reference[k]) for k in reference)
                assert worst <= 1e-4, f"{name}'s scores differ from the first system's by {worst}"
            # Outputs of L are gigabytes: keep one at a time.
            shutil.rmtree(out)
        write_report(args.size, args.reps, once, systems, runs)


if __name__ == "__main__":
    main()
