"""The guards of the compiled modules can fail: each is run here on a broken set-up.

Each case runs pytest in a child process (so nothing here touches this
process's imports) on a set-up that the guard must catch, and checks that it
does.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from tests._native.conftest import NATIVE_MODULES, PURE_PYTHON

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    PURE_PYTHON, reason="IDLINK_PURE_PYTHON=1: no compiled module to break"
)


def run_pytest(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``args`` in a child process after ``prelude`` has run there."""
    script = textwrap.dedent(prelude) + textwrap.dedent(
        f"""
        import pytest, sys
        sys.exit(pytest.main({list(args) + ["-q", "-rfs", "-p", "no:cacheprovider"]!r}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "IDLINK_PURE_PYTHON"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize("name", NATIVE_MODULES)
def test_a_compiled_module_that_does_not_load_fails_the_loaded_test(name: str) -> None:
    # None in sys.modules makes the import fail as an unbuilt or broken
    # extension does: the selector falls back to the twin "silently".
    done = run_pytest(
        f"""
        import sys
        sys.modules["idlink._native._{name}_c"] = None
        """,
        "tests/_native/test_compiled_loaded.py",
        "tests/_native/test_api_parity.py",
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "FAILED tests/_native/test_compiled_loaded.py::test_compiled_modules_are_in_use" in out
    assert f"_{name}" in out and "compiled modules not in use" in out
    # The parity tests say why they did not run, instead of passing on the twin alone.
    assert "1 failed, 2 passed, 9 skipped" in out, out
    assert f"compiled module idlink._native._{name}_c is not built" in out


def test_the_parity_test_catches_a_twin_that_drifts() -> None:
    # Before, the "python" half compared the twin with itself and passed on any twin.
    done = run_pytest(
        """
        from idlink._native import _contacts_py as twin
        _clean = twin.clean
        twin.clean = lambda normalizer, value: _clean(normalizer, value).replace("+", "", 1)
        """,
        "tests/_native/test_contacts_parity.py::test_clean_and_invalid_reason_match_the_twin",
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert re.search(r"\b1 failed in\b", out), out  # and nothing passed beside it


def test_the_guards_pass_without_a_fault() -> None:
    # The same child-process set-up without a fault passes: the failures above are
    # the faults' (test_contacts_parity.py itself passes in this run).
    done = run_pytest(
        "", "tests/_native/test_compiled_loaded.py", "tests/_native/test_api_parity.py"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" not in done.stdout, done.stdout
