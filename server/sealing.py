"""Credentials a task carries (an `s3` task_store's keys, an `s3_signed` URL's signature) are
kept in the store only encrypted, with AES-256-GCM under a key file of the data dir.

A copy of the database alone (a backup, a support dump) then reveals no credential: it takes the
key file too. The key is made on first use, readable by the server's user only.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "sealed-v1:"
_CONTEXT = b"taskstream task credentials"


class SealError(Exception):
    """A sealed value cannot be opened (another data dir's key, or a damaged value)."""


class Sealer:
    """Seals and opens small JSON values with the data dir's key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> Sealer:
        """The sealer of the key at `path`, creating the key if there is none (blocking I/O:
        call it at start-up)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Written aside, then linked into place: of two servers starting on one data dir,
            # one key wins whole and both read it.
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(AESGCM.generate_key(bit_length=256))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        key = path.read_bytes()
        if len(key) != 32:
            raise SealError(f"{path} is not a 32-byte key")
        return cls(key)

    def seal(self, value: Any) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, orjson.dumps(value), _CONTEXT)
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str) -> Any:
        if not isinstance(token, str) or not token.startswith(_PREFIX):
            raise SealError("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(token[len(_PREFIX) :])
            return orjson.loads(self._aead.decrypt(raw[:12], raw[12:], _CONTEXT))
        except (InvalidTag, ValueError) as e:
            raise SealError(
                "the task's credentials cannot be decrypted (was the data dir's storage.key "
                "replaced?)"
            ) from e
