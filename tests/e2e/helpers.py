"""Helpers shared by Weir's end-to-end test modules, so that no test module imports another.

- Cluster shapes: the `weir run` flags of the shapes tests run under (`SHAPES_*`, `shape_id`).
- `free_port`: a port on 127.0.0.1 for a program that must be told its port in advance.
- `_weir/fitted.json` and matrices: `fitted_steps`, `fitted_step_params`,
  `fitted_column_params`, `as_matrix` (test_fitted, test_pca).
- Scoring: `SCORE_FEATURES`, the MLP `helper_mlp` builds, and `onnx_reference`, its outputs
  by onnxruntime (test_score, test_s3).
- The clean-events job, its pyarrow reference and the checks of a committed output
  (test_local_jobs, test_hostfile).
- The output commit protocol: its filter job and data, their pyarrow reference, runs in the
  background and the kill loop (test_output_safety, test_output_safety_s3).
- The job service: `Service` (a `weir serve` started in a folder, stopped with everything
  it started), `Api` (requests with one token), and the call helpers `expect`,
  `expect_error`, `submit`, `get_run`, `wait_run` (test_service, test_dashboard).

Fixtures, and the plain helpers most modules use (`write_job`, `read_output`, `data_files`,
`read_inputs`, ...), stay in conftest.py.
"""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import requests

from conftest import REPO, WEIR_BIN, data_files, read_inputs, write_job

# ---------------------------------------------------------------------------------------
# Cluster shapes: each is the flags of `weir run` for one shape. `-w N` is one process of N
# worker threads, `-p P -w N` is P local processes of N workers each. A constant's name
# lists its shapes: `1` is one process of one worker, `2X2` two processes of two workers.

SHAPES_1_AND_2X2 = [["-w", "1"], ["-p", "2", "-w", "2"]]
SHAPES_1_3_AND_2X2 = [["-w", "1"], ["-w", "3"], ["-p", "2", "-w", "2"]]
SHAPES_1_4_AND_2X2 = [["-w", "1"], ["-w", "4"], ["-p", "2", "-w", "2"]]
# Tuples: the kill loops key each shape's run time by the shape.
SHAPES_2_AND_2X1 = (("-w", "2"), ("-p", "2", "-w", "1"))


def shape_id(shape) -> str:
    """The test id of a shape (`ids=shape_id`): "1worker", "3workers", "2procs-x-2workers"."""
    flags = list(shape)
    workers = int(flags[flags.index("-w") + 1])
    processes = int(flags[flags.index("-p") + 1]) if "-p" in flags else 1
    threads = f"{workers}worker{'s' if workers > 1 else ''}"
    return threads if processes == 1 else f"{processes}procs-x-{threads}"


# ---------------------------------------------------------------------------------------
# Ports


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago: bound as port 0, read, released.

    Another process may take it before the caller's program binds it. Use it only for a
    program that must be told its port in advance and cannot bind port 0 itself; where that
    program's bind can fail, retry with new ports (as test_hostfile.py does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# Fitted parameters (`_weir/fitted.json`) and outputs as matrices


def fitted_steps(out: Path) -> list:
    """The fitted steps recorded in the output `out`'s `_weir/fitted.json`."""
    return json.loads((out / "_weir" / "fitted.json").read_text())["steps"]


def fitted_step_params(out: Path, step: int) -> dict:
    """All parameters of step number `step`, e.g. a pca's `components`, `mean` and
    `explained_variance`."""
    return next(s for s in fitted_steps(out) if s["step"] == step)["params"]


def fitted_column_params(out: Path, step: int) -> dict:
    """Column name -> that column's parameters, for step number `step` of a per-column
    fitted step (impute, standardize, minmax, clip)."""
    return fitted_step_params(out, step)["columns"]


def as_matrix(table: pa.Table, names) -> np.ndarray:
    """Columns as a float matrix with NaN for nulls, rows ordered by `id`."""
    table = table.sort_by("id")
    return np.column_stack([table.column(n).to_numpy(zero_copy_only=False).astype(float) for n in names])


