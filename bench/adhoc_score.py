"""The ad-hoc scoring benchmark: "score a large dataset ad hoc", Weir against the tools
someone would reach for instead, interleaved repetitions.

    bench/adhoc_score.sh [--rows 10000000] [--reps 3] [--systems KEYS] [--weir BIN]
                         [--baseline-weir BIN]

(bench/adhoc_score.sh sets up bench/.venv-peers, then runs this with ./.venv's Python;
KEYS are comma-separated out of floor, weir2p, weir2, baseline, python, duckdb, daft)

Workload: bench/score_setup.py's seeded data (ROWS rows, `id` int64 + 32 float32 features
`f_00..f_31`, no nulls, 4 files, row groups of 128 Ki rows; generated under
bench/data/score-ROWS when missing) scored by its 32 → 64 → 64 → 2 MLP (softmax), the
probabilities written as zstd Parquet. The Weir job is the one of bench/score.sh: a single
`score` step (`inputs = { x = ["f_*"] }`, `outputs = { probabilities = "p" }`,
`batch_size = 8192`, `intra_op_threads = 1`). A `score` step keeps every input column and
appends the outputs, so Weir writes `id`, `f_00..f_31` (float32) and `p_0`, `p_1` (float32,
not null), zstd, row groups of 128 Ki rows; every peer writes the same columns.

Systems (keys in brackets), each a whole process timed by `/usr/bin/time -f '%e %M'`:
- the floor [floor]: `target/release/weir-bench-floor --workload score` (bench/floor/, the
  best hand-written Rust program for the workload, on all cores); skipped with a message
  when the binary is missing or has no `--workload score`. "wall vs floor" divides by its
  own `total_s`, as bench/peers.py does. It writes what Weir writes: the columns it read
  (`id` and the features) and the probabilities;
- Weir, 2 processes x 1 worker and 1 process x 2 workers [weir2p, weir2], with `--json`
  (its per-stage breakdown goes into the results); `--baseline-weir BIN` adds another Weir
  binary (an older build, say) at 2 processes x 1 worker [baseline];
- pyarrow + onnxruntime [python]: bench/score_python.py, one process, one thread;
- DuckDB + onnxruntime [duckdb]: bench/adhoc_duckdb.py (its docstring has the choices);
- Daft [daft]: bench/adhoc_daft.py.
DuckDB and Daft run from the peers' venv, bench/.venv-peers; the others from ./.venv.

Every repetition runs every system once, in the order above rotated by one system per
repetition (the first starts with the floor, the second with Weir at 2 processes, ...): on
this VM a run straight after one that freed gigabytes of memory (Daft) or wrote gigabytes
of output can be 20-30% slower, and a fixed order would hand that cost to the same system
every time. After each run the output's row count, columns and probabilities on every
1024th id are read; at the end of the repetition they are compared with Weir's (2
processes, else another Weir): the same ids,
max |difference| over p_0 and p_1 at most 1e-5 (a disagreement is recorded and shown, not
fatal). A run that fails (non-zero exit) is recorded with its last lines of stderr, and the
benchmark goes on. Outputs are deleted once checked (at 10M rows each is about 1.3 GB).
The results go to bench/results/adhoc-score-ROWS.json and .md (median wall of the
successful runs, rows/s, median peak RSS, ratios), rewritten after every repetition.
Peak RSS is what /usr/bin/time reports: the largest single process, not the sum over a
system's processes (Weir at 2 processes, Daft's UDF processes).

The machine's load average is recorded before every run: figures taken while other jobs
ran on the machine are indicative only.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# Every system, in the order the first repetition runs them (later ones rotate it).
SYSTEM_KEYS = ["floor", "weir2p", "weir2", "baseline", "python", "duckdb", "daft"]
# Whose probabilities the others are checked against, in order of preference.
REFERENCE_KEYS = ["weir2p", "weir2", "baseline"]
TOLERANCE = 1e-5
# The peers' own virtual environment (bench/adhoc_score.sh and bench/peers.sh make it).
PEERS_PYTHON = BENCH / ".venv-peers" / "bin" / "python"
FLOOR = REPO / "target" / "release" / "weir-bench-floor"


def weir_job(data: Path, model: Path, out: Path) -> str:
    """bench/score.sh's job, with absolute paths (relative ones resolve against the job file)."""
    return f"""name = "bench-adhoc-score"
[source]
uri = {json.dumps(str(data))}
[[step]]
op = "score"
model = {json.dumps(str(model))}
inputs = {{ x = ["f_*"] }}
outputs = {{ probabilities = "p" }}
batch_size = 8192
intra_op_threads = 1
[sink]
uri = {json.dumps(str(out))}
mode = "overwrite"
"""


