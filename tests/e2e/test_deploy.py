"""deploy/: every Kubernetes manifest validates against the schemas of a pinned Kubernetes
version (kubernetes-validate, strict: unknown fields are errors), and the Indexed Job for
P = 3 processes gives each pod the environment from which `weir hostfile` (what `weir worker
--hostfile kubernetes` uses) builds the stable DNS names of the Job's pods behind its headless
Service. Building the image itself needs Docker: see deploy/build-image.sh."""

import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import REPO

KUBERNETES_VERSION = "1.33.0"
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))


def documents(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_manifests_validate_against_kubernetes(manifest):
    docs = documents(manifest)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        text = yaml.safe_dump(doc).lower()
        assert "aws_secret_access_key" not in text and "password" not in text, "credentials come from Secrets"


def test_the_indexed_job_names_its_pods_as_weir_hostfile_does(weir):
    service, job = documents(REPO / "deploy" / "kubernetes" / "cluster-job.yaml")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    processes = int(env["WEIR_PROCESSES"])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == processes == 3
    assert pod["subdomain"] == env["WEIR_CLUSTER_SERVICE"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]} and env["WEIR_JOB_NAME"] == job["metadata"]["name"]
    assert container["args"][:1] == ["worker"] and "--hostfile" in container["args"] and "kubernetes" in container["args"]
    port = int(env["WEIR_CLUSTER_PORT"])
    assert container["ports"][0]["containerPort"] == port == service["spec"]["ports"][0]["targetPort"]

    # What Kubernetes sets in each pod (the namespace through the downward API).
    names = [f"{job['metadata']['name']}-{i}.{service['metadata']['name']}.etl.svc.cluster.local:{port}" for i in range(processes)]
    for index in range(processes):
        pod_env = dict(os.environ, JOB_COMPLETION_INDEX=str(index), WEIR_NAMESPACE="etl", **{k: v for k, v in env.items() if v is not None})
        printed = weir("hostfile", env=pod_env, check=0).stdout
        assert printed.splitlines() == names
    missing = dict(os.environ, JOB_COMPLETION_INDEX="0", **{k: v for k, v in env.items() if v is not None})
    missing.pop("WEIR_NAMESPACE", None)
    assert "WEIR_NAMESPACE is not set" in weir("hostfile", env=missing, check=2).stderr


def test_the_nightly_cronjob_passes_yesterdays_date_in_its_time_zone(weir, tmp_path):
    """The CronJob's command, run as the manifest states it (with this checkout's binary and
    a local job file in place of the image's): `{{ds}}` is yesterday in Europe/Berlin."""
    import subprocess
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import WEIR_BIN

    (cronjob,) = documents(REPO / "deploy" / "kubernetes" / "nightly-cronjob.yaml")
    assert cronjob["spec"]["timeZone"] == "Europe/Berlin"
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    days = {(datetime.now(ZoneInfo("Europe/Berlin")) - timedelta(days=1)).strftime("%Y-%m-%d")}
    for ds in days | {"2000-01-01"}:
        part = tmp_path / "in" / f"date={ds}"
        part.mkdir(parents=True)
        pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64())}), part / "part-0.parquet")
    (tmp_path / "job.toml").write_text('name = "nightly"\n[source]\nuri = "in/date={{ds}}/"\n[sink]\nuri = "out/date={{ds}}/"\n')
    local = script.replace("exec weir ", f"exec {WEIR_BIN} ").replace("/etc/weir/job.toml", str(tmp_path / "job.toml"))
    proc = subprocess.run(["/bin/sh", "-c", local], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    days.add((datetime.now(ZoneInfo("Europe/Berlin")) - timedelta(days=1)).strftime("%Y-%m-%d"))  # midnight passed?
    assert proc.returncode == 0, proc.stderr
    written = [d.name for d in (tmp_path / "out").iterdir()]
    assert len(written) == 1 and written[0].removeprefix("date=") in days, written
    # Without the date, a job with no [schedule] is refused rather than guessing today.
    refused = weir("run", tmp_path / "job.toml", cwd=tmp_path, check=2)
    assert "{{ds}}" in refused.stderr and "--var ds=YYYY-MM-DD" in refused.stderr
