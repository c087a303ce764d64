"""Multi-host clusters across real network boundaries: Linux network namespaces as hosts.

Each "host" is a network namespace with its own address on a bridge (the bridge lives in a
namespace of its own, so the machine's own network is never touched) and its own hosts
file (`ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts), which maps the DNS
names the Kubernetes Indexed Job of deploy/kubernetes/cluster-job.yaml gives its pods
(`JOB-i.SERVICE.NAMESPACE.svc.cluster.local`) to the hosts' addresses. Every process runs
`weir worker JOB --hostfile kubernetes` with the pod environment that manifest sets, so
the processes find each other exactly as they would in the Job. Data and output are on
the shared local disk.

- 3 hosts x 2 workers run the peers workload (impute, standardize, PCA, score with an ONNX
  MLP): the output equals `weir run -w 6` in one process exactly, and its fitted means and
  scores agree with NumPy and onnxruntime;
- a host killed mid-run: every process exits within 10 s, nothing is committed, and the
  re-run is exact;
- a host never started: the others stop within the connect deadline, naming it;
- a link cut mid-run (`ip link set eth0 down` in one host): every process stops within
  the peer silence limit (10 s) plus slack, nothing committed;
- a process with the wrong cluster secret, or from a stale run (another run id), on a
  fourth host claiming to be process 2: refused, and the run goes on with the real one.

Needs root (network namespaces); skips loudly without it.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import WEIR_BIN, read_output, write_job
from helpers import cluster_job_pod_env, fitted_column_params, helper_mlp, live_glob, onnx_reference

K8S_NAMESPACE = "etl"
SECRET = "multi-host-test-secret"
SUBNET = "10.213.{tag}"
FEATURES = 12
SLOW_BATCH = 64


def sh(*args, check=True):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check)


class Hosts:
    """`count` network namespaces on one bridge, with hosts files naming the Indexed Job's
    pods. Host i has address SUBNET.(i+1) and is pod i (the last ones are spares)."""

    def __init__(self, count: int, names: list):
        self.tag = os.getpid() % 200 + 20
        self.bridge = f"weir-br-{self.tag}"
        self.hosts = [f"weir-h{i}-{self.tag}" for i in range(count)]
        self.addresses = [f"10.213.{self.tag}.{i + 1}" for i in range(count)]
        self.procs = []
        sh("ip", "netns", "add", self.bridge)
        sh("ip", "-n", self.bridge, "link", "add", "wbr", "type", "bridge")
        sh("ip", "-n", self.bridge, "link", "set", "wbr", "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(
            f"{address} {name.rsplit(':', 1)[0]}\n" for address, name in zip(self.addresses, names)
        )
        for i, ns in enumerate(self.hosts):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", self.bridge)
            sh("ip", "-n", self.bridge, "link", "set", f"p{i}", "master", "wbr", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.addresses[i]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            folder = Path("/etc/netns") / ns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(hosts_file)

    def start(self, host: int, args, env, log: Path) -> subprocess.Popen:
        with open(log, "w") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.hosts[host], *map(str, args)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self.procs.append(proc)
        return proc

    def cut(self, host: int):
        sh("ip", "-n", self.hosts[host], "link", "set", "eth0", "down")

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for ns in self.hosts + [self.bridge]:
            sh("ip", "netns", "delete", ns, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


def pod_names(processes=3):
    env = cluster_job_pod_env(0, K8S_NAMESPACE)
    job, service, port = env["WEIR_JOB_NAME"], env["WEIR_CLUSTER_SERVICE"], env["WEIR_CLUSTER_PORT"]
    return [f"{job}-{i}.{service}.{K8S_NAMESPACE}.svc.cluster.local:{port}" for i in range(processes)]


def pod_env(index: int) -> dict:
    """This process's environment plus the pod's, with the cluster's secret (a Secret in the
    manifest) and a 20 s connect deadline."""
    return {**os.environ, **cluster_job_pod_env(index, K8S_NAMESPACE), "WEIR_CLUSTER_SECRET": SECRET, "WEIR_CONNECT_TIMEOUT_S": "20"}


@pytest.fixture
def hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("MULTI-HOST TESTS SKIPPED: network namespaces need root and iproute2's `ip`")
    names = pod_names() + ["spare.invalid:7000"]
    try:
        made = Hosts(4, names)
    except subprocess.CalledProcessError as error:
        pytest.skip(f"MULTI-HOST TESTS SKIPPED: cannot make network namespaces here: {error.stderr.strip()}")
    yield made
    made.close()


@pytest.fixture(scope="module")
def peers_data(tmp_path_factory):
    """600k rows of 12 float features with 5% nulls, in 6 files of 4 row groups, and the MLP."""
    root = tmp_path_factory.mktemp("peers")
    src = root / "data"
    src.mkdir()
    rng = np.random.default_rng(16)
    for part in range(6):
        rows = 100_000
        columns = {"id": np.arange(part * rows, (part + 1) * rows, dtype=np.int64)}
        for f in range(FEATURES):
            values = rng.normal(f, 1 + f / 4, rows)
            columns[f"f_{f:02d}"] = pa.array(values, mask=rng.random(rows) < 0.05)
        pq.write_table(pa.table(columns), src / f"part-{part}.parquet", row_group_size=25_000)
    return src, helper_mlp(root / "mlp.onnx")


def peers_job(path: Path, src: Path, model: Path, out: Path, batch_size=8192) -> Path:
    """The peers workload; a small `batch_size` makes the run slow enough (per-batch
    overheads) to inject faults while it runs."""
    return write_job(
        path,
        f"""name = "peers-multihost"