def timed(command) -> dict:
    """Runs `command` under /usr/bin/time (as bench/peers.py does); a failed run is recorded
    with its exit status and last lines instead of stopping the benchmark."""
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *command], capture_output=True, text=True, cwd=REPO)
    except OSError as error:
        return {"wall_s": float("nan"), "peak_rss_mib": 0.0, "load_before": load, "stdout": "", "failed": str(error)}
    found = re.findall(r"TIME ([\d.]+) (\d+)", proc.stderr)
    wall, rss = found[-1] if found else ("nan", "0")
    run = {"wall_s": float(wall), "peak_rss_mib": int(rss) / 1024, "load_before": round(load, 2), "stdout": proc.stdout}
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if not line.startswith("TIME ")][-5:]
        run["failed"] = f"exit {proc.returncode}: " + " | ".join(tail)
    return run


def last_json(stdout: str):
    """The last line of `stdout` that is a JSON object, or None."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def read_output(out: Path) -> dict:
    """The output's row count, bytes, columns (as `name: type`) and probabilities on every 1024th id."""
    files = sorted(out.glob("*.parquet"))
    if not files:
        raise ValueError(f"no Parquet files in {out}")
    schema = pq.read_schema(files[0])
    columns = [f"{f.name}: {f.type}" + ("" if f.nullable else " not null") for f in schema]
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    table = pq.ParquetDataset(files).read(columns=["id", "p_0", "p_1"])
    sample = table.filter(pc.equal(pc.bit_wise_and(table["id"], 1023), 0)).sort_by("id")
    return {
        "rows": rows,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "columns": columns,
        "ids": sample["id"].to_numpy(),
        "p": np.column_stack([sample["p_0"].to_numpy(), sample["p_1"].to_numpy()]),
    }


def compare(got: dict, reference: dict, rows: int) -> dict:
    """Checks one output against the reference's sample; the verdict goes into the run."""
    check = {"rows_written": got["rows"], "files": got["files"], "output_bytes": got["bytes"]}
    problems = []
    if got["rows"] != rows:
        problems.append(f"wrote {got['rows']} rows, not {rows}")
    if not np.array_equal(got["ids"], reference["ids"]):
        problems.append("scored other ids than the reference")
    else:
        worst = float(np.max(np.abs(got["p"].astype(np.float64) - reference["p"]))) if len(got["ids"]) else 0.0
        check["max_abs_diff"] = worst
        if not worst <= TOLERANCE:
            problems.append(f"probabilities differ from the reference's by up to {worst:.3g}")
    if problems:
        check["check_failed"] = "; ".join(problems)
    return check


def stage_table(weir_json: dict) -> list:
    """Weir's own per-stage breakdown (`weir run --json`) as Markdown lines (as in peers.py)."""
    stages = weir_json["stages"]
    total = sum(s["worker_seconds"] for s in stages) or 1.0
    lines = [
        f"{weir_json['passes']} pass(es) over the source; worker-seconds summed over the workers:",
        "",
        "| stage | worker s | share |",
        "| --- | ---: | ---: |",
    ]
    for stage in stages:
        lines.append(f"| {stage['stage']} | {stage['worker_seconds']:.3f} | {100 * stage['worker_seconds'] / total:.1f}% |")
    return lines


