"""The job service's requests and replies, one class per schema of its OpenAPI document
(`GET /v1/openapi.json`, generated from the service's Rust types). Field names, types and
which fields are required are checked against that document by a test
(`tests/e2e/test_python_client_service.py`), so a change on either side fails there.

Replies are decoded with `decode`: unknown fields (from a newer service) are ignored,
missing optional ones are `None`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

Role = Literal["read", "submit", "admin"]
"""What a token may do; each role can do what the ones before it can."""

RunState = Literal["queued", "running", "succeeded", "failed", "cancelled", "lost", "skipped"]
"""`queued → running → succeeded | failed | cancelled | lost`; `skipped`: a schedule's tick
that a manual run or backfill had already done."""

Trigger = Literal["schedule", "backfill", "retry", "manual"]
"""What started a run."""

Reprocess = Literal["none", "failed", "all"]
"""Which of a backfill's dates that already have a run are run again."""

TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "lost", "skipped"})


@dataclass(frozen=True)
class ErrorReply:
    error: str


# --- tokens ---


@dataclass(frozen=True)
class NewToken:
    name: str
    role: Role
    jobs: list[str] | None = None
    prefixes: list[str] | None = None
    keys: list[str] | None = None
    inline: bool = False
    profiles: list[str] | None = None


@dataclass(frozen=True)
class TokenInfo:
    """A live token: its grants, never its secret."""

    name: str
    role: Role
    created_at: str
    inline: bool
    jobs: list[str] | None = None
    prefixes: list[str] | None = None
    keys: list[str] | None = None
    profiles: list[str] | None = None


@dataclass(frozen=True)
class CreatedToken:
    """A token just created; `token` is the secret, shown this once."""

    name: str
    role: Role
    inline: bool
    token: str
    jobs: list[str] | None = None
    prefixes: list[str] | None = None
    keys: list[str] | None = None
    profiles: list[str] | None = None


@dataclass(frozen=True)
class TokenList:
    tokens: list[TokenInfo]


# --- jobs ---


@dataclass(frozen=True)
class JobUpload:
    definition: str
    vars: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredJob:
    name: str
    version: int
    sha256: str
    created: bool


@dataclass(frozen=True)
class CheckedJob:
    name: str
    output_uri: str


@dataclass(frozen=True)
class JobSummary:
    name: str
    version: int
    sha256: str
    updated_at: str


@dataclass(frozen=True)
class JobList:
    jobs: list[JobSummary]


@dataclass(frozen=True)
class JobVersion:
    name: str
    version: int
    sha256: str
    created_at: str
    created_by: str
    definition: str | None = None


@dataclass(frozen=True)
class JobDetail:
    name: str
    version: int
    sha256: str
    definition: str
    versions: list[JobVersion]


@dataclass(frozen=True)
class Rollback:
    version: int


@dataclass(frozen=True)
class BackfillRequest:
    from_: str = field(metadata={"json": "from"})
    to: str
    reprocess: Reprocess = "none"
    max_active: int | None = None
    dry_run: bool = False
    include_incomplete: bool = False


@dataclass(frozen=True)
class PlannedTick:
    ds: str
    logical_time: str
    will_run: bool
    existing: RunState | None = None
    existing_run: str | None = None


@dataclass(frozen=True)
class BackfillReply:
    job: str
    version: int
    dry_run: bool
    runs: int
    ticks: list[PlannedTick]
    id: str | None = None


# --- runs ---


@dataclass(frozen=True)
class Submission:
    job: str | None = None
    version: int | None = None
    definition: str | None = None
    vars: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    workers: int | None = None


@dataclass(frozen=True)
class Run:
    """A run as the service records it."""

    id: str
    job: str
    job_sha256: str
    state: RunState
    vars: dict[str, str]
    submitted_by: str
    submitted_at: str
    cancel_requested: bool
    attempt: int
    trigger: Trigger
    job_version: int | None = None
    exit_class: str | None = None
    exit_code: int | None = None
    error: str | None = None
    idempotency_key: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    output_uri: str | None = None
    summary: dict[str, Any] | None = None
    retry_of: str | None = None
    not_before: str | None = None
    logical_date: str | None = None
    allowed_keys: list[str] | None = None

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class RunList:
    runs: list[Run]
    next: str | None = None


# --- schedules and the audit trail ---


@dataclass(frozen=True)
class ScheduleInfo:
    job: str
    version: int
    cron: str
    timezone: str
    catchup: str
    max_active_runs: int
    paused: bool
    next_ticks: list[str]
    paused_by: str | None = None
    last_tick: str | None = None


@dataclass(frozen=True)
class ScheduleList:
    schedules: list[ScheduleInfo]


@dataclass(frozen=True)
class AuditEvent:
    at: str
    token: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True)
class AuditList:
    events: list[AuditEvent]


SCHEMAS: dict[str, object] = {
    name: value
    for name, value in dict(globals()).items()
    if (dataclasses.is_dataclass(value) and isinstance(value, type)) or name in ("Role", "RunState", "Trigger", "Reprocess")
}
"""Every class (and literal type) above by its schema's name in the OpenAPI document."""


def json_name(f: dataclasses.Field[Any]) -> str:
    """The field's name on the wire (`from_` is `from`)."""
    return str(f.metadata.get("json", f.name))


T = TypeVar("T")


def decode(kind: type[T], value: object) -> T:
    """`value` (parsed JSON) as an instance of `kind`, checking types on the way."""
    return typing.cast(T, _decode(kind, value, kind.__name__))


def _decode(kind: object, value: object, where: str) -> object:
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        last: Exception | None = None
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, value, where)
            except TypeError as error:
                last = error
        raise TypeError(str(last))
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise TypeError(f"{where}: {value!r} is not one of {typing.get_args(kind)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(kind)
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = typing.get_args(kind)
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        values: dict[str, object] = {}
        for f in dataclasses.fields(kind):
            name = json_name(f)
            if name in value:
                values[f.name] = _decode(hints[f.name], value[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(f"{where}: the reply has no '{name}'")
        return kind(**values)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind in (str, int, bool) and type(value) is kind:
        return value
    raise TypeError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")


def encode(value: object) -> dict[str, Any]:
    """A request dataclass as the JSON object the service takes (fields left at `None`
    are left out, so that the service applies its defaults)."""
    assert dataclasses.is_dataclass(value) and not isinstance(value, type)
    body: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if item is not None:
            body[json_name(f)] = item
    return body
