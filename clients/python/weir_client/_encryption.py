"""Encrypted outputs (`[sink.encryption]`): the keys from the same environment as the CLI's,
and pyarrow's Parquet decryption set up with Weir's local KMS.

Keys (connectors/src/keys.rs): key id `pii` is the standard base64 of a 16 or 32-byte AES
key in `WEIR_KEY_PII` (the id upper-cased, every other character than an ASCII letter or
digit as `_`), else in the file `$WEIR_KEY_DIR/pii`; the variable wins. `WEIR_ALLOWED_KEYS`
(comma-separated ids), when set, is all that may be looked up.

With `keys = "kms"` (the default) the ids name master keys: each file's key metadata is
pyarrow's "PKMT1" key material, its data keys wrapped as
`base64(nonce ‖ AES-GCM(master key, data key, associated data = master key id))`
(connectors/src/kms.rs), which `_LocalKms` unwraps for pyarrow's `CryptoFactory`. With
`keys = "direct"` the ids name the data keys themselves, which pyarrow's Python API cannot
be given: such outputs are refused (`EncryptionNotSupported`).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._arrow import ds, pe
from ._errors import EncryptionNotSupported, KeyUnavailable
from ._manifest import Manifest

_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_NONCE_BYTES = 12


def env_var_of(key_id: str) -> str:
    """The environment variable that holds key `key_id` (`team-a.pii` → `WEIR_KEY_TEAM_A_PII`)."""
    return "WEIR_KEY_" + "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in key_id)


def key_bytes(uri: str, key_id: str) -> bytes:
    """The bytes of key `key_id` from the environment (see the module's docstring)."""

    def unavailable(why: str) -> KeyUnavailable:
        return KeyUnavailable(uri, key_id, why)

    if not _KEY_ID.match(key_id) or key_id in (".", ".."):
        raise unavailable("cannot be looked up: a key id is 1 to 128 letters, digits, '-', '_' or '.'")
    allowed = os.environ.get("WEIR_ALLOWED_KEYS")
    if allowed is not None and key_id not in [granted.strip() for granted in allowed.split(",")]:
        raise unavailable("is not granted to this process (WEIR_ALLOWED_KEYS)")
    var = env_var_of(key_id)
    encoded = os.environ.get(var)
    source = var
    if encoded is None:
        folder = os.environ.get("WEIR_KEY_DIR")
        if folder is None:
            raise unavailable(f"is not available: set {var} (or WEIR_KEY_DIR)")
        path = os.path.join(folder, key_id)
        try:
            with open(path, encoding="utf-8") as file:
                encoded = file.read()
        except (OSError, UnicodeDecodeError):
            raise unavailable(f"is not available: set {var} or put it in {path}") from None
        source = path
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise unavailable(f"in {source} is not base64") from None
    if len(key) not in (16, 32):
        raise unavailable(f"in {source} is {len(key)} bytes long; keys are 16 or 32 bytes (AES-128 or AES-256)")
    return key


class _LocalKms(pe.KmsClient):  # type: ignore[misc]  # pyarrow is untyped
    """Weir's local KMS for pyarrow: master keys from the environment, looked up when a file
    needs one (so a read of columns under the footer key needs only the footer key)."""

    def __init__(self, uri: str) -> None:
        pe.KmsClient.__init__(self)
        self.uri = uri

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        master = key_bytes(self.uri, master_key_identifier)
        try:
            sealed = base64.b64decode(wrapped_key, validate=True)
        except (binascii.Error, ValueError):
            raise KeyUnavailable(self.uri, master_key_identifier, "wraps a data key that is not base64") from None
        try:
            data_key: bytes = AESGCM(master).decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], master_key_identifier.encode()
            )
        except (InvalidTag, ValueError):
            raise KeyUnavailable(
                self.uri, master_key_identifier, "does not unwrap this file's data key: it is the wrong master key"
            ) from None
        return data_key


@dataclass(frozen=True)
class Decryption:
    """How to read an encrypted output's files: `file_properties` for one file
    (`pq.read_schema`), `dataset_config` for a Dataset's scans."""

    file_properties: Any
    dataset_config: Any


def decryption(uri: str, manifest: Manifest) -> Decryption | None:
    """The decryption of `manifest`'s output, or None when it is not encrypted."""
    if manifest.encryption is None:
        return None
    mode = manifest.encryption.get("keys", "kms")
    if mode != "kms":
        footer = manifest.encryption.get("footer_key")
        raise EncryptionNotSupported(uri, footer if isinstance(footer, str) else None, mode)
    # A new factory per read: pyarrow caches unwrapped keys per factory, and keys in the
    # environment may have changed since the last read.
    factory = pe.CryptoFactory(lambda _config: _LocalKms(uri))
    connection = pe.KmsConnectionConfig()
    config = pe.DecryptionConfiguration()
    return Decryption(
        file_properties=factory.file_decryption_properties(connection, config),
        dataset_config=ds.ParquetDecryptionConfig(factory, connection, config),
    )
