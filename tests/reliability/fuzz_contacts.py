"""Coverage-guided fuzzing of the contact clean-up functions (atheris; run by hand).

    .venv/bin/pip install atheris
    .venv/bin/python -m tests.reliability.fuzz_contacts -atheris_runs=200000

Each input picks a normalizer and a key type, then feeds the rest as text to
``prepare_contact`` and to both twins of ``_contacts.prepare``. It fails on
any exception other than ``InvalidArgument``, on the twins disagreeing, or on
cleaning that is not idempotent. Not part of ``make test`` (it runs until
stopped or for ``-atheris_runs`` inputs); the hypothesis tests in
``test_bad_input.py`` cover the same properties there.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from idlink._native import _contacts_c, _contacts_py
    from idlink.domain.contacts import ContactKey, prepare_contact
    from idlink.domain.keytypes import AccountConfig
    from idlink.errors import InvalidArgument

SECRET = b"f" * 32
CONFIG = AccountConfig("fuzz", 1)
TYPES = ("phone", "email", "id", "device", "unknown")


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    normalizer = provider.ConsumeIntInRange(1, 3)
    kind = TYPES[provider.ConsumeIntInRange(0, len(TYPES) - 1)]
    source = provider.ConsumeUnicodeNoSurrogates(8)
    value = provider.ConsumeUnicodeNoSurrogates(provider.remaining_bytes())
    expected = _contacts_py.prepare(SECRET, normalizer, kind, source, value)
    if _contacts_c.prepare(SECRET, normalizer, kind, source, value) != expected:
        raise AssertionError(f"twins disagree on {value!r} ({normalizer})")
    if _contacts_py.clean(normalizer, expected[0]) != expected[0]:
        raise AssertionError(f"cleaning {value!r} ({normalizer}) is not idempotent")
    with contextlib.suppress(InvalidArgument):
        prepare_contact(SECRET, CONFIG, ContactKey(kind, value, source))


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
