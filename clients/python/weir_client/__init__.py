"""weir_client: the Weir job service's API, and snapshot reads of committed Weir outputs
with pyarrow.

    import weir_client
    table = weir_client.read_table("s3://bucket/features/", columns=["id", "x"])

    client = weir_client.Client("http://127.0.0.1:8470", token="…")
    run = client.run_job("nightly", vars={"ds": "2026-12-07"})

A Weir output is committed when `_weir/manifest.json` and `_SUCCESS` exist; its rows are
those of exactly the part files the manifest lists (docs/output.md). `read_table` and
`dataset` read those files and nothing else: never a run's staged files, never the files of
a commit being published, never a mix of two generations. Partition columns come back typed
as the manifest says; encrypted outputs are decrypted with the keys of the environment, as
the CLI finds them (`WEIR_KEY_<ID>`, `WEIR_KEY_DIR`). See clients/python/README.md.
"""

from ._errors import (
    EncryptionNotSupported,
    GenerationUnavailable,
    KeyUnavailable,
    NotCommitted,
    OutputChanged,
    WeirError,
)
from ._location import s3_filesystem_from_env
from ._manifest import Column, Manifest, PartFile
from ._read import dataset, read_manifest, read_table
from ._service import (
    Client,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RunFailed,
    ServerError,
    ServiceError,
    ServiceUnreachable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    WaitTimeout,
)
from ._types import (
    AuditEvent,
    BackfillReply,
    CheckedJob,
    CreatedToken,
    JobDetail,
    JobSummary,
    JobVersion,
    PlannedTick,
    Run,
    ScheduleInfo,
    StoredJob,
    TokenInfo,
)

__version__ = "0.1.0"

__all__ = [
    "AuditEvent",
    "BackfillReply",
    "CheckedJob",
    "Client",
    "Column",
    "Conflict",
    "CreatedToken",
    "EncryptionNotSupported",
    "Forbidden",
    "GenerationUnavailable",
    "JobDetail",
    "JobSummary",
    "JobVersion",
    "KeyUnavailable",
    "Manifest",
    "NotCommitted",
    "NotFound",
    "OutputChanged",
    "PartFile",
    "PayloadTooLarge",
    "PlannedTick",
    "Run",
    "RunFailed",
    "ScheduleInfo",
    "ServerError",
    "ServiceError",
    "ServiceUnreachable",
    "StoredJob",
    "TokenInfo",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "WaitTimeout",
    "WeirError",
    "dataset",
    "read_manifest",
    "read_table",
    "s3_filesystem_from_env",
]
