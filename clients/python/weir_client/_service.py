"""`Client`: the job service's whole API (`weir serve`, docs/service.md) from Python.

    from weir_client import Client
    client = Client("http://127.0.0.1:8470", token="…")      # or WEIR_URL, WEIR_TOKEN
    run = client.run_job("jobs/nightly.toml", vars={"ds": "2026-12-07"})
    run.state, run.rows_out

Every method maps to one route, declared next to it with `@_route(METHOD, PATH, request,
reply)`; a test checks those against the service's OpenAPI document (every route has a
method, and the request and reply classes are the document's). Errors are exceptions
carrying the service's status and message (`Unauthorized` 401, `Forbidden` 403, `NotFound`
404, `Conflict` 409, `PayloadTooLarge` 413, `Unprocessable` 422, `TooManyRequests` 429,
`ServerError` 5xx). Calls that are safe to repeat (reads, checks, pause/resume, and a
submission with an idempotency key) are retried with exponential backoff when the service
cannot be reached or answers 502/503/504; the others are sent once.
"""

from __future__ import annotations

import codecs
import json
import os
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any, TypeVar

from ._errors import WeirError
from ._types import (
    AuditList,
    BackfillReply,
    BackfillRequest,
    CheckedJob,
    CreatedToken,
    JobDetail,
    JobList,
    JobSummary,
    JobUpload,
    JobVersion,
    NewToken,
    Reprocess,
    Role,
    Rollback,
    Run,
    RunList,
    RunState,
    ScheduleInfo,
    ScheduleList,
    StoredJob,
    Submission,
    TokenInfo,
    TokenList,
    AuditEvent,
    decode,
    encode,
)

DEFAULT_URL = "http://127.0.0.1:8470"
"""Where `weir serve` listens by default."""


# --- errors ---


class ServiceError(WeirError):
    """The service answered with an error: `status` is its HTTP status, `message` its
    `error` text."""

    def __init__(self, status: int, message: str, method: str, path: str) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {status}: {message}")


class Unauthorized(ServiceError):
    """401: no token, or one the service does not know (or revoked)."""


class Forbidden(ServiceError):
    """403: the token's role or grants do not reach what was asked."""


class NotFound(ServiceError):
    """404: no such job, version, run, token or schedule (or none the token may see)."""


class Conflict(ServiceError):
    """409: a name taken, an idempotency key used for something else, a run already ended."""


class PayloadTooLarge(ServiceError):
    """413: the request's body is over the service's limit."""


class Unprocessable(ServiceError):
    """422: the request is understood but invalid (a definition, a variable, dates, …)."""


class TooManyRequests(ServiceError):
    """429: the token has too many runs queued or running."""


class ServerError(ServiceError):
    """5xx: the service failed (after the retries, for calls that are retried)."""


class ServiceUnreachable(WeirError):
    """The service could not be reached (after the retries, for calls that are retried)."""


class RunFailed(WeirError):
    """A run waited for ended other than `succeeded`; `run` is its last attempt."""

    def __init__(self, run: Run) -> None:
        self.run = run
        detail = f": {run.error}" if run.error else ""
        super().__init__(f"run {run.id} of job '{run.job}' ended {run.state}{detail}")


class WaitTimeout(WeirError, TimeoutError):
    """A run had not ended when the wait's timeout passed; `run` is how it was last seen."""

    def __init__(self, run: Run, timeout: float) -> None:
        self.run = run
        super().__init__(f"run {run.id} was still {run.state} after {timeout:g} s")


