"""The errors of weir_client: every one is a `WeirError`."""

from __future__ import annotations

from collections.abc import Sequence


class WeirError(Exception):
    """Every error of weir_client: a read that cannot return a committed snapshot, or a
    call to the job service that fails."""


class NotCommitted(WeirError):
    """The output is not committed: its manifest, its `_SUCCESS` or a file the manifest
    lists is missing. `missing` names what is missing, relative to the output's prefix."""

    def __init__(self, uri: str, missing: Sequence[str], detail: str = "") -> None:
        self.uri = uri
        self.missing: tuple[str, ...] = tuple(missing)
        shown = ", ".join(self.missing[:5])
        if len(self.missing) > 5:
            shown += f" and {len(self.missing) - 5} more"
        message = f"output '{uri}' is not committed: {shown} missing"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class GenerationUnavailable(WeirError):
    """The generation asked for cannot be read: Weir keeps only the manifest of the latest
    commit, so only that generation (`available`) is readable."""

    def __init__(self, uri: str, requested: int, committed: int) -> None:
        self.uri = uri
        self.requested = requested
        self.available: tuple[int, ...] = (committed,)
        if requested > committed:
            why = f"it is not committed yet (the committed generation is {committed})"
        else:
            why = (
                f"Weir keeps only the latest commit's manifest, so only generation {committed} is "
                f"readable (generation {requested} was replaced)"
            )
        super().__init__(f"output '{uri}': generation {requested} cannot be read: {why}")


class EncryptionNotSupported(WeirError):
    """The output is encrypted with `keys = "direct"` (the key ids name the data keys
    themselves), which pyarrow's Python API cannot decrypt. (`keys = "kms"`, the default,
    is decrypted.)"""

    def __init__(self, uri: str, footer_key: str | None, mode: object) -> None:
        self.uri = uri
        key = f" under key id '{footer_key}'" if footer_key else ""
        super().__init__(
            f"output '{uri}' is encrypted{key} with keys = {mode!r}: weir_client decrypts only "
            "keys = 'kms' outputs (pyarrow takes no explicit data keys); read it with Weir "
            "(`weir head`, or a job whose source has [source.decryption])"
        )


class KeyUnavailable(WeirError):
    """A key an encrypted output needs is not in the environment (`WEIR_KEY_<ID>`,
    `WEIR_KEY_DIR`), is malformed, or is the wrong one. `key_id` names it; the message says
    where it was looked for, never a key."""

    def __init__(self, uri: str, key_id: str, why: str) -> None:
        self.uri = uri
        self.key_id = key_id
        super().__init__(f"output '{uri}' is encrypted: key '{key_id}' {why}")


class OutputChanged(WeirError):
    """New commits kept replacing the output while it was read, more times than the
    client retries."""

    def __init__(self, uri: str, attempts: int, last: str) -> None:
        self.uri = uri
        self.attempts = attempts
        super().__init__(
            f"output '{uri}' changed under every one of {attempts} attempts to read a committed "
            f"snapshot (last: {last})"
        )
