"""Encryption at rest (SPEC 8): an AEAD under a versioned data key.

Sealed values look like ``MAGIC | key id (1 byte) | nonce (12 bytes) | AES-256-GCM
ciphertext and tag``. The associated data binds a value to where it is stored
(its LMDB key), so a sealed value copied under another key does not open.

The keys live in ``DATA/data.keys`` (JSON, mode 0600), or in the file named by
``$IDLINK_DATA_KEYS_FILE``: every version ever made (old ones stay readable),
which one is current, and a separate index key for the keyed hashes that stand
in for values inside LMDB keys (it never rotates, or lookups would break).

Several processes share the file: a process notices a new current version
within :data:`RELOAD_SECONDS` (and at once when it meets an unknown key id), so
``idlink rotate-key`` can add a version while servers run.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from idlink._native import _bulk
from idlink.errors import StoreError
from idlink.security.secrets import write_private
from idlink.store.env import Store, secure_folder

if TYPE_CHECKING:
    from idlink.store.txn import Txn

KEY_FILE = "data.keys"
ENV_VAR = "IDLINK_DATA_KEYS_FILE"
MAGIC = b"\xa7"
NONCE_BYTES = 12
KEY_BYTES = 32
HEADER_BYTES = 1 + 1 + NONCE_BYTES
RELOAD_SECONDS = 0.5
MAX_VERSIONS = 255


def key_file_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the data keys of a data folder live."""
    configured = os.environ.get(ENV_VAR)
    return Path(configured) if configured else Path(data_dir) / KEY_FILE


