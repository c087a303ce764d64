"""Parquet modular encryption: `[sink.encryption]` on the way out, `[source.decryption]` on
the way in, checked against pyarrow's own encryption (`pyarrow.parquet.encryption`).

The reference here is pyarrow's `CryptoFactory` with `TestKms`, a KMS client that wraps a
data key exactly as Weir's local KMS is specified to: base64(nonce || AES-GCM(master key,
data key, aad = master key id)), with `cryptography`'s AESGCM. The master keys are random
bytes made per test and given to Weir only through its environment (`WEIR_KEY_<ID>` as
base64, or a `WEIR_KEY_DIR` folder), never in a job file.

- Weir writes (kms mode, encrypted and plaintext footer): pyarrow decrypts every part file
  to the input's rows (a plaintext footer's signature is also checked independently); a
  reader with only the footer key reads `id`/`amount` but not `email`; without keys nothing
  (encrypted footer) or only the schema (plaintext footer) is readable; no value of the input
  is in the files' bytes; the key metadata is PKMT1 key material whose data keys unwrap with
  the master keys, fresh per file and per key.
- Direct mode: Weir writes and Weir reads back; a wrong data key is refused.
- pyarrow writes (single and double wrapping, both footer modes), Weir reads and filters.
- Keys from `WEIR_KEY_DIR`; the environment wins over the folder; odd key ids map to
  `WEIR_KEY_<ID>` names; keys of 16 or 32 bytes (24 refused).
- Bad input (wrong, missing or malformed keys, a tampered file, an encrypted input without
  `[source.decryption]`) exits 2 with a message naming the key and file, and commits nothing.
- No key (master or data, raw, base64, hex or as a Rust byte list) reaches stdout, stderr,
  the manifest, `fitted.json`, a result file, or (raw) a part file.
- A round trip through Garage (S3), and `weir head` / `weir schema` on encrypted outputs.
"""

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import WEIR_BIN, data_files, read_output, write_job
from helpers import run_retrying

HERE = Path(__file__).resolve().parent
COLUMNS = ["id", "email", "ssn", "amount"]
PII = ["email", "ssn"]
SELECT = '[[step]]\nop = "select"\ncolumns = ["id", "email", "ssn", "amount"]\n'
POSITIVE = '[[step]]\nop = "filter"\nexpr = "amount > 0"\n'
EMAIL = re.compile(r"user\d+\.[0-9a-f]{8}@example\.com")

# ---------------------------------------------------------------------------------------
# Keys, the test KMS and pyarrow's encryption


def new_keys(*key_ids, size=16) -> dict:
    """Fresh random AES keys, one per key id."""
    return {key_id: os.urandom(size) for key_id in key_ids}


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def env_name(key_id: str) -> str:
    """The variable Weir reads a key id from: upper-cased, every non-alphanumeric char `_`."""
    return "WEIR_KEY_" + "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in key_id)


def weir_env(keys=None, base=None, **extra) -> dict:
    """An environment for weir: `base` (default os.environ) without any WEIR_KEY_* variable
    (WEIR_KEY_DIR included), plus `WEIR_KEY_<ID>` = base64 for each of `keys`, plus `extra`."""
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("WEIR_KEY_")}
    for key_id, key in (keys or {}).items():
        env[env_name(key_id)] = b64(key)
    env.update(extra)
    return env


def kms_wrap(master: bytes, master_id: str, data_key: bytes) -> str:
    """Weir's local KMS: base64(nonce || AES-GCM(master, data key, aad = master id))."""
    nonce = os.urandom(12)
    return b64(nonce + AESGCM(master).encrypt(nonce, data_key, master_id.encode()))


def kms_unwrap(master: bytes, master_id: str, wrapped: str) -> bytes:
    raw = base64.b64decode(wrapped)
    return AESGCM(master).decrypt(raw[:12], raw[12:], master_id.encode())


class TestKms(pe.KmsClient):
    """A pyarrow KMS client holding master keys in a dict, wrapping like Weir's local KMS."""

    __test__ = False  # not a test class for pytest

    def __init__(self, master_keys: dict):
        pe.KmsClient.__init__(self)
        self.master_keys = master_keys

    def wrap_key(self, key_bytes, master_key_identifier):
        return kms_wrap(self.master_keys[master_key_identifier], master_key_identifier, key_bytes)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        if master_key_identifier not in self.master_keys:
            raise KeyError(f"the test KMS holds no master key {master_key_identifier!r}")
        return kms_unwrap(self.master_keys[master_key_identifier], master_key_identifier, wrapped_key)


def crypto_factory(master_keys: dict) -> pe.CryptoFactory:
    """A fresh factory (pyarrow caches clients and keys per factory and token)."""
    return pe.CryptoFactory(lambda config: TestKms(master_keys))


def decryption_properties(master_keys: dict):
    return crypto_factory(master_keys).file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())


def encryption_properties(master_keys: dict, column_keys=None, plaintext_footer=False, double_wrapping=True):
    """pyarrow's encryption of one file: footer key "footer", `column_keys` (default pii)."""
    config = pe.EncryptionConfiguration(
        footer_key="footer",
        column_keys=column_keys or {"pii": PII},
        plaintext_footer=plaintext_footer,
        double_wrapping=double_wrapping,
    )
    return crypto_factory(master_keys).file_encryption_properties(pe.KmsConnectionConfig(), config)


# ---------------------------------------------------------------------------------------
# Data, jobs and outputs


