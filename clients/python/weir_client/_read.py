"""Snapshot reads: exactly the files of one committed manifest, or an error.

A read (i) notes whether `_SUCCESS` exists and reads `_weir/manifest.json` once, (ii) checks
that every file the manifest lists is there with the size it records, (iii) reads those files
and nothing else, then (iv) looks again: `_SUCCESS` first, then the manifest's bytes. Weir's
commit deletes `_SUCCESS` before it touches any file and writes it back only after the new
manifest, and every commit raises the generation, so if (iv) finds `_SUCCESS` and the same
manifest, no commit started between (i) and (iv): what (iii) read is that manifest's files,
whole. Otherwise, or if a file vanished during (iii), the read starts again from a fresh
manifest, a bounded number of times.

A state that does not change (no manifest, no `_SUCCESS`, a listed file missing, with no
commit being published) raises `NotCommitted` at once; while a commit is being published
(a `_weir/runs/<attempt>/commit.json` decision exists) or the prefix changed since it was
looked at, the read waits a little and starts again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ._arrow import ds, pa, pafs, pq
from ._encryption import decryption
from ._errors import GenerationUnavailable, NotCommitted, OutputChanged, WeirError
from ._location import Location, Uri, resolve
from ._manifest import MANIFEST_PATH, SUCCESS_PATH, Manifest, arrow_type, parse_manifest

T = TypeVar("T")

_PUBLISHING = (
    "a commit is being published, or one was interrupted and waits for the next run on the "
    "prefix to complete it (its decision, commit.json, is under _weir/runs/)"
)

# A read starts again at most MAX_ATTEMPTS times, and not after `max_wait_s` (default
# DEFAULT_MAX_WAIT_S, longer than publishing a commit usually takes) from its start, waiting
# between attempts from FIRST_WAIT_S, doubling, up to LONGEST_WAIT_S.
MAX_ATTEMPTS = 40
DEFAULT_MAX_WAIT_S = 10.0
FIRST_WAIT_S = 0.005
LONGEST_WAIT_S = 0.5


@dataclass(frozen=True)
class _Observation:
    """What a look at the prefix found: whether `_SUCCESS` exists, the manifest's bytes."""

    success: bool
    manifest: bytes | None


class _Inconsistent(Exception):
    """A snapshot that did not hold together (e.g. fewer rows than the manifest says)."""


def _exists(loc: Location, relative: str) -> bool:
    info = loc.fs.get_file_info(loc.join(relative))
    found: bool = info.type == pafs.FileType.File
    return found


def _read_bytes(loc: Location, relative: str) -> bytes | None:
    path = loc.join(relative)
    try:
        with loc.fs.open_input_stream(path) as stream:
            data: bytes = stream.read()
            return data
    except FileNotFoundError:
        return None
    except OSError:
        if loc.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        raise


def _observe(loc: Location) -> _Observation:
    # `_SUCCESS` before the manifest: see the module's docstring.
    success = _exists(loc, SUCCESS_PATH)
    return _Observation(success, _read_bytes(loc, MANIFEST_PATH))


def _publishing(loc: Location) -> bool:
    """Whether a commit's decision (`_weir/runs/<attempt>/commit.json`) exists: a commit is
    being published, or one was interrupted while publishing (the next run completes it)."""
    selector = pafs.FileSelector(loc.join("_weir/runs"), allow_not_found=True, recursive=False)
    try:
        attempts = [info.path for info in loc.fs.get_file_info(selector) if info.type == pafs.FileType.Directory]
        if not attempts:
            return False
        decisions = loc.fs.get_file_info([f"{path}/commit.json" for path in attempts])
    except OSError:
        return True  # attempt folders came and went while listed: a run is at work
    return any(info.type == pafs.FileType.File for info in decisions)


def _changing(loc: Location, seen: _Observation) -> bool:
    """Whether the prefix is between two states: a commit is being published, or it
    differs from what was `seen`."""
    return _publishing(loc) or _observe(loc) != seen


