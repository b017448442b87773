"""Typed access to the sub-databases inside one LMDB transaction.

The domain layer sees only these methods and the store messages; it never
sees LMDB itself.

Encryption at rest (SPEC 8) happens here: given the store's cipher, every
contact, customer (profile, labels, preferences, the record keys it keeps) and
record (its record id) is sealed whole when written and opened when read, and
engagement free text is sealed beside the engagement's routing fields, so the
domain always sees clear values and the disk never does. The associated data
of a sealed value is its LMDB key, so a value copied under another key does
not open. LMDB keys hold only account ids, PIDs, times, sequence numbers and
keyed hashes; docs/security.md lists what stays in clear and why.

Records: the domain names a record by its canonical key (observed_at, source,
record id: SPEC 3.2), which holds the record id. On disk a record is keyed by
a keyed hash of (source, record id), and the contact -> record index holds
(observed_at, that hash). :meth:`Txn.record_keys_of` opens the records it
finds and gives the domain their canonical keys, sorted: the canonical order
is exact (it uses the real record id) and no record id is on disk in clear.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

import lmdb

from idlink.store import codec
from idlink.store.v1 import store_pb2 as pb

# name -> dupsort
SUBDATABASES: dict[str, bool] = {
    "meta": False,
    "accounts": False,
    "contacts": False,
    "policies": False,
    "records": False,
    "contact_records": True,
    "edges": False,
    "customers": False,
    "redirects": False,
    "history": False,
    "changes": False,
    "engagements": False,
    "engagement_ids": False,
    "pins": False,
    "isolated": False,
    "national": False,
    "api_keys": False,
    "audit": False,
    # Per account, in order: which records, contact policies, engagements and
    # redirects were written (the catch-up of a generation load reads it).
    "record_log": False,
}

ContactState = pb.ContactState
ContactPolicyState = pb.ContactPolicyState
RecordState = pb.RecordState
CustomerState = pb.CustomerState
ChangeEvent = pb.ChangeEvent
AccountState = pb.AccountState
KeyTypeState = pb.KeyTypeState
EngagementState = pb.EngagementState
Profile = pb.Profile
ApiKeyState = pb.ApiKeyState
AuditEventState = pb.AuditEventState
SecurityPolicyState = pb.SecurityPolicyState

# Records opened in one transaction are kept (clear) for the rest of it: the
# index hands the domain canonical keys, and the domain then asks for the records.
_RECORD_CACHE_LIMIT = 1 << 16
# Sub-databases the write-back buffer never holds: dupsort ones (a key has many values).
_UNBUFFERED = frozenset(name for name, dupsort in SUBDATABASES.items() if dupsort)


class Handles(dict[str, Any]):
    """The sub-database handles of one environment by name; ``names``: a handle's name by its id.

    Made once per opened environment, so a recorded read (``store.serving``)
    names the sub-database of each operation without building the map again.
    """

    __slots__ = ("names",)

    def __init__(self, handles: dict[str, Any]) -> None:
        super().__init__(handles)
        self.names: dict[int, str] = {id(handle): name for name, handle in handles.items()}


def open_handles(env: lmdb.Environment) -> Handles:
    """Open (or create) every sub-database of ``env``."""
    opened = {name: env.open_db(name.encode(), dupsort=dup) for name, dup in SUBDATABASES.items()}
    return Handles(opened)


class _WriteBuffer:
    """What a transaction holds back until it flushes (Txn.buffer_writes)."""

    __slots__ = ("parts", "unsealed", "counts")

    def __init__(self) -> None:
        # Per sub-database: key -> the value to write (bytes, or _Clear to seal first),
        # or None to delete it.
        self.parts: dict[str, dict[bytes, Any]] = {}
        # Per sub-database: the keys put with a value still to seal (some since rewritten).
        self.unsealed: dict[str, list[bytes]] = {}
        # Counters (their meta keys) as next_counter last wrote them, as numbers.
        self.counts: dict[bytes, int] = {}


class _Clear:
    """A buffered value still to be sealed at the flush: ``head`` + seal(``data``, key)."""

    __slots__ = ("head", "data")

    def __init__(self, head: bytes, data: bytes) -> None:
        self.head = head
        self.data = data


class Txn:
    """One transaction: what belongs to no account (meta, accounts, API keys, key rotation).

    Everything of one account is reached through :meth:`account`.
    """

    # The transaction's caches of what it read or wrote: a recorded read
    # (store.serving.recorded) starts with empty ones, so that every read it
    # makes reaches LMDB and is logged.
    CACHES = ("_records", "_hashes", "_new_contact", "_id_hashes")

    def __init__(
        self, raw: lmdb.Transaction, dbs: Handles, *, writable: bool, cipher: Any = None
    ) -> None:
        self._raw = raw
        self._dbs = dbs
        self.writable = writable
        self.cipher = cipher
        self._records: dict[bytes, bytes | None] = {}
        self._hashes: dict[bytes, bytes] = {}  # canonical key -> record hash, from the index
        # Per account prefix: the arrival number just handed to a new contact, so that
        # its first put is logged (the record log's LOG_CONTACT).
        self._new_contact: dict[bytes, int] = {}
        # The write-back buffer (see buffer_writes); None: writes go straight to LMDB.
        self._buffer: _WriteBuffer | None = None
        # prefix + record id key -> its keyed hash (each record is hashed once).
        self._id_hashes: dict[bytes, bytes] = {}

    def take_caches(self) -> tuple[dict[bytes, Any], ...]:
        """The caches (:attr:`CACHES`), each replaced by an empty one."""
        taken = (self._records, self._hashes, self._new_contact, self._id_hashes)
        self._records, self._hashes, self._new_contact, self._id_hashes = {}, {}, {}, {}
        return taken

    def restore_caches(self, caches: tuple[dict[bytes, Any], ...]) -> None:
        """Put back caches :meth:`take_caches` took."""
        self._records, self._hashes, self._new_contact, self._id_hashes = caches

    # -- the write-back buffer -----------------------------------------------------

    def buffer_writes(self) -> None:
        """Hold this transaction's writes until :meth:`flush_writes` (a write transaction).

        Each key is then written once, with its last value, sealed once (all
        together, ``Cipher.seal_rows``), and the keys of each sub-database
        in sorted order (LMDB's cheapest order).
        Reads see the buffer; a cursor over a sub-database writes its part of
        the buffer first. :meth:`flush_writes` writes it out; the store calls
        it before every commit, so nothing buffered is left behind.
        """
        if not self.writable:
            raise ValueError("only a write transaction buffers writes")
        if self._buffer is None:
            self._buffer = _WriteBuffer()

    def flush_writes(self) -> None:
        """Write everything buffered (the buffer stays on)."""
        buffer = self._buffer
        if buffer is not None and buffer.parts:
            self._write_out(list(buffer.parts))

    def _flush_db(self, db: str) -> None:
        buffer = self._buffer
        if buffer is not None and db in buffer.parts:
            self._write_out([db])

    def _write_out(self, names: list[str]) -> None:
        buffer = self._buffer
        assert buffer is not None
        unsealed = buffer.unsealed
        parts = [(name, buffer.parts.pop(name)) for name in names]
        # Seal what is still clear, all in one call (each key once: its last value).
        todo: dict[tuple[str, bytes], _Clear] = {}
        for name, part in parts:
            for key in unsealed.pop(name, ()):
                value = part.get(key)
                if type(value) is _Clear:
                    todo[(name, key)] = value
        if todo:
            # One cipher context for the batch (Cipher.seal_rows: the format of seal).
            sealed = self.cipher.seal_rows([(key, value.data) for (_, key), value in todo.items()])
            written = dict(parts)
            for ((name, key), value), (_, data) in zip(todo.items(), sealed, strict=True):
                written[name][key] = value.head + data
        raw = self._raw
        for name, part in parts:
            handle = self._dbs[name]
            # Keys are unique, so the pairs sort by key alone.
            items = sorted(part.items())
            if None in part.values():
                for key, value in items:
                    if value is None:
                        raw.delete(key, db=handle)
                items = [item for item in items if item[1] is not None]
            if items:
                raw.cursor(db=handle).putmulti(items)

    # -- helpers -------------------------------------------------------------

    def _get(self, db: str, key: bytes) -> bytes | None:
        buffer = self._buffer
        if buffer is not None:
            part = buffer.parts.get(db)
            if part is not None and key in part:
                found = part[key]
                if type(found) is _Clear:
                    found = found.head + self.cipher.seal(found.data, key)
                    part[key] = found
                return found  # type: ignore[no-any-return]
        value = self._raw.get(key, db=self._dbs[db])
        return None if value is None else bytes(value)

    def _get_clear(self, db: str, key: bytes) -> bytes | None:
        """A value sealed whole (contacts, customers, records), opened."""
        buffer = self._buffer
        if buffer is not None:
            part = buffer.parts.get(db)
            if part is not None and key in part:
                found = part[key]
                if type(found) is _Clear:
                    return found.data  # type: ignore[no-any-return]
                return self._unseal(key, found)
        value = self._raw.get(key, db=self._dbs[db])
        return None if value is None else self._unseal(key, bytes(value))

    def _put(self, db: str, key: bytes, value: bytes) -> None:
        buffer = self._buffer
        if buffer is not None and db not in _UNBUFFERED:
            if db == "meta" and buffer.counts:
                buffer.counts.pop(key, None)
            part = buffer.parts.get(db)
            if part is None:
                part = buffer.parts[db] = {}
            part[key] = value
            return
        self._raw.put(key, value, db=self._dbs[db])

    def _put_clear(self, db: str, key: bytes, data: bytes, head: bytes = b"") -> None:
        """Store ``head`` + ``data`` sealed under ``key`` (its associated data)."""
        cipher = self.cipher
        if cipher is None:
            self._put(db, key, head + data)
            return
        buffer = self._buffer
        if buffer is not None:
            part = buffer.parts.get(db)
            if part is None:
                part = buffer.parts[db] = {}
            part[key] = _Clear(head, data)
            keys = buffer.unsealed.get(db)
            if keys is None:
                buffer.unsealed[db] = [key]
            else:
                keys.append(key)
            return
        self._raw.put(key, head + cipher.seal(data, key), db=self._dbs[db])

    def _delete(self, db: str, key: bytes, value: bytes = b"") -> bool:
        buffer = self._buffer
        if buffer is not None and db not in _UNBUFFERED:
            if db == "meta" and buffer.counts:
                buffer.counts.pop(key, None)
            part = buffer.parts.get(db)
            if part is None:
                part = buffer.parts[db] = {}
            if key in part:
                existed = part[key] is not None
            else:
                existed = self._raw.get(key, db=self._dbs[db]) is not None
            part[key] = None
            return existed
        return bool(self._raw.delete(key, value, db=self._dbs[db]))

    def _cursor(self, db: str) -> Any:
        """A raw cursor over ``db``, after writing its buffered part."""
        self._flush_db(db)
        return self._raw.cursor(db=self._dbs[db])

    def _scan(
        self, db: str, prefix: bytes, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._cursor(db)
        if not cursor.set_range(start if start is not None else prefix):
            return
        for raw_key, value in cursor:
            key = bytes(raw_key)
            if not key.startswith(prefix):
                return
            yield key, bytes(value)

    @staticmethod
    def _decode(message_type: Any, data: bytes | None) -> Any:
        if data is None:
            return None
        message = message_type()
        message.ParseFromString(data)
        return message

    def _unseal(self, key: bytes, stored: bytes | None) -> bytes | None:
        if stored is None or self.cipher is None:
            return stored
        opened: bytes = self.cipher.open(stored, key)
        return opened

    def account(self, account_id: int) -> AccountTxn:
        """The part of this transaction that belongs to one account."""
        return AccountTxn(self, account_id)

    # -- meta and counters -------------------------------------------------------

    def get_meta(self, key: bytes) -> bytes | None:
        return self._get("meta", key)

    def put_meta(self, key: bytes, value: bytes) -> None:
        self._put("meta", key, value)

    def next_counter(self, name: bytes, count: int = 1) -> int:
        """Advance a persistent counter by ``count``; the first of the values taken (first 1)."""
        key = _COUNTER + name
        buffer = self._buffer
        known = None if buffer is None else buffer.counts.get(key)
        if known is None:
            current = self._get("meta", key)
            known = codec.read_u64(current) if current else 0
        last = known + count
        if buffer is None:
            self._put("meta", key, codec.u64(last))
        else:  # buffered: the value is kept as a number; the buffer holds its bytes
            part = buffer.parts.get("meta")
            if part is None:
                part = buffer.parts["meta"] = {}
            part[key] = codec.u64(last)
            buffer.counts[key] = last
        return known + 1

    def counter(self, name: bytes) -> int:
        key = _COUNTER + name
        known = None if self._buffer is None else self._buffer.counts.get(key)
        if known is not None:
            return known
        current = self._get("meta", key)
        return codec.read_u64(current) if current else 0

    # -- accounts ---------------------------------------------------------------

    def account_id(self, name: str) -> int | None:
        found = self._get("meta", _ACCOUNT + name.encode())
        return None if found is None else int.from_bytes(found, "big")

    def create_account_id(self, name: str) -> int:
        account_id = self.next_counter(b"accounts")
        self._put("meta", _ACCOUNT + name.encode(), account_id.to_bytes(4, "big"))
        return account_id

    def iter_account_names(self) -> Iterator[str]:
        """The names of the accounts users see (a hidden staging account is not one)."""
        for key, _ in self._scan("meta", _ACCOUNT):
            name = key[len(_ACCOUNT) :].decode()
            if HIDDEN_MARK not in name:
                yield name

    def iter_hidden_account_names(self) -> Iterator[tuple[str, int]]:
        """Hidden accounts (a generation load's staging accounts): (name, account id)."""
        for key, value in self._scan("meta", _ACCOUNT):
            name = key[len(_ACCOUNT) :].decode()
            if HIDDEN_MARK in name:
                yield name, int.from_bytes(value, "big")

    def point_account(self, name: str, account_id: int) -> None:
        """Make ``name`` name the account ``account_id`` (the switch of a generation load)."""
        self._put("meta", _ACCOUNT + name.encode(), account_id.to_bytes(4, "big"))

    def forget_account_name(self, name: str) -> None:
        """Remove a name (its account's data stays until it is dropped)."""
        self._delete("meta", _ACCOUNT + name.encode())

    # -- account ids being dropped (resumable, in batches) -------------------------------------

    def mark_dropping(self, account_id: int) -> None:
        self._put("meta", _DROPPING + codec.account_prefix(account_id), b"")

    def unmark_dropping(self, account_id: int) -> None:
        self._delete("meta", _DROPPING + codec.account_prefix(account_id))

    def dropping(self) -> list[int]:
        """Account ids whose data is being dropped (a marker each, cleared at the end)."""
        return [
            int.from_bytes(key[len(_DROPPING) :], "big") for key, _ in self._scan("meta", _DROPPING)
        ]

    def get_account(self, account_id: int) -> AccountState | None:
        return self._decode(AccountState, self._get("accounts", codec.account_prefix(account_id)))

    def put_account(self, account: AccountState) -> None:
        self._put("accounts", codec.account_prefix(account.account_id), account.SerializeToString())

    # -- sealing and keyed hashes (AccountTxn uses them) ----------------------------

    def _record_hash(self, prefix: bytes, id_key: bytes) -> bytes:
        """The keyed hash that stands for a record's ``codec.record_id_key`` on disk."""
        known = self._id_hashes.get(prefix + id_key)
        if known is not None:
            return known
        if self.cipher is None:
            digest = hashlib.blake2b(prefix + id_key, digest_size=codec.RECORD_HASH_BYTES).digest()
        else:
            digest = self.cipher.record_hash(prefix, id_key)
        if len(self._id_hashes) >= _RECORD_CACHE_LIMIT:
            self._id_hashes.clear()
        self._id_hashes[prefix + id_key] = digest
        return digest

    def _hash_of_canonical(self, prefix: bytes, canonical: bytes) -> bytes:
        known = self._hashes.get(prefix + canonical)
        if known is not None:
            return known
        missing = codec.hash_of_missing_record_key(canonical)
        if missing is not None:
            return missing
        return self._record_hash(prefix, canonical[codec.TIME_BYTES :])

    def _record_at(self, key: bytes) -> RecordState | None:
        if key in self._records:
            clear = self._records[key]
        else:
            clear = self._get_clear("records", key)
            if len(self._records) >= _RECORD_CACHE_LIMIT:
                self._records.clear()
                self._hashes.clear()
            self._records[key] = clear
        return self._decode(RecordState, clear)

    def _national_key(self, prefix: bytes, national: str) -> bytes:
        # Phone digits never go into a key: a keyed hash stands in for them (SPEC 2.3, 8).
        if self.cipher is None:
            return national.encode() + b"\0"
        return self.cipher.index_hash(prefix, national)

    def _open_engagement(self, prefix: bytes, engagement: EngagementState | None) -> Any:
        if engagement is not None and engagement.sealed_text:
            aad = prefix + engagement.engagement_id
            text = json.loads(self.cipher.open(engagement.sealed_text, aad))
            engagement.summary = text["summary"]
            engagement.attributes.update(text["attributes"])
            engagement.sealed_text = b""
        return engagement

    def _sealed_engagement(self, prefix: bytes, engagement: EngagementState) -> bytes:
        if self.cipher is None:
            return engagement.SerializeToString()
        summary, attributes = engagement.summary, dict(engagement.attributes)
        if not summary and not attributes:
            return engagement.SerializeToString()
        text = json.dumps({"summary": summary, "attributes": attributes}, ensure_ascii=False)
        engagement.sealed_text = self.cipher.seal(text.encode(), prefix + engagement.engagement_id)
        engagement.summary = ""
        engagement.attributes.clear()
        try:
            return engagement.SerializeToString()
        finally:
            engagement.summary = summary
            engagement.attributes.update(attributes)
            engagement.sealed_text = b""

    # -- API keys (SPEC 8): keyed by the SHA-256 of the token, never the token -------------

    def get_api_key(self, token_hash: bytes) -> ApiKeyState | None:
        return self._decode(ApiKeyState, self._get("api_keys", token_hash))

    def put_api_key(self, token_hash: bytes, key: ApiKeyState) -> None:
        self._put("api_keys", token_hash, key.SerializeToString())

    def iter_api_keys(self) -> Iterator[tuple[bytes, ApiKeyState]]:
        for key, value in self._scan("api_keys", b""):
            yield key, self._decode(ApiKeyState, value)

    # -- key rotation: seal again under the current data key ---------------------------------

    def reseal(self, db: str, after: bytes, limit: int) -> tuple[int, bytes | None]:
        """Seal again, under the current key, up to ``limit`` values of ``db`` after key ``after``.

        Returns how many were sealed again and the last key looked at (None at the end).
        """
        cursor = self._cursor(db)
        found = cursor.set_range(after + b"\0") if after else cursor.first()
        changed = seen = 0
        last: bytes | None = None
        while found and seen < limit:
            key, value = bytes(cursor.key()), bytes(cursor.value())
            last, seen = key, seen + 1
            if self._reseal_one(db, key, value):
                changed += 1
            found = cursor.next()
        return changed, (last if found else None)

    def _reseal_one(self, db: str, key: bytes, value: bytes) -> bool:
        cipher = self.cipher
        if db in ("contacts", "customers", "records"):
            if not cipher.needs_reseal(value):
                return False
            self._put(db, key, cipher.seal(cipher.open(value, key), key))
            if db == "records":
                self._records.pop(key, None)
            return True
        if db == "engagements":
            engagement = self._decode(EngagementState, value)
            if not cipher.needs_reseal(engagement.sealed_text):
                return False
            prefix = key[:4]
            opened = self._open_engagement(prefix, engagement)
            self._put(db, key, self._sealed_engagement(prefix, opened))
            return True
        raise ValueError(f"nothing sealed in {db}")


# Keys of the meta sub-database. Nothing outside the store spells them: the
# accessors below are their only users.
_COUNTER = b"counter:"
_ACCOUNT = b"account:"
_CONTACT_SEQ = b"contacts:"  # + prefix: the order contacts arrived in (first_seen)
_CHANGE_SEQ = b"changes:"  # + prefix: the change feed's sequence numbers
_CUSTOMER_SEQ = b"customers:"  # + prefix: customers in order of creation (created_seq)
_AUDIT_SEQ = b"audit:"  # + prefix: the audit log's sequence numbers
_POLICY_COUNT = b"policies:"  # + prefix: how many contacts have a stored policy
_CONFIG_VERSION = b"config-version:"  # + prefix: bumped on every configuration write
_SCHEMA = b"schema:"  # + prefix: the profile schema (JSON, domain/profiles.py)
_TOMBSTONE = b"erased:"  # + prefix + customer PID: when the customer was erased
_SECURITY_POLICY = b"security:"  # + prefix: SecurityPolicyState
_RECORD_LOG_SEQ = b"record-log:"  # + prefix: the record log's sequence numbers
_GENERATION = b"generation:"  # + prefix: JSON, the generation an account was loaded from
_DROPPING = b"dropping:"  # + prefix: the account id's data is being dropped
# Names holding it are hidden accounts (staging accounts of a load): users cannot send
# it (account names are checked text, without control characters).
HIDDEN_MARK = "\0"
# Kinds of record log entries (the first byte of the value).
LOG_RECORD = b"r"  # + record hash: a record was written (its state now is in records)
LOG_DELETED = b"d"  # + record hash + sealed (source, record id): a record was deleted
LOG_POLICY = b"p"  # + contact PID: a contact policy was written or removed
LOG_ENGAGEMENT = b"e"  # + engagement id: an engagement was written or removed
LOG_CONTACT = b"c"  # + contact PID: a new contact was stored
# Meta keys of one account (+ prefix), and counters (_COUNTER + name + prefix).
_ACCOUNT_META = (_SCHEMA, _SECURITY_POLICY, _GENERATION)
_ACCOUNT_COUNTERS = (
    _CONTACT_SEQ,
    _CHANGE_SEQ,
    _CUSTOMER_SEQ,
    _AUDIT_SEQ,
    _POLICY_COUNT,
    _CONFIG_VERSION,
    _RECORD_LOG_SEQ,
)
# What AccountTxn.page reads, by kind: its sub-database.
_PAGED = {
    "history": "history",
    "engagements": "engagements",
    "policies": "policies",
    "redirects": "redirects",
    "tombstones": "meta",
}
# Sub-databases whose keys all start with the account prefix (meta and api_keys do not).
_ACCOUNT_DBS = tuple(name for name in SUBDATABASES if name not in ("meta", "api_keys"))


class AccountTxn:
    """One account's part of a transaction: every key it reads or writes is the account's.

    Built by :meth:`Txn.account`; the account prefix never leaves the store.
    Account id 0 is never given to an account (ids start at 1), so the
    ``AccountTxn`` of an account that does not exist reads as empty.
    """

    __slots__ = ("_txn", "_prefix", "account_id")

    def __init__(self, txn: Txn, account_id: int) -> None:
        self._txn = txn
        self._prefix = codec.account_prefix(account_id)
        self.account_id = account_id

    @property
    def writable(self) -> bool:
        return self._txn.writable

    @property
    def cipher(self) -> Any:
        return self._txn.cipher

    def buffer_writes(self) -> None:
        """Hold the transaction's writes until :meth:`flush_writes` (:meth:`Txn.buffer_writes`)."""
        self._txn.buffer_writes()

    def flush_writes(self) -> None:
        """Write what is buffered, each key once, in key order; call it before the commit."""
        self._txn.flush_writes()

    # -- configuration ------------------------------------------------------------------

    def get_config(self) -> AccountState | None:
        return self._txn.get_account(self.account_id)

    def put_config(self, state: AccountState) -> None:
        """Store the account's configuration; readers see a new version and reload it."""
        self._txn.put_account(state)
        self._txn.next_counter(_CONFIG_VERSION + self._prefix)

    def config_version(self) -> int:
        return self._txn.counter(_CONFIG_VERSION + self._prefix)

    def get_schema(self) -> bytes | None:
        return self._txn.get_meta(_SCHEMA + self._prefix)

    def put_schema(self, data: bytes) -> None:
        self._txn.put_meta(_SCHEMA + self._prefix, data)

    def get_security_policy(self) -> SecurityPolicyState | None:
        raw = self._txn.get_meta(_SECURITY_POLICY + self._prefix)
        return self._txn._decode(SecurityPolicyState, raw)  # type: ignore[no-any-return]

    def put_security_policy(self, policy: SecurityPolicyState) -> None:
        self._txn.put_meta(_SECURITY_POLICY + self._prefix, policy.SerializeToString())

    # -- sequences ------------------------------------------------------------------------

    def next_contact_seq(self) -> int:
        """The next contact's place in the order of arrival (``first_seen``).

        The contact put next with this ``first_seen`` is a new contact: the
        record log names it (a contact no record names, made by a resolve or
        an engagement, is then known to a load's catch-up too).
        """
        seq = self._txn.next_counter(_CONTACT_SEQ + self._prefix)
        self._txn._new_contact[self._prefix] = seq
        return seq

    def next_change_seq(self) -> int:
        return self._txn.next_counter(_CHANGE_SEQ + self._prefix)

    def change_seq(self) -> int:
        """The sequence number of the change feed's last event (0 when there is none)."""
        return self._txn.counter(_CHANGE_SEQ + self._prefix)

    def next_customer_seq(self) -> int:
        """The next customer's place in the order of creation (``created_seq``)."""
        return self._txn.next_counter(_CUSTOMER_SEQ + self._prefix)

    def next_audit_seqs(self, count: int) -> int:
        """Take ``count`` audit sequence numbers at once (one counter write); the first."""
        return self._txn.next_counter(_AUDIT_SEQ + self._prefix, count)

    # -- the count of contact policies (most accounts have none: reads skip them) --------------

    def policy_count(self) -> int:
        return self._txn.counter(_POLICY_COUNT + self._prefix)

    def add_policy_count(self, delta: int) -> None:
        name = _POLICY_COUNT + self._prefix
        self._txn.put_meta(_COUNTER + name, codec.u64(self._txn.counter(name) + delta))

    # -- tombstones of erased customers -------------------------------------------------------

    def tombstone(self, customer_pid: bytes) -> int | None:
        """When a customer was erased (microseconds), or None when it was not."""
        raw = self._txn.get_meta(_TOMBSTONE + self._prefix + customer_pid)
        return None if raw is None else codec.read_u64(raw)

    def put_tombstone(self, customer_pid: bytes, at_us: int) -> None:
        self._txn.put_meta(_TOMBSTONE + self._prefix + customer_pid, codec.u64(at_us))

    def iter_redirects(self) -> Iterator[tuple[bytes, bytes]]:
        """Every redirect of the account: (merged-away customer PID, the PID it points to)."""
        for key, target in self._txn._scan("redirects", self._prefix):
            yield key[len(self._prefix) :], target

    # -- contacts, policies, records and the contact -> record index, connections, national
    # -- numbers, customers, redirects, history, the change feed, engagements, pins, audit

    def get_contact(self, pid: bytes) -> ContactState | None:
        t, p = self._txn, self._prefix
        key = p + pid
        return t._decode(ContactState, t._get_clear("contacts", key))

    def put_contact(self, pid: bytes, contact: ContactState) -> None:
        t, p = self._txn, self._prefix
        t._put_clear("contacts", p + pid, contact.SerializeToString())
        if t._new_contact.get(p) == contact.first_seen:
            del t._new_contact[p]
            self._log(LOG_CONTACT, pid)

    def delete_contact(self, pid: bytes) -> None:
        t, p = self._txn, self._prefix
        t._delete("contacts", p + pid)

    def iter_contacts(self) -> Iterator[tuple[bytes, ContactState]]:
        t, p = self._txn, self._prefix
        for key, value in t._scan("contacts", p):
            yield key[len(p) :], t._decode(ContactState, t._unseal(key, value))

    def get_policy(self, pid: bytes) -> ContactPolicyState | None:
        t, p = self._txn, self._prefix
        return t._decode(ContactPolicyState, t._get("policies", p + pid))

    def put_policy(self, pid: bytes, policy: ContactPolicyState) -> None:
        t, p = self._txn, self._prefix
        t._put("policies", p + pid, policy.SerializeToString())
        self._log(LOG_POLICY, pid)

    def delete_policy(self, pid: bytes) -> None:
        t, p = self._txn, self._prefix
        t._delete("policies", p + pid)
        self._log(LOG_POLICY, pid)

    def iter_policies(self) -> Iterator[tuple[bytes, ContactPolicyState]]:
        t, p = self._txn, self._prefix
        for key, value in t._scan("policies", p):
            yield key[len(p) :], t._decode(ContactPolicyState, value)

    def set_isolated(self, pid: bytes, isolated: bool) -> None:
        t, p = self._txn, self._prefix
        if isolated:
            t._put("isolated", p + pid, b"")
        else:
            t._delete("isolated", p + pid)

    def iter_isolated(self, after: bytes = b"") -> Iterator[bytes]:
        t, p = self._txn, self._prefix
        start = p + after + b"\0" if after else None
        for key, _ in t._scan("isolated", p, start):
            yield key[len(p) :]

    def get_record(self, source: str, record_id: str) -> RecordState | None:
        t, p = self._txn, self._prefix
        key = p + t._record_hash(p, codec.record_id_key(source, record_id))
        return t._record_at(key)

    def get_record_by_canonical(self, canonical: bytes) -> RecordState | None:
        t, p = self._txn, self._prefix
        return t._record_at(p + t._hash_of_canonical(p, canonical))

    def put_record(self, record: RecordState) -> None:
        t, p = self._txn, self._prefix
        id_key = codec.record_id_key(record.source, record.record_id)
        record_hash = t._record_hash(p, id_key)
        key = p + record_hash
        # The index entries that follow find the hash by the canonical key.
        t._hashes[p + codec.time_key(record.observed_at_us) + id_key] = record_hash
        clear = record.SerializeToString()
        t._put_clear("records", key, clear)
        t._records[key] = clear
        self._log(LOG_RECORD, key[len(p) :], sealed=False)

    def delete_record(self, source: str, record_id: str) -> None:
        t, p = self._txn, self._prefix
        id_key = codec.record_id_key(source, record_id)
        key = p + t._record_hash(p, id_key)
        t._delete("records", key)
        t._records[key] = None
        seq = t.next_counter(_RECORD_LOG_SEQ + p)
        log_key = p + codec.u64(seq)
        t._put_clear("record_log", log_key, id_key, LOG_DELETED + key[len(p) :])

    def iter_records(self) -> Iterator[RecordState]:
        """Every record of an account, in no particular order (sort by canonical key)."""
        t, p = self._txn, self._prefix
        for key, value in t._scan("records", p):
            yield t._decode(RecordState, t._unseal(key, value))

    def index_record(self, pid: bytes, canonical: bytes) -> None:
        t, p = self._txn, self._prefix
        ref = codec.record_ref(canonical, t._hash_of_canonical(p, canonical))
        t._raw.put(p + pid, ref, db=t._dbs["contact_records"], dupdata=True)

    def index_records(self, pids: list[bytes], canonical: bytes) -> None:
        """:meth:`index_record` for every contact a record names."""
        t, p = self._txn, self._prefix
        ref = codec.record_ref(canonical, t._hash_of_canonical(p, canonical))
        put, db = t._raw.put, t._dbs["contact_records"]
        for pid in pids:
            put(p + pid, ref, db=db, dupdata=True)

    def unindex_record(self, pid: bytes, canonical: bytes) -> None:
        t, p = self._txn, self._prefix
        ref = codec.record_ref(canonical, t._hash_of_canonical(p, canonical))
        t._delete("contact_records", p + pid, ref)

    def keyed_records_of(
        self, pid: bytes, until: bytes | None = None
    ) -> list[tuple[bytes, RecordState | None]]:
        """The records naming a contact with their canonical keys, in canonical order.

        The index holds (observed_at, record hash); the record ids come from the
        records themselves, each read and decoded once. An entry whose record is
        missing (a damaged store) gets a key no record has
        (codec.missing_record_key) and no record. ``until``: only the keys up to
        that canonical key. The index is in time order, so the records observed
        later are not read at all (an isolated placeholder's records after its
        isolation can be most of them).
        """
        t, p = self._txn, self._prefix
        cursor = t._cursor("contact_records")
        if not cursor.set_key(p + pid):
            return []
        found: list[tuple[bytes, RecordState | None]] = []
        last_time = until[: codec.TIME_BYTES] if until is not None else None
        for value in cursor.iternext_dup(keys=False, values=True):
            ref = bytes(value)
            if last_time is not None and ref[: codec.TIME_BYTES] > last_time:
                break
            record_hash = ref[codec.TIME_BYTES :]
            record = t._record_at(p + record_hash)
            if record is None:
                found.append((codec.missing_record_key(ref), None))
                continue
            canonical = ref[: codec.TIME_BYTES] + codec.record_id_key(
                record.source, record.record_id
            )
            t._hashes[p + canonical] = record_hash
            found.append((canonical, record))
        found.sort(key=itemgetter(0))
        if until is not None:
            found = [pair for pair in found if pair[0] <= until]
        return found

    def record_keys_of(self, pid: bytes) -> list[bytes]:
        """Canonical keys of the records naming a contact (see :meth:`keyed_records_of`)."""
        return [key for key, _ in self.keyed_records_of(pid)]

    def records_of(self, pid: bytes) -> list[RecordState]:
        """The records naming a contact, in canonical order (see :meth:`keyed_records_of`)."""
        return [record for _, record in self.keyed_records_of(pid) if record is not None]

    def has_edge(self, a: bytes, b: bytes) -> bool:
        t, p = self._txn, self._prefix
        return t._get("edges", p + a + b) is not None

    def put_edge(self, a: bytes, b: bytes) -> None:
        """Store a connection in both directions, so each contact can list its own."""
        t, p = self._txn, self._prefix
        t._put("edges", p + a + b, b"")
        t._put("edges", p + b + a, b"")

    def delete_edge(self, a: bytes, b: bytes) -> None:
        """Remove one direction of a connection (its caller removes the other)."""
        t, p = self._txn, self._prefix
        t._delete("edges", p + a + b)

    def neighbours_of(self, pid: bytes) -> list[bytes]:
        t, p = self._txn, self._prefix
        start = p + pid
        return [key[len(start) :] for key, _ in t._scan("edges", start)]

    def delete_edges_of(self, pid: bytes) -> None:
        t, p = self._txn, self._prefix
        for other in self.neighbours_of(pid):
            t._delete("edges", p + pid + other)
            t._delete("edges", p + other + pid)

    def index_national(self, national: str, pid: bytes) -> None:
        t, p = self._txn, self._prefix
        t._put("national", p + t._national_key(p, national) + pid, b"")

    def unindex_national(self, national: str, pid: bytes) -> None:
        t, p = self._txn, self._prefix
        t._delete("national", p + t._national_key(p, national) + pid)

    def pids_with_national(self, national: str) -> list[bytes]:
        t, p = self._txn, self._prefix
        start = p + t._national_key(p, national)
        return [key[len(start) :] for key, _ in t._scan("national", start)]

    def get_customer(self, pid: bytes) -> CustomerState | None:
        t, p = self._txn, self._prefix
        key = p + pid
        return t._decode(CustomerState, t._get_clear("customers", key))

    def put_customer(self, pid: bytes, customer: CustomerState) -> None:
        t, p = self._txn, self._prefix
        t._put_clear("customers", p + pid, customer.SerializeToString())

    def delete_customer(self, pid: bytes) -> None:
        t, p = self._txn, self._prefix
        t._delete("customers", p + pid)

    def iter_customers(self) -> Iterator[tuple[bytes, CustomerState]]:
        t, p = self._txn, self._prefix
        for key, value in t._scan("customers", p):
            yield key[len(p) :], t._decode(CustomerState, t._unseal(key, value))

    def get_redirect(self, pid: bytes) -> bytes | None:
        t, p = self._txn, self._prefix
        return t._get("redirects", p + pid)

    def put_redirect(self, pid: bytes, target: bytes) -> None:
        t, p = self._txn, self._prefix
        t._put("redirects", p + pid, target)

    def append_history(self, customer_pid: bytes, event: ChangeEvent) -> None:
        t, p = self._txn, self._prefix
        key = p + customer_pid + codec.u64(event.seq)
        t._put("history", key, event.SerializeToString())

    def history_of(self, customer_pid: bytes) -> list[ChangeEvent]:
        t, p = self._txn, self._prefix
        return [t._decode(ChangeEvent, v) for _, v in t._scan("history", p + customer_pid)]

    def append_event(self, event: ChangeEvent) -> None:
        """Append one event to the change feed and to the history of every customer it names."""
        t, p = self._txn, self._prefix
        data = event.SerializeToString()
        t._put("changes", p + codec.u64(event.seq), data)
        t._put("history", p + event.customer_pid + codec.u64(event.seq), data)
        for other in event.other_customer_pids:
            t._put("history", p + other + codec.u64(event.seq), data)

    def append_change(self, event: ChangeEvent) -> None:
        t, p = self._txn, self._prefix
        t._put("changes", p + codec.u64(event.seq), event.SerializeToString())

    def changes_after(self, seq: int, limit: int) -> list[ChangeEvent]:
        t, p = self._txn, self._prefix
        events = []
        for _, value in t._scan("changes", p, p + codec.u64(seq + 1)):
            events.append(t._decode(ChangeEvent, value))
            if len(events) >= limit:
                break
        return events

    def put_engagement(self, engagement: EngagementState) -> None:
        t, p = self._txn, self._prefix
        # Free text arrives redacted when the account asks (domain/engagements.py).
        key = (
            p
            + engagement.contact_pid
            + codec.time_key(engagement.occurred_at_us)
            + engagement.engagement_id
        )
        t._put("engagements", key, t._sealed_engagement(p, engagement))
        t._put("engagement_ids", p + engagement.engagement_id, key[len(p) :])
        self._log(LOG_ENGAGEMENT, engagement.engagement_id)

    def get_engagement(self, engagement_id: bytes) -> EngagementState | None:
        t, p = self._txn, self._prefix
        location = t._get("engagement_ids", p + engagement_id)
        if location is None:
            return None
        found = t._decode(EngagementState, t._get("engagements", p + location))
        return t._open_engagement(p, found)

    def engagements_of(self, contact_pid: bytes) -> Iterator[EngagementState]:
        t, p = self._txn, self._prefix
        for _, value in t._scan("engagements", p + contact_pid):
            yield t._open_engagement(p, t._decode(EngagementState, value))

    def iter_engagements(self) -> Iterator[EngagementState]:
        """Every engagement of an account (retention sweeps)."""
        t, p = self._txn, self._prefix
        for _, value in t._scan("engagements", p):
            yield t._open_engagement(p, t._decode(EngagementState, value))

    def delete_engagement(self, engagement: EngagementState) -> None:
        t, p = self._txn, self._prefix
        key = (
            p
            + engagement.contact_pid
            + codec.time_key(engagement.occurred_at_us)
            + engagement.engagement_id
        )
        t._delete("engagements", key)
        t._delete("engagement_ids", p + engagement.engagement_id)
        self._log(LOG_ENGAGEMENT, engagement.engagement_id)

    def put_pin(self, customer_pid: bytes, engagement_id: bytes) -> None:
        t, p = self._txn, self._prefix
        t._put("pins", p + customer_pid + engagement_id, b"")

    def delete_pin(self, customer_pid: bytes, engagement_id: bytes) -> None:
        t, p = self._txn, self._prefix
        t._delete("pins", p + customer_pid + engagement_id)

    def pins_of(self, customer_pid: bytes) -> list[bytes]:
        t, p = self._txn, self._prefix
        start = p + customer_pid
        return [key[len(start) :] for key, _ in t._scan("pins", start)]

    def delete_history(self, customer_pid: bytes) -> None:
        t, p = self._txn, self._prefix
        for key, _ in list(t._scan("history", p + customer_pid)):
            t._delete("history", key)

    def scrub_contacts(self, pids: set[bytes]) -> int:
        """Remove contact PIDs from every change event and history entry of an account (erasure)."""
        t, p = self._txn, self._prefix
        changed = 0
        for db in ("changes", "history"):
            for key, value in list(t._scan(db, p)):
                event = t._decode(ChangeEvent, value)
                added = [p for p in event.contacts_added if p not in pids]
                removed = [p for p in event.contacts_removed if p not in pids]
                if len(added) == len(event.contacts_added) and len(removed) == len(
                    event.contacts_removed
                ):
                    continue
                del event.contacts_added[:]
                event.contacts_added.extend(added)
                del event.contacts_removed[:]
                event.contacts_removed.extend(removed)
                t._put(db, key, event.SerializeToString())
                changed += 1
        return changed

    def append_audit(self, event: AuditEventState) -> None:
        t, p = self._txn, self._prefix
        t._put("audit", p + codec.u64(event.seq), event.SerializeToString())

    def audit_after(self, seq: int) -> Iterator[AuditEventState]:
        t, p = self._txn, self._prefix
        for _, value in t._scan("audit", p, p + codec.u64(seq + 1)):
            yield t._decode(AuditEventState, value)

    def iter_pins(self) -> Iterator[tuple[bytes, bytes]]:
        """Every pin of the account: (customer PID, engagement id)."""
        t, p = self._txn, self._prefix
        n = codec.PID_BYTES
        for key, _ in t._scan("pins", p):
            yield key[len(p) : len(p) + n], key[len(p) + n :]

    def iter_history(self) -> Iterator[tuple[bytes, ChangeEvent]]:
        """Every history entry of the account: (customer PID, event)."""
        t, p = self._txn, self._prefix
        for key, value in t._scan("history", p):
            yield key[len(p) : len(p) + codec.PID_BYTES], t._decode(ChangeEvent, value)

    def delete_history_entry(self, customer_pid: bytes, seq: int) -> None:
        t, p = self._txn, self._prefix
        t._delete("history", p + customer_pid + codec.u64(seq))

    def delete_change(self, seq: int) -> None:
        t, p = self._txn, self._prefix
        t._delete("changes", p + codec.u64(seq))

    def iter_tombstones(self) -> Iterator[tuple[bytes, int]]:
        """Erased customers: (customer PID, when it was erased)."""
        t, start = self._txn, _TOMBSTONE + self._prefix
        for key, value in t._scan("meta", start):
            yield key[len(start) :], codec.read_u64(value)

    def page(self, kind: str, after: bytes, limit: int) -> tuple[list[Any], bytes | None]:
        """Up to ``limit`` items of one kind after the token ``after`` (b"": from the start).

        Kinds and items: ``history`` (customer PID, event), ``engagements``
        (EngagementState), ``policies`` (contact PID, policy), ``redirects``
        (PID, target), ``tombstones`` (customer PID, when erased). Returns the
        items and the token of the next page (None after the last); a token is
        opaque to the caller. A load copies an account this way, a page a
        transaction.
        """
        t, p = self._txn, self._prefix
        db = _PAGED[kind]
        prefix = _TOMBSTONE + p if kind == "tombstones" else p
        start = prefix + after + b"\0" if after else None
        items: list[Any] = []
        last = b""
        for key, value in t._scan(db, prefix, start):
            if len(items) >= limit:
                return items, last
            rest = key[len(prefix) :]
            last = rest
            if kind == "history":
                items.append((rest[: codec.PID_BYTES], t._decode(ChangeEvent, value)))
            elif kind == "engagements":
                items.append(t._open_engagement(p, t._decode(EngagementState, value)))
            elif kind == "policies":
                items.append((rest, t._decode(ContactPolicyState, value)))
            elif kind == "redirects":
                items.append((rest, value))
            else:
                items.append((rest, codec.read_u64(value)))
        return items, None

    # -- the record log (a generation load's catch-up) ------------------------------------------

    def _log(self, kind: bytes, body: bytes, *, sealed: bool = True) -> None:
        """Append one entry; what it names is sealed (an erased contact's PID leaves no trace)."""
        t, p = self._txn, self._prefix
        seq = t.next_counter(_RECORD_LOG_SEQ + p)
        key = p + codec.u64(seq)
        if sealed:
            t._put_clear("record_log", key, body, kind)
        else:
            t._put("record_log", key, kind + body)

    def record_log_seq(self) -> int:
        """The sequence number of the record log's last entry (0 when there is none)."""
        return self._txn.counter(_RECORD_LOG_SEQ + self._prefix)

    def log_after(self, seq: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` record log entries after ``seq``, in order."""
        t, p = self._txn, self._prefix
        entries = []
        for key, value in t._scan("record_log", p, p + codec.u64(seq + 1)):
            kind, body = value[:1], value[1:]
            if kind in (LOG_POLICY, LOG_ENGAGEMENT, LOG_CONTACT) and t.cipher is not None:
                body = t.cipher.open(body, key)
            entry = LogEntry(codec.read_u64(key, len(p)), kind, body)
            if kind == LOG_DELETED:
                n = codec.RECORD_HASH_BYTES
                sealed = body[n:]
                opened = sealed if t.cipher is None else t.cipher.open(sealed, key)
                source, _, record_id = opened.partition(b"\0")
                entry = LogEntry(entry.seq, kind, body[:n], (source.decode(), record_id.decode()))
            entries.append(entry)
            if len(entries) >= limit:
                break
        return entries

    def forget_record_log(self) -> int:
        """Delete every entry of the account's record log (its counter stays); how many.

        For an erasure: a deletion entry holds the deleted record's source and
        id (sealed), and no load of an export made before an erasure may
        switch (domain/switch.py), so nothing needs the entries any more.
        """
        t, p = self._txn, self._prefix
        cursor = t._cursor("record_log")
        deleted = 0
        if not cursor.set_range(p):
            return 0
        while bytes(cursor.key()).startswith(p):
            if not cursor.delete():
                break
            deleted += 1
            if not cursor.key():
                break
        return deleted

    def record_by_hash(self, record_hash: bytes) -> RecordState | None:
        """The record a log entry names (None: deleted since)."""
        return self._txn._record_at(self._prefix + record_hash)

    def records_after(
        self, seq: int, limit: int
    ) -> list[tuple[int, RecordState | None, tuple[str, str] | None]]:
        """Records written or deleted after log ``seq``: (seq, record now or None, deleted id)."""
        found: list[tuple[int, RecordState | None, tuple[str, str] | None]] = []
        for entry in self.log_after(seq, limit):
            if entry.kind == LOG_RECORD:
                found.append((entry.seq, self.record_by_hash(entry.body), None))
            elif entry.kind == LOG_DELETED:
                found.append((entry.seq, None, entry.deleted))
        return found

    # -- counters and markers a load copies ------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """The account's persistent counters by name (contacts, changes, customers, audit...)."""
        return {
            name.decode().rstrip(":"): self._txn.counter(name + self._prefix)
            for name in _ACCOUNT_COUNTERS
        }

    def set_counter(self, name: str, value: int) -> None:
        """Set one of :meth:`counters` (a load continues the live account's numbering)."""
        for known in _ACCOUNT_COUNTERS:
            if known.decode().rstrip(":") == name:
                self._txn.put_meta(_COUNTER + known + self._prefix, codec.u64(value))
                return
        raise KeyError(name)

    def get_generation(self) -> bytes | None:
        """What the account was loaded from (JSON written by the load), None if never loaded."""
        return self._txn.get_meta(_GENERATION + self._prefix)

    def put_generation(self, data: bytes) -> None:
        self._txn.put_meta(_GENERATION + self._prefix, data)

    # -- dropping an account id, in batches ----------------------------------------------------

    def drop_some(self, limit: int) -> int:
        """Delete up to ``limit`` entries of this account id; 0 once nothing is left.

        Sub-databases first, then the account's meta keys and counters last,
        so an interrupted drop can always be resumed.
        """
        t, p = self._txn, self._prefix
        deleted = 0
        for db in _ACCOUNT_DBS:
            cursor = t._cursor(db)
            if not cursor.set_range(p):
                continue
            while deleted < limit and bytes(cursor.key()).startswith(p):
                # delete() moves the cursor to the next entry (also the next duplicate).
                if not cursor.delete():
                    break
                deleted += 1
                if not cursor.key():
                    break
            if deleted >= limit:
                return deleted
        for key, _ in list(t._scan("meta", _TOMBSTONE + p)):
            if deleted >= limit:
                return deleted
            t._delete("meta", key)
            deleted += 1
        for name in _ACCOUNT_META:
            if t._delete("meta", name + p):
                deleted += 1
        for name in _ACCOUNT_COUNTERS:
            if t._delete("meta", _COUNTER + name + p):
                deleted += 1
        return deleted


class LogEntry:
    """One entry of an account's record log: its seq, kind (LOG_*) and what it names."""

    __slots__ = ("seq", "kind", "body", "deleted")

    def __init__(
        self, seq: int, kind: bytes, body: bytes, deleted: tuple[str, str] | None = None
    ) -> None:
        self.seq = seq
        self.kind = kind
        self.body = body  # record hash, contact PID or engagement id
        self.deleted = deleted  # (source, record id) of a deleted record
