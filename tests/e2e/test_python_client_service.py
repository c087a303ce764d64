"""The Python client's service side (clients/python, `weir_client.Client`) against a live
`weir serve` started by the tests, over HTTP and HTTPS.

- Types: the service's OpenAPI document (`/v1/openapi.json`, generated from its Rust
  types) and the client agree: every route of the document is called by exactly one
  `Client` method with the document's request and reply classes and path parameters, and
  every schema is a class of `weir_client._types` with the same fields, types and required
  fields (enums as the same literals).
- Every route through the client, each reply also validated against the document with
  `jsonschema` (the check that the service answers what it documents); the listings it
  returns are compared with what the calls before it did (tokens made, versions stored,
  runs submitted, audit events written); runs' outputs against pyarrow reads of the input.
- Each error class: 401 (no token, a revoked one), 403 (a read token submitting, a job
  outside a token's grant), 404, 409 (a name taken, a key reused, cancelling an ended run),
  422 (a bad definition): the exception's class, status and the service's message.
- Log following: `logs(follow=True)` returns once the run has ended, with the whole log.
- `wait`: follows the retries of an input-not-ready run to the attempt that succeeds;
  `WaitTimeout` while the retry is still due.
- Retries: through a front that answers 503 to the first two requests of each call, a read
  and a submission with an idempotency key succeed on the third (one run made), a
  submission without a key is sent once and raises `ServerError`.
- The helpers: `run_job` (a file, TOML text, a stored job; `RunFailed` carrying the run)
  and `score` (an ONNX model over a dataset, equal to onnxruntime's Python API).
"""

import dataclasses
import http.server
import inspect
import os
import re
import threading
import time
import types
import typing
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import trustme

import weir_client
from weir_client import _service, _types
from helpers import SCORE_FEATURES, Service, helper_mlp

ROWS = 600


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The service's folder: `data/` holds ROWS rows (id, x, f0…f5) in two files."""
    root = tmp_path_factory.mktemp("client").resolve()
    (root / "data").mkdir()
    rng = np.random.default_rng(37)
    columns = {"id": np.arange(ROWS, dtype=np.int64), "x": rng.random(ROWS)}
    columns.update({name: rng.normal(size=ROWS).astype(np.float32) for name in SCORE_FEATURES})
    table = pa.table(columns)
    pq.write_table(table.slice(0, 250), root / "data" / "part-0.parquet", row_group_size=100)
    pq.write_table(table.slice(250), root / "data" / "part-1.parquet", row_group_size=100)
    return root


@pytest.fixture(scope="module")
def service(root):
    started = Service(root, []).start()
    yield started
    started.close()


@pytest.fixture(scope="module")
def document(service):
    return weir_client.Client(service.url, token=service.token).openapi()


def data(root) -> pa.Table:
    return pq.read_table(root / "data").sort_by("id")


def filter_job(root, name="kept", threshold=0.5, sink=None) -> str:
    sink = sink or f"{root}/out/{name}/{{{{run_id}}}}"
    return f'name = "{name}"\n\n[source]\nuri = "{root}/data"\n\n[[step]]\nop = "filter"\nexpr = "x >= {threshold}"\n\n[sink]\nuri = "{sink}"\n'


def kept(root, threshold=0.5) -> pa.Table:
    table = data(root)
    return table.filter(pc.greater_equal(table["x"], threshold))


# ---------------------------------------------------------------------------------------
# The document against the client's types


def schema_type(schema: dict) -> str:
    """A schema of the document as a normalised type text."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "oneOf" in schema:
        options = [schema_type(option) for option in schema["oneOf"]]
        plain = sorted(o for o in options if o != "None")
        return f"Optional[{'|'.join(plain)}]" if "None" in options else "|".join(plain)
    kinds = schema.get("type")
    if isinstance(kinds, list):
        rest = [k for k in kinds if k != "null"]
        inner = schema_type({**schema, "type": rest[0]}) if len(rest) == 1 else "|".join(rest)
        return f"Optional[{inner}]" if "null" in kinds else inner
    if kinds == "null":
        return "None"
    if kinds == "array":
        return f"list[{schema_type(schema['items'])}]"
    if kinds == "object":
        if "additionalProperties" in schema and schema["additionalProperties"] is not True:
            return f"dict[str, {schema_type(schema['additionalProperties'])}]"
        return "dict[str, Any]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}[kinds]


def python_type(annotation) -> str:
    """A client annotation as the same normalised text."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is typing.Any:
        return "Any"
    if origin in (typing.Union, types.UnionType):
        plain = sorted(python_type(a) for a in args if a is not type(None))
        return f"Optional[{'|'.join(plain)}]" if type(None) in args else "|".join(plain)
    if origin is list:
        return f"list[{python_type(args[0])}]"
    if origin is dict:
        return f"dict[{python_type(args[0])}, {python_type(args[1])}]"
    if origin is typing.Literal:
        for name, literal in _types.SCHEMAS.items():
            if literal is annotation:
                return name
        # A literal type given inline: compared by its values elsewhere.
        raise AssertionError(f"an unnamed literal {annotation}")
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation.__name__
    return {str: "str", int: "int", float: "float", bool: "bool"}[annotation]