_ERRORS: dict[int, type[ServiceError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: TooManyRequests,
}

_RETRIED_STATUSES = frozenset({502, 503, 504})


# --- routes ---


@dataclass(frozen=True)
class Route:
    """One route of the API as a client method calls it."""

    method: str
    path: str
    request: type | None
    reply: type | None


ROUTES: dict[str, Route] = {}
"""Every route the client calls, by the name of the `Client` method that calls it."""

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _route(method: str, path: str, request: type | None = None, reply: type | None = None) -> Callable[[F], F]:
    def register(function: F) -> F:
        ROUTES[function.__name__] = Route(method, path, request, reply)
        return function

    return register


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class Client:
    """A connection to a Weir job service.

    `url` defaults to `WEIR_URL` (or the CLI's `WEIR_SERVER`), then `http://127.0.0.1:8470`;
    `token` to `WEIR_TOKEN`; `ca_cert` (a PEM file to trust for an `https://` service) to
    `WEIR_CA_CERT`. `timeout` bounds each request (seconds); `retries` is how many times a
    call that is safe to repeat is tried again, waiting 0.25 s, 0.5 s, 1 s … (with jitter)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        ca_cert: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
    ) -> None:
        self.url = (url or os.environ.get("WEIR_URL") or os.environ.get("WEIR_SERVER") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("WEIR_TOKEN")
        ca_cert = ca_cert if ca_cert is not None else os.environ.get("WEIR_CA_CERT")
        self.timeout = timeout
        self.retries = retries
        self._context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            self._context = ssl.create_default_context(cafile=os.fspath(ca_cert) if ca_cert else None)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- plumbing ---

    def _open(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, object] | None = None,
        retry: bool,
        stream: bool = False,
    ) -> HTTPResponse:
        """The response to one call (2xx), retrying what may be retried; raises the
        service's error otherwise. A `stream` has no read timeout (it waits for what comes)."""
        url = self.url + path
        pairs = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (query or {}).items() if v is not None]
        if pairs:
            url += "?" + urllib.parse.urlencode(pairs)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "User-Agent": "weir-client"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                response: HTTPResponse = urllib.request.urlopen(
                    request, timeout=None if stream else self.timeout, context=self._context
                )
                return response
            except urllib.error.HTTPError as error:
                if error.code in _RETRIED_STATUSES and not last:
                    error.close()
                    self._backoff(attempt)
                    continue
                raise self._error(error, method, path) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                if not last:
                    self._backoff(attempt)
                    continue
                reason = getattr(error, "reason", error)
                raise ServiceUnreachable(f"cannot reach the service at {self.url}: {reason}") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _backoff(attempt: int) -> None:
        time.sleep(min(0.25 * 2**attempt, 8.0) * (0.5 + random.random() / 2))

    @staticmethod
    def _error(error: urllib.error.HTTPError, method: str, path: str) -> ServiceError:
        text = error.read().decode("utf-8", "replace")
        error.close()
        try:
            message = str(json.loads(text)["error"])
        except (ValueError, KeyError, TypeError):
            message = text.strip() or str(error.reason)
        kind = _ERRORS.get(error.code, ServerError if error.code >= 500 else ServiceError)
        return kind(error.code, message, method, path)

    def _call(
        self,
        name: str,
        reply: type[T],
        *,
        params: Mapping[str, str | int] | None = None,
        body: object = None,
        query: Mapping[str, object] | None = None,
        retry: bool | None = None,
    ) -> T:
        route = ROUTES[name]
        path = route.path.format(**{k: _quote(str(v)) for k, v in (params or {}).items()})
        if retry is None:
            retry = route.method == "GET"
        payload = encode(body) if body is not None else None
        with self._open(route.method, path, body=payload, query=query, retry=retry) as response:
            return decode(reply, json.loads(response.read()))

    # --- tokens (admin) ---

    @_route("POST", "/v1/tokens", NewToken, CreatedToken)
    def create_token(
        self,
        name: str,
        role: Role,
        *,
        jobs: Sequence[str] | None = None,
        prefixes: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
        inline: bool = False,
        profiles: Sequence[str] | None = None,
    ) -> CreatedToken:
        """A new token limited to `jobs`, `prefixes`, `keys` and `profiles` (each `None`:
        not limited by it); `inline` lets it submit definitions that are not stored jobs."""
        request = NewToken(name, role, _list(jobs), _list(prefixes), _list(keys), inline, _list(profiles))
        return self._call("create_token", CreatedToken, body=request)

    @_route("GET", "/v1/tokens", None, TokenList)
    def tokens(self) -> list[TokenInfo]:
        return self._call("tokens", TokenList).tokens

    @_route("DELETE", "/v1/tokens/{name}")
    def revoke_token(self, name: str) -> None:
        route = ROUTES["revoke_token"]
        with self._open(route.method, route.path.format(name=_quote(name)), retry=False):
            pass

    # --- jobs ---

    @_route("POST", "/v1/jobs", JobUpload, StoredJob)
    def put_job(self, definition: str | os.PathLike[str], vars: Mapping[str, str] | None = None) -> StoredJob:
        """Stores a definition (TOML text, or a path to a file) as the job's next version
        (admin); an identical definition keeps the current version (`created` is False)."""
        upload = JobUpload(_definition_text(definition), dict(vars or {}))
        return self._call("put_job", StoredJob, body=upload)

    @_route("GET", "/v1/jobs", None, JobList)
    def jobs(self) -> list[JobSummary]:
        return self._call("jobs", JobList).jobs

    @_route("GET", "/v1/jobs/{name}", None, JobDetail)
    def job(self, name: str) -> JobDetail:
        return self._call("job", JobDetail, params={"name": name})

    @_route("GET", "/v1/jobs/{name}/versions/{version}", None, JobVersion)
    def job_version(self, name: str, version: int) -> JobVersion:
        return self._call("job_version", JobVersion, params={"name": name, "version": version})

    @_route("POST", "/v1/jobs/{name}/rollback", Rollback, JobDetail)
    def rollback_job(self, name: str, version: int) -> JobDetail:
        """Makes `version` the job's current version again (admin)."""
        return self._call("rollback_job", JobDetail, params={"name": name}, body=Rollback(version))

    @_route("POST", "/v1/check", JobUpload, CheckedJob)
    def check(self, definition: str | os.PathLike[str], vars: Mapping[str, str] | None = None) -> CheckedJob:
        """Checks a definition exactly as the service would store and run it (its working
        directory, keys, stores and this token's grants); stores nothing."""
        upload = JobUpload(_definition_text(definition), dict(vars or {}))
        return self._call("check", CheckedJob, body=upload, retry=True)

    @_route("POST", "/v1/jobs/{name}/backfill", BackfillRequest, BackfillReply)
    def backfill(
        self,
        job: str,
        start: str,
        end: str,
        *,
        reprocess: Reprocess = "none",
        max_active: int | None = None,
        dry_run: bool = False,
        include_incomplete: bool = False,
    ) -> BackfillReply:
        """Runs the stored job for each tick of its schedule (or each day) from `start` to
        `end` (`YYYY-MM-DD`, both included); `dry_run` only lists them."""
        request = BackfillRequest(start, end, reprocess, max_active, dry_run, include_incomplete)
        return self._call("backfill", BackfillReply, params={"name": job}, body=request, retry=dry_run)

    # --- runs ---

    @_route("POST", "/v1/runs", Submission, Run)
    def submit(
        self,
        job: str | None = None,
        *,
        definition: str | os.PathLike[str] | None = None,
        version: int | None = None,
        vars: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        workers: int | None = None,
    ) -> Run:
        """Queues a run of a stored job (`job`, optionally at `version`) or of an inline
        `definition` (TOML text or a path; needs an admin token or one created with
        `inline`). With `idempotency_key`, submitting again returns the same run, so the
        call is retried safely."""
        text = None if definition is None else _definition_text(definition)
        submission = Submission(job, version, text, dict(vars or {}), idempotency_key, workers)
        return self._call("submit", Run, body=submission, retry=idempotency_key is not None)

    @_route("GET", "/v1/runs/{id}", None, Run)
    def run(self, run_id: str) -> Run:
        return self._call("run", Run, params={"id": run_id})

    @_route("GET", "/v1/runs", None, RunList)
    def runs(
        self,
        *,
        job: str | None = None,
        state: RunState | None = None,
        since: str | None = None,
        until: str | None = None,
        retry_of: str | None = None,
        submitted_by: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Run]:
        """The runs the token may see, newest first, fetched a page at a time as the
        iterator is consumed. `since`/`until` are RFC 3339 times of submission."""
        query: dict[str, object] = {
            "job": job,
            "state": state,
            "since": since,
            "until": until,
            "retry_of": retry_of,
            "submitted_by": submitted_by,
            "limit": page_size,
        }
        while True:
            page = self._call("runs", RunList, query=query)
            yield from page.runs
            if page.next is None:
                return
            query["before"] = page.next

    @_route("POST", "/v1/runs/{id}/cancel", None, Run)
    def cancel(self, run_id: str) -> Run:
        """Cancels a queued run at once, or asks a running one to stop (it ends
        `cancelled` within the service's grace, committing nothing)."""
        return self._call("cancel", Run, params={"id": run_id}, retry=False)

    @_route("GET", "/v1/runs/{id}/logs")
    def logs(self, run_id: str, *, follow: bool = False, offset: int = 0) -> Iterator[str]:
        """The run's log as text chunks from byte `offset`; with `follow`, the chunks keep
        coming as the log grows, until the run has ended and its log is drained."""
        route = ROUTES["logs"]
        path = route.path.format(id=_quote(run_id))
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        if follow:
            # The stream stays open while the run runs: no read timeout on it.
            with self._open("GET", path, query={"offset": offset, "follow": True}, retry=True, stream=True) as response:
                while chunk := response.read1(65536):
                    if text := decoder.decode(chunk):
                        yield text
        else:
            while True:
                with self._open("GET", path, query={"offset": offset}, retry=True) as response:
                    chunk = response.read()
                    offset = int(response.headers.get("x-weir-next-offset", offset + len(chunk)))
                if not chunk:
                    break
                if text := decoder.decode(chunk):
                    yield text
        if tail := decoder.decode(b"", final=True):
            yield tail

    def wait(self, run_id: str, *, timeout: float | None = None, poll: float = 0.5) -> Run:
        """Waits until the run has ended and returns it, following its retries: a failed
        attempt that the service retries is followed to the next attempt, and the last
        attempt is returned (as `weir submit --wait` does). Raises `WaitTimeout` past
        `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.run(run_id)
        while True:
            if current.ended:
                following = self._next_attempt(current)
                if following is None:
                    return current
                current = following
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(current, timeout or 0.0)
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
            current = self.run(current.id)

    def _next_attempt(self, run: Run) -> Run | None:
        """The retry the service queued for a failed attempt (in the same transaction that
        recorded the failure, so a failed run with none is final)."""
        if run.state != "failed":
            return None
        first = run.retry_of or run.id
        for later in self.runs(retry_of=first):
            if later.attempt == run.attempt + 1:
                return later
        return None

    # --- schedules and the audit trail ---

    @_route("GET", "/v1/schedules", None, ScheduleList)
    def schedules(self) -> list[ScheduleInfo]:
        return self._call("schedules", ScheduleList).schedules

    @_route("POST", "/v1/schedules/{job}/pause", None, ScheduleInfo)
    def pause_schedule(self, job: str) -> ScheduleInfo:
        """Pauses the job's schedule (admin): ticks that pass while paused are skipped."""
        return self._call("pause_schedule", ScheduleInfo, params={"job": job}, retry=True)

    @_route("POST", "/v1/schedules/{job}/resume", None, ScheduleInfo)
    def resume_schedule(self, job: str) -> ScheduleInfo:
        return self._call("resume_schedule", ScheduleInfo, params={"job": job}, retry=True)

    @_route("GET", "/v1/audit", None, AuditList)
    def audit(self, limit: int = 200) -> list[AuditEvent]:
        """The newest `limit` changes made through the API (admin)."""
        return self._call("audit", AuditList, query={"limit": limit}).events

    # --- outside /v1 ---

    def health(self) -> bool:
        """Whether the service answers `/healthz`."""
        try:
            with self._open("GET", "/healthz", retry=False) as response:
                return bool(response.read() == b"ok")
        except (ServiceError, ServiceUnreachable):
            return False

    def metrics(self) -> str:
        """The Prometheus text of `/metrics` (a token that is not limited to some jobs)."""
        with self._open("GET", "/metrics", retry=True) as response:
            return str(response.read().decode())

    def openapi(self) -> dict[str, Any]:
        """The service's OpenAPI document (`/v1/openapi.json`)."""
        with self._open("GET", "/v1/openapi.json", retry=True) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document

    # --- the two common scripts ---

    def run_job(
        self,
        job: str | os.PathLike[str],
        vars: Mapping[str, str] | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        check: bool = True,
        idempotency_key: str | None = None,
        workers: int | None = None,
    ) -> Run:
        """Runs a job and (with `wait`) returns its finished run, following retries.

        `job` is a stored job's name, a path to a job file, or a job's TOML text (the last
        two are submitted inline). With `check` (the default), a run that does not succeed
        raises `RunFailed` carrying it, so that a task running this fails with it."""
        if _is_definition(job):
            run = self.submit(definition=job, vars=vars, idempotency_key=idempotency_key, workers=workers)
        else:
            run = self.submit(str(job), vars=vars, idempotency_key=idempotency_key, workers=workers)
        if not wait:
            return run
        run = self.wait(run.id, timeout=timeout)
        if check and run.state != "succeeded":
            raise RunFailed(run)
        return run

    def score(
        self,
        dataset_uri: str,
        model: str,
        output_uri: str,
        *,
        inputs: Mapping[str, str | Sequence[str]],
        outputs: Mapping[str, str | Sequence[str]] | None = None,
        columns: Sequence[str] | None = None,
        sha256: str | None = None,
        mode: str = "overwrite",
        name: str = "score",
        wait: bool = True,
        timeout: float | None = None,
        check: bool = True,
        workers: int | None = None,
    ) -> Run:
        """Scores a Parquet dataset with an ONNX model through the service, ad hoc: a job
        named `name` reading `dataset_uri` (only `columns`, if given), one `score` step
        (`inputs`: the model's input name → a column or the columns stacked into it;
        `outputs`: its outputs → columns, default all under their own names; `sha256`
        pins the model) and a sink at `output_uri` (`mode`: overwrite, append or
        error_if_exists). The definition is submitted inline: the token needs the admin
        role or the `inline` grant, and its jobs and prefixes must reach these. See
        docs/jobs.md, "Scoring with ONNX models"."""
        definition = score_definition(
            dataset_uri, model, output_uri, inputs=inputs, outputs=outputs, columns=columns, sha256=sha256, mode=mode, name=name
        )
        return self.run_job(definition, wait=wait, timeout=timeout, check=check, workers=workers)


