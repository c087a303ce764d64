"""#35's memory test at full size: N distinct keys (default 20,000,000) aggregated by
`weir run --workers 2` in a memory cgroup of LIMIT MiB (default 1,024), every group checked
against the input (each key once: count 1, sum = its x). Too slow for every CI run on a
debug build (tests/e2e/test_aggregate.py runs the same at 2M keys under 384 MiB); run it
with a release build:

    cargo build --release --bin weir
    .venv/bin/python tests/scale/aggregate_memory.py --weir target/release/weir

It prints the run's time and peak resident set, and exits non-zero when the run fails, is
killed by the limit, or any group is wrong. Needs root for the cgroup (otherwise it only
measures). The data (about 320 MB) and the output go to a temporary directory, removed after.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from helpers import run_measuring_memory  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weir", default="target/release/weir")
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--limit-mib", type=int, default=1024)
    parser.add_argument("--memory-mb", type=int, default=None, help="the step's memory_mb (default: Weir's)")
    args = parser.parse_args()
    weir = Path(args.weir).resolve()
    with tempfile.TemporaryDirectory(prefix="weir-aggregate-memory-") as root:
        root = Path(root)
        rng = np.random.default_rng(20)
        keys = rng.permutation(args.rows).astype(np.int64)
        x = rng.random(args.rows)
        (root / "in").mkdir()
        for index in range(4):
            lo, hi = index * args.rows // 4, (index + 1) * args.rows // 4
            table = pa.table({"k": keys[lo:hi], "x": x[lo:hi]})
            pq.write_table(table, root / "in" / f"part-{index}.parquet", row_group_size=1_000_000)
        memory = f"memory_mb = {args.memory_mb}\n" if args.memory_mb is not None else ""
        (root / "job.toml").write_text(
            f'name = "aggregate-memory"\n[source]\nuri = "in"\nspill_dir = "{root / "spill"}"\n'
            f'[[step]]\nop = "aggregate"\nby = ["k"]\naggs = {{ n = "count(*)", s = "sum(x)" }}\n{memory}'
            f'[sink]\nuri = "out"\n'
        )
        started = time.monotonic()
        proc, peak, enforced = run_measuring_memory([weir, "run", "job.toml", "--workers", "2"], root, args.limit_mib << 20, timeout=3600)
        seconds = time.monotonic() - started
        print(f"{args.rows:,} groups, --workers 2: exit {proc.returncode}, {seconds:.1f} s, peak resident {peak / 2**20:.0f} MiB, "
              f"limit {args.limit_mib} MiB ({'a cgroup' if enforced else 'measured only: no cgroup here'})")
        if proc.returncode != 0:
            print(proc.stderr[-2000:] if proc.returncode > 0 else "killed (by the memory limit?)", file=sys.stderr)
            return 1
        got = pq.read_table(root / "out").sort_by("k")
        order = np.argsort(keys)
        same = (
            got.num_rows == args.rows
            and np.array_equal(got["k"].to_numpy(), keys[order])
            and np.array_equal(got["n"].to_numpy(), np.ones(args.rows, dtype=np.int64))
            and np.array_equal(got["s"].to_numpy(), x[order])
        )
        print("every group equals the input's" if same else "WRONG GROUPS")
        return 0 if same and peak < args.limit_mib << 20 else 1


if __name__ == "__main__":
    sys.exit(main())
