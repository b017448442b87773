"""Cipher.seal_many seals a batch exactly as seal seals each value (the bulk load uses it)."""

from __future__ import annotations

import pytest

from idlink.errors import StoreError
from idlink.security.crypto import HEADER_BYTES, MAGIC, NONCE_BYTES, Cipher, add_key_version


def test_every_value_sealed_in_a_batch_opens_with_open_under_its_own_key(tmp_path):
    cipher = Cipher(tmp_path / "data.keys")
    items = [(f"value {i}".encode() * (i % 7), f"key {i}".encode()) for i in range(500)]
    sealed = cipher.seal_many(items)
    assert len(sealed) == len(items)
    for (plaintext, aad), blob in zip(items, sealed, strict=True):
        assert blob[:1] == MAGIC and blob[1] == cipher.current
        assert Cipher.is_sealed(blob)
        assert cipher.open(blob, aad) == plaintext
    # Bound to its key: a value moved under another key does not open.
    with pytest.raises(StoreError):
        cipher.open(sealed[0], items[1][1])


def test_every_nonce_of_a_batch_differs_and_differs_from_the_next_batch(tmp_path):
    cipher = Cipher(tmp_path / "data.keys")
    items = [(b"same", b"same key")] * 2000
    nonces = [blob[2:HEADER_BYTES] for blob in cipher.seal_many(items)]
    nonces += [blob[2:HEADER_BYTES] for blob in cipher.seal_many(items)]
    assert all(len(n) == NONCE_BYTES for n in nonces)
    assert len(set(nonces)) == len(nonces)


def test_a_batch_has_the_format_of_seal_and_another_process_opens_it(tmp_path):
    path = tmp_path / "data.keys"
    cipher = Cipher(path)
    one = cipher.seal(b"hello", b"k")
    (batch,) = cipher.seal_many([(b"hello", b"k")])
    assert len(one) == len(batch) and one[:2] == batch[:2]
    assert Cipher(path).open(batch, b"k") == b"hello"
    assert cipher.seal_many([]) == []


def test_a_batch_seals_under_the_current_version_after_a_rotation(tmp_path):
    path = tmp_path / "data.keys"
    cipher = Cipher(path)
    before = cipher.current
    version = add_key_version(path)
    cipher.reload()
    (blob,) = cipher.seal_many([(b"x", b"k")])
    assert version != before and blob[1] == version
    assert cipher.open(blob, b"k") == b"x"


def test_rows_sealed_in_one_call_open_with_open_under_their_own_keys(tmp_path):
    cipher = Cipher(tmp_path / "data.keys")
    rows = [(f"key {i}".encode(), f"value {i}".encode() * (i % 7)) for i in range(500)]
    sealed = cipher.seal_rows(rows)
    assert [k for k, _ in sealed] == [k for k, _ in rows]
    nonces = set()
    for (key, clear), (_, blob) in zip(rows, sealed, strict=True):
        assert blob[:1] == MAGIC and blob[1] == cipher.current
        assert len(blob) == len(cipher.seal(clear, key))
        assert cipher.open(blob, key) == clear
        assert Cipher(tmp_path / "data.keys").open(blob, key) == clear
        nonces.add(blob[2:HEADER_BYTES])
    assert len(nonces) == len(rows)
    with pytest.raises(StoreError):
        cipher.open(sealed[0][1], rows[1][0])
    assert cipher.seal_rows([]) == []


def test_rows_seal_under_the_current_version_after_a_rotation(tmp_path):
    path = tmp_path / "data.keys"
    cipher = Cipher(path)
    version = add_key_version(path)
    cipher.reload()
    ((key, blob),) = cipher.seal_rows([(b"k", b"x")])
    assert key == b"k" and blob[1] == version
    assert cipher.open(blob, b"k") == b"x"


def test_keyed_hashes_in_one_call_equal_the_per_value_ones(tmp_path):
    cipher = Cipher(tmp_path / "data.keys")
    prefix = b"\0\0\0\7"
    texts = ["4155550100", "", "é" * 40, "7" * 500]
    assert cipher.index_hashes(prefix, texts) == [cipher.index_hash(prefix, t) for t in texts]
    ids = [b"crm\0r1", b"crm\0" + "é".encode() * 90, b"\0"]
    assert cipher.record_hashes(prefix, ids) == [cipher.record_hash(prefix, k) for k in ids]
    other = Cipher(tmp_path / "other.keys")
    assert other.index_hashes(prefix, texts) != cipher.index_hashes(prefix, texts)
