"""The master secret: created once with mode 0600, the same for every process."""

from __future__ import annotations

import stat
import subprocess
import sys

from idlink.security.secrets import MASTER_SECRET_FILE, load_master_secret


def test_master_secret_is_created_private_and_stable(tmp_path):
    first = load_master_secret(tmp_path)
    assert len(first) == 32
    assert stat.S_IMODE((tmp_path / MASTER_SECRET_FILE).stat().st_mode) == 0o600
    assert load_master_secret(tmp_path) == first


def test_processes_racing_to_create_it_agree(tmp_path):
    code = (
        "from idlink.security.secrets import load_master_secret; "
        f"print(load_master_secret({str(tmp_path)!r}).hex())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(keys) == 1
    assert not [f for f in tmp_path.iterdir() if f.name != MASTER_SECRET_FILE]