def make_table(rows=2_000, seed=7) -> pa.Table:
    """id, email (unique, some null), ssn, amount (either sign, some null)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows, dtype=np.int64)
    tags = rng.integers(0, 2**32, rows)
    emails = [f"user{i}.{t:08x}@example.com" for i, t in zip(ids, tags)]
    ssns = [f"{a:03d}-{b:02d}-{c:04d}" for a, b, c in zip(rng.integers(100, 900, rows), rng.integers(10, 99, rows), rng.integers(0, 10_000, rows))]
    return pa.table(
        {
            "id": pa.array(ids),
            "email": pa.array(emails, type=pa.string(), mask=rng.random(rows) < 0.05),
            "ssn": pa.array(ssns, type=pa.string()),
            "amount": pa.array(rng.normal(0, 100, rows), mask=rng.random(rows) < 0.05),
        }
    )


def write_source(table: pa.Table, directory: Path, files=2, row_group=250, encryption=None, stem="enc") -> list:
    """`table` split over `files` files `<stem>-<i>.parquet`; `encryption()` gives each file
    its own pyarrow encryption properties (fresh data keys), or None for plain files."""
    directory.mkdir(parents=True)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    paths = []
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = directory / f"{stem}-{index}.parquet"
        extra = {"encryption_properties": encryption()} if encryption else {}
        pq.write_table(table.slice(lo, hi - lo), path, row_group_size=row_group, **extra)
        paths.append(path)
    return paths


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def toml_table(header: str, fields: dict) -> str:
    return f"[{header}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items())


def job_toml(name, src, out, steps=SELECT, sink=None, encryption=None, decryption=None) -> str:
    """A job: `encryption` (fields over footer "footer" + pii columns) adds [sink.encryption],
    `decryption` (a dict, may be empty) adds [source.decryption]."""
    text = f'name = "{name}"\n' + toml_table("source", {"uri": str(src)})
    if decryption is not None:
        text += toml_table("source.decryption", decryption)
    text += steps + toml_table("sink", {"uri": str(out), **(sink or {})})
    if encryption is not None:
        text += toml_table("sink.encryption", {"footer_key": "footer", "column_keys": {"pii": PII}, **encryption})
    return text


def run_job(weir, tmp_path, stem, text, env, *args, check=None):
    job = write_job(tmp_path / f"{stem}.toml", text)
    return weir("run", job, "-w", "2", *args, env=env, check=check)


def manifest(prefix: Path) -> dict:
    return json.loads((prefix / "_weir" / "manifest.json").read_text())


def part_files(prefix: Path) -> list:
    """The part files an output's manifest lists."""
    return [prefix / f["path"] for f in manifest(prefix)["files"]]


def read_encrypted(files, master_keys: dict) -> pa.Table:
    """pyarrow decrypts and reads each file (a path or bytes) with the test KMS."""
    properties = decryption_properties(master_keys)
    tables = []
    for f in files:
        source = pa.BufferReader(f) if isinstance(f, bytes) else f
        tables.append(pq.ParquetFile(source, decryption_properties=properties).read())
    return pa.concat_tables(tables)


def assert_nothing_committed(out: Path, proc):
    assert "panicked" not in proc.stderr, proc.stderr
    assert not (out / "_SUCCESS").exists(), proc.stderr
    assert not out.exists() or data_files(out) == [], f"part files visible after a failed run: {data_files(out)}"


def assert_the_encryption_is_recorded(prefix: Path, plaintext_footer: bool, keys: str, column_keys=None):
    """The manifest names the keys by id only."""
    recorded = manifest(prefix)["encryption"]
    assert recorded["footer_key"] == "footer", recorded
    assert recorded["column_keys"] == (column_keys or {"pii": PII}), recorded
    assert recorded["plaintext_footer"] is plaintext_footer, recorded
    assert recorded["keys"] == keys, recorded


def key_materials(raw: bytes) -> list:
    """The PKMT1 key-material JSON objects stored in a Parquet file's plaintext bytes (the
    footer key's in FileCryptoMetaData; with a plaintext footer, the columns' keys too)."""
    return [json.loads(m) for m in re.findall(rb'\{[^{}]*"keyMaterialType"[^{}]*\}', raw)]


def read_compact_struct(data: bytes) -> dict:
    """A minimal reader of Thrift's compact protocol: the struct at the start of `data` as
    {field id: value} (nested structs as dicts, lists as lists, binary as bytes)."""
    pos = 0

    def varint():
        nonlocal pos
        result = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    def zigzag():
        v = varint()
        return (v >> 1) ^ -(v & 1)

    def value(kind):
        nonlocal pos
        if kind in (1, 2):  # a bool field: its value is its type
            return kind == 1
        if kind == 3:
            pos += 1
            return data[pos - 1]
        if kind in (4, 5, 6):
            return zigzag()
        if kind == 7:
            pos += 8
            return data[pos - 8 : pos]
        if kind == 8:
            n = varint()
            pos += n
            return data[pos - n : pos]
        if kind in (9, 10):
            header = data[pos]
            pos += 1
            n, element = header >> 4, header & 15
            if n == 15:
                n = varint()
            items = []
            for _ in range(n):
                if element in (1, 2):
                    items.append(data[pos] == 1)
                    pos += 1
                else:
                    items.append(value(element))
            return items
        if kind == 11:
            n = varint()
            if not n:
                return {}
            kinds = data[pos]
            pos += 1
            return dict((value(kinds >> 4), value(kinds & 15)) for _ in range(n))
        if kind == 12:
            return struct()
        raise ValueError(f"thrift compact type {kind}")

    def struct():
        nonlocal pos
        fields, last = {}, 0
        while True:
            header = data[pos]
            pos += 1
            if header == 0:
                return fields
            delta, kind = header >> 4, header & 15
            last = last + delta if delta else zigzag()
            fields[last] = value(kind)

    return struct()


