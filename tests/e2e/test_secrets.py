"""Credentials never reach stderr, even from an S3 endpoint that echoes the request's headers
in its error bodies (as some proxies and test servers do). The endpoint here is a real HTTP
server on 127.0.0.1 that answers every request with 400 and the request's headers."""

import http.server
import threading

import pytest

from conftest import write_job

TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN0123456789"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


class Echo(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        body = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode() + b"\n" + b"x" * 2000
        self.send_response(400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def echo():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def env(endpoint):
    import os

    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


def test_the_echo_server_does_echo_the_token(echo):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(echo, headers={"X-Amz-Security-Token": TOKEN})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert TOKEN in answer.value.read().decode()


@pytest.mark.parametrize("what", ["source", "sink", "fitted", "model", "ls", "head", "schema"])
def test_no_credential_in_errors(weir, tmp_path, events_dir, echo, what):
    src, sink = str(events_dir), str(tmp_path / "out")
    steps = ""
    if what == "source":
        src = "s3://bucket/events/"
    elif what == "sink":
        sink = "s3://bucket/out/"
    elif what == "fitted":
        steps = '[[step]]\nop = "standardize"\ncolumns = ["income"]\nfitted = "s3://bucket/run/_weir/fitted.json"\n'
    elif what == "model":
        steps = '[[step]]\nop = "score"\nmodel = "s3://bucket/m.onnx"\ninputs = { x = ["income"] }\noutputs = { y = "y" }\n'
    job = write_job(tmp_path / "job.toml", f'name = "secrets"\n[source]\nuri = "{src}"\n{steps}[sink]\nuri = "{sink}"\n[storage]\nmax_retries = 0\n')
    args = {"ls": ["ls", "s3://bucket/x/"], "head": ["head", "s3://bucket/x/"], "schema": ["schema", "s3://bucket/x/"]}.get(what, ["run", job])
    proc = weir(*args, env=env(echo), timeout=120)
    assert proc.returncode != 0, proc.stdout
    output = proc.stdout + proc.stderr
    assert "400" in output or "Bad Request" in output, output[-2000:]
    assert TOKEN not in output and SECRET not in output, output[-2000:]
    assert len(proc.stderr) < 4_000, "the store's answer is quoted only in part"