# ---------------------------------------------------------------------------------------
# deploy/kubernetes/cluster-job.yaml (test_deploy, test_multihost)


def cluster_job_manifest() -> tuple:
    """The headless Service and the Indexed Job of deploy/kubernetes/cluster-job.yaml."""
    import yaml

    service, job = [doc for doc in yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "cluster-job.yaml").read_text()) if doc]
    return service, job


def cluster_job_pod_env(index: int, namespace: str) -> dict:
    """The environment the Indexed Job gives the pod of completion index `index` in
    `namespace` (the manifest's literal values; the index and namespace as Kubernetes sets
    them)."""
    _, job = cluster_job_manifest()
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    return {**{k: v for k, v in env.items() if v is not None}, "JOB_COMPLETION_INDEX": str(index), "WEIR_NAMESPACE": namespace}


# ---------------------------------------------------------------------------------------
# Scoring models (test_score, test_s3): onnx and onnxruntime are imported only when used

SCORE_FEATURES = [f"f{i}" for i in range(6)]  # the input columns of `helper_mlp`


def helper_mlp(path: Path) -> Path:
    """A two-layer MLP written node by node: x[N,6] → relu(x·W1 + b1)·W2 + b2 → y[N,3]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(size=(6, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    w2, b2 = rng.normal(size=(10, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
            helper.make_node("Add", ["h3", "b2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def onnx_reference(model: Path, x: np.ndarray) -> dict:
    """The model's outputs by name, computed by onnxruntime's Python API."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})))


# ---------------------------------------------------------------------------------------
# The clean-events job (on conftest's `events_dir`) and the checks of its committed output


CLEAN_JOB = """
name = "clean-events"

[source]
uri = "{src}"
columns = ["id", "age", "income", "country", "score", "email"]
batch_size = 700

[[step]]
op = "cast"
columns = {{ age = "float64", score = "float64" }}
on_error = "null"

[[step]]
op = "filter"
expr = "age >= 18 and (country in ('DE', 'FR') or income is not null)"

[[step]]
op = "rename"
columns = {{ email = "contact" }}

[[step]]
op = "drop_nulls"
columns = ["score"]

[[step]]
op = "select"
columns = ["id", "age", "income", "country", "score", "contact"]

[sink]
uri = "{out}"
mode = "{mode}"
"""


def parse_float(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value


def clean_reference(src) -> pa.Table:
    """The CLEAN_JOB computed with pyarrow, with SQL's three-valued logic spelled out."""
    table = read_inputs(src)
    age = pc.cast(table["age"], pa.float64())
    score = pa.array([parse_float(s) for s in table["score"].to_pylist()], type=pa.float64())
    country = table["country"]
    in_list = pc.if_else(pc.is_null(country), pa.scalar(None, pa.bool_()), pc.is_in(country, value_set=pa.array(["DE", "FR"])))
    keep = pc.and_kleene(pc.greater_equal(age, 18.0), pc.or_kleene(in_list, pc.is_valid(table["income"])))
    keep = pc.and_kleene(keep, pc.is_valid(score))
    out = pa.table(
        {
            "id": table["id"],
            "age": age,
            "income": table["income"],
            "country": country,
            "score": score,
            "contact": table["email"],
        }
    )
    return out.filter(keep)


def assert_same_rows(got: pa.Table, want: pa.Table):
    assert got.column_names == want.column_names
    got, want = got.sort_by("id"), want.sort_by("id")
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        assert got[name].type == want[name].type, name
        assert got[name].to_pylist() == want[name].to_pylist(), name


def assert_committed(out, expected_rows):
    assert (out / "_SUCCESS").exists()
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    listed = sorted(f["path"] for f in manifest["files"])
    on_disk = sorted(str(p.relative_to(out)) for p in data_files(out))
    assert listed == on_disk, "the manifest lists exactly the data files present"
    for f in manifest["files"]:
        meta = pq.ParquetFile(out / f["path"]).metadata
        assert meta.num_rows == f["rows"]
        assert (out / f["path"]).stat().st_size == f["bytes"]
    assert manifest["rows"] == expected_rows
    return manifest


# ---------------------------------------------------------------------------------------
# The output commit protocol: a filter job on generated data, its reference, runs in the
# background and the loop that kills them at random moments


THRESHOLDS = (0.25, 0.6)  # two filters, so consecutive committed outputs differ
HELD = "is held by run"

SAFETY_JOB = """
name = "output-safety"

[source]
uri = "{src}"
batch_size = {batch}

[[step]]
op = "filter"
expr = "x >= {threshold}"

[sink]
uri = "{out}"
mode = "{mode}"
row_group_rows = 4096
{extra}
"""


def job_file(path: Path, src, out, threshold=THRESHOLDS[0], mode="overwrite", ttl=None, batch=32) -> Path:
    """Writes SAFETY_JOB at `path`: the rows of `src` with x >= `threshold`, into `out`."""
    extra = f"lease_ttl_s = {ttl}" if ttl is not None else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_job(path, SAFETY_JOB.format(src=src, out=out, threshold=threshold, mode=mode, extra=extra, batch=batch))


def make_table(rng: np.random.Generator, start: int, rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + rows, dtype=np.int64)),
            "x": pa.array(rng.random(rows)),
            "y": pa.array(rng.normal(size=rows)),
            "label": pa.array(rng.choice(np.array(["a", "bb", "ccc"]), rows), type=pa.string()),
        }
    )