def _problem_files(loc: Location, manifest: Manifest) -> tuple[list[str], list[str]]:
    """The listed files that are missing, and those whose size is not the manifest's."""
    if not manifest.files:
        return [], []
    infos = loc.fs.get_file_info([loc.join(part.path) for part in manifest.files])
    missing, resized = [], []
    for part, info in zip(manifest.files, infos):
        if info.type != pafs.FileType.File:
            missing.append(part.path)
        elif info.size is not None and info.size != part.bytes:
            resized.append(f"{part.path} ({info.size} bytes, the manifest says {part.bytes})")
    return missing, resized


def with_snapshot(
    loc: Location, generation: int | None, use: Callable[[Location, Manifest], T], max_wait_s: float
) -> T:
    """Calls `use(loc, manifest)` with a committed manifest whose files are all there, and
    returns what it returned once the output is seen unchanged after it."""
    if generation is not None and (isinstance(generation, bool) or not isinstance(generation, int) or generation < 1):
        raise ValueError(f"generation must be a positive integer, not {generation!r}")
    if not max_wait_s >= 0:
        raise ValueError(f"max_wait_s must be a number of seconds >= 0, not {max_wait_s!r}")
    deadline = time.monotonic() + max_wait_s
    wait = FIRST_WAIT_S
    # What to raise when the attempts or the time run out: what the last attempt met.
    pending: NotCommitted | None = None
    last = ""
    attempt = 0
    while True:
        if attempt:
            left = deadline - time.monotonic()
            if attempt >= MAX_ATTEMPTS or left <= 0:
                break
            time.sleep(min(wait, left))
            wait = min(2 * wait, LONGEST_WAIT_S)
        attempt += 1
        seen = _observe(loc)
        if seen.manifest is None or not seen.success:
            absent = [(MANIFEST_PATH, seen.manifest is None), (SUCCESS_PATH, not seen.success)]
            missing = [name for name, gone in absent if gone]
            if _changing(loc, seen):
                pending = NotCommitted(loc.uri, missing, _PUBLISHING)
                continue
            raise NotCommitted(loc.uri, missing)
        pending = None
        manifest = parse_manifest(loc.uri, seen.manifest)
        if generation is not None and generation != manifest.generation:
            raise GenerationUnavailable(loc.uri, generation, manifest.generation)
        missing, resized = _problem_files(loc, manifest)
        listed = f"listed in the manifest of generation {manifest.generation}"
        if missing or resized:
            if _changing(loc, seen):
                if missing:
                    pending = NotCommitted(loc.uri, missing, f"{listed}; {_PUBLISHING}")
                last = f"files of generation {manifest.generation} replaced"
                continue
            if missing:
                raise NotCommitted(loc.uri, missing, listed)
            raise WeirError(f"output '{loc.uri}' was modified outside Weir: " + ", ".join(resized))
        try:
            result = use(loc, manifest)
        except (OSError, pa.ArrowException, _Inconsistent) as error:
            if _changing(loc, seen):
                last = f"generation {manifest.generation} replaced while read: {error}"
                continue
            missing, _ = _problem_files(loc, manifest)
            if missing:
                raise NotCommitted(loc.uri, missing, listed) from error
            if isinstance(error, _Inconsistent):
                raise WeirError(f"output '{loc.uri}': {error}") from None
            raise
        if _observe(loc) != seen:
            last = f"generation {manifest.generation} replaced while read"
            continue
        return result
    if pending is not None:
        raise pending
    raise OutputChanged(loc.uri, attempt, last)