def write_report(rows: int, reps: int, systems: dict, runs: dict, columns: dict, reference_key, notes: list):
    """Writes results/adhoc-score-ROWS.{json,md} from the runs so far."""
    results = []
    for key, measured in runs.items():
        if not measured:
            continue
        name = systems[key][0]
        succeeded = [m for m in measured if "failed" not in m]
        result = {"system": name, "key": key, "reps": len(measured), "columns": columns.get(key)}
        if succeeded:
            wall = float(np.median([m["wall_s"] for m in succeeded]))
            result.update(
                wall_s=wall, rows_per_s=rows / wall, peak_rss_mib=float(np.median([m["peak_rss_mib"] for m in succeeded]))
            )
            median = sorted(succeeded, key=lambda m: m["wall_s"])[(len(succeeded) - 1) // 2]
            reported = last_json(median.get("stdout") or "")
            if reported is not None:
                result["reported"] = reported
            sizes = [m["output_bytes"] for m in succeeded if "output_bytes" in m]
            if sizes:
                result["output_mib"] = float(np.median(sizes)) / 2**20
            diffs = [m["max_abs_diff"] for m in succeeded if "max_abs_diff" in m]
            if diffs:
                result["max_abs_diff"] = max(diffs)
            bad = [m["check_failed"] for m in succeeded if "check_failed" in m]
            if bad:
                result["check_failed"] = bad[0]
        else:
            result["failed"] = measured[0]["failed"]
        result["runs"] = [{k: v for k, v in m.items() if k != "stdout"} for m in measured]
        results.append(result)
    by_key = {r["key"]: r for r in results}
    weir_wall = by_key.get("weir2p", {}).get("wall_s")
    floor_s = None
    floor_runs = [last_json(m.get("stdout") or "") for m in runs.get("floor", []) if "failed" not in m]
    floor_runs = [f for f in floor_runs if f and "total_s" in f]
    floor_breakdown = None
    if floor_runs:
        keys = [k for k in ("decode_s", "arithmetic_s", "model_s", "encode_s", "total_s") if all(k in f for f in floor_runs)]
        floor_breakdown = {k: float(np.median([f[k] for f in floor_runs])) for k in keys}
        floor_s = floor_breakdown.get("total_s")
    for result in results:
        if "wall_s" in result:
            result["ratio_to_weir_2_processes"] = result["wall_s"] / weir_wall if weir_wall else None
            result["ratio_to_floor"] = result["wall_s"] / floor_s if floor_s else None
    machine = {
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "platform": platform.platform(),
    }
    report = {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "reps": reps,
        "machine": machine,
        "reference": reference_key,
        "tolerance": TOLERANCE,
        "floor_stages": floor_breakdown,
        "notes": notes,
        "results": results,
    }
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"adhoc-score-{rows}.json").write_text(json.dumps(report, indent=2) + "\n")

    ratio = lambda value: "n/a" if value is None else f"{value:.2f}"  # noqa: E731
    loads = [m["load_before"] for measured in runs.values() for m in measured if "load_before" in m]
    lines = [
        f"Ad-hoc scoring ({rows:,} rows, score only → zstd Parquet), {report['date']}, {machine['cores']} cores, "
        f"{machine['ram_gib']} GiB; median of {reps} interleaved run(s), the order rotated by one system each repetition"
        + (f"; load average before the runs {min(loads):.1f}–{max(loads):.1f}" if loads else ""),
        "",
        "| system | wall s | rows/s | peak RSS MiB | output MiB | wall vs Weir 2 processes | wall vs floor | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if "failed" in r:
            peak = max(run["peak_rss_mib"] for run in r["runs"])
            lines.append(f"| {r['system']} | failed: {r['failed'][:160]} | | {peak:.0f} before it failed | | | | |")
            continue
        if "check_failed" in r:
            check = f"**{r['check_failed']}**"
        elif "max_abs_diff" in r:
            check = "reference" if r["key"] == reference_key else f"max diff {r['max_abs_diff']:.1e}"
        else:
            check = "reference" if r["key"] == reference_key else "not checked"
        lines.append(
            f"| {r['system']} | {r['wall_s']:.2f} | {r['rows_per_s']:,.0f} | {r['peak_rss_mib']:.0f} | "
            + (f"{r['output_mib']:,.0f} | " if "output_mib" in r else "n/a | ")
            + f"{ratio(r['ratio_to_weir_2_processes'])} | {ratio(r['ratio_to_floor'])} | {check} |"
        )
    lines += [
        "",
        f"Check: probabilities on every 1024th id against {systems[reference_key][0] if reference_key else 'no reference'}'s, "
        f"tolerance {TOLERANCE:g}. Peak RSS: the largest single process (/usr/bin/time). "
        "\"wall vs floor\" divides by the floor's own `total_s`.",
    ]
    reference_columns = columns.get(reference_key) if reference_key else None
    if reference_columns:
        features = [c for c in reference_columns if c.startswith("f_")]
        shown = [c for c in reference_columns if not c.startswith("f_")]
        if features:
            shown.insert(1, f"{features[0].split(':')[0]}..{features[-1].split(':')[0]}: {features[0].split(': ')[1]} ({len(features)} columns)")
        lines += ["", f"Columns written: {systems[reference_key][0]}: " + ", ".join(f"`{c}`" for c in shown) + "."]
        for key, cols in columns.items():
            if key == reference_key or cols is None:
                continue
            if cols == reference_columns:
                lines.append(f"- {systems[key][0]}: the same.")
                continue
            missing = [c.split(":")[0] for c in reference_columns if c.split(":")[0] not in {x.split(":")[0] for x in cols}]
            typed = [c for c in cols if c not in reference_columns and c.split(":")[0] not in missing]
            extra = [c.split(":")[0] for c in cols if c.split(":")[0] not in {x.split(":")[0] for x in reference_columns}]
            parts = []
            if missing:
                parts.append(f"lacks {len(missing)} column(s) ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
            if extra:
                parts.append(f"adds {', '.join(extra)}")
            if typed:
                theirs = {c.split(":")[0]: c for c in reference_columns}
                parts.append(
                    "writes "
                    + ", ".join(f"`{c}` (not `{theirs[c.split(':')[0]]}`)" for c in typed[:4])
                    + (" …" if len(typed) > 4 else "")
                )
            lines.append(f"- {systems[key][0]}: " + "; ".join(parts) + ".")
    if floor_breakdown:
        lines += [
            "",
            "Floor phases (median seconds; decode, arithmetic (building the tensor), model and encode are each "
            "thread's time in them, summed over threads / threads; total = the floor's wall): "
            + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in floor_breakdown.items()),
        ]
    lines += [f"\n{note}" for note in notes]
    weir_metrics = by_key.get("weir2p", {}).get("reported")
    if weir_metrics and "stages" in weir_metrics:
        lines += ["", f"Where {by_key['weir2p']['system']}'s time went (its median run, `weir run --json`):", ""]
        lines += stage_table(weir_metrics)
    (out_dir / f"adhoc-score-{rows}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def floor_supports_score() -> bool:
    """Whether the floor binary exists and knows `--workload score` (its usage line says so)."""
    if not FLOOR.exists():
        return False
    proc = subprocess.run([str(FLOOR)], capture_output=True, text=True)
    usage = proc.stdout + proc.stderr
    return "--workload" in usage and "score" in usage


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument("--baseline-weir", default=None, help="a second Weir binary, run as its own system [baseline]")
    parser.add_argument("--systems", default=None, help=f"comma-separated keys out of {','.join(SYSTEM_KEYS)} (default: all)")
    args = parser.parse_args()
    keys = args.systems.split(",") if args.systems else [k for k in SYSTEM_KEYS if k != "baseline" or args.baseline_weir]
    unknown = set(keys) - set(SYSTEM_KEYS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEM_KEYS)}")
    if "baseline" in keys and not args.baseline_weir:
        parser.error("the baseline system needs --baseline-weir BIN")
    notes = []
    if "floor" in keys and not floor_supports_score():
        message = f"The floor was not run: {FLOOR.relative_to(REPO)} is missing or has no `--workload score`."
        print(message, flush=True)
        notes.append(message)
        keys.remove("floor")

    work = BENCH / "data" / f"score-{args.rows}"
    data, model = work / "data", work / "mlp.onnx"
    if not (model.exists() and any(data.glob("*.parquet"))):
        subprocess.run([sys.executable, str(BENCH / "score_setup.py"), str(args.rows), str(work)], check=True)

    def weir(binary: str, key: str, flags: list) -> list:
        job = work / f"adhoc-{key}.toml"
        job.write_text(weir_job(data, model, work / f"adhoc-out-{key}"))
        return [binary, "run", str(job), "--json", *flags]

    peers = lambda script, key: [str(PEERS_PYTHON), str(BENCH / script), str(data), str(model), str(work / f"adhoc-out-{key}")]  # noqa: E731
    every = {
        "floor": ("floor (Rust, streaming, all cores)", lambda: [str(FLOOR), "--workload", "score", str(data), str(model), str(work / "adhoc-out-floor")], work / "adhoc-out-floor"),
        "weir2p": ("weir 2 processes x 1 worker", lambda: weir(args.weir, "weir2p", ["--processes", "2", "--workers", "1"]), work / "adhoc-out-weir2p"),
        "weir2": ("weir 2 workers", lambda: weir(args.weir, "weir2", ["--workers", "2"]), work / "adhoc-out-weir2"),
        "baseline": (
            f"baseline weir ({args.baseline_weir}) 2 processes x 1 worker",
            lambda: weir(args.baseline_weir, "baseline", ["--processes", "2", "--workers", "1"]),
            work / "adhoc-out-baseline",
        ),
        # score_python.py writes to DIR/out-python, whatever we ask.
        "python": ("pyarrow + onnxruntime (1 thread)", lambda: [sys.executable, str(BENCH / "score_python.py"), str(work)], work / "out-python"),
        "duckdb": ("DuckDB + onnxruntime", lambda: peers("adhoc_duckdb.py", "duckdb"), work / "adhoc-out-duckdb"),
        "daft": ("Daft", lambda: peers("adhoc_daft.py", "daft"), work / "adhoc-out-daft"),
    }
    systems = {key: (every[key][0], every[key][1](), every[key][2]) for key in SYSTEM_KEYS if key in keys}
    reference_key = next((k for k in REFERENCE_KEYS if k in systems), next(iter(systems), None))
    if reference_key not in REFERENCE_KEYS and reference_key is not None:
        notes.append(f"No Weir system was run: the check compares against {systems[reference_key][0]}.")

    runs = {key: [] for key in systems}
    columns = {}
    reference = None
    order = list(systems.items())
    for rep in range(args.reps):
        samples = {}
        # Each repetition starts one system further on, so that no system always runs right
        # after the same one (see the docstring).
        start = rep % max(len(order), 1)
        for key, (name, command, out) in order[start:] + order[:start]:
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            run = timed(command)
            if "failed" not in run:
                try:
                    got = read_output(out)
                    samples[key] = (run, got)
                    columns.setdefault(key, got["columns"])
                except Exception as error:  # an unreadable output is this system's failure
                    run["failed"] = f"output unreadable: {error}"
            runs[key].append(run)
            outcome = run.get("failed") or "{:.2f} s, {:.0f} MiB".format(run["wall_s"], run["peak_rss_mib"])
            print(f"{name}: {outcome}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if reference is None:
            found = [k for k in [*REFERENCE_KEYS, *systems] if k in samples]
            if found:
                reference_key = found[0] if reference_key not in samples else reference_key
                reference = samples[reference_key][1]
        for key, (run, got) in samples.items():
            if reference is not None:
                run.update(compare(got, reference, args.rows))
                if "check_failed" in run:
                    print(f"{systems[key][0]}: CHECK FAILED: {run['check_failed']}", flush=True)
        write_report(args.rows, args.reps, systems, runs, columns, reference_key, notes)


if __name__ == "__main__":
    main()