def write_data(directory: Path, rows: int, seed: int, files: int = 4, row_group: int = 25_000) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = rows // files
    for index in range(files):
        n = per if index < files - 1 else rows - per * (files - 1)
        pq.write_table(make_table(rng, index * per, n), directory / f"data-{index}.parquet", row_group_size=row_group)
    return directory


def reference(src: Path, threshold: float) -> pa.Table:
    """The rows the job must write, computed from the input files with pyarrow."""
    table = pa.concat_tables(pq.read_table(f) for f in sorted(src.glob("*.parquet")))
    return table.filter(pc.greater_equal(table["x"], threshold)).sort_by("id")


def assert_rows(got: pa.Table, want: pa.Table, what: str = "output"):
    """`got` holds exactly the rows of `want` (any order, any string/int representation)."""
    assert got is not None, f"{what}: nothing was read"
    assert got.num_rows == want.num_rows, f"{what}: {got.num_rows} rows, expected {want.num_rows}"
    assert set(got.column_names) == set(want.column_names), f"{what}: columns {got.column_names}"
    got = got.sort_by("id")
    for name in want.column_names:
        if pa.types.is_floating(want.schema.field(name).type) or pa.types.is_integer(want.schema.field(name).type):
            ok = np.array_equal(got[name].to_numpy(), want[name].to_numpy())
        else:
            ok = pc.cast(got[name], pa.string()).combine_chunks().equals(want[name].combine_chunks())
        assert ok, f"{what}: column {name} differs"


def hidden(relative: Path) -> bool:
    """Whether a path under an output prefix is one readers skip (a part starts with _ or .)."""
    return any(part.startswith(("_", ".")) for part in relative.parts)


