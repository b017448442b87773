"""The bulk load's row encoders and sealer: both twins give SerializeToString's bytes exactly.

``_bulk.contact_states`` / ``record_states`` spell the proto3 wire format of
the store's messages without a message object per row; ``seal_rows`` seals
as ``Cipher.seal`` does. Random messages (empty and non-ASCII strings,
zeros, negative and 64-bit integers, empty and long PID lists) are encoded
by the compiled twin and the pure-Python one and compared with protobuf's
own ``SerializeToString``, byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from idlink.store.txn import ContactState, CustomerState, RecordState

TWINS = ["py", "c"]


def _twin(kind: str):
    if kind == "c" and os.environ.get("IDLINK_PURE_PYTHON") == "1":
        pytest.skip("the compiled twin is not used with IDLINK_PURE_PYTHON=1")
    return importlib.import_module(f"idlink._native._bulk_{kind}")


def _text(rng: random.Random) -> str:
    alphabet = "ab@.+-_ 09xyzéß漢字😀"
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 0, 1, 5, 20, 130, 300])))


def _blob(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 0, 16, 16, 40, 200]))


def _int(rng: random.Random, lo: int, hi: int) -> int:
    return rng.choice([0, 0, lo, hi, 1, 127, 128, 16383, 16384, rng.randint(lo, hi)])


@pytest.mark.parametrize("kind", TWINS)
def test_contact_states_equal_serialize_to_string_on_random_messages(kind):
    bulk = _twin(kind)
    rng = random.Random(12)
    columns: dict[str, list] = {
        k: []
        for k in (
            "type",
            "source",
            "value",
            "invalid_reason",
            "first_seen",
            "customer_pid",
            "connections",
            "created_at_us",
            "first_key",
            "first_position",
        )
    }
    expected = []
    for _ in range(2000):
        row = {
            "type": _text(rng),
            "source": _text(rng),
            "value": _text(rng),
            "invalid_reason": _text(rng),
            "first_seen": _int(rng, 0, 2**64 - 1),
            "customer_pid": _blob(rng),
            "connections": _int(rng, 0, 2**32 - 1),
            "created_at_us": _int(rng, -(2**63), 2**63 - 1),
            "first_key": _blob(rng),
            "first_position": _int(rng, 0, 2**32 - 1),
        }
        for name, value in row.items():
            columns[name].append(value)
        expected.append(ContactState(**row).SerializeToString())
    got = bulk.contact_states(*columns.values())
    assert got == expected
    assert any(b"\xc3\xa9" in v for v in got)  # non-ASCII text went through
    assert ContactState.FromString(got[5]) == ContactState.FromString(expected[5])


@pytest.mark.parametrize("kind", TWINS)
def test_record_states_equal_serialize_to_string_on_random_messages(kind):
    bulk = _twin(kind)
    rng = random.Random(34)
    for outcome in (1, 2, 0, -5):
        sources, ids, observed, authors, stored = [], [], [], [], []
        contacts, groups, c_off, g_off = [], [], [0], [0]
        expected = []
        for _ in range(1500):
            pids = [_blob(rng) for _ in range(rng.choice([0, 1, 3, 40]))]
            group = [_blob(rng) for _ in range(rng.choice([0, 2, 5]))]
            state = RecordState(
                source=_text(rng),
                record_id=_text(rng),
                observed_at_us=_int(rng, -(2**63), 2**63 - 1),
                contact_pids=pids,
                group_pids=group,
                outcome=outcome,
                author=_text(rng),
                stored_at_us=_int(rng, -(2**63), 2**63 - 1),
            )
            expected.append(state.SerializeToString())
            sources.append(state.source)
            ids.append(state.record_id)
            observed.append(state.observed_at_us)
            authors.append(state.author)
            stored.append(state.stored_at_us)
            contacts.extend(pids)
            groups.extend(group)
            c_off.append(len(contacts))
            g_off.append(len(groups))
        got = bulk.record_states(
            sources, ids, observed, contacts, c_off, groups, g_off, outcome, authors, stored
        )
        assert got == expected, outcome


@pytest.mark.parametrize("kind", TWINS)
def test_encoders_refuse_what_protobuf_refuses(kind):
    bulk = _twin(kind)
    one = (["t"], [""], ["v"], [""], [1], [b""], [0], [0], [b""], [0])
    assert bulk.contact_states(*one) == [
        ContactState(type="t", value="v", first_seen=1).SerializeToString()
    ]
    for at, bad in ((4, [-1]), (6, [2**32]), (7, [2**63]), (9, [-3])):
        args = list(one)
        args[at] = bad
        with pytest.raises(ValueError):
            bulk.contact_states(*args)
        with pytest.raises(ValueError):
            ContactState(
                **{
                    ["first_seen", "connections", "created_at_us", "first_position"][
                        (4, 6, 7, 9).index(at)
                    ]: bad[0]
                }
            )
    with pytest.raises(ValueError, match="differ in length"):
        bulk.contact_states(["t", "u"], *one[1:])
    with pytest.raises(ValueError, match="offsets"):
        bulk.record_states(["s"], ["r"], [1], [b"p"], [0], [], [0, 0], 1, ["a"], [1])
    with pytest.raises(ValueError, match="past the end"):
        bulk.record_states(["s"], ["r"], [1], [b"p"], [0, 2], [], [0, 0], 1, ["a"], [1])
    with pytest.raises(ValueError, match="decrease"):
        bulk.record_states(
            ["s", "s"], ["r", "q"], [1, 1], [b"p"], [0, 1, 0], [], [0, 0, 0], 1, ["a", "a"], [1, 1]
        )


@pytest.mark.parametrize("kind", TWINS)
def test_seal_rows_opens_with_aesgcm_under_the_lmdb_key(kind):
    bulk = _twin(kind)
    rng = random.Random(56)
    for size in (16, 24, 32):
        key = rng.randbytes(size)
        rows = [(_blob(rng) + b"k", _blob(rng)) for _ in range(500)] + [(b"k", b""), (b"", b"x")]
        randomness = os.urandom(12 * len(rows))
        head = b"\xa7\x03"
        sealed = bulk.seal_rows(key, head, randomness, rows)
        aead = AESGCM(key)
        assert [k for k, _ in sealed] == [k for k, _ in rows]
        for i, ((lmdb_key, clear), (_, value)) in enumerate(zip(rows, sealed, strict=True)):
            nonce = randomness[12 * i : 12 * i + 12]
            assert value[:2] == head and value[2:14] == nonce
            assert aead.decrypt(nonce, value[14:], lmdb_key) == clear
            assert value[14:] == aead.encrypt(nonce, clear, lmdb_key)
    with pytest.raises(ValueError):
        bulk.seal_rows(b"short", head, randomness, rows)
    with pytest.raises(ValueError, match="fewer nonces"):
        bulk.seal_rows(key, head, randomness[:-1], rows)


def test_both_twins_give_the_same_bytes():
    if os.environ.get("IDLINK_PURE_PYTHON") == "1":
        pytest.skip("the compiled twin is not used with IDLINK_PURE_PYTHON=1")
    c, py = _twin("c"), _twin("py")
    key, rows = b"k" * 32, [(b"key%d" % i, b"v" * i) for i in range(300)]
    randomness = os.urandom(12 * len(rows))
    assert c.seal_rows(key, b"\xa7\x01", randomness, rows) == py.seal_rows(
        key, b"\xa7\x01", randomness, rows
    )


@pytest.mark.parametrize("kind", TWINS)
def test_customer_states_equal_serialize_to_string_on_random_messages(kind):
    bulk = _twin(kind)
    rng = random.Random(78)
    members, offsets, seq, created, marks, split, updated = [], [0], [], [], [], [], []
    expected = []
    for _ in range(1500):
        pids = [_blob(rng) for _ in range(rng.choice([0, 1, 2, 7, 60]))]
        state = CustomerState(
            contact_pids=pids,
            created_seq=_int(rng, 0, 2**64 - 1),
            created_at_us=_int(rng, -(2**63), 2**63 - 1),
            watermark=_blob(rng),
            split_from=_blob(rng),
            updated_at_us=_int(rng, -(2**63), 2**63 - 1),
        )
        expected.append(state.SerializeToString())
        members.extend(pids)
        offsets.append(len(members))
        seq.append(state.created_seq)
        created.append(state.created_at_us)
        marks.append(state.watermark)
        split.append(state.split_from)
        updated.append(state.updated_at_us)
    assert bulk.customer_states(members, offsets, seq, created, marks, split, updated) == expected
    with pytest.raises(ValueError):
        bulk.customer_states([], [0, 0], [-1], [0], [b""], [b""], [0])
    with pytest.raises(ValueError, match="past the end"):
        bulk.customer_states([], [0, 1], [1], [0], [b""], [b""], [0])


@pytest.mark.parametrize("kind", TWINS)
def test_keyed_hashes_equal_hashlib_and_hmac(kind):
    bulk = _twin(kind)
    rng = random.Random(90)
    items = [_blob(rng) for _ in range(400)] + [b"x" * 1000]
    texts = [_text(rng) for _ in range(400)] + ["é" * 300]
    for key in (b"k", rng.randbytes(32), rng.randbytes(64)):
        for prefix in (b"\0\0\0\1", b"p" * 200):
            assert bulk.keyed_blake2b_many(key, 16, prefix, items) == [
                hashlib.blake2b(prefix + i, key=key, digest_size=16).digest() for i in items
            ]
    for key in (b"", b"k", rng.randbytes(32), rng.randbytes(64), rng.randbytes(65), b"z" * 200):
        for prefix in (b"", b"\0\0\0\1", b"q" * 100):
            assert bulk.hmac_sha256_many(key, prefix, texts, 16) == [
                hmac.digest(key, prefix + t.encode(), "sha256")[:16] for t in texts
            ]
    assert bulk.hmac_sha256_many(b"k", b"p", ["a"], 32) == [hmac.digest(b"k", b"pa", "sha256")]
    with pytest.raises(ValueError):
        bulk.keyed_blake2b_many(b"", 16, b"p", items)
    with pytest.raises(ValueError):
        bulk.hmac_sha256_many(b"k", b"p", texts, 33)
    with pytest.raises(UnicodeEncodeError):
        bulk.hmac_sha256_many(b"k", b"p", ["\ud800"], 16)