def plaintext_footer_signature_ok(raw: bytes, master_keys: dict) -> bool:
    """Checks a plaintext footer's signature over the bytes as written, independently of any
    Parquet library: the FileMetaData is followed by a nonce and an AES-GCM tag made with the
    footer data key (unwrapped from footer_signing_key_metadata, field 9) and the footer AAD,
    aad_prefix || aad_file_unique || 0 (from encryption_algorithm.AES_GCM_V1, field 8)."""
    length = int.from_bytes(raw[-8:-4], "little")
    footer = raw[-8 - length : -8]
    metadata, nonce, tag = footer[:-28], footer[-28:-16], footer[-16:]
    fields = read_compact_struct(metadata)
    gcm = fields[8][1]
    material = json.loads(fields[9])
    assert material["isFooterKey"] is True, material
    data_key = kms_unwrap(master_keys[material["masterKeyID"]], material["masterKeyID"], material["wrappedDEK"])
    aad = gcm.get(1, b"") + gcm[2] + b"\x00"
    return AESGCM(data_key).encrypt(nonce, metadata, aad)[-16:] == tag


# pyarrow before apache/arrow#48859 (GH-48858) checks a plaintext footer's signature over its
# own re-serialization of the footer, which drops what its Thrift code does not know, such as
# the IEEE_754_TOTAL_ORDER column order that arrow-rs writes for float columns; pyarrow 26.0.1
# reads these files.
OLD_PYARROW_SIGNATURE = (
    "pyarrow {version} refuses the plaintext footer's signature, which verifies over the bytes as "
    "written (checked above): parquet-cpp before apache/arrow#48859 re-serializes the footer to "
    "check it and drops the IEEE_754_TOTAL_ORDER column order of float columns; a newer pyarrow "
    "(26.0.1 reads these files) is needed in tests/requirements.txt\n{error}"
)


def leaked_values(raw: bytes, table: pa.Table) -> list:
    """Values of the input found in the bytes of a file: emails, ssns, and amounts as 8-byte
    little-endian doubles (meaningful for files written with compression = "none")."""
    found = [v for v in table["email"].to_pylist() if v is not None and v.encode() in raw]
    found += [v for v in table["ssn"].to_pylist() if v.encode() in raw]
    found += [v for v in table["amount"].to_pylist() if v is not None and np.float64(v).tobytes() in raw]
    return found


def secret_forms(secret: bytes) -> dict:
    """The ways a key might be printed: raw, base64 (std and url-safe, padding off), hex,
    and Rust's `{:?}` of a byte slice."""
    return {
        "raw": secret,
        "base64": base64.b64encode(secret).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "bytes-debug": ", ".join(str(b) for b in secret).encode(),
    }


def find_secrets(blob, secrets: dict, raw_only=False) -> list:
    """Which secrets (name -> bytes) occur in `blob` (str or bytes), and in which form."""
    data = blob.encode() if isinstance(blob, str) else blob
    hits = []
    for name, secret in secrets.items():
        for form, text in secret_forms(secret).items():
            if (not raw_only or form == "raw") and text in data:
                hits.append(f"{name} ({form})")
    return hits


# pyarrow, in a child process, reads `columns` of one file with the master keys it is given
# on stdin (none: no decryption properties) and writes them to a plain file. A child, because
# pyarrow may abort the whole process (C++ terminate) when a key is missing for metadata it
# decrypts lazily; the parent must survive that to report it.
CHILD_READER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import pyarrow as pa, pyarrow.parquet as pq
from test_encryption import decryption_properties
keys = json.loads(sys.stdin.read())
properties = decryption_properties({k: bytes.fromhex(v) for k, v in keys.items()}) if keys is not None else None
reader = pq.ParquetFile(sys.argv[2], decryption_properties=properties)
batches = list(reader.iter_batches(columns=sys.argv[3].split(",")))
pq.write_table(pa.Table.from_batches(batches), sys.argv[4])
"""


def read_in_child(path: Path, columns, master_keys, out: Path):
    """Runs CHILD_READER; returns the completed process (out written on success)."""
    keys = None if master_keys is None else {k: v.hex() for k, v in master_keys.items()}
    return subprocess.run(
        [sys.executable, "-c", CHILD_READER, str(HERE), str(path), ",".join(columns), str(out)],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        timeout=120,
    )


def tamper(path: Path, master_keys: dict, column="email", row_group=1):
    """Flips 8 bytes in the middle of one encrypted column chunk of a pyarrow-written file."""
    meta = pq.ParquetFile(path, decryption_properties=decryption_properties(master_keys)).metadata
    chunk = meta.row_group(row_group).column(meta.schema.names.index(column))
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    middle = start + chunk.total_compressed_size // 2
    raw = bytearray(path.read_bytes())
    for i in range(middle, middle + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------------------
# The test KMS itself


def test_the_test_kms_round_trips_a_file_through_pyarrow(tmp_path):
    """The reference is sound: pyarrow with TestKms writes and reads back an encrypted file,
    its key material unwraps with `kms_unwrap`, a wrong master key is refused, and
    `plaintext_footer_signature_ok` accepts pyarrow's signed footer and refuses a changed one."""
    table = make_table(300)
    keys = new_keys("footer", "pii")
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, encryption_properties=encryption_properties(keys, plaintext_footer=True, double_wrapping=False))
    assert read_encrypted([path], keys).equals(table)
    materials = key_materials(path.read_bytes())
    assert {m["masterKeyID"] for m in materials} == {"footer", "pii"}
    for m in materials:
        assert len(kms_unwrap(keys[m["masterKeyID"]], m["masterKeyID"], m["wrappedDEK"])) == 16
    child = read_in_child(path, ["email"], {**keys, "pii": os.urandom(16)}, tmp_path / "x.parquet")
    assert child.returncode != 0 and not (tmp_path / "x.parquet").exists()
    raw = path.read_bytes()
    assert plaintext_footer_signature_ok(raw, keys)
    nonce_at = len(raw) - 8 - 28
    changed = raw[:nonce_at] + bytes([raw[nonce_at] ^ 1]) + raw[nonce_at + 1 :]
    assert not plaintext_footer_signature_ok(changed, keys)


