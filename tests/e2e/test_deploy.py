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
