"""`_weir/manifest.json`: what a committed Weir output holds (connectors/src/manifest.rs)."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._arrow import pa
from ._errors import WeirError

MANIFEST_PATH = "_weir/manifest.json"
SUCCESS_PATH = "_SUCCESS"
# The manifest format this client reads; Weir bumps it on incompatible changes.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PartFile:
    """A part file of the output: `path` relative to the prefix (with its `k=v/` folders,
    percent-escaped as on the store)."""

    path: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class Column:
    """A column of the output; `type` is Arrow's (Rust) name of it, e.g. `Int64`, `Utf8`."""

    name: str
    type: str
    nullable: bool


@dataclass(frozen=True)
class Manifest:
    """The committed manifest of an output."""

    uri: str
    run_id: str
    generation: int
    committed_at: str
    job_name: str
    rows: int
    bytes: int
    files: tuple[PartFile, ...]
    schema: tuple[Column, ...]
    partition_by: tuple[str, ...]
    encryption: Mapping[str, Any] | None
    raw: Mapping[str, Any]

    def column(self, name: str) -> Column:
        for column in self.schema:
            if column.name == name:
                return column
        raise WeirError(f"output '{self.uri}': the manifest's schema has no column '{name}'")


def parse_manifest(uri: str, text: bytes) -> Manifest:
    """Parses and checks a manifest's bytes."""

    def bad(what: str) -> WeirError:
        return WeirError(f"output '{uri}': malformed {MANIFEST_PATH}: {what}")

    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad(str(error)) from None
    if not isinstance(raw, dict):
        raise bad("not a JSON object")

    def field(obj: Mapping[str, Any], name: str, kind: type, where: str = "") -> Any:
        value = obj.get(name)
        # bool is an int in Python: never take one for a count.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise bad(f"'{where}{name}' is missing or not a {kind.__name__}")
        return value

    version: int = field(raw, "format_version", int)
    if version > FORMAT_VERSION:
        raise WeirError(
            f"output '{uri}': manifest format {version} is newer than this client reads "
            f"({FORMAT_VERSION}); upgrade weir-client"
        )
    files = []
    for index, entry in enumerate(field(raw, "files", list)):
        if not isinstance(entry, dict):
            raise bad(f"files[{index}] is not an object")
        where = f"files[{index}]."
        path: str = field(entry, "path", str, where)
        files.append(PartFile(_relative(uri, path), field(entry, "rows", int, where), field(entry, "bytes", int, where)))
    schema = []
    for index, entry in enumerate(field(raw, "schema", list)):
        if not isinstance(entry, dict):
            raise bad(f"schema[{index}] is not an object")
        where = f"schema[{index}]."
        nullable = bool(entry.get("nullable", True))
        schema.append(Column(field(entry, "name", str, where), field(entry, "type", str, where), nullable))
    partition_by = raw.get("partition_by", [])
    if not isinstance(partition_by, list) or not all(isinstance(name, str) for name in partition_by):
        raise bad("'partition_by' is not a list of names")
    encryption = raw.get("encryption")
    if encryption is not None and not isinstance(encryption, dict):
        raise bad("'encryption' is not an object")
    job = raw.get("job")
    generation = raw.get("generation", 1)  # manifests from before generations read as 1
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise bad("'generation' is not an integer")
    manifest = Manifest(
        uri=uri,
        run_id=field(raw, "run_id", str),
        generation=generation,
        committed_at=str(raw.get("committed_at", "")),
        job_name=str(job.get("name", "")) if isinstance(job, dict) else "",
        rows=field(raw, "rows", int),
        bytes=field(raw, "bytes", int),
        files=tuple(files),
        schema=tuple(schema),
        partition_by=tuple(partition_by),
        encryption=encryption,
        raw=raw,
    )
    for name in manifest.partition_by:
        manifest.column(name)
    return manifest


def _relative(uri: str, path: str) -> str:
    """A file's path, checked to stay inside the prefix."""
    normal = posixpath.normpath(path)
    if not path or path.startswith("/") or "\\" in path or normal != path or normal.startswith(".."):
        raise WeirError(f"output '{uri}': the manifest lists a file outside the output: '{path}'")
    return path


# Arrow's (arrow-rs's `Display`) names of types, as the manifest's `schema` writes them.
_SIMPLE_TYPES: dict[str, Any] = {
    "Null": pa.null(),
    "Boolean": pa.bool_(),
    "Int8": pa.int8(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Float16": pa.float16(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "Utf8": pa.string(),
    "LargeUtf8": pa.large_string(),
    "Binary": pa.binary(),
    "LargeBinary": pa.large_binary(),
    "Date32": pa.date32(),
    "Date64": pa.date64(),
}
_UNITS = {"s": "s", "ms": "ms", "\u00b5s": "us", "ns": "ns"}
_TIMESTAMP = re.compile(r'^Timestamp\((s|ms|\u00b5s|ns)(?:, "([^"\\]*)")?\)$')
_DECIMAL = re.compile(r"^Decimal(128|256)\((\d+), (-?\d+)\)$")


def arrow_type(uri: str, column: Column) -> Any:
    """The pyarrow type of a manifest column as part files store it (for partition columns,
    and the columns of an output with no file); time, duration, nested and dictionary types
    are refused by name."""
    simple = _SIMPLE_TYPES.get(column.type)
    if simple is not None:
        return simple
    match = _TIMESTAMP.match(column.type)
    if match:
        # Part files store timestamps in seconds as milliseconds (Parquet has no seconds).
        unit = _UNITS[match.group(1)]
        return pa.timestamp("ms" if unit == "s" else unit, tz=match.group(2))
    match = _DECIMAL.match(column.type)
    if match:
        make = pa.decimal128 if match.group(1) == "128" else pa.decimal256
        return make(int(match.group(2)), int(match.group(3)))
    raise WeirError(
        f"output '{uri}': column '{column.name}' has type {column.type}, which this client cannot map to Arrow"
    )