def score_definition(
    dataset_uri: str,
    model: str,
    output_uri: str,
    *,
    inputs: Mapping[str, str | Sequence[str]],
    outputs: Mapping[str, str | Sequence[str]] | None = None,
    columns: Sequence[str] | None = None,
    sha256: str | None = None,
    mode: str = "overwrite",
    name: str = "score",
) -> str:
    """The TOML of `Client.score`'s job."""
    lines = [f"name = {_toml(name)}", "", "[source]", f"uri = {_toml(dataset_uri)}"]
    if columns is not None:
        lines.append(f"columns = {_toml(list(columns))}")
    lines += ["", "[[step]]", 'op = "score"', f"model = {_toml(model)}", f"inputs = {_toml(dict(inputs))}"]
    if outputs is not None:
        lines.append(f"outputs = {_toml(dict(outputs))}")
    if sha256 is not None:
        lines.append(f"sha256 = {_toml(sha256)}")
    lines += ["", "[sink]", f"uri = {_toml(output_uri)}", f"mode = {_toml(mode)}", ""]
    return "\n".join(lines)


def _list(items: Sequence[str] | None) -> list[str] | None:
    return None if items is None else list(items)


def _toml(value: object) -> str:
    """A TOML value: strings as basic strings (JSON's escapes of quotes, backslashes and
    control characters are TOML's too; DEL, which JSON leaves as it is and TOML refuses,
    is escaped as well), lists as arrays, mappings as inline tables."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} into a job definition")


def _is_definition(job: str | os.PathLike[str]) -> bool:
    """Whether `job` is a definition (a file, or TOML text) rather than a stored job's name."""
    if isinstance(job, os.PathLike):
        return True
    return "\n" in job or "=" in job or os.path.isfile(job)


def _definition_text(definition: str | os.PathLike[str]) -> str:
    """TOML text as given, or read from a path (a `PathLike`, or a string naming a file
    and holding no newline)."""
    if isinstance(definition, os.PathLike) or ("\n" not in definition and os.path.isfile(definition)):
        with open(definition, encoding="utf-8") as file:
            return file.read()
    return definition
