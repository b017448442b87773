"""The master secret from which every account's hashing key is derived (SPEC 2.3)."""

from __future__ import annotations

import os
import secrets
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
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_bytes()
        if len(value) != MASTER_SECRET_BYTES:
            raise ValueError(f"{path} is damaged: expected {MASTER_SECRET_BYTES} bytes") from None
        return value
    value = secrets.token_bytes(MASTER_SECRET_BYTES)
    with os.fdopen(fd, "wb") as out:
        out.write(value)
        out.flush()
        os.fsync(out.fileno())
    return value