# ---------------------------------------------------------------------------------------
# Weir writes


@pytest.mark.parametrize("plaintext_footer", [False, True], ids=["encrypted-footer", "plaintext-footer"])
def test_weir_writes_and_pyarrow_decrypts(weir, tmp_path, plaintext_footer):
    """Weir's encrypted part files (kms mode) decrypt with pyarrow and the test KMS to exactly
    the input's rows; a reader with only the footer master key reads id and amount but not
    email; without keys the file is unreadable (encrypted footer) or only its schema is
    (plaintext footer, whose signature is also checked here over the bytes as written); no
    input value is in the bytes; the key metadata is PKMT1 material (internal, single
    wrapping) whose data keys unwrap with Weir's KMS scheme and are fresh per file and per
    key; the manifest names the keys by id only."""
    table = make_table()
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii")
    out = tmp_path / "out"
    text = job_toml("enc-write", src, out, sink={"compression": "none"}, encryption={"plaintext_footer": plaintext_footer})
    run_job(weir, tmp_path, "write", text, weir_env(keys), check=0)
    assert (out / "_SUCCESS").exists()
    assert_the_encryption_is_recorded(out, plaintext_footer, "kms")
    files = part_files(out)
    assert files

    data_keys = {}  # (file, master key id) -> the data keys found
    for path in files:
        raw = path.read_bytes()
        assert raw[-4:] == (b"PAR1" if plaintext_footer else b"PARE"), path
        assert leaked_values(raw, table) == [], f"{path.name} holds plaintext values"
        assert not find_secrets(raw, keys, raw_only=True), "no master key in a part file"
        materials = key_materials(raw)
        footer_materials = [m for m in materials if m.get("isFooterKey")]
        assert len(footer_materials) == 1 and footer_materials[0]["masterKeyID"] == "footer", materials
        if plaintext_footer:  # the columns' key material is in the plaintext footer too
            assert {m["masterKeyID"] for m in materials} == {"footer", "pii"}, materials
            assert plaintext_footer_signature_ok(raw, keys), f"{path.name}: the footer's signature"
        for m in materials:
            assert m["keyMaterialType"] == "PKMT1" and m["internalStorage"] is True, m
            assert m["doubleWrapping"] is False and m["masterKeyID"] in keys, m
            data_key = kms_unwrap(keys[m["masterKeyID"]], m["masterKeyID"], m["wrappedDEK"])
            assert len(data_key) == 16, m
            data_keys.setdefault((path.name, m["masterKeyID"]), set()).add(data_key)

        # No keys at all.
        if plaintext_footer:
            assert pq.read_schema(path).names == COLUMNS
            child = read_in_child(path, ["id"], None, tmp_path / "plain-id.parquet")
            assert child.returncode != 0, "id is encrypted under the footer key"
        else:
            with pytest.raises(OSError):
                pq.ParquetFile(path)
    groups = list(data_keys.values())
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            assert not a & b, "a data key is reused across files or keys"

    try:
        got = read_encrypted(files, keys)
    except pa.ArrowInvalid as error:
        if not (plaintext_footer and "signature verification failed" in str(error)):
            raise
        pytest.fail(OLD_PYARROW_SIGNATURE.format(version=pa.__version__, error=error))
    assert got.sort_by("id").equals(table), "pyarrow decrypts Weir's output to the input"

    # Only the footer master key: id and amount (under the footer key) read, email does not.
    footer_only = {"footer": keys["footer"]}
    for path in files:
        part = pq.ParquetFile(path, decryption_properties=decryption_properties(keys)).read()
        child = read_in_child(path, ["id", "amount"], footer_only, tmp_path / "ids.parquet")
        assert child.returncode == 0, child.stderr
        assert pq.read_table(tmp_path / "ids.parquet").equals(part.select(["id", "amount"]))
        child = read_in_child(path, ["email"], footer_only, tmp_path / "emails.parquet")
        assert child.returncode != 0 and not (tmp_path / "emails.parquet").exists(), "email needs the pii key"


def test_direct_mode_round_trips_through_weir(weir, tmp_path):
    """keys = "direct": the key ids name data keys used as they are. Weir writes encrypted
    files (no KMS key material in them, unreadable without keys), reads them back with
    [source.decryption] to exactly the input's rows, and refuses a wrong data key (exit 2,
    naming pii and the file) without committing."""
    table = make_table()
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii")
    enc = tmp_path / "enc"
    text = job_toml("direct-write", src, enc, sink={"compression": "none"}, encryption={"keys": "direct"})
    run_job(weir, tmp_path, "write", text, weir_env(keys), check=0)
    assert_the_encryption_is_recorded(enc, False, "direct")
    files = part_files(enc)
    for path in files:
        raw = path.read_bytes()
        assert raw[-4:] == b"PARE"
        assert key_materials(raw) == [], "direct mode writes key ids, not KMS key material"
        assert leaked_values(raw, table) == []
        assert not find_secrets(raw, keys, raw_only=True)
        with pytest.raises(OSError):
            pq.ParquetFile(path)

    back = tmp_path / "back"
    text = job_toml("direct-read", enc, back, decryption={})
    run_job(weir, tmp_path, "read", text, weir_env(keys), check=0)
    assert read_output(back).sort_by("id").equals(table)

    wrong = tmp_path / "wrong"
    text = job_toml("direct-wrong", enc, wrong, decryption={})
    proc = run_job(weir, tmp_path, "wrong", text, weir_env({**keys, "pii": os.urandom(16)}), check=2)
    assert "pii" in proc.stderr and any(f.name in proc.stderr for f in files), proc.stderr
    assert_nothing_committed(wrong, proc)


