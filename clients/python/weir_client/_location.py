"""Where an output lies: a pyarrow filesystem and the prefix's path in it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from ._arrow import pafs
from ._errors import WeirError

Uri = str | os.PathLike[str]


@dataclass(frozen=True)
class Location:
    """An output prefix: `uri` as the caller gave it (for messages), the filesystem and the
    prefix's path in it, without a trailing `/`."""

    uri: str
    fs: Any
    base: str

    def join(self, relative: str) -> str:
        return f"{self.base}/{relative}" if self.base else relative


def resolve(uri: Uri, filesystem: Any = None) -> Location:
    """The location of `uri`: a local path, `file://…` or `s3://bucket/prefix`. With
    `filesystem`, `uri` is a path in it (an `s3://` scheme, if any, is stripped)."""
    text = os.fspath(uri)
    if not isinstance(text, str):
        raise TypeError(f"an output URI is a str or a path, not {type(text).__name__}")
    if filesystem is not None:
        path = text.split("://", 1)[1] if "://" in text else text
        return Location(text, filesystem, path.rstrip("/") or path)
    if "://" not in text:
        return _local(text, text)
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise WeirError(f"'{text}': a file:// URI names no host (file:///path)")
        return _local(text, unquote(parsed.path))
    if scheme in ("s3", "s3a"):
        bucket = parsed.netloc
        if not bucket:
            raise WeirError(f"'{text}' names no bucket (s3://bucket/prefix)")
        key = parsed.path.strip("/")
        return Location(text, s3_filesystem_from_env(bucket), f"{bucket}/{key}" if key else bucket)
    raise WeirError(f"'{text}': unsupported scheme '{parsed.scheme}' (use a local path, file:// or s3://)")


def _local(uri: str, path: str) -> Location:
    absolute = os.path.abspath(os.path.expanduser(path))
    return Location(uri, pafs.LocalFileSystem(), absolute.rstrip("/") or absolute)


def s3_filesystem_from_env(bucket: str) -> Any:
    """A `pyarrow.fs.S3FileSystem` set up from the same AWS environment variables as Weir's
    own S3 access (connectors/src/location.rs):

    - `AWS_ENDPOINT_URL`: an S3-compatible store (MinIO, Garage, R2, …), reached with
      path-style requests, over plain HTTP for an `http://` endpoint;
    - `AWS_REGION` or `AWS_DEFAULT_REGION`; with neither, `us-east-1` (on AWS itself, with
      no endpoint, the bucket's region is looked up instead);
    - `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, else the AWS
      SDK's usual chain (profiles, instance metadata);
    - `AWS_CA_BUNDLE`: the certificates to trust.
    """
    env = os.environ
    options: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parsed.netloc:
            raise WeirError(f"AWS_ENDPOINT_URL '{endpoint}' names no host")
        options["endpoint_override"] = parsed.netloc
        options["scheme"] = parsed.scheme
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region and not endpoint:
        try:
            found: str = pafs.resolve_s3_region(bucket)
            region = found
        except (OSError, ValueError):
            pass
    options["region"] = region or "us-east-1"
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options["access_key"] = key
        options["secret_key"] = secret
        token = env.get("AWS_SESSION_TOKEN")
        if token:
            options["session_token"] = token
    ca = env.get("AWS_CA_BUNDLE")
    if ca:
        options["tls_ca_file_path"] = ca
    return pafs.S3FileSystem(**options)