def test_the_clients_types_and_routes_are_the_documents(document):
    schemas = document["components"]["schemas"]
    assert set(schemas) == set(_types.SCHEMAS), (set(schemas) ^ set(_types.SCHEMAS))
    for name, schema in schemas.items():
        kind = _types.SCHEMAS[name]
        if "enum" in schema:  # Role, RunState, Trigger, Reprocess
            assert set(typing.get_args(kind)) == set(schema["enum"]), name
            continue
        hints = typing.get_type_hints(kind)
        fields = {_types.json_name(f): f for f in dataclasses.fields(kind)}
        assert set(fields) == set(schema["properties"]), (name, set(fields) ^ set(schema["properties"]))
        # A field the service always sends is required in the client (no default), and one
        # it may leave out has a default.
        required = {n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        documented = set(schema.get("required", []))
        for field_name, f in fields.items():
            doc_type = schema_type(schema["properties"][field_name])
            ours = python_type(hints[f.name])
            assert ours == doc_type, f"{name}.{field_name}: client {ours}, document {doc_type}"
            if field_name in documented:
                assert field_name in required, f"{name}.{field_name} is required by the document"
            elif not doc_type.startswith("Optional["):
                # Not required and not nullable: a request field with a default on both sides.
                assert field_name not in required, f"{name}.{field_name} has a default in the document"
        assert documented <= required, name

    # Every route of the document is one method of the client, with its classes.
    documented_routes = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    ours = {(route.method, route.path): name for name, route in _service.ROUTES.items()}
    assert set(ours) == documented_routes, set(ours) ^ documented_routes
    for (method, path), name in ours.items():
        route = _service.ROUTES[name]
        operation = document["paths"][path][method.lower()]
        assert callable(getattr(weir_client.Client, name))
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        assert (body and schema_type(body)) == (route.request and route.request.__name__), (name, body)
        replies = {
            code: reply.get("content", {}).get("application/json", {}).get("schema")
            for code, reply in operation["responses"].items()
            if code.startswith("2")
        }
        reply_types = {schema_type(s) for s in replies.values() if s}
        assert reply_types == ({route.reply.__name__} if route.reply else set()), (name, replies)
        assert all(
            schema_type(reply["content"]["application/json"]["schema"]) == "ErrorReply"
            for code, reply in operation["responses"].items()
            if code.startswith("4")
        ), name
        path_params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert path_params == set(re.findall(r"{(\w+)}", path)), name
    # The run list's filters are the query parameters the client sends.
    query = {p["name"] for p in document["paths"]["/v1/runs"]["get"]["parameters"]}
    sent = set(inspect.signature(weir_client.Client.runs).parameters) - {"self", "page_size"} | {"limit", "before"}
    assert sent == query, sent ^ query
    assert document["components"]["securitySchemes"]["bearer"]["scheme"].lower() == "bearer"


# ---------------------------------------------------------------------------------------
# Every route, and the errors


@pytest.fixture
def checked_replies(monkeypatch, document):
    """Every reply the client decodes, validated against the document's schema of its class."""
    seen = []
    decode = _types.decode

    def validating(kind, value):
        schema = {"$ref": f"#/components/schemas/{kind.__name__}", "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(value)
        seen.append(kind.__name__)
        return decode(kind, value)

    monkeypatch.setattr(_service, "decode", validating)
    return seen


def expect_error(kind, status, *words):
    class Expectation:
        def __enter__(self):
            return self

        def __exit__(self, type_, value, traceback):
            assert type_ is kind, f"expected {kind.__name__}, got {type_}: {value}"
            assert value.status == status and all(w in value.message for w in words), (value.status, value.message)
            self.error = value
            return True

    return Expectation()


SCHEDULED = """name = "nightly"

[schedule]
cron = "0 6 * * *"
timezone = "Europe/Berlin"

[source]
uri = "{root}/data"

[sink]
uri = "{root}/out/nightly/{{{{ds}}}}"
"""


def test_every_route_through_the_client(service, root, checked_replies):
    admin = weir_client.Client(service.url, token=service.token)
    assert admin.health() and "weir_runs" in admin.metrics()

    # Tokens: made, listed, their grants as given; a name taken is 409.
    reader = admin.create_token("reader", "read")
    submitter = admin.create_token("submitter", "submit", jobs=["kept"], prefixes=[str(root)])
    assert (reader.role, submitter.jobs, submitter.prefixes) == ("read", ["kept"], [str(root)])
    with expect_error(weir_client.Conflict, 409, "reader"):
        admin.create_token("reader", "read")
    listed = {t.name: t for t in admin.tokens()}
    assert {"reader", "submitter"} <= set(listed) and listed["submitter"].jobs == ["kept"]

    # Jobs: two versions, listed, shown, one version, rolled back, checked.
    first = admin.put_job(filter_job(root))
    again = admin.put_job(filter_job(root))
    second = admin.put_job(filter_job(root, threshold=0.25))
    assert (first.created, again.created, again.version, second.version) == (True, False, first.version, first.version + 1)
    assert [(j.name, j.version) for j in admin.jobs() if j.name == "kept"] == [("kept", second.version)]
    detail = admin.job("kept")
    assert detail.definition == filter_job(root, threshold=0.25) and [v.version for v in detail.versions] == [first.version, second.version]
    assert admin.job_version("kept", first.version).definition == filter_job(root)
    assert admin.rollback_job("kept", first.version).version == first.version
    checked = admin.check(filter_job(root, name="other"))
    assert checked.name == "other" and f"{root}/out/other/" in checked.output_uri, checked
    with expect_error(weir_client.Unprocessable, 422, "step 1"):
        admin.check(filter_job(root).replace("x >= 0.5", "x >>= 0.5"))

    # Runs: a stored job by a scoped token, waited for, its output the input's kept rows.
    client = weir_client.Client(service.url, token=submitter.token)
    run = client.submit("kept")
    assert run.state in ("queued", "running") and run.trigger == "manual" and run.job_version == first.version
    done = client.wait(run.id, timeout=120)
    assert done.state == "succeeded" and done.rows_out == kept(root).num_rows, done
    got = weir_client.read_table(done.output_uri).sort_by("id")
    assert got.equals(kept(root)), "the run's output is not the input's rows with x >= 0.5"
    assert client.run(run.id) == done
    log = "".join(client.logs(run.id))
    assert run.id in log or "committed" in log, log[:500]
    with expect_error(weir_client.Conflict, 409, "already ended"):
        client.cancel(run.id)
    # Out of its grants: another job (403), an inline definition (403); a reader submits nothing.
    admin.put_job(filter_job(root, name="other"))
    with expect_error(weir_client.Forbidden, 403, "other"):
        client.submit("other")
    with expect_error(weir_client.Forbidden, 403, "inline definition"):
        client.submit(definition=filter_job(root))
    with expect_error(weir_client.Forbidden, 403):
        weir_client.Client(service.url, token=reader.token).submit("kept")
    with expect_error(weir_client.NotFound, 404, "nope"):
        client.run("nope")
    with expect_error(weir_client.NotFound, 404, "version 99"):
        client.submit("kept", version=99)
    # An idempotency key: the same run again, or 409 with other variables.
    keyed = client.submit("kept", idempotency_key="k-1", vars={"a": "1"})
    assert client.submit("kept", idempotency_key="k-1", vars={"a": "1"}).id == keyed.id
    with expect_error(weir_client.Conflict, 409, "idempotency key"):
        client.submit("kept", idempotency_key="k-1", vars={"a": "2"})
    client.wait(keyed.id, timeout=120)

    # A queued run cancelled: an inline one whose input never becomes ready.
    waiting = admin.submit(
        definition=f'name = "waiting"\nwait_for_input_s = 3600\nretry_delay_s = 3600\n[source]\nuri = "{root}/nothing-here/"\n[sink]\nuri = "{root}/out/waiting"\n'
    )
    # Its first attempt fails as not ready (polled here: `wait` would follow it to the retry).
    for _ in range(600):
        if admin.run(waiting.id).ended:
            break
        time.sleep(0.1)
    assert admin.run(waiting.id).exit_class == "input_not_ready"
    with pytest.raises(weir_client.WaitTimeout) as timed_out:
        admin.wait(waiting.id, timeout=1.0, poll=0.1)
    pending = timed_out.value.run
    assert pending.state == "queued" and pending.attempt == 2 and pending.retry_of == waiting.id, pending
    ended = admin.cancel(pending.id)
    assert ended.state == "cancelled", ended

    # Listing: every run above, newest first, a page of two at a time; filters.
    submitted = [run.id, keyed.id, waiting.id, pending.id]
    paged = [r.id for r in admin.runs(page_size=2)]
    assert set(submitted) <= set(paged) and len(paged) == len(set(paged)), paged
    assert [r.id for r in admin.runs(page_size=500)] == paged
    assert {r.id for r in admin.runs(job="kept")} == {run.id, keyed.id}
    assert [r.id for r in admin.runs(retry_of=waiting.id)] == [pending.id]
    assert [r.id for r in admin.runs(job="waiting", state="cancelled")] == [pending.id]
    assert {r.id for r in admin.runs(submitted_by="submitter")} == {run.id, keyed.id}
    with expect_error(weir_client.Unprocessable, 422, "unknown state"):
        list(admin.runs(state="sleeping"))  # type: ignore[arg-type]

    # Schedules: listed, paused and resumed; backfills: a plan, then one date run.
    admin.put_job(SCHEDULED.format(root=root))
    (schedule,) = [s for s in admin.schedules() if s.job == "nightly"]
    assert (schedule.cron, schedule.timezone, schedule.paused, len(schedule.next_ticks)) == ("0 6 * * *", "Europe/Berlin", False, 3)
    paused = admin.pause_schedule("nightly")
    assert (paused.paused, paused.paused_by, paused.next_ticks) == (True, "admin", [])
    assert admin.resume_schedule("nightly").paused is False
    with expect_error(weir_client.NotFound, 404, "kept"):
        admin.pause_schedule("kept")
    plan = admin.backfill("nightly", "2026-11-01", "2026-11-02", dry_run=True)
    assert (plan.id, plan.dry_run, [t.ds for t in plan.ticks], plan.runs) == (None, True, ["2026-11-01", "2026-11-02"], 2)
    started = admin.backfill("nightly", "2026-11-01", "2026-11-01")
    assert started.id and started.runs == 1
    (night,) = list(admin.runs(submitted_by=f"backfill {started.id}"))
    night = admin.wait(night.id, timeout=120)
    assert (night.state, night.trigger, night.logical_date) == ("succeeded", "backfill", "2026-11-01"), night
    assert weir_client.read_table(f"{root}/out/nightly/2026-11-01").num_rows == ROWS
    with expect_error(weir_client.Unprocessable, 422):
        admin.backfill("nightly", "2026-11-02", "2026-11-01")

    # The audit trail holds what was done, newest first; a token revoked is 401.
    actions = [(e.action, e.target) for e in admin.audit(limit=500)]
    for expected in [("token.create", "reader"), ("job.put", "kept"), ("job.rollback", "kept"), ("run.submit", run.id),
                     ("run.cancel", pending.id), ("schedule.pause", "nightly"), ("job.backfill", "nightly")]:
        assert expected in actions, expected
    assert actions.index(("job.put", "nightly")) < actions.index(("token.create", "reader"))
    admin.revoke_token("reader")
    assert "reader" not in {t.name for t in admin.tokens()}
    with expect_error(weir_client.Unauthorized, 401):
        weir_client.Client(service.url, token=reader.token).jobs()
    with expect_error(weir_client.Unauthorized, 401):
        weir_client.Client(service.url, token="").runs().__next__()
    with expect_error(weir_client.Forbidden, 403):
        client.audit()
    with expect_error(weir_client.NotFound, 404):
        admin.revoke_token("reader")
    # Every kind of reply was seen and matched the document.
    assert {name for name, route in _service.ROUTES.items() if route.reply} <= {
        name for name, route in _service.ROUTES.items() if route.reply and route.reply.__name__ in checked_replies
    }


def test_logs_follow_the_run_to_its_end(root, tmp_path):
    # A failpoint slows the run's writes (0.2 s after each batch written, 12 batches), so
    # that the log is followed while the run runs; at `info` the run logs its plan first.
    env = {**os.environ, "FAILPOINTS": "part-batch-written=sleep(200)", "RUST_LOG": "info"}
    folder = tmp_path / "svc"
    folder.mkdir()
    slow = Service(folder.resolve(), ["--max-concurrent-runs", "1"], env=env).start()
    try:
        admin = weir_client.Client(slow.url, token=slow.token)
        job = filter_job(root, name="followed", threshold=0.0).replace(f'uri = "{root}/data"', f'uri = "{root}/data"\nbatch_size = 50', 1)
        run = admin.submit(definition=job, workers=1)
        chunks, running_at_first = [], None
        for chunk in admin.logs(run.id, follow=True):
            if running_at_first is None:
                running_at_first = not admin.run(run.id).ended
            chunks.append(chunk)
        assert running_at_first, "the first chunk came after the run had ended: nothing was followed"
        assert admin.run(run.id).ended, "the log stream ended while the run was running"
        whole = "".join(admin.logs(run.id))
        assert "".join(chunks) == whole and whole, (len(whole), len(chunks))
        assert admin.run(run.id).state == "succeeded"
        half = len(whole.encode()) // 2
        assert "".join(admin.logs(run.id, offset=half)).encode() == whole.encode()[half:]
    finally:
        slow.close()


def test_wait_follows_retries_until_the_input_lands(service, root):
    admin = weir_client.Client(service.url, token=service.token)
    landing = root / "landing"
    job = f'name = "landing"\nwait_for_input_s = 600\nretry_delay_s = 1\n[source]\nuri = "{landing}/"\n[source.ready]\nmarker = "_SUCCESS"\n[sink]\nuri = "{root}/out/landing"\n'
    first = admin.submit(definition=job)
    # The first attempt fails (no marker) and queues a retry: the wait is not over.
    with pytest.raises(weir_client.WaitTimeout):
        admin.wait(first.id, timeout=0.5, poll=0.05)
    landing.mkdir()
    pq.write_table(data(root), landing / "part-0.parquet")
    (landing / "_SUCCESS").write_text("")
    final = admin.wait(first.id, timeout=120, poll=0.1)
    assert final.state == "succeeded" and final.attempt >= 2 and final.retry_of == first.id, final
    assert admin.run(first.id).exit_class == "input_not_ready"
    assert weir_client.read_table(f"{root}/out/landing").sort_by("id").equals(data(root))


# ---------------------------------------------------------------------------------------
# Retries


class FlakyFront:
    """An HTTP front on loopback that answers 503 to the first `failures` requests of each
    (method, path) and forwards the rest to the service; counts what it received."""

    def __init__(self, target: str, failures: int):
        self.counts: dict = {}
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def handle_one(self):
                key = (self.command, self.path.split("?")[0])
                front.counts[key] = front.counts.get(key, 0) + 1
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if front.counts[key] <= failures:
                    self.send_response(503)
                    self.send_header("content-type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": "busy"}')
                    return
                request = urllib.request.Request(target + self.path, data=body or None, method=self.command,
                                                 headers={k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as error:
                    status, payload = error.code, error.read()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_only_calls_safe_to_repeat_are_retried(service, root):
    front = FlakyFront(service.url, failures=2)
    try:
        client = weir_client.Client(front.url, token=service.token, retries=3)
        admin = weir_client.Client(service.url, token=service.token)
        job = filter_job(root, name="retried")
        # A read: 503, 503, then the answer.
        assert client.jobs() == admin.jobs()
        assert front.counts[("GET", "/v1/jobs")] == 3
        # A submission with an idempotency key: the third try makes the run, once.
        run = client.submit(definition=job, idempotency_key="once")
        assert front.counts[("POST", "/v1/runs")] == 3
        assert [r.id for r in admin.runs(job="retried")] == [run.id]
        # Without a key it is sent once: the 503 is the caller's to handle.
        front.counts.clear()
        with expect_error(weir_client.ServerError, 503, "busy"):
            client.submit(definition=job)
        assert front.counts[("POST", "/v1/runs")] == 1
        assert [r.id for r in admin.runs(job="retried")] == [run.id]
        admin.wait(run.id, timeout=120)
    finally:
        front.close()
    # Nobody listening: a read is tried 1 + retries times, then ServiceUnreachable.
    with pytest.raises(weir_client.ServiceUnreachable, match="cannot reach"):
        weir_client.Client(front.url, token="t", retries=1).jobs()


# ---------------------------------------------------------------------------------------
# HTTPS


def test_the_client_over_https_trusts_only_the_given_ca(tmp_path, root):
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    (tmp_path / "server.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    folder = tmp_path / "svc"
    folder.mkdir()
    secure = Service(folder.resolve(), ["--tls-cert", tmp_path / "server.pem", "--tls-key", tmp_path / "server.key"], ca=tmp_path / "ca.pem")
    secure.start()
    try:
        assert secure.url.startswith("https://")
        client = weir_client.Client(secure.url, token=secure.token, ca_cert=tmp_path / "ca.pem")
        run = client.run_job(filter_job(root, name="secure"))
        assert run.state == "succeeded" and weir_client.read_table(run.output_uri).sort_by("id").equals(kept(root))
        assert "".join(client.logs(run.id, follow=True)) == "".join(client.logs(run.id))
        with pytest.raises(weir_client.ServiceUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            weir_client.Client(secure.url, token=secure.token, retries=0).jobs()
    finally:
        secure.close()


# ---------------------------------------------------------------------------------------
# run_job and score


def test_run_job_and_score(service, root, tmp_path):
    admin = weir_client.Client(service.url, token=service.token)
    path = tmp_path / "job.toml"
    path.write_text(filter_job(root, name="from-file", threshold=0.75))
    by_file = admin.run_job(path)
    assert by_file.state == "succeeded" and by_file.rows_out == kept(root, 0.75).num_rows
    by_text = admin.run_job(filter_job(root, name="from-text", threshold=0.9), workers=2)
    assert by_text.rows_out == kept(root, 0.9).num_rows
    admin.put_job(filter_job(root, name="by-name", sink=f"{root}/out/by-name/{{{{day}}}}"), vars={"day": "d0"})
    by_name = admin.run_job("by-name", vars={"day": "d1"})
    assert by_name.vars == {"day": "d1"} and weir_client.read_table(f"{root}/out/by-name/d1").num_rows == kept(root).num_rows
    # A run that fails raises RunFailed carrying it (check=False returns it instead).
    bad = filter_job(root, name="bad").replace("x >= 0.5", "id // (id - id) > 0")
    with pytest.raises(weir_client.RunFailed) as failed:
        admin.run_job(bad)
    assert failed.value.run.state == "failed" and failed.value.run.exit_class == "user", failed.value.run
    assert admin.run_job(bad, check=False).state == "failed"
    queued = admin.run_job(filter_job(root, name="no-wait"), wait=False)
    assert queued.state in ("queued", "running")
    admin.wait(queued.id, timeout=120)

    # Ad-hoc scoring: the MLP over f0…f5, against onnxruntime's Python API.
    model = helper_mlp(tmp_path / "mlp.onnx")
    scored = admin.score(f"{root}/data", str(model), f"{root}/out/scored", inputs={"x": SCORE_FEATURES},
                         outputs={"y": ["y0", "y1", "y2"]}, columns=["id", *SCORE_FEATURES])
    assert scored.state == "succeeded" and scored.rows_out == ROWS
    got = weir_client.read_table(f"{root}/out/scored").sort_by("id")
    assert got.column_names == ["id", *SCORE_FEATURES, "y0", "y1", "y2"]
    features = np.column_stack([data(root)[name].to_numpy() for name in SCORE_FEATURES]).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": features})
    np.testing.assert_allclose(np.column_stack([got[f"y{i}"].to_numpy() for i in range(3)]), expected, rtol=1e-5, atol=1e-5)
    # A model that is not there: the run fails, naming it.
    with pytest.raises((weir_client.ServiceError, weir_client.RunFailed), match="missing.onnx"):
        admin.score(f"{root}/data", str(tmp_path / "missing.onnx"), f"{root}/out/nothing", inputs={"x": SCORE_FEATURES})


def test_score_definitions_are_valid_toml_whatever_the_strings():
    """The inline job `score` submits, read back by Python's own TOML parser: quotes,
    backslashes, newlines, DEL and other control characters survive in every string."""
    import tomllib

    odd = 'a"b\\c\nd\te\x7ff\x01g\u2028é'
    text = _service.score_definition(f"/data/{odd}", f"m{odd}.onnx", f"/out/{odd}", inputs={odd: [odd, "x"]},
                                     outputs={"y": odd}, columns=[odd], sha256=odd, name="score")
    job = tomllib.loads(text)
    assert job["source"] == {"uri": f"/data/{odd}", "columns": [odd]}
    assert job["step"] == [{"op": "score", "model": f"m{odd}.onnx", "inputs": {odd: [odd, "x"]}, "outputs": {"y": odd}, "sha256": odd}]
    assert job["sink"] == {"uri": f"/out/{odd}", "mode": "overwrite"} and job["name"] == "score"