@pytest.mark.parametrize("plaintext_footer", [False, True], ids=["encrypted-footer", "plaintext-footer"])
@pytest.mark.parametrize("double_wrapping", [False, True], ids=["single-wrapping", "double-wrapping"])
def test_weir_reads_what_pyarrow_encrypted(weir, tmp_path, double_wrapping, plaintext_footer):
    """Files pyarrow encrypted with its KMS framework (footer key + pii column key, single or
    double wrapping, either footer mode) are read by Weir with [source.decryption] and the
    master keys in its environment; `amount > 0` gives exactly pyarrow's filtered rows,
    written unencrypted."""
    table = make_table()
    keys = new_keys("footer", "pii")
    src = tmp_path / "src"
    write_source(table, src, encryption=lambda: encryption_properties(keys, plaintext_footer=plaintext_footer, double_wrapping=double_wrapping))
    assert read_encrypted(sorted(src.iterdir()), keys).equals(table)
    out = tmp_path / "out"
    run_job(weir, tmp_path, "read", job_toml("pyarrow-in", src, out, steps=POSITIVE, decryption={}), weir_env(keys), check=0)
    expected = table.filter(pc.greater(table["amount"], 0)).sort_by("id")
    got = read_output(out).sort_by("id")
    assert got.num_rows == expected.num_rows > 0
    assert got.equals(expected)
    assert not manifest(out).get("encryption"), "an output without [sink.encryption] is plain"
    for path in part_files(out):
        assert path.read_bytes()[-4:] == b"PAR1"


def test_a_decrypted_source_is_never_spilled_to_local_disk(weir, tmp_path):
    """A job that reads an encrypted source twice (a fitted step) with no in-memory cache
    decodes it from the store in both passes: its plaintext never goes to local spill files
    (no spill directory is made), and the fit is still right (pandas' mean and std)."""
    table = make_table()
    keys = new_keys("footer", "pii")
    src = tmp_path / "src"
    write_source(table, src, encryption=lambda: encryption_properties(keys))
    spill = tmp_path / "spill"
    out = tmp_path / "out"
    text = (
        'name = "no-spill"\n'
        + toml_table("source", {"uri": str(src), "cache_mb": 0, "spill_dir": str(spill)})
        + toml_table("source.decryption", {})
        + '[[step]]\nop = "standardize"\ncolumns = ["amount"]\n'
        + toml_table("sink", {"uri": str(out)})
    )
    proc = run_job(weir, tmp_path, "no-spill", text, weir_env(keys), "--json", check=0)
    labels = {s["stage"]: s for s in json.loads(proc.stdout)["stages"]}
    assert "read (from local spill files)" not in labels and "read (from the cache)" not in labels, list(labels)
    assert not spill.exists(), "a spill directory was made for a decrypted source"
    amount = table.column("amount").to_pandas()
    got = read_output(out).sort_by("id").column("amount").to_pandas()
    expected = ((amount - amount.mean()) / amount.std(ddof=0)).to_numpy()
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-9, atol=1e-12)


def test_keys_from_a_key_dir_and_the_environment_wins(weir, tmp_path):
    """Keys come from WEIR_KEY_DIR/<id> when no WEIR_KEY_<ID> is set; a key id with a dot
    ("pii.v1") is read from WEIR_KEY_PII_V1; the variable wins over the folder's file
    (pyarrow decrypts with the variable's key, not the file's)."""
    table = make_table(600)
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii.v1")
    column_keys = {"pii.v1": PII}
    encryption = {"column_keys": column_keys}

    folder = tmp_path / "keys"
    folder.mkdir()
    for key_id, key in keys.items():
        (folder / key_id).write_text(b64(key))
    out = tmp_path / "from-dir"
    run_job(weir, tmp_path, "dir", job_toml("key-dir", src, out, encryption=encryption), weir_env(WEIR_KEY_DIR=str(folder)), check=0)
    assert_the_encryption_is_recorded(out, False, "kms", column_keys)
    assert read_encrypted(part_files(out), keys).sort_by("id").equals(table)

    stale = tmp_path / "stale-keys"
    stale.mkdir()
    (stale / "footer").write_text(b64(keys["footer"]))
    (stale / "pii.v1").write_text(b64(os.urandom(16)))
    out = tmp_path / "env-wins"
    env = weir_env(WEIR_KEY_DIR=str(stale), WEIR_KEY_PII_V1=b64(keys["pii.v1"]))
    assert env_name("pii.v1") == "WEIR_KEY_PII_V1"
    run_job(weir, tmp_path, "env", job_toml("env-wins", src, out, encryption=encryption), env, check=0)
    assert read_encrypted(part_files(out), keys).sort_by("id").equals(table)


@pytest.mark.parametrize("size", [16, 24, 32], ids=["aes128", "aes192", "aes256"])
def test_master_keys_of_16_or_32_bytes(weir, tmp_path, size):
    """Master keys of 16 and 32 bytes (AES-128, AES-256: what Parquet's AES-GCM readers
    support) wrap the data keys, which stay 16 bytes, and pyarrow decrypts the output to the
    input's rows; a 24-byte key is refused (exit 2, naming the key and its variable),
    and nothing is committed."""
    table = make_table(500)
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii", size=size)
    out = tmp_path / "out"
    text = job_toml("key-length", src, out, encryption={})
    if size == 24:
        proc = run_job(weir, tmp_path, "write", text, weir_env(keys), check=2)
        assert "footer" in proc.stderr and "WEIR_KEY_FOOTER" in proc.stderr and "24" in proc.stderr, proc.stderr
        assert_nothing_committed(out, proc)
        return
    run_job(weir, tmp_path, "write", text, weir_env(keys), check=0)
    files = part_files(out)
    for path in files:
        (material,) = key_materials(path.read_bytes())
        assert len(kms_unwrap(keys["footer"], "footer", material["wrappedDEK"])) == 16
    assert read_encrypted(files, keys).sort_by("id").equals(table)


# ---------------------------------------------------------------------------------------
# Bad input


