"""What Parquet modular encryption costs on the peers workload (impute -> standardize ->
PCA 8 -> score -> zstd Parquet, `peers.py`'s job), with whole-process wall times from
/usr/bin/time, run in turn A B C A B C ... on the same data:

- A, `plain`: the peers job as `peers.py` runs it;
- B, `encrypted output`: the same job with `[sink.encryption]` (envelope encryption, an
  encrypted footer, the `score` column under a key of its own, every other column under
  the footer key);
- C, `copied input`: A reading a copy of the input that Weir wrote beforehand (made once,
  not timed): Weir's own files, row groups and codec, which read faster than
  `gen_data.py`'s, so the baseline of D;
- D, `encrypted input and output`: B reading a copy Weir wrote the same way, encrypted
  (`[source.decryption]`).

B is compared with A, D with C.

    python bench/encryption_cost.py [--weir target/release/weir] [--size M] [--reps 3]
        [--shape "--processes 2 --workers 1"]

Keys are random for each invocation and passed through WEIR_KEY_*; nothing is written to
disk but the data. Prints each round's times and the medians of the ratios; writes
`results/encryption-cost-SIZE.json`.
"""

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from peers import SIZES, mlp, timed, weir_job  # noqa: E402

ENCRYPTION = """
[sink.encryption]
footer_key = "bench_footer"
column_keys = { bench_scores = ["score"] }
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument("--size", default="M", choices=sorted(SIZES))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--shape", default="--processes 2 --workers 1")
    args = parser.parse_args()

    rows = SIZES[args.size]
    work = BENCH / "data" / f"peers-{args.size}"
    data = work / "data"
    if not data.exists():
        subprocess.run([sys.executable, str(BENCH / "gen_data.py"), str(rows), str(data)], check=True)
    model = work / "mlp.onnx"
    if not model.exists():
        mlp(model)
    env = dict(os.environ)
    for key in ("BENCH_FOOTER", "BENCH_SCORES"):
        env[f"WEIR_KEY_{key}"] = base64.b64encode(os.urandom(16)).decode()

    copies = {}
    for kind, extra in [("copy", ""), ("encrypted", '[sink.encryption]\nfooter_key = "bench_footer"\n')]:
        copies[kind] = work / f"data-{kind}"
        # Always rewritten: the keys are new for every invocation.
        shutil.rmtree(copies[kind], ignore_errors=True)
        job = work / f"make-{kind}.toml"
        job.write_text(f'name = "make-{kind}"\n[source]\nuri = "{data}"\n[sink]\nuri = "{copies[kind]}"\n{extra}')
        subprocess.run([args.weir, "run", str(job), "--quiet"], check=True, env=env)

    jobs = {}
    for name, source, extra in [
        ("plain", data, ""),
        ("encrypted output", data, ENCRYPTION),
        ("copied input", copies["copy"], ""),
        ("encrypted input and output", copies["encrypted"], ENCRYPTION),
    ]:
        out = work / f"out-encryption-{name.replace(' ', '-')}"
        text = weir_job(source, model, out) + extra
        if source == copies["encrypted"]:
            text = text.replace("[[step]]", "[source.decryption]\n\n[[step]]", 1)
        path = work / f"encryption-{name.replace(' ', '-')}.toml"
        path.write_text(text)
        jobs[name] = (path, out)

    runs = {name: [] for name in jobs}
    baseline = {"encrypted output": "plain", "encrypted input and output": "copied input"}
    ratios = {name: [] for name in baseline}
    for rep in range(args.reps):
        walls = {}
        for name, (path, out) in jobs.items():
            shutil.rmtree(out, ignore_errors=True)
            run = timed([args.weir, "run", str(path), *args.shape.split(), "--quiet"], env=env)
            if "failed" in run:
                sys.exit(f"{name}: {run['failed']}")
            run.pop("stdout", None)
            runs[name].append(run)
            walls[name] = run["wall_s"]
        line = ", ".join(f"{name} {wall:.2f} s" for name, wall in walls.items())
        for name in ratios:
            ratios[name].append(walls[name] / walls[baseline[name]])
        print(f"round {rep + 1}: {line}", flush=True)

    summary = {
        "size": args.size,
        "rows": rows,
        "shape": args.shape,
        "reps": args.reps,
        "median_wall_s": {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()},
        "median_ratio": {f"{name} / {baseline[name]}": statistics.median(rs) for name, rs in ratios.items()},
        "output_bytes": {
            name: sum(p.stat().st_size for p in out.rglob("*.parquet")) for name, (_, out) in jobs.items()
        },
        "runs": runs,
    }
    for name, ratio in summary["median_ratio"].items():
        print(f"{name}: median of the rounds' ratios {ratio:.3f}")
    results = BENCH / "results" / f"encryption-cost-{args.size}.json"
    results.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
