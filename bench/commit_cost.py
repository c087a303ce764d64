"""What the commit protocol costs: the peers workload (impute -> standardize -> PCA 8 ->
score -> zstd Parquet, `peers.py`'s job) run by two Weir binaries in turn, A B A B ..., on
the same data, with whole-process wall times from /usr/bin/time.

    python bench/commit_cost.py --baseline OLD_WEIR [--weir NEW_WEIR] [--size M] [--reps 5]
        [--shape "--processes 2 --workers 1"] [--fresh-output | --evict-outputs]

The baseline is a build of an earlier commit, e.g.

    git worktree add /tmp/weir-old <commit>
    (cd /tmp/weir-old && CARGO_TARGET_DIR=/tmp/weir-old-target cargo build --release --bin weir)
    python bench/commit_cost.py --baseline /tmp/weir-old-target/release/weir

Each run overwrites the previous run's output, as a nightly job does, so the new binary's
figure includes taking the lease, staging, publishing (renames) and deleting the previous
output's recorded files. Prints each pair's ratio and the median ratio; writes
`results/commit-cost-SIZE.json` (`-evicted` with `--evict-outputs`).

`--fresh-output` deletes the previous output before every run, for both binaries, as
`peers.py` does between its runs: the peers workload exactly as the peers benchmark runs
it, writing into an empty prefix (`results/commit-cost-SIZE-fresh.json`).

`--evict-outputs` drops the previous outputs' pages from the page cache before every run
(posix_fadvise DONTNEED; the files stay). The new protocol keeps the previous output until
the commit, where the old one deleted it first: on a VM whose host reclaims freed guest
memory, the pages the old output keeps cached make every page the run touches a slow first
touch. Evicting them before both binaries' runs separates that effect from the protocol's
own work.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from peers import SIZES, mlp, weir_job  # noqa: E402


def evict(directory: Path):
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(command: list) -> float:
    proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e", *command], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return float(re.findall(r"TIME ([\d.]+)", proc.stderr)[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="the weir binary to compare against")
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument("--size", choices=SIZES, default="M")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--shape", default="--processes 2 --workers 1")
    parser.add_argument("--evict-outputs", action="store_true", help="drop previous outputs from the page cache before each run")
    parser.add_argument(
        "--fresh-output",
        action="store_true",
        help="delete the previous output before each run, as peers.py does (the peers workload as benchmarked)",
    )
    args = parser.parse_args()

    work = BENCH / "data" / f"peers-{args.size}"
    data = work / "data"
    if not data.exists():
        subprocess.run([sys.executable, str(BENCH / "gen_data.py"), str(SIZES[args.size]), str(data), "--files", "4"], check=True)
    model = work / "mlp.onnx"
    mlp(model)
    runs = {}
    for name in ("baseline", "new"):
        job = work / f"commit-cost-{name}.toml"
        job.write_text(weir_job(data, model, work / f"out-commit-cost-{name}"))
        runs[name] = [getattr(args, "weir" if name == "new" else "baseline"), "run", str(job), "--quiet", *args.shape.split()]

    outputs = [work / f"out-commit-cost-{name}" for name in runs]

    def run(name):
        if args.fresh_output:
            shutil.rmtree(work / f"out-commit-cost-{name}", ignore_errors=True)
        if args.evict_outputs:
            for output in outputs:
                evict(output)
        return timed(runs[name])

    run("baseline")  # warm-up: page cache, and a previous output to overwrite
    run("new")
    pairs = []
    for rep in range(args.reps):
        base, new = run("baseline"), run("new")
        pairs.append({"baseline_s": base, "new_s": new, "ratio": new / base})
        print(f"rep {rep + 1}: baseline {base:.2f} s, new {new:.2f} s, ratio {new / base:.3f}", flush=True)
    result = {
        "size": args.size,
        "rows": SIZES[args.size],
        "shape": args.shape,
        "evict_outputs": args.evict_outputs,
        "fresh_output": args.fresh_output,
        "pairs": pairs,
        "median_baseline_s": statistics.median(p["baseline_s"] for p in pairs),
        "median_new_s": statistics.median(p["new_s"] for p in pairs),
        "median_ratio": statistics.median(p["ratio"] for p in pairs),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "pairs"}, indent=2))
    (BENCH / "results").mkdir(exist_ok=True)
    suffix = ("-evicted" if args.evict_outputs else "") + ("-fresh" if args.fresh_output else "")
    (BENCH / "results" / f"commit-cost-{args.size}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
