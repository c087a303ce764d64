"""A real S3-compatible server for the tests: a single-node Garage on 127.0.0.1.

`Garage.start()` writes a config (sqlite metadata, ports of its own), starts
`garage server`, assigns and applies a layout, imports a test key and returns once the
S3 API answers. Buckets are created with `create_bucket`. `stop()` kills the server;
`start()` again restarts it on the same ports and data, as after a crash.
"""

import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

import boto3
import botocore.handlers
from botocore.config import Config

from helpers import free_port

KEY_ID = "GK5765697254657374496d706f"  # "GK" + 24 hex digits
SECRET = "7765697220746573742073656372657420" + "0" * 30  # 64 hex digits
REGION = "garage"
_bucket_numbers = itertools.count()


def garage_binary() -> str:
    found = shutil.which("garage") or str(Path.home() / ".cargo" / "bin" / "garage")
    assert Path(found).exists(), "garage is not installed: run `cargo install garage --locked` (tests/run.sh does)"
    return found


class Garage:
    def __init__(self, root: Path):
        self.root = root
        self.binary = garage_binary()
        self.s3_port, self.rpc_port = free_port(), free_port()
        self.config = root / "garage.toml"
        self.process = None
        self.configured = False
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""
metadata_dir = "{root / 'meta'}"
data_dir = "{root / 'data'}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{self.rpc_port}"
rpc_public_addr = "127.0.0.1:{self.rpc_port}"
rpc_secret = "{os.urandom(32).hex()}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{self.s3_port}"
root_domain = ".s3.garage.localhost"
"""
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def cli(self, *args: str) -> str:
        proc = subprocess.run([self.binary, "-c", str(self.config), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"garage {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def start(self) -> "Garage":
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen([self.binary, "-c", str(self.config), "server"], stdout=log, stderr=log)
        deadline = time.time() + 30
        while True:
            probe = subprocess.run([self.binary, "-c", str(self.config), "status"], capture_output=True, text=True)
            if probe.returncode == 0:
                break
            assert time.time() < deadline, f"garage did not start:\n{(self.root / 'server.log').read_text()}"
            time.sleep(0.2)
        if not self.configured:
            node = self.cli("node", "id", "-q").strip().split("@")[0]
            self.cli("layout", "assign", "-z", "dc1", "-c", "1G", node)
            self.cli("layout", "apply", "--version", "1")
            self.cli("key", "import", "--yes", "-n", "weir-test", KEY_ID, SECRET)
            self.configured = True
        # Ready when the S3 API answers a signed request.
        deadline = time.time() + 30
        while True:
            try:
                self.client().list_buckets()
                return self
            except Exception:
                assert time.time() < deadline, "garage's S3 API did not come up"
                time.sleep(0.2)

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def new_bucket(self, stem: str) -> str:
        """Creates a bucket with a fresh name starting with `stem` and returns its name."""
        name = f"{stem}-{next(_bucket_numbers)}"
        self.create_bucket(name)
        return name

    def create_bucket(self, name: str):
        self.cli("bucket", "create", name)
        self.cli("bucket", "allow", "--read", "--write", "--owner", name, "--key", "weir-test")

    def client(self):
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        # botocore asks for "Expect: 100-continue" on uploads; Garage answers the request
        # without a 100 first, and botocore then waits a minute before reading the answer.
        client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
        return client

    def env(self, **overrides) -> dict:
        """The environment a weir process needs to reach this server."""
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=KEY_ID,
            AWS_SECRET_ACCESS_KEY=SECRET,
            AWS_REGION=REGION,
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ALLOW_HTTP="true",
        )
        env.update(overrides)
        return env

    def storage_options(self) -> dict:
        """The same settings for Polars' object_store-based reader."""
        return {
            "aws_access_key_id": KEY_ID,
            "aws_secret_access_key": SECRET,
            "aws_region": REGION,
            "aws_endpoint_url": self.endpoint,
            "aws_allow_http": "true",
        }

    def upload_dir(self, local: Path, bucket: str, prefix: str):
        client = self.client()
        for path in sorted(local.rglob("*")):
            if path.is_file():
                client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(local)}", Body=path.read_bytes())

    def keys(self, bucket: str, prefix: str = "") -> list:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
