"""The master secret from which every account's hashing key is derived (SPEC 2.3)."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

MASTER_SECRET_FILE = "master.key"
MASTER_SECRET_BYTES = 32
ENV_VAR = "IDLINK_MASTER_SECRET"


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
        # Written whole to a temporary file, then linked into place: a process
        # starting at the same moment sees no file or the whole key, never part
        # of it, and exactly one of the racing keys wins.
        value = secrets.token_bytes(MASTER_SECRET_BYTES)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".master.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(value)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            with contextlib.suppress(FileExistsError):  # another process won
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    value = path.read_bytes()
    if len(value) != MASTER_SECRET_BYTES:
        raise ValueError(f"{path} is damaged: expected {MASTER_SECRET_BYTES} bytes")
    return value