class Run:
    """A `weir run` in the background, its output in files (children inherit stderr)."""

    def __init__(self, job: Path, *args, env=None, cwd=None, logs: Path = None):
        logs = logs or job.parent
        stamp = f"{time.monotonic_ns()}"
        self.out_path, self.err_path = logs / f"run-{stamp}.out", logs / f"run-{stamp}.err"
        self.args = [str(WEIR_BIN), "run", str(job), *map(str, args), "--quiet"]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, env=env, cwd=cwd)
        self.pid = self.proc.pid

    def wait(self, timeout=120) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def describe(self) -> str:
        return f"{' '.join(self.args)} -> {self.proc.returncode}\nstderr:\n{self.stderr}"

    def kill(self):
        """Cleanup: kills this run and any process of it still running (its job path in argv)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for pid in processes_with(self.args[2]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def live_glob(directory: Path, pattern: str) -> list:
    """`directory.glob(pattern)` while a run may be creating and removing what it matches:
    a directory that vanishes between being listed and being read (a run finishing and
    removing its attempt directory) reads as absent instead of raising. Sorted."""
    for _ in range(100):
        try:
            return sorted(directory.glob(pattern)) if directory.exists() else []
        except FileNotFoundError:
            continue
    return []


def children_of(pid: int) -> list:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def processes_with(marker: str) -> list:
    """Live processes whose command line mentions `marker` (a job file's path)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


def wait_gone(pids, timeout=10.0) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def wait_no_processes(marker: str, timeout=10.0) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not processes_with(marker):
            return []
        time.sleep(0.05)
    return processes_with(marker)


def run_retrying(weir, *args, timeout=20.0, **kwargs):
    """Runs weir; while it is refused because a (dead) run's lease is still live, retries."""
    deadline = time.time() + timeout
    while True:
        proc = weir(*args, **kwargs)
        if proc.returncode == 2 and HELD in proc.stderr and time.time() < deadline:
            time.sleep(0.3)
            continue
        return proc


def ls_json(weir, uri, *extra, env=None, check=None):
    proc = weir("ls", uri, "--json", *extra, env=env, timeout=60)
    if check is not None:
        assert proc.returncode == check, f"weir ls {uri} --json {extra}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def run_at_once(job, tmp_path, stem, count=6, env=None) -> str:
    """Starts `count` runs of `job` at once (run ids `<stem>0`…) and waits for them all.
    Exactly one must commit (exit 0); every other exits 2 naming a holder that is one of
    these runs (a loser may briefly hold a claim it then withdraws), with that run's pid.
    Returns the winner's run id."""
    runs = [Run(job, "-w", "2", "--var", f"run_id={stem}{i}", env=env, logs=tmp_path) for i in range(count)]
    try:
        codes = [run.wait(timeout=300) for run in runs]
    finally:
        for run in runs:
            run.kill()
    report = "\n".join(run.describe() for run in runs)
    winners = [run for run, code in zip(runs, codes) if code == 0]
    assert len(winners) == 1, report
    for run, code in zip(runs, codes):
        if run is winners[0]:
            continue
        assert code == 2 and HELD in run.stderr and "since" in run.stderr, report
        named = run.stderr.split(HELD, 1)[1].split()[0]
        holders = [other for other in runs if f"run_id={named}" in other.args]
        assert holders and str(holders[0].pid) in run.stderr, report
    return winners[0].args[winners[0].args.index("--var") + 1].split("=", 1)[1]


def kill_loop(start_run, check_state, recover, probe, shapes_time, iterations, ttl, rng, log):
    """Starts runs and kills them at random moments; `check_state` checks the prefix after each.

    start_run(i, shape, threshold, run_id) -> Run; check_state(run_id, threshold, rc, entry,
    recover) checks the prefix; recover(threshold, run_id) -> the committed threshold after a
    run that must succeed (used after a kill inside the publish window). Every third iteration
    aims at the commit instead of a random moment: it waits for probe(run_id, "staged") (part
    files staged: they appear as the workers finish, just before the commit) or for
    probe(run_id, "decided") (commit.json written: the publish window) and SIGKILLs then.
    """
    for i in range(iterations):
        shape = SHAPES_2_AND_2X1[(i // 2) % 2]
        threshold = THRESHOLDS[i % 2]
        deadline = time.time() + 15
        attempt = 0
        while True:
            run_id = f"k{i}a{attempt}"
            late = i % 3 == 2
            run = start_run(i, shape, threshold, run_id)
            began = time.time()
            wait = rng.uniform(0, shapes_time[shape])
            choices = ["SIGKILL", "SIGTERM"] + (["SIGKILL-child"] if "-p" in shape else [])
            if late:
                choices = ["SIGKILL"] + (["SIGKILL-child"] if "-p" in shape else [])
            action = rng.choice(choices)
            target = rng.choice(["staged", "decided"])
            try:
                if late:
                    limit = began + 2 * shapes_time[shape] + 10
                    while run.proc.poll() is None and not probe(run_id, target) and time.time() < limit:
                        time.sleep(0.0005)
                    time.sleep(rng.choice([0, 0, 0.001, 0.005]))
                    wait = time.time() - began
                else:
                    try:
                        run.proc.wait(timeout=wait)
                    except subprocess.TimeoutExpired:
                        pass
                kids = children_of(run.pid)
                if run.proc.poll() is None:
                    if action == "SIGKILL-child" and kids:
                        try:
                            os.kill(rng.choice(kids), signal.SIGKILL)
                        except ProcessLookupError:  # it had just finished
                            action = "SIGKILL-child (already gone)"
                    elif action == "SIGKILL-child":
                        action = "SIGKILL"
                        os.kill(run.pid, signal.SIGKILL)
                    else:
                        os.kill(run.pid, signal.SIGKILL if action == "SIGKILL" else signal.SIGTERM)
                else:
                    action = "none (ended)"
                rc = run.wait(timeout=120)
                assert wait_gone(kids, 10) == [], f"iteration {i}: processes of the run outlived it ({action})"
            finally:
                run.kill()
            stderr = run.stderr
            entry = f"iteration {i}: {' '.join(shape)} x >= {threshold} run {run_id}, waited {wait:.2f}s{f' (until {target})' if late else ''}, {action} -> {rc}"
            log.append(entry)
            if rc == 2 and HELD in stderr and time.time() < deadline:
                attempt += 1
                time.sleep(0.3)
                continue
            allowed = {
                "SIGKILL": {0, -signal.SIGKILL},
                "SIGTERM": {0, 143, -signal.SIGTERM},  # -SIGTERM: killed before its handler was set
                "SIGKILL-child": {0, 1},
                "SIGKILL-child (already gone)": {0, 1},
            }.get(action, {0})
            assert rc in allowed, f"{entry}\n{stderr}\n" + "\n".join(log)
            check_state(run_id, threshold, rc, entry, recover)
            if action == "SIGKILL" and rng.random() < 0.5:
                time.sleep(ttl + 0.2)  # sometimes let the lease expire, sometimes race it
            break


# ---------------------------------------------------------------------------------------
# The job service (`weir serve`)

SERVICE_TERMINAL = {"succeeded", "failed", "cancelled", "lost"}


def processes_in(folder: Path) -> list:
    """Live processes (but this one) whose working directory is `folder`: the service and
    the runs it started there."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == str(folder) and alive(int(entry)):
            found.append(int(entry))
    return found


class Api:
    """HTTP calls to the service with one token (or none), through `requests`."""

    def __init__(self, service, token):
        self.service = service
        self.session = requests.Session()
        self.session.trust_env = False  # never a proxy for 127.0.0.1
        if service.ca is not None:
            self.session.verify = str(service.ca)
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, path, **kwargs):
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.service.url + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)


class Service:
    """One `weir serve` in `root` (its working directory), state in `root/state`."""

    def __init__(self, root: Path, flags, env=None, ca=None):
        self.root = root
        self.ca = ca  # the CA (PEM) that clients trust, for a service started with TLS
        self.state = root / "state"
        self.flags = [str(f) for f in flags]
        self.env = env  # the service's environment (and so its runs'), e.g. a Garage's
        self.proc = None
        self.starts = 0
        self.url = None
        self.token = None

    def start(self, timeout=60):
        address = self.root / "addr"
        address.unlink(missing_ok=True)  # a restart must not read the previous address
        self.starts += 1
        self.log_path = self.root / f"serve-{self.starts}.log"
        args = [str(WEIR_BIN), "serve", "--state-dir", "state", "--listen", "127.0.0.1:0", "--address-file", "addr", *self.flags]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(args, cwd=self.root, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while not address.exists():
            assert self.proc.poll() is None, f"weir serve exited {self.proc.returncode}:\n{self.output}"
            assert time.time() < deadline, f"no address file after {timeout} s:\n{self.output}"
            time.sleep(0.02)
        self.url = address.read_text().strip()
        self.host = self.url.split("://", 1)[1]
        self.token = (self.state / "admin.token").read_text().strip()
        self.admin = self.api(self.token)
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def api(self, token):
        return Api(self, token)

    def cli(self, weir, *args, token=None, check=None, timeout=300):
        """`weir ARGS --server URL --token T`, run in the service's folder."""
        trust = ["--ca-cert", str(self.ca)] if self.ca is not None else []
        return weir(*args, "--server", self.url, "--token", token or self.token, *trust, cwd=self.root, check=check, timeout=timeout)

    def stop(self):
        """SIGTERM, then SIGKILL after 15 s; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
            return None

    def kill9(self):
        """SIGKILL to the service's process only (its runs are in their own groups)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)

    def close(self):
        self.stop()
        leftovers = processes_in(self.root)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(leftovers, 10)


def expect(response, status):
    """Asserts the status; returns the JSON body (None for an empty one)."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.path_url} -> {response.status_code}, expected {status}: {response.text}"
    )
    return response.json() if response.content else None


def expect_error(response, status):
    """Asserts the status and a JSON `{"error": "..."}` body; returns the message."""
    body = expect(response, status)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], response.text
    return body["error"]


def submit(api, body, status=201):
    return expect(api.post("/v1/runs", json=body), status)


def get_run(api, run_id):
    return expect(api.get(f"/v1/runs/{run_id}"), 200)


def wait_run(api, run_id, states=SERVICE_TERMINAL, timeout=120.0):
    """Polls the run until its state is one of `states`; returns it."""
    deadline = time.time() + timeout
    while True:
        run = get_run(api, run_id)
        if run["state"] in states:
            return run
        assert time.time() < deadline, f"run {run_id} still {run['state']} after {timeout} s, expected {states}: {run}"
        time.sleep(0.1)


class S3Prefix:
    """An output prefix s3://bucket/name/ seen through boto3."""

    def __init__(self, server, bucket_name: str, name: str = "out"):
        self.server, self.bucket, self.name = server, bucket_name, name
        self.uri = f"s3://{bucket_name}/{name}/"

    def keys(self) -> list:
        return [k[len(self.name) + 1 :] for k in self.server.keys(self.bucket, self.name + "/")]

    def visible(self) -> list:
        return [k for k in self.keys() if not hidden(Path(k))]

    def get(self, key: str):
        client = self.server.client()
        try:
            return client.get_object(Bucket=self.bucket, Key=f"{self.name}/{key}")["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def manifest(self):
        body = self.get("_weir/manifest.json")
        return json.loads(body) if body is not None else None

    def committed_run_id(self):
        found = self.manifest()
        return found["run_id"] if found is not None and "_SUCCESS" in self.keys() else None

    def read_visible(self):
        """What a reader that skips `_`/`.` paths sees: every visible object, read with pyarrow."""
        tables = [pq.read_table(io.BytesIO(self.get(k))) for k in self.visible()]
        return pa.concat_tables(tables) if tables else None

    def read_run(self, run_id: str):
        """The visible part files of run `run_id` (`part-*-<run_id>.parquet`), read with pyarrow."""
        tables = [pq.read_table(io.BytesIO(self.get(k))) for k in self.visible() if k.endswith(f"-{run_id}.parquet")]
        return pa.concat_tables(tables) if tables else None

    def attempt_keys(self, run_id: str) -> list:
        return self.server.keys(self.bucket, f"{self.name}/_weir/runs/{run_id}.")

    def runs(self) -> list:
        return [k for k in self.keys() if k.startswith("_weir/runs/")]

    def attempt_probe(self, run_id: str, target: str) -> bool:
        """Whether the attempt of `run_id` has staged part files or written its commit decision."""
        names = [Path(k).name for k in self.server.keys(self.bucket, f"{self.name}/_weir/runs/{run_id}.")]
        return "commit.json" in names or (target == "staged" and any(n not in ("claim.json", "heartbeat") for n in names))

    def commit_decisions(self) -> list:
        return [k for k in self.runs() if k.endswith("/commit.json")]

    def assert_clean_commit(self, want: pa.Table, run_id=None):
        found = self.manifest()
        keys = self.keys()
        assert found is not None and "_SUCCESS" in keys, f"not committed: {keys}"
        if run_id is not None:
            assert found["run_id"] == run_id
        parts = sorted(entry["path"] for entry in found["files"])
        assert keys == sorted(parts + ["_SUCCESS", "_weir/manifest.json"]), keys
        assert self.runs() == []
        assert_rows(self.read_visible(), want, f"visible objects of {self.uri}")


def attempt_files(prefix: Path, run_id: str) -> list:
    """Names of the files in the attempt directories of `run_id`."""
    try:
        attempts = [e.path for e in os.scandir(prefix / "_weir" / "runs") if e.name.startswith(run_id + ".")]
    except FileNotFoundError:
        return []
    names = []
    for attempt in attempts:
        try:
            names += os.listdir(attempt)
        except FileNotFoundError:
            pass
    return names


def read_dir(prefix: Path) -> pa.Table:
    """What a plain reader sees: pyarrow's dataset reader on the directory."""
    return pq.read_table(str(prefix))


def manifest(prefix: Path):
    path = prefix / "_weir" / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def committed_run_id(prefix: Path):
    found = manifest(prefix)
    return found["run_id"] if found is not None and (prefix / "_SUCCESS").exists() else None


# ---------------------------------------------------------------------------------------
# Running a process under a memory limit


def memory_cgroup(limit_bytes: int):
    """A new memory cgroup of this process's own (v2, or v1's `memory` hierarchy) limited to
    `limit_bytes` (swap included where the kernel counts it), or None where none can be
    made here (not root, no memory controller delegated)."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    name = f"weir-memory-{os.getpid()}-{time.monotonic_ns()}"
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1
            group = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / name
            limits = [("memory.limit_in_bytes", limit_bytes), ("memory.memsw.limit_in_bytes", limit_bytes)]
            break
    else:
        own = next((line.split("::", 1)[1] for line in lines if line.startswith("0::")), None)
        if own is None:
            return None
        group = Path("/sys/fs/cgroup") / own.lstrip("/") / name
        limits = [("memory.max", limit_bytes), ("memory.swap.max", 0)]
    try:
        group.mkdir()
    except OSError:
        return None
    try:
        for file, value in limits:
            if (group / file).exists():
                (group / file).write_text(str(value))
    except OSError:
        group.rmdir()
        return None
    return group


def run_measuring_memory(args, cwd, limit_bytes: int, timeout=900):
    """Runs `args` in a memory cgroup limited to `limit_bytes` where one can be made, and
    returns (the completed process, its peak resident set in bytes, whether the limit was
    enforced by a cgroup). The peak comes from getrusage of a Python wrapper that only waits
    for the process, so it is the process's own."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "proc = subprocess.run(sys.argv[1:])\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, file=sys.stderr)\n"
        "sys.exit(proc.returncode)\n"
    )
    group = memory_cgroup(limit_bytes)

    def enter_group():
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    try:
        proc = subprocess.run(
            [sys.executable, "-c", wrapper, *map(str, args)],
            cwd=cwd, capture_output=True, text=True, timeout=timeout, preexec_fn=enter_group,
        )
    finally:
        if group is not None:
            try:
                group.rmdir()
            except OSError:
                pass
    stderr_lines = proc.stderr.rstrip().splitlines()
    peak = int(stderr_lines[-1]) if stderr_lines and stderr_lines[-1].isdigit() else 0
    proc.stderr = "\n".join(stderr_lines[:-1])
    return proc, peak, group is not None
