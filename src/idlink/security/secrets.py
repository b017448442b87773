"""The master secret from which every account's hashing key is derived (SPEC 2.3),
and the one way idlink writes a private key file."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

MASTER_SECRET_FILE = "master.key"
MASTER_SECRET_BYTES = 32
ENV_VAR = "IDLINK_MASTER_SECRET"


def write_private(path: Path, data: bytes, *, replace: bool, prefix: str) -> None:
    """Write a whole file with mode 0600, atomically: a reader never sees part of it.

    The data goes to a temporary file beside `path` (named `prefix`...), is
    synced, then moved into place. With `replace` it takes the place of any
    file there; without, it is linked into place only if none is there yet,
    so exactly one of several racing creators wins and the others keep its file.
    """
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        if replace:
            os.replace(temporary, path)
            temporary = ""
        else:
            with contextlib.suppress(FileExistsError):  # another process won
                os.link(temporary, path)
    finally:
        if temporary:
            os.unlink(temporary)


def load_master_secret(data_dir: str | os.PathLike[str]) -> bytes:
    """The master secret: from $IDLINK_MASTER_SECRET (hex), else the data folder's key file.

    The key file is created with mode 0600 on first use. Losing it makes every
    contact PID unreachable, so it belongs in backups (it is not in the store).
    """
    configured = os.environ.get(ENV_VAR)
    if configured:
        value = bytes.fromhex(configured)
        if len(value) < MASTER_SECRET_BYTES:
            raise ValueError(f"{ENV_VAR} must be at least {MASTER_SECRET_BYTES} bytes of hex")
        return value
    path = Path(data_dir) / MASTER_SECRET_FILE
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    if not path.exists():
        # Exactly one of several processes starting at once wins the race.
        write_private(
            path, secrets.token_bytes(MASTER_SECRET_BYTES), replace=False, prefix=".master."
        )
    value = path.read_bytes()
    if len(value) != MASTER_SECRET_BYTES:
        raise ValueError(f"{path} is damaged: expected {MASTER_SECRET_BYTES} bytes")
    return value