def open_store(path: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store in folder ``path`` with the folder's own data keys (created on first use).

    The store seals with the cipher it is given and never picks one itself, so
    this is how everything that opens a data folder opens it (options as for
    :class:`~idlink.store.env.Store`).
    """
    secure_folder(os.fspath(path))
    try:
        cipher = Cipher.for_data_dir(path)
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the data keys: {exc}") from None
    return Store(path, cipher=cipher, **options)


def _new_file() -> dict[str, Any]:
    return {
        "index_key": secrets.token_hex(KEY_BYTES),
        "current": 1,
        "keys": {"1": secrets.token_hex(KEY_BYTES)},
        "retired": [],
    }


def load_key_file(path: Path) -> dict[str, Any]:
    """The key file's content, created on first use."""
    if not path.exists():
        write_private(path, json.dumps(_new_file()).encode(), replace=False, prefix=".keys.")
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def add_key_version(path: Path) -> int:
    """Add a new data key version and make it current; its number."""
    with _locked(path):
        data = load_key_file(path)
        version = max(int(v) for v in data["keys"]) + 1
        if version > MAX_VERSIONS:
            raise ValueError(f"{path} already holds {MAX_VERSIONS} key versions")
        data["keys"][str(version)] = secrets.token_hex(KEY_BYTES)
        data["current"] = version
        write_private(path, json.dumps(data).encode(), replace=True, prefix=".keys.")
    return version


def retire_versions(path: Path, versions: list[int]) -> None:
    """Mark versions as retired: nothing is sealed under them any more (kept to open stragglers)."""
    with _locked(path):
        data = load_key_file(path)
        data["retired"] = sorted(set(data.get("retired", [])) | set(versions))
        write_private(path, json.dumps(data).encode(), replace=True, prefix=".keys.")


class Cipher:
    """Seals and opens stored values under the data keys of one key file. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._aeads: dict[int, AESGCM] = {}
        self.current = 0
        self._index_key = b""
        self._record_key = b""
        self.reload()

    @classmethod
    def for_data_dir(cls, data_dir: str | os.PathLike[str]) -> Cipher:
        return cls(key_file_path(data_dir))

    def reload(self) -> None:
        """Read the key file again."""
        with self._lock:
            data = load_key_file(self.path)
            stat = self.path.stat()
            self._stamp = (stat.st_mtime_ns, stat.st_ino)
            self._aeads = {int(v): AESGCM(bytes.fromhex(k)) for v, k in data["keys"].items()}
            self.current = int(data["current"])
            self._index_key = bytes.fromhex(data["index_key"])
            self._record_key = hmac.new(
                self._index_key, b"idlink record hash key", hashlib.sha256
            ).digest()
            self._checked = time.monotonic()

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_SECONDS:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except OSError:
            return
        if (stat.st_mtime_ns, stat.st_ino) != self._stamp:
            self.reload()

    # -- values ----------------------------------------------------------------------

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt under the current key version."""
        self._maybe_reload()
        version = self.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[version].encrypt(nonce, plaintext, aad)
        return MAGIC + bytes((version,)) + nonce + sealed

    def seal_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Seal many ``(plaintext, aad)`` pairs as :meth:`seal` seals each one.

        One check of the key file for the whole batch (every value is under the
        same current version) and the nonces cut from one ``os.urandom`` read.
        """
        self._maybe_reload()
        version = self.current
        encrypt = self._aeads[version].encrypt
        head = MAGIC + bytes((version,))
        randomness = os.urandom(NONCE_BYTES * len(items))
        out: list[bytes] = []
        append = out.append
        at = 0
        for plaintext, aad in items:
            nonce = randomness[at : at + NONCE_BYTES]
            at += NONCE_BYTES
            append(head + nonce + encrypt(nonce, plaintext, aad))
        return out

    def seal_rows(self, rows: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``(key, sealed)`` per ``(key, clear)`` row: ``seal(clear, key)``, sealed in one call.

        The rows of a bulk load, sealed with the LMDB key as the associated
        data in the format of :meth:`seal`, under the current version, the
        nonces cut from one ``os.urandom`` read, by the compiled
        ``_bulk.seal_rows`` (one cipher context for the batch) when built.
        """
        if not rows:
            return []
        self._maybe_reload()
        version = self.current
        key = self._batch_key(version)
        if key is None:  # not in the file any more: the per-value path names the problem
            sealed = self.seal_many([(clear, k) for k, clear in rows])
            return [(k, value) for (k, _), value in zip(rows, sealed, strict=True)]
        randomness = os.urandom(NONCE_BYTES * len(rows))
        return _bulk.seal_rows(key, MAGIC + bytes((version,)), randomness, rows)

    def _batch_key(self, version: int) -> bytes | None:
        """The AES key of a version, read from the key file (a version's key never changes)."""
        try:
            hex_key = load_key_file(self.path)["keys"].get(str(version))
        except (OSError, ValueError):
            return None
        return bytes.fromhex(hex_key) if isinstance(hex_key, str) else None

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a sealed value (any version still in the key file)."""
        if len(blob) < HEADER_BYTES + 16 or blob[:1] != MAGIC:
            raise StoreError("a stored value is not sealed as expected")
        version = blob[1]
        aead = self._aeads.get(version)
        if aead is None:
            self.reload()  # another process may have added the version
            aead = self._aeads.get(version)
            if aead is None:
                raise StoreError(f"data key version {version} is not in {self.path}")
        try:
            return aead.decrypt(blob[2:HEADER_BYTES], blob[HEADER_BYTES:], aad)
        except InvalidTag:
            raise StoreError("a stored value failed its integrity check") from None

    @staticmethod
    def is_sealed(blob: bytes) -> bool:
        return len(blob) >= HEADER_BYTES + 16 and blob[:1] == MAGIC

    def needs_reseal(self, blob: bytes) -> bool:
        """True for a sealed value under an older version than the current one."""
        self._maybe_reload()
        return self.is_sealed(blob) and blob[1] != self.current

    def index_hash(self, prefix: bytes, text: str) -> bytes:
        """A keyed hash that stands in for a value inside an LMDB key (16 bytes)."""
        return hmac.digest(self._index_key, prefix + text.encode(), "sha256")[:16]

    def record_hash(self, prefix: bytes, record_id_key: bytes) -> bytes:
        """The keyed hash that stands for a record's (source, record id) in LMDB keys (16 bytes).

        Keyed BLAKE2b (a MAC) over the account id and the record's
        ``codec.record_id_key``, under a key derived from the index key: a
        record id (it may be a phone number) cannot be found from it by
        guessing without the key. BLAKE2b rather than HMAC because it is on
        every record lookup (about 1 us instead of 5).
        """
        digest = hashlib.blake2b(prefix + record_id_key, key=self._record_key, digest_size=16)
        return digest.digest()

    def index_hashes(self, prefix: bytes, texts: Sequence[str]) -> list[bytes]:
        """:meth:`index_hash` of each text, in one call (the keyed pads hashed once)."""
        return _bulk.hmac_sha256_many(self._index_key, prefix, texts, 16)

    def record_hashes(self, prefix: bytes, record_id_keys: Sequence[bytes]) -> list[bytes]:
        """:meth:`record_hash` of each ``codec.record_id_key``, in one call."""
        return _bulk.keyed_blake2b_many(self._record_key, 16, prefix, record_id_keys)


def _reseal(txn: Txn, *, db: str, after: bytes, batch: int) -> tuple[int, bytes | None]:
    result: tuple[int, bytes | None] = txn.reseal(db, after, batch)
    return result


def rotate_key(
    store: Store, *, batch: int = 500, settle_seconds: float | None = None
) -> dict[str, int]:
    """Add a data key version and seal every stored value again under it (``idlink rotate-key``).

    ``store`` is open (with ``multi_process=True`` while servers run) and seals
    with a :class:`Cipher`, whose key file gets the new version. Servers on the
    folder keep serving: they start sealing under the new version within
    :data:`RELOAD_SECONDS` (this waits a little longer before it starts), and
    every version stays readable. Values are sealed again in batches of
    ``batch`` per write transaction, so the writer is never held long. At the
    end the older versions are marked retired.
    """
    cipher = store.cipher
    if not isinstance(cipher, Cipher):
        raise StoreError("the store seals with no data keys: there is nothing to rotate")
    path = cipher.path
    old_versions = [int(v) for v in load_key_file(path)["keys"]]
    version = add_key_version(path)
    time.sleep(RELOAD_SECONDS * 2 + 0.2 if settle_seconds is None else settle_seconds)
    counts = {"version": version}
    for db in ("contacts", "customers", "records", "engagements"):
        after: bytes | None = b""
        total = 0
        while after is not None:
            step = functools.partial(_reseal, db=db, after=after, batch=batch)
            changed, after = store.write(step)
            total += changed
        counts[db] = total
    retire_versions(path, old_versions)
    return counts