NEGATIVE_CASES = [
    "wrong-master-key",
    "missing-key-read",
    "missing-key-write",
    "short-key-write",
    "not-base64-write",
    "tampered-input",
    "no-source-decryption",
]


@pytest.mark.parametrize("case", NEGATIVE_CASES)
def test_bad_keys_and_bad_inputs_exit_2_and_commit_nothing(weir, tmp_path, case):
    """Each of these is bad input: exit 2, a message that names the key id (and the file
    where one is read), never a panic, and nothing committed (no _SUCCESS, no part file).
    - wrong-master-key: WEIR_KEY_PII holds another key than pyarrow wrapped pii's data key with;
    - missing-key-read / -write: no WEIR_KEY_PII (the message says WEIR_KEY_);
    - short-key-write / not-base64-write: WEIR_KEY_PII is not base64 of 16 or 32 bytes;
    - tampered-input: 8 bytes flipped in an encrypted column chunk (pyarrow refuses it too);
    - no-source-decryption: encrypted input and correct keys, but no [source.decryption]."""
    table = make_table(1_000)
    keys = new_keys("footer", "pii")
    src = tmp_path / "src"
    out = tmp_path / "out"
    reads = case in ("wrong-master-key", "missing-key-read", "tampered-input", "no-source-decryption")
    if reads:
        files = write_source(table, src, encryption=lambda: encryption_properties(keys, double_wrapping=False))
        text = job_toml("bad-read", src, out, decryption=None if case == "no-source-decryption" else {})
    else:
        write_source(table, src)
        text = job_toml("bad-write", src, out, encryption={})

    env = weir_env(keys)
    if case == "wrong-master-key":
        env = weir_env({**keys, "pii": os.urandom(16)})
    elif case in ("missing-key-read", "missing-key-write"):
        env = weir_env({"footer": keys["footer"]})
    elif case == "short-key-write":
        env = weir_env(keys, WEIR_KEY_PII=b64(os.urandom(10)))
    elif case == "not-base64-write":
        env = weir_env(keys, WEIR_KEY_PII="not base64 at all!")
    elif case == "tampered-input":
        tamper(files[1], keys)
        with pytest.raises(OSError):
            pq.ParquetFile(files[1], decryption_properties=decryption_properties(keys)).read()

    proc = run_job(weir, tmp_path, case, text, env, check=2)
    err = proc.stderr
    if case == "wrong-master-key":
        assert "pii" in err and any(f.name in err for f in files), err
    elif case == "missing-key-read":
        assert "pii" in err and "WEIR_KEY_" in err, err
        assert any(f.name in err for f in files) or "email" in err or "ssn" in err, err
    elif case == "missing-key-write":
        assert "pii" in err and "WEIR_KEY_" in err, err
    elif case in ("short-key-write", "not-base64-write"):
        assert "pii" in err or "WEIR_KEY_PII" in err, err
    elif case == "tampered-input":
        assert files[1].name in err, err
    elif case == "no-source-decryption":
        assert "encrypted" in err.lower() and "source.decryption" in err, err
    assert_nothing_committed(out, proc)


# ---------------------------------------------------------------------------------------
# Secrets


def test_no_key_reaches_logs_outputs_or_part_files(weir, tmp_path):
    """With RUST_LOG=debug, --json and --metrics, a successful encrypted run (with a fitted
    step, so fitted.parquet exists), `weir head` on its output, and two failed runs (a wrong
    master key while reading, a malformed key while writing) print no master key, no wrong
    or malformed key and no data key of the part files, in any common encoding, on stdout,
    stderr, in the manifest, fitted.json or the result file; part files hold none of them raw."""
    table = make_table()
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii")
    out = tmp_path / "out"
    steps = SELECT + '[[step]]\nop = "standardize"\ncolumns = ["amount"]\n'
    text = job_toml("secrets", src, out, steps=steps, sink={"compression": "none"}, encryption={"plaintext_footer": True})
    result = tmp_path / "result.json"
    env = weir_env(keys, RUST_LOG="debug")
    proc = run_job(weir, tmp_path, "secrets", text, env, "--json", "--metrics", "--result-file", result, check=0)
    texts = {"run stdout": proc.stdout, "run stderr": proc.stderr}
    for path in sorted((out / "_weir").rglob("*")):
        if path.is_file():
            texts[str(path.relative_to(out))] = path.read_bytes()
    assert "_weir/manifest.json" in texts and "_weir/fitted.parquet" in texts, sorted(texts)
    if result.exists():
        texts["result file"] = result.read_bytes()
    head = weir("head", out, "-n", "5", env=env, check=0)
    texts["head stdout"], texts["head stderr"] = head.stdout, head.stderr

    secrets = {f"master key {k}": v for k, v in keys.items()}
    files = part_files(out)
    for path in files:
        materials = key_materials(path.read_bytes())
        assert {m["masterKeyID"] for m in materials} == {"footer", "pii"}, "a plaintext footer shows every key's material"
        for i, m in enumerate(materials):
            secrets[f"data key {i} ({m['masterKeyID']}) of {path.name}"] = kms_unwrap(keys[m["masterKeyID"]], m["masterKeyID"], m["wrappedDEK"])

    # Failed runs: a wrong master key for pii while reading pyarrow's files, a short key while writing.
    enc_src = tmp_path / "enc-src"
    write_source(table, enc_src, encryption=lambda: encryption_properties(keys))
    wrong = os.urandom(16)
    secrets["wrong pii key"] = wrong
    failed = run_job(weir, tmp_path, "wrong", job_toml("wrong", enc_src, tmp_path / "wrong-out", decryption={}), weir_env({**keys, "pii": wrong}, RUST_LOG="debug"), check=2)
    texts["wrong-key stdout"], texts["wrong-key stderr"] = failed.stdout, failed.stderr
    short = os.urandom(10)
    secrets["malformed pii key"] = short
    failed = run_job(weir, tmp_path, "short", text.replace(str(out), str(tmp_path / "short-out")), weir_env(keys, WEIR_KEY_PII=b64(short), RUST_LOG="debug"), check=2)
    texts["short-key stdout"], texts["short-key stderr"] = failed.stdout, failed.stderr

    for name, blob in texts.items():
        assert find_secrets(blob, secrets) == [], f"{name} shows a key"
    for path in files:
        assert find_secrets(path.read_bytes(), secrets, raw_only=True) == [], f"{path.name} holds a key in clear"


