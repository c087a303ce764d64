"""`weir serve --tls-cert --tls-key`: the job service over HTTPS.

The certificates come from `trustme` (a throwaway CA and a leaf for 127.0.0.1 and
localhost), never from Weir. Checked with `requests` (verifying against that CA) and the
CLI client (`--ca-cert`, `WEIR_CA_CERT`):

- the service writes an `https://` address, answers `/healthz` and an authenticated
  submission over TLS, and the run commits the rows pyarrow expects;
- a client that does not trust the CA is refused by its own TLS check, plain HTTP to the
  TLS port gets no HTTP answer, and a token never needed to travel in the clear;
- a missing certificate, a file with no certificate, and a key that belongs to another
  certificate stop the start with exit 1 and a message naming the file, before anything
  listens (no address file).
"""

import os
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests
import trustme

from conftest import WEIR_BIN, read_output, write_job
from helpers import Service, submit, wait_run


@pytest.fixture
def certificates(tmp_path):
    """A CA and a server certificate for 127.0.0.1 and localhost, as PEM files."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path / "tls"
    folder.mkdir()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "server.key"))
    chain = folder / "server.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(folder / "other.key"))
    return folder


@pytest.fixture
def tls_service(tmp_path, certificates):
    service = Service(
        tmp_path.resolve(),
        ["--tls-cert", certificates / "server.pem", "--tls-key", certificates / "server.key"],
        ca=certificates / "ca.pem",
    )
    yield service.start()
    service.close()


def write_data(folder):
    folder.mkdir()
    rng = np.random.default_rng(5)
    table = pa.table({"id": np.arange(1_000, dtype=np.int64), "x": rng.random(1_000)})
    pq.write_table(table, folder / "part-0.parquet", row_group_size=250)
    return table


JOB = """name = "tls"

[source]
uri = "data"

[[step]]
op = "filter"
expr = "x >= 0.25"

[sink]
uri = "out/{{run_id}}"
"""


def test_the_service_speaks_https_and_runs_a_submitted_job(tls_service, weir, tmp_path):
    table = write_data(tmp_path / "data")
    assert tls_service.url.startswith("https://127.0.0.1:"), tls_service.url
    assert tls_service.admin.get("/healthz").status_code == 200

    run = submit(tls_service.admin, {"definition": JOB})
    done = wait_run(tls_service.admin, run["id"])
    assert done["state"] == "succeeded", done
    got = read_output(tmp_path / "out" / run["id"])
    want = table.filter(pc.greater_equal(table["x"], 0.25))
    assert got.sort_by("id").equals(want.sort_by("id"))

    # The CLI client, trusting the CA by flag and by environment.
    job = write_job(tmp_path / "job.toml", JOB)
    cli = tls_service.cli(weir, "submit", job, "--wait", check=0)
    assert "succeeded" in cli.stdout + cli.stderr
    env = {**os.environ, "WEIR_CA_CERT": str(tls_service.ca)}
    listed = weir("runs", "--server", tls_service.url, "--token", tls_service.token, env=env, cwd=tmp_path, check=0)
    assert run["id"] in listed.stdout


def test_clients_that_do_not_trust_the_certificate_are_refused(tls_service, weir, tmp_path):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_service.url + "/healthz", timeout=10)

    cli = weir("runs", "--server", tls_service.url, "--token", tls_service.token, cwd=tmp_path)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "certificate" in cli.stderr.lower(), cli.stderr
    assert tls_service.token not in cli.stdout + cli.stderr

    # Plain HTTP to the TLS port: no HTTP answer comes back.
    plain = tls_service.url.replace("https://", "http://")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(plain + "/healthz", timeout=10)
    assert tls_service.proc.poll() is None, "the service survives a plain-HTTP caller"


@pytest.mark.parametrize(
    "cert, key, named",
    [
        ("absent.pem", "server.key", "absent.pem"),
        ("server.key", "server.key", "server.key"),  # a key file holds no certificate
        ("server.pem", "absent.key", "absent.key"),
        ("server.pem", "other.key", "other.key"),  # the key of another certificate
    ],
)
def test_bad_tls_files_stop_the_start_naming_the_file(certificates, tmp_path, cert, key, named):
    proc = subprocess.run(
        [
            str(WEIR_BIN), "serve", "--state-dir", "state", "--listen", "127.0.0.1:0", "--address-file", "addr",
            "--tls-cert", str(certificates / cert), "--tls-key", str(certificates / key),
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert named in proc.stderr, proc.stderr
    assert not (tmp_path / "addr").exists(), "nothing listened"
    assert "BEGIN" not in proc.stderr, "no key material in the message"


def test_tls_flags_come_in_pairs(certificates, tmp_path, weir):
    proc = weir("serve", "--state-dir", "state", "--tls-cert", certificates / "server.pem", cwd=tmp_path)
    assert proc.returncode == 2 and "--tls-key" in proc.stderr, proc.stderr