def build_dataset(loc: Location, manifest: Manifest) -> Any:
    """The pyarrow Dataset of exactly `manifest`'s files, columns in the manifest's order,
    partition columns from the `k=v/` folders, typed as the manifest says; decrypted with
    the keys of the environment when the output is encrypted."""
    paths = [loc.join(part.path) for part in manifest.files]
    crypt = decryption(loc.uri, manifest)
    partition_fields = [
        pa.field(name, arrow_type(loc.uri, manifest.column(name)), nullable=manifest.column(name).nullable)
        for name in manifest.partition_by
    ]
    if paths:
        properties = crypt.file_properties if crypt is not None else None
        file_schema = pq.read_schema(paths[0], filesystem=loc.fs, decryption_properties=properties)
    else:
        # A partitioned output of no rows has no file: its schema is the manifest's.
        stored = [column for column in manifest.schema if column.name not in manifest.partition_by]
        file_schema = pa.schema([pa.field(c.name, arrow_type(loc.uri, c), nullable=c.nullable) for c in stored])
    by_name = {field.name: field for field in partition_fields}
    for name in file_schema.names:
        by_name.setdefault(name, file_schema.field(name))
    ordered = [by_name.pop(column.name) for column in manifest.schema if column.name in by_name]
    ordered += list(by_name.values())  # columns the manifest does not list, if any
    schema = pa.schema(ordered, metadata=file_schema.metadata)
    if crypt is None:
        file_format: Any = "parquet"
    else:
        options = ds.ParquetFragmentScanOptions(decryption_config=crypt.dataset_config)
        file_format = ds.ParquetFileFormat(default_fragment_scan_options=options)
    partitioning = ds.partitioning(pa.schema(partition_fields), flavor="hive") if partition_fields else None
    return ds.dataset(
        paths,
        schema=schema,
        format=file_format,
        filesystem=loc.fs,
        partitioning=partitioning,
        partition_base_dir=loc.base if partition_fields else None,
    )


def _columns(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        raise TypeError("columns is a list of names, not one name")
    return list(columns)


def read_table(
    uri: Uri,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    generation: int | None = None,
    *,
    filesystem: Any = None,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
) -> Any:
    """Reads the committed output at `uri` as one `pyarrow.Table`: the rows of exactly the
    part files its committed manifest lists, partition columns included.

    - `uri`: a local path, `file:///…` or `s3://bucket/prefix` (S3 set up from the AWS
      environment variables: see `s3_filesystem_from_env`); or a path in `filesystem`, a
      `pyarrow.fs.FileSystem`.
    - `columns`: the columns to read (partition columns too), in this order.
    - `filter`: a `pyarrow.compute.Expression`, e.g. `pc.field("country") == "DE"`.
    - `generation`: the generation the caller expects (`Manifest.generation`); only the
      latest committed one is readable (Weir keeps no earlier manifests), any other raises
      `GenerationUnavailable`.
    - `max_wait_s`: how long a read may keep starting again (below).

    The table is one committed snapshot, whole, even while new commits replace the output:
    a read that overlaps a commit, or finds one being published, starts again from the new
    manifest, at most MAX_ATTEMPTS times and for `max_wait_s`; then it raises what it last
    met (`NotCommitted` while a commit is being published or was interrupted there, else
    `OutputChanged`). Raises `NotCommitted` naming what is missing.

    An encrypted output (`[sink.encryption]`, `keys = "kms"`) is decrypted with the keys of
    the environment, as the CLI finds them (`WEIR_KEY_<ID>`, `WEIR_KEY_DIR`); a key it needs
    and does not find raises `KeyUnavailable` naming it (columns under a column key need
    that key only when read). `keys = "direct"` outputs raise `EncryptionNotSupported`.
    """
    loc = resolve(uri, filesystem)
    wanted = _columns(columns)

    def use(loc: Location, manifest: Manifest) -> Any:
        table = build_dataset(loc, manifest).to_table(columns=wanted, filter=filter)
        if filter is None and table.num_rows != manifest.rows:
            raise _Inconsistent(f"read {table.num_rows} rows, the manifest lists {manifest.rows}")
        return table

    return with_snapshot(loc, generation, use, max_wait_s)


def dataset(
    uri: Uri, generation: int | None = None, *, filesystem: Any = None, max_wait_s: float = DEFAULT_MAX_WAIT_S
) -> Any:
    """The `pyarrow.dataset.Dataset` of exactly the part files the committed manifest of
    `uri` lists, with the partition columns (typed as the manifest says).

    The files are fixed when this returns (checked present, the output committed); the
    Dataset reads them lazily, so a scan that runs after a newer commit replaced the output
    fails on a missing file rather than mixing generations. Call `dataset` again for the
    new generation, or use `read_table`, which retries by itself. `max_wait_s` as there.
    """
    return with_snapshot(resolve(uri, filesystem), generation, build_dataset, max_wait_s)


def read_manifest(uri: Uri, *, filesystem: Any = None, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> Manifest:
    """The committed manifest of `uri` (its files all checked present)."""
    return with_snapshot(resolve(uri, filesystem), None, lambda _loc, manifest: manifest, max_wait_s)