def test_an_encrypted_outputs_fitted_parameters_are_encrypted_and_reused_with_the_keys(weir, tmp_path):
    """The statistics of an encrypted output's fitted steps are values of its columns: they
    are kept in `_weir/fitted.parquet`, encrypted as the part files are, never as plaintext
    `fitted.json`. pyarrow decrypts them to the mean and standard deviation NumPy computes;
    a later run reuses them with `fitted = OUTPUT` when it has the keys, and without them is
    refused naming the keys; `weir fit -o` refuses to write them in the clear."""
    table = make_table()
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii")
    out = tmp_path / "out"
    steps = SELECT + '[[step]]\nop = "standardize"\ncolumns = ["amount"]\n'
    text = job_toml("fitted-enc", src, out, steps=steps, encryption={})
    run_job(weir, tmp_path, "fitted-enc", text, weir_env(keys), check=0)
    assert not (out / "_weir" / "fitted.json").exists()
    fitted_file = out / "_weir" / "fitted.parquet"
    raw = fitted_file.read_bytes()
    amount = table.column("amount").to_numpy(zero_copy_only=False).astype(float)
    mean, std = np.nanmean(amount), np.nanstd(amount)
    assert raw[-4:] == b"PARE" and repr(mean).encode()[:8] not in raw and b"standardize" not in raw
    with pytest.raises(OSError):
        pq.read_table(fitted_file)
    decrypted = pq.ParquetFile(fitted_file, decryption_properties=decryption_properties(keys)).read()
    params = json.loads(decrypted.column("fitted_json")[0].as_py())
    (step,) = params["steps"]
    assert step["op"] == "standardize" and step["columns"] == ["amount"]
    column = step["params"]["columns"]["amount"]
    assert column["mean"] == pytest.approx(mean, rel=1e-12) and column["scale"] == pytest.approx(std, rel=1e-12)
    # Nothing staged is left behind, and no commit decision kept the parameters.
    assert not list((out / "_weir").glob("runs/*/*"))

    reuse = job_toml("fitted-enc-reuse", src, tmp_path / "again", steps=steps, encryption={}).replace(
        'name = "fitted-enc-reuse"\n', f'name = "fitted-enc-reuse"\nfitted = "{out}"\n'
    )
    run_job(weir, tmp_path, "reuse", reuse, weir_env(keys), check=0)
    assert read_encrypted(part_files(tmp_path / "again"), keys).sort_by("id").equals(read_encrypted(part_files(out), keys).sort_by("id"))
    # A plain output reusing them still needs the keys to read them.
    plain = job_toml("fitted-plain", src, tmp_path / "third", steps=steps).replace('name = "fitted-plain"\n', f'name = "fitted-plain"\nfitted = "{out}"\n')
    refused = run_job(weir, tmp_path, "reuse-nokeys", plain, weir_env({}), check=2)
    assert "fitted" in refused.stderr and "keys of the output's encryption" in refused.stderr, refused.stderr
    assert not (tmp_path / "third").exists()
    fit = weir("fit", write_job(tmp_path / "fit.toml", text), "-o", tmp_path / "fitted.json", env=weir_env(keys), check=2)
    assert "in the clear" in fit.stderr and not (tmp_path / "fitted.json").exists(), fit.stderr


