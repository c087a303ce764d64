"""The job service under load: submission latency (median, p99) and runs per minute for
small jobs, against a real `weir serve` started here.

    python bench/service_latency.py [--weir target/release/weir] [--runs 200] [--clients 8]
        [--max-concurrent-runs 2] [--rows 500]

Writes a small Parquet source (pyarrow), starts `weir serve` on a free port in a temporary
folder, then `--clients` threads submit `--runs` runs of a small cleaning job (cast, filter,
standardize) through POST /v1/runs, each with its own idempotency key and output folder,
timing each request. Then it waits for every run to end and reports:

- submission latency: the time from sending POST /v1/runs to its 201 (validation, which
  reads the source's footer, and the durable insert), median and p99;
- throughput: runs per minute from the first submission to the last run's end;
- the number of runs per final state (all should be `succeeded`).

Results go to `results/service-latency.json`. Uses only the standard library and pyarrow.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

JOB = """name = "small"
[source]
uri = "{src}"
[[step]]
op = "cast"
columns = {{ age = "float64" }}
[[step]]
op = "filter"
expr = "age >= 0"
[[step]]
op = "standardize"
columns = ["age", "income"]
[sink]
uri = "{out}/{{{{run_id}}}}"
"""


def call(address, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        address + path, data=data, method=method, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-concurrent-runs", type=int, default=2)
    parser.add_argument("--rows", type=int, default=500)
    args = parser.parse_args()
    args.weir = str(Path(args.weir).resolve())

    import pyarrow as pa
    import pyarrow.parquet as pq

    work = Path(tempfile.mkdtemp(prefix="weir-service-bench-"))
    (work / "src").mkdir()
    pq.write_table(
        pa.table({"id": list(range(args.rows)), "age": [str(i % 90) for i in range(args.rows)], "income": [float(i) for i in range(args.rows)]}),
        work / "src" / "part-0.parquet",
    )
    definition = JOB.format(src=work / "src", out=work / "out")
    service = subprocess.Popen(
        [args.weir, "serve", "--state-dir", "state", "--listen", "127.0.0.1:0", "--address-file", "addr",
         "--max-concurrent-runs", str(args.max_concurrent_runs)],
        cwd=work, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if (work / "addr").exists():
                break
            time.sleep(0.05)
        address = (work / "addr").read_text().strip()
        token = (work / "state" / "admin.token").read_text().strip()
        latencies, ids, lock = [], [], threading.Lock()
        started = time.monotonic()

        def client(index):
            for n in range(index, args.runs, args.clients):
                sent = time.monotonic()
                status, run = call(address, token, "POST", "/v1/runs", {"definition": definition, "vars": {}, "idempotency_key": f"bench-{n}", "workers": 1})
                elapsed = time.monotonic() - sent
                if status != 201:
                    raise SystemExit(f"submission {n} failed: {status} {run}")
                with lock:
                    latencies.append(elapsed)
                    ids.append(run["id"])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        states = {}
        while True:
            states = {}
            for run_id in ids:
                _, run = call(address, token, "GET", f"/v1/runs/{run_id}")
                states[run["state"]] = states.get(run["state"], 0) + 1
            if not states.get("queued") and not states.get("running"):
                break
            time.sleep(0.5)
        total = time.monotonic() - started
    finally:
        service.terminate()
        service.wait(timeout=30)

    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    result = {
        "runs": args.runs,
        "clients": args.clients,
        "max_concurrent_runs": args.max_concurrent_runs,
        "rows_per_run": args.rows,
        "submission_latency_ms": {"median": round(statistics.median(latencies) * 1000, 1), "p99": round(p99 * 1000, 1)},
        "runs_per_minute": round(args.runs / total * 60, 1),
        "seconds": round(total, 1),
        "states": states,
        "binary": args.weir,
    }
    print(json.dumps(result, indent=2))
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "service-latency.json").write_text(json.dumps(result, indent=2) + "\n")
    if states != {"succeeded": args.runs}:
        sys.exit(f"not every run succeeded: {states}")


if __name__ == "__main__":
    main()