[source]
uri = "{src}"
batch_size = {batch_size}
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
components = 6
output = "pc"
[[step]]
op = "score"
model = "{model}"
inputs = {{ x = ["pc_*"] }}
outputs = {{ y = "score" }}
[sink]
uri = "{out}"
mode = "overwrite"
lease_ttl_s = 3
""",
    )


def start_cluster(hosts, job, tmp_path, stem, skip=(), extra=(), env_for=None):
    """Starts process i of the Job on host i (but those in `skip`); returns {i: Popen}."""
    procs = {}
    for index in range(3):
        if index in skip:
            continue
        env = pod_env(index)
        if env_for:
            env.update(env_for(index))
        args = [WEIR_BIN, "worker", job, "--hostfile", "kubernetes", "--workers", 2, *extra]
        procs[index] = hosts.start(index, args, env, tmp_path / f"{stem}-{index}.log")
    return procs


def wait_all(procs, timeout):
    deadline = time.monotonic() + timeout
    for proc in procs.values():
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    return {i: p.returncode for i, p in procs.items()}


def logs(tmp_path, stem):
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob(f"{stem}-*.log")))


def wait_running(out: Path, procs, timeout=60):
    """Waits until the run holds the output (its claim is written: the cluster connected)
    and a moment more, and checks that no process has ended yet."""
    deadline = time.monotonic() + timeout
    while not live_glob(out / "_weir" / "runs", "*/claim.json"):
        assert time.monotonic() < deadline, "the cluster never took the output's lease"
        assert all(p.poll() is None for p in procs.values()), "a process ended before the run started"
        time.sleep(0.02)
    time.sleep(1.0)
    assert all(p.poll() is None for p in procs.values()), "the run ended before the fault could be injected"


def single_process_reference(weir, tmp_path, peers_data, batch_size=8192) -> pa.Table:
    """The same job run by `weir run -w 6`: one process with as many workers."""
    src, model = peers_data
    out = tmp_path / "single"
    weir("run", peers_job(tmp_path / "single.toml", src, model, out, batch_size), "-w", "6", check=0)
    return read_output(out).sort_by("id")


def test_three_hosts_equal_one_process_and_the_references(hosts, weir, tmp_path, peers_data):
    src, model = peers_data
    out = tmp_path / "out"
    job = peers_job(tmp_path / "job.toml", src, model, out)
    procs = start_cluster(hosts, job, tmp_path, "run")
    codes = wait_all(procs, 300)
    assert codes == {0: 0, 1: 0, 2: 0}, logs(tmp_path, "run")
    got = read_output(out).sort_by("id")
    assert got.equals(single_process_reference(weir, tmp_path, peers_data)), "3 hosts x 2 workers == 1 process x 6 workers"
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    assert manifest["cluster"] == {"processes": 3, "workers_per_process": 2}

    # Independent checks: the imputed means against NumPy, the scores against onnxruntime.
    table = pq.read_table(src).sort_by("id")
    impute = fitted_column_params(out, 1)
    for name in [f"f_{f:02d}" for f in range(FEATURES)]:
        want = np.nanmean(table[name].to_numpy(zero_copy_only=False).astype(float))
        assert abs(impute[name]["value"] - want) <= 1e-9 * max(1.0, abs(want)), name
    pcs = np.column_stack([got[f"pc_{i}"].to_numpy() for i in range(6)])
    want_scores = onnx_reference(model, pcs)["y"]
    got_scores = np.column_stack([got[f"score_{j}"].to_numpy() for j in range(3)])
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)


def test_a_host_killed_mid_run_stops_every_process_and_the_rerun_is_exact(hosts, weir, tmp_path, peers_data):
    src, model = peers_data
    out = tmp_path / "out"
    job = peers_job(tmp_path / "job.toml", src, model, out, batch_size=SLOW_BATCH)
    procs = start_cluster(hosts, job, tmp_path, "killed")
    wait_running(out, procs)
    os.kill(procs[2].pid, signal.SIGKILL)
    killed = time.monotonic()
    codes = wait_all({i: p for i, p in procs.items() if i != 2}, 10)
    assert time.monotonic() - killed < 10
    assert codes == {0: 1, 1: 1}, logs(tmp_path, "killed")
    assert "lost the connection to another process of the cluster" in logs(tmp_path, "killed")
    assert not (out / "_SUCCESS").exists(), "nothing committed"

    # The re-run (once the killed run's 3 s lease has expired) is exact.
    time.sleep(3.5)
    procs = start_cluster(hosts, job, tmp_path, "rerun")
    assert wait_all(procs, 300) == {0: 0, 1: 0, 2: 0}, logs(tmp_path, "rerun")
    assert read_output(out).sort_by("id").equals(single_process_reference(weir, tmp_path, peers_data, SLOW_BATCH))


def test_a_host_that_never_starts_is_named_within_the_deadline(hosts, tmp_path, peers_data):
    src, model = peers_data
    out = tmp_path / "out"
    job = peers_job(tmp_path / "job.toml", src, model, out)
    started = time.monotonic()
    procs = start_cluster(hosts, job, tmp_path, "missing", skip={1}, env_for=lambda i: {"WEIR_CONNECT_TIMEOUT_S": "4"})
    codes = wait_all(procs, 60)
    assert time.monotonic() - started < 30
    assert codes == {0: 1, 2: 1}, logs(tmp_path, "missing")
    text = logs(tmp_path, "missing")
    assert f"process 1 ({pod_names()[1]}) did not connect within 4 s" in text, text
    assert not out.exists() or not (out / "_SUCCESS").exists()


def test_a_link_cut_mid_run_fails_every_process_within_bounds(hosts, tmp_path, peers_data):
    src, model = peers_data
    out = tmp_path / "out"
    job = peers_job(tmp_path / "job.toml", src, model, out, batch_size=SLOW_BATCH)
    procs = start_cluster(hosts, job, tmp_path, "cut")
    wait_running(out, procs)
    hosts.cut(2)
    cut = time.monotonic()
    codes = wait_all(procs, 60)
    took = time.monotonic() - cut
    text = logs(tmp_path, "cut")
    assert took < 30, f"stopped {took:.1f} s after the cut\n{text}"
    assert all(code != 0 for code in codes.values()), f"{codes}\n{text}"
    assert "lost the connection to another process of the cluster" in text, text
    assert not (out / "_SUCCESS").exists(), "nothing committed"


@pytest.mark.parametrize("intruder", ["wrong-secret", "stale-run"])
def test_an_intruder_claiming_a_process_is_refused_and_the_run_goes_on(hosts, weir, tmp_path, peers_data, intruder):
    src, model = peers_data
    out = tmp_path / "out"
    job = peers_job(tmp_path / "job.toml", src, model, out)
    procs = start_cluster(hosts, job, tmp_path, "honest", skip={2})
    # Host 3 says it is process 2 of this Job.
    env = pod_env(2)
    extra = []
    if intruder == "wrong-secret":
        env["WEIR_CLUSTER_SECRET"] = "a-guess"
    else:
        extra = ["--var", "run_id=an-earlier-run"]
    rogue = hosts.start(3, [WEIR_BIN, "worker", job, "--hostfile", "kubernetes", "--workers", 2, *extra], env, tmp_path / "rogue.log")
    assert rogue.wait(timeout=60) != 0
    assert "refused this one" in (tmp_path / "rogue.log").read_text(), (tmp_path / "rogue.log").read_text()
    assert all(p.poll() is None for p in procs.values()), "the honest processes keep waiting for process 2"

    procs.update(start_cluster(hosts, job, tmp_path, "late", skip={0, 1}))
    assert wait_all(procs, 300) == {0: 0, 1: 0, 2: 0}, logs(tmp_path, "honest") + logs(tmp_path, "late")
    assert "refused a connection to the cluster" in logs(tmp_path, "honest")
    assert read_output(out).sort_by("id").equals(single_process_reference(weir, tmp_path, peers_data))