def test_a_run_killed_after_its_decision_leaves_no_plaintext_parameters_and_the_next_run_completes(weir, tmp_path):
    """SIGKILL while the leader is held (failpoint) right after writing its commit decision,
    with the encrypted fitted parameters staged: the decision holds no parameter, nothing
    is committed, and the next run completes the decided commit and its own, leaving one
    decryptable `fitted.parquet` and nothing staged."""
    table = make_table()
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii")
    out = tmp_path / "out"
    steps = SELECT + '[[step]]\nop = "standardize"\ncolumns = ["amount"]\n'
    text = job_toml("killed", src, out, steps=steps, sink={"lease_ttl_s": 2, "mode": "overwrite"}, encryption={})
    job = write_job(tmp_path / "killed.toml", text)
    env = weir_env(keys, FAILPOINTS="commit-decided=sleep(5000)")
    run = subprocess.Popen([str(WEIR_BIN), "run", str(job), "-w", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        decisions = []
        while run.poll() is None and not decisions:
            decisions = list((out / "_weir" / "runs").glob("*/commit.json")) if (out / "_weir" / "runs").exists() else []
        assert decisions and run.poll() is None, "the run ended before its decision was seen"
        run.kill()
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    decision = json.loads(decisions[0].read_text())
    assert decision["fitted"] is None and decision["fitted_staged"].endswith("fitted.parquet.staged"), decision
    amount = table.column("amount").to_numpy(zero_copy_only=False).astype(float)
    assert repr(np.nanmean(amount))[:8] not in decisions[0].read_text()
    assert not (out / "_SUCCESS").exists() and not (out / "_weir" / "fitted.json").exists()

    after = run_retrying(weir, "run", job, "-w", "2", env=weir_env(keys))
    assert after.returncode == 0, after.stderr
    assert manifest(out)["run_id"] != decision["manifest"]["run_id"]
    assert not list((out / "_weir").glob("runs/*/*")) and not (out / "_weir" / "fitted.json").exists()
    decrypted = pq.ParquetFile(out / "_weir" / "fitted.parquet", decryption_properties=decryption_properties(keys)).read()
    (step,) = json.loads(decrypted.column("fitted_json")[0].as_py())["steps"]
    assert step["params"]["columns"]["amount"]["mean"] == pytest.approx(np.nanmean(amount), rel=1e-12)


# ---------------------------------------------------------------------------------------
# S3 and the CLI readers


def test_encrypted_round_trip_through_garage(weir, tmp_path, garage):
    """Weir writes encrypted part files to s3:// (Garage); the objects, fetched with boto3,
    decrypt with pyarrow and the test KMS to the input's rows; Weir reads them back from
    the bucket with [source.decryption]; the manifest holds no key."""
    table = make_table()
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii")
    bucket = garage.new_bucket("enc")
    env = weir_env(keys, base=garage.env())
    sink = f"s3://{bucket}/enc/"
    proc = run_job(weir, tmp_path, "s3-write", job_toml("s3-enc", src, sink, encryption={}), env, check=0)
    listed = garage.keys(bucket, "enc/")
    assert "enc/_SUCCESS" in listed, listed
    client = garage.client()
    manifest_bytes = client.get_object(Bucket=bucket, Key="enc/_weir/manifest.json")["Body"].read()
    recorded = json.loads(manifest_bytes)
    assert recorded["encryption"]["footer_key"] == "footer" and recorded["encryption"]["keys"] == "kms"
    bodies = [client.get_object(Bucket=bucket, Key=f"enc/{f['path']}")["Body"].read() for f in recorded["files"]]
    assert bodies and all(body[-4:] == b"PARE" for body in bodies)
    assert read_encrypted(bodies, keys).sort_by("id").equals(table)
    for body in bodies:
        with pytest.raises(OSError):
            pq.ParquetFile(io.BytesIO(body))
    assert find_secrets(manifest_bytes, keys) == [] and find_secrets(proc.stdout + proc.stderr, keys) == []

    back = tmp_path / "back"
    run_job(weir, tmp_path, "s3-read", job_toml("s3-back", sink, back, decryption={}), env, check=0)
    assert read_output(back).sort_by("id").equals(table)


def test_head_and_schema_read_encrypted_outputs_with_keys_only(weir, tmp_path):
    """`weir head` and `weir schema` print an encrypted output's rows and schema when the
    keys are in the environment; without them they fail, saying the file is encrypted, and
    print no value."""
    table = make_table()
    src = tmp_path / "src"
    write_source(table, src)
    keys = new_keys("footer", "pii")
    out = tmp_path / "out"
    run_job(weir, tmp_path, "write", job_toml("head-enc", src, out, encryption={}), weir_env(keys), check=0)
    emails = set(v for v in table["email"].to_pylist() if v is not None)

    head = weir("head", out, "-n", "5", env=weir_env(keys), check=0)
    assert "email" in head.stdout and "ssn" in head.stdout and "amount" in head.stdout, head.stdout
    shown = EMAIL.findall(head.stdout)
    assert shown and set(shown) <= emails, head.stdout
    schema = weir("schema", out, env=weir_env(keys), check=0)
    for line in ("id: Int64", "email: Utf8", "ssn: Utf8", "amount: Float64"):
        assert line in schema.stdout, schema.stdout

    for command in (["head", out, "-n", "5"], ["schema", out]):
        proc = weir(*command, env=weir_env())
        assert proc.returncode != 0, proc.stdout
        assert "encrypted" in (proc.stdout + proc.stderr).lower(), proc.stderr
        assert "panicked" not in proc.stderr, proc.stderr
        assert not EMAIL.search(proc.stdout + proc.stderr)


def test_a_token_uses_only_the_keys_it_is_granted(tmp_path):
    """The service holds team B's keys (footer, pii) and team A's (teama). A token granted
    only teama cannot decrypt team B's encrypted input (its check cannot look the keys up)
    nor encrypt with team B's keys (403 naming the key), and writes with its own key a file
    that pyarrow decrypts with it."""
    from helpers import Service, expect, expect_error, submit, wait_run

    root = tmp_path.resolve()
    theirs = new_keys("footer", "pii")
    ours = new_keys("teama")
    table = make_table(400)
    write_source(table, root / "b-secret", encryption=lambda: encryption_properties(theirs))
    write_source(table, root / "plain")
    service = Service(root, [], env=weir_env({**theirs, **ours})).start()
    try:
        token = expect(service.admin.post("/v1/tokens", json={"name": "a", "role": "submit", "keys": ["teama"], "inline": True}), 201)
        assert token["keys"] == ["teama"]
        team_a = service.api(token["token"])

        steal = job_toml("steal", root / "b-secret", root / "stolen", decryption={})
        message = expect_error(team_a.post("/v1/runs", json={"definition": steal}), 422)
        assert "not granted" in message, message
        assert not (root / "stolen").exists()
        for key in theirs.values():
            assert b64(key) not in message

        borrow = job_toml("borrow", root / "plain", root / "borrowed", encryption={})
        message = expect_error(team_a.post("/v1/runs", json={"definition": borrow}), 403)
        assert "key 'footer'" in message and "may not use" in message, message

        own = job_toml("own", root / "plain", root / "own").replace("[sink]", "[sink]") + toml_table(
            "sink.encryption", {"footer_key": "teama", "column_keys": {"teama": PII}}
        )
        run = submit(team_a, {"definition": own})
        assert run["allowed_keys"] == ["teama"]
        assert wait_run(service.admin, run["id"])["state"] == "succeeded"
        got = read_encrypted(part_files(root / "own"), ours).sort_by("id")
        assert got.equals(table.select(COLUMNS).sort_by("id"))
        # The admin's own runs still reach every key the service holds.
        assert wait_run(service.admin, submit(service.admin, {"definition": steal})["id"])["state"] == "succeeded"
    finally:
        service.close()
