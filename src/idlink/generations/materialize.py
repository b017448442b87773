"""Records to a written generation: ``idlink load --records`` and ``--in`` (issue 12).

Three steps, each usable alone (generations/cli.py runs them, then the switch):

1. :func:`generation_from_records` reads a records file (the formats of
   ``idlink ingest``), cleans, validates and hashes its contacts in compiled
   batches, merges them with the records the account already holds (a record
   of the file replaces the stored one with the same (source, record_id)),
   and computes the generation: plain components with the compiled
   union-find (``local``), the exact replay of the flagged components and the
   customer PIDs carried over from the live customers (``recluster.finish``).
   :func:`generation_from_folder` does the same from a recluster output
   folder and its export (``load --in``).
2. :func:`check_fits` refuses, before anything is written, a generation that
   would not fit the store's map (a multi-process store cannot grow) or disk.
3. :func:`write_generation` writes every derived row of the generation into
   an empty account, sorted, with appending writes, in bounded durable
   batches (:mod:`idlink.store.bulk`, :mod:`idlink.domain.bulk`): the rows
   are, field for field, what the online engine stores for the same records
   (``tests/generations/test_materialize.py`` compares them).

How the derived fields are worked out for the whole account at once (the
online engine's rules, docs/scale-out.md):

- connections: the distinct usable contacts a contact shares a record with;
  the edges are those pairs, both directions;
- where a contact was first seen: the first record naming it in canonical
  order and its position there (``linking.LinkGraph.apply``);
- a record's group: its usable contacts, non-reassignable first, then in the
  contact order (``LinkGraph.apply`` when no cap or limit fires), outcome
  APPLIED; a customer's watermark: the newest record naming one of its usable
  contacts;
- the flagged components (over the cap or a key limit) are replayed by the
  domain's own ``LinkGraph`` in canonical order, which gives their groups,
  outcomes, refused pairs, isolations, moves and watermarks exactly.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from idlink._native import _bulk
from idlink.domain import bulk as bulk_use
from idlink.domain import collector
from idlink.domain.contacts import BLOCKED, national_number, national_numbers
from idlink.domain.keytypes import NORMALIZER_PHONE, AccountConfig, KeyType
from idlink.domain.linking import LinkGraph, Node, StepResult
from idlink.domain.pids import merge_profile
from idlink.errors import StoreFull
from idlink.generations import local, recluster
from idlink.generations import pids as pid_rules
from idlink.generations.columns import (
    byte_order,
    canonical_keys,
    lex_order,
    pid_list,
    record_id_keys,
    time_keys,
)
from idlink.generations.export import SCHEMAS, Export, key_type_rows, open_export
from idlink.generations.manifest import (
    EXPORT_FORMAT,
    GENERATION_FORMAT,
    ExportError,
    Manifest,
    read_manifest,
    secret_fingerprint,
)
from idlink.generations.recluster import Generation, Inputs
from idlink.generations.records_file import parse_file, prepare_entries
from idlink.store import codec
from idlink.store.bulk import AccountKeys, byte_matrix, split_rows
from idlink.store.txn import ContactState, CustomerState, RecordState

DEFAULT_ACTOR = "load"
BATCH_ROWS = 100_000
# Sealed values carry a 2-byte header, a 12-byte nonce and a 16-byte tag.
SEAL_OVERHEAD = 30
# What an estimate adds for branch pages and the free pages of the last commits.
FIT_MARGIN = 1.25


# -- what a load computes before it writes ------------------------------------------------------


@dataclass(slots=True)
class ContactValues:
    """Per contact of a generation (the rows of its inputs): what the records do not derive."""

    type: list[str]
    source: list[str]
    value: list[str]
    invalid_reason: list[str]  # as stored: "" for valid and for BLOCKED contacts
    created_at_us: list[int]
    national: list[str]  # its national number when it is in that index, else ""

    def get(self, index: int) -> tuple[str, str, str, str]:
        return self.type[index], self.source[index], self.value[index], self.invalid_reason[index]


@dataclass(slots=True)
class Planned:
    """A generation ready to write: partition, PIDs, contact values and record provenance."""

    generation: Generation
    values: ContactValues
    record_author: list[str]  # per record row of the inputs
    record_stored_at_us: np.ndarray
    account: str
    actor: str
    now_us: int
    live_account: str | None  # the account whose customers the PIDs were carried over from
    contact_seq: int  # the highest first_seen in use
    customer_seq: int  # the highest created_seq in use
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def inputs(self) -> Inputs:
        return self.generation.inputs


@dataclass(slots=True)
class WriteReport:
    """What :func:`write_generation` wrote."""

    rows: dict[str, int] = field(default_factory=dict)
    appended_batches: int = 0
    plain_batches: int = 0
    replayed_components: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


# -- the live account, read once ----------------------------------------------------------------


@dataclass(slots=True)
class _Live:
    exists: bool
    config: AccountConfig
    change_seq: int = 0
    contacts: list[tuple[bytes, ContactState]] = field(default_factory=list)
    records: list[RecordState] = field(default_factory=list)
    customers: list[tuple[bytes, CustomerState]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    national: dict[bytes, str] = field(default_factory=dict)  # PID -> its indexed number


def _type_of(config: AccountConfig, name: str) -> KeyType:
    return config.key_types.get(name) or KeyType(name)


def _read_live(engine: Any, account: str) -> _Live:
    with engine.read(account) as view:
        if not view.exists:
            return _Live(False, view.config)
        txn = view.txn
        live = _Live(True, view.config, change_seq=int(txn.change_seq()))
        live.contacts = list(txn.iter_contacts())
        live.records = list(txn.iter_records())
        live.customers = list(txn.iter_customers())
        live.policies = _policies_of(view, [pid for pid, _ in live.contacts])
        for pid, contact in live.contacts:
            national = national_number(_type_of(view.config, contact.type), contact.value)
            if national and pid in txn.pids_with_national(national):
                live.national[pid] = national
        return live


def _policies_of(view: Any, pids: Sequence[bytes]) -> list[dict[str, Any]]:
    """The contact policies (do-not-link, never-isolate) of these contacts, as export rows."""
    rows: list[dict[str, Any]] = []
    if not view.has_policies:
        return rows
    for pid in pids:
        policy = view.txn.get_policy(pid)
        if policy is not None:
            rows.append(
                {
                    "contact_pid": pid,
                    "do_not_link": policy.do_not_link,
                    "never_isolate": policy.never_isolate,
                    "set_by": policy.set_by,
                    "set_at_us": policy.set_at_us,
                }
            )
    return rows


def _canonical_order(observed: np.ndarray, sources: list[str], ids: list[str]) -> np.ndarray:
    """Row -> place in canonical order (observed_at, source, record_id)."""
    table = pa.table({"o": observed, "s": pa.array(sources, pa.string()), "r": ids})
    order = pc.sort_indices(
        table, sort_keys=[("o", "ascending"), ("s", "ascending"), ("r", "ascending")]
    ).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _last_versions(sources: list[str], ids: list[str]) -> np.ndarray:
    """The row of each (source, record_id)'s last version, in row order."""
    if not sources:
        return np.empty(0, np.int64)
    table = pa.table(
        {
            "s": pa.array(sources, pa.string()),
            "r": pa.array(ids, pa.string()),
            "row": pa.array(np.arange(len(sources), dtype=np.int64)),
        }
    )
    last = table.group_by(["s", "r"], use_threads=False).aggregate([("row", "max")])
    return np.sort(last.column("row_max").to_numpy(zero_copy_only=False).astype(np.int64))


# -- 1. records file -> generation --------------------------------------------------------------


def generation_from_records(
    engine: Any,
    account: str,
    records_path: str | Path,
    *,
    progress: bool,
    actor: str = DEFAULT_ACTOR,
) -> Planned:
    """Read, check and hash a records file, merge it with the account's records, recluster.

    A bad file raises :class:`~idlink.generations.records_file.RecordsFileError`
    (an ``InvalidArgument`` naming the file and the line) before anything is
    written. Records of the file with the same (source, record_id) as a
    stored record replace it; a deleted record of the file removes it; a
    record named twice in the file counts as its last version (as one
    ``Ingest`` batch does).
    """
    with collector.paused():
        return _generation_from_records(engine, account, Path(records_path), actor)


def _generation_from_records(engine: Any, account: str, records_path: Path, actor: str) -> Planned:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    path = Path(records_path)
    now = int(engine.clock())
    parsed = parse_file(path)
    seconds["parse"] = time.perf_counter() - started
    tick = time.perf_counter()
    live = _read_live(engine, account)
    config = live.config
    secret = engine.secret(account)
    seconds["read_live"] = time.perf_counter() - tick
    tick = time.perf_counter()
    prepared = prepare_entries(parsed, config, secret)
    seconds["prepare"] = time.perf_counter() - tick
    tick = time.perf_counter()

    # The file's records, each by its last version.
    chosen = _last_versions(parsed.source, parsed.record_id)
    deleted = np.array(parsed.deleted, bool)
    kept = chosen[~deleted[chosen]] if len(chosen) else chosen
    observed_all = np.array([now if o is None else o for o in parsed.observed_at_us], np.int64)

    # Entries of the kept records, their contacts as dense ids over the file's PIDs.
    entry_record = np.array(parsed.entry_record, np.int64)
    keep_record = np.zeros(parsed.records, bool)
    keep_record[kept] = True
    entries = np.flatnonzero(keep_record[entry_record]) if len(entry_record) else entry_record
    entry_pids = pa.array(prepared.pid, pa.binary(16))
    encoded = pc.dictionary_encode(entry_pids)
    file_pids = encoded.dictionary
    entry_u = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)

    # Per record, each contact once, in the record's order (ingest's dict.fromkeys).
    sub_record, sub_u = entry_record[entries], entry_u[entries]
    width = max(len(file_pids), 1)
    _, first = np.unique(sub_record * width + sub_u, return_index=True)
    dedup = entries[np.sort(first)]  # entry indices, in file order

    # Canonical order of the kept records: new contacts arrive in it (first_seen).
    kept_sources = [parsed.source[r] for r in kept.tolist()]
    kept_ids = [parsed.record_id[r] for r in kept.tolist()]
    kept_rank = _canonical_order(observed_all[kept], kept_sources, kept_ids)
    record_rank_of_row = np.full(parsed.records, -1, np.int64)
    record_rank_of_row[kept] = kept_rank

    seen_order = lex_order((entries, record_rank_of_row[entry_record[entries]]))
    ordered_u = entry_u[entries][seen_order]
    unique_u, first_at = np.unique(ordered_u, return_index=True)
    by_arrival = unique_u[np.argsort(first_at, kind="stable")]
    first_entry = np.zeros(len(file_pids), np.int64)
    first_entry[unique_u] = entries[seen_order][first_at]
    file_pid_list: list[bytes] = pid_list(file_pids) if live.records else []
    live_pids = pa.array([pid for pid, _ in live.contacts], pa.binary(16))
    is_live = pc.is_in(file_pids, value_set=live_pids).to_numpy(zero_copy_only=False)
    new_u = by_arrival[~is_live[by_arrival]]
    new_pids = file_pids.take(pa.array(new_u))
    new_pid_list: list[bytes] = pid_list(new_pids)

    # Policies may be set on contacts no record named yet (SPEC 2.5).
    with engine.read(account) as view:
        live.policies.extend(_policies_of(view, new_pid_list))
    contact_seq = max((c.first_seen for _, c in live.contacts), default=0)
    customer_seq = max((c.created_seq for _, c in live.customers), default=0)

    # Contacts: the live ones, then the new ones in order of arrival.
    c_pid: list[bytes] = []
    c_type: list[str] = []
    c_source: list[str] = []
    c_value: list[str] = []
    c_reason: list[str] = []
    c_blocked: list[bool] = []
    c_customer: list[bytes] = []
    c_first_seen: list[int] = []
    c_created: list[int] = []
    c_national: list[str] = []
    for pid, contact in live.contacts:
        key_type = config.key_types.get(contact.type)
        c_pid.append(pid)
        c_type.append(contact.type)
        c_source.append(contact.source)
        c_value.append(contact.value)
        c_reason.append(contact.invalid_reason)
        c_blocked.append(key_type is not None and key_type.is_blocked(contact.value))
        c_customer.append(contact.customer_pid)
        c_first_seen.append(contact.first_seen)
        c_created.append(contact.created_at_us)
        c_national.append(live.national.get(pid, ""))
    # Entry columns as object arrays, so whole columns are taken at once.
    e_type = np.array(parsed.entry_type, dtype=object)
    e_source = np.array(prepared.source, dtype=object)
    e_cleaned = np.array(prepared.cleaned, dtype=object)
    e_reason = np.array(prepared.invalid_reason, dtype=object)
    first = first_entry[new_u]
    new_reason = e_reason[first]
    new_blocked = new_reason == BLOCKED
    new_cleaned: list[str] = e_cleaned[first].tolist()
    new_types: list[str] = e_type[first].tolist()
    c_pid.extend(new_pid_list)
    c_type.extend(new_types)
    c_source.extend(e_source[first].tolist())
    c_value.extend(new_cleaned)
    c_reason.extend(np.where(new_blocked, "", new_reason).tolist())
    c_blocked.extend(new_blocked.tolist())
    c_customer.extend([b""] * len(new_u))
    c_first_seen.extend(range(contact_seq + 1, contact_seq + 1 + len(new_u)))
    c_created.extend([now] * len(new_u))
    # National numbers of the new valid phones, a whole column per phone key type.
    new_national = np.full(len(new_u), "", object)
    valid = new_reason == ""
    new_type_column = e_type[first]
    for key_type in config.key_types.values():
        if key_type.normalizer != NORMALIZER_PHONE:
            continue
        at = np.flatnonzero(valid & (new_type_column == key_type.name))
        if len(at):
            new_national[at] = national_numbers(key_type, _take(new_cleaned, at))
    c_national.extend(new_national.tolist())
    del new_national, valid, new_type_column

    # Records: the live ones not replaced or deleted by the file, then the file's.
    replaced = (
        set(zip(_take(parsed.source, chosen), _take(parsed.record_id, chosen), strict=True))
        if live.records
        else set()
    )
    r_source: list[str] = []
    r_id: list[str] = []
    r_observed: list[int] = []
    r_author: list[str] = []
    r_stored: list[int] = []
    flat_pid: list[bytes] = []
    flat_type: list[str] = []
    flat_source: list[str] = []
    lengths: list[int] = []
    contact_meta = (
        dict(zip(c_pid, zip(c_type, c_source, strict=True), strict=True)) if live.records else {}
    )
    for record in live.records:
        if (record.source, record.record_id) in replaced:
            continue
        r_source.append(record.source)
        r_id.append(record.record_id)
        r_observed.append(record.observed_at_us)
        r_author.append(record.author)
        r_stored.append(record.stored_at_us)
        lengths.append(len(record.contact_pids))
        for pid in record.contact_pids:
            kind, source = contact_meta.get(pid, ("", ""))
            flat_pid.append(pid)
            flat_type.append(kind)
            flat_source.append(source)
    # The file's kept records (in file order), their deduplicated contacts in
    # the record's order: entries are grouped by record, in file order.
    per_record = np.bincount(entry_record[dedup], minlength=parsed.records)
    kept_lengths = per_record[kept]
    kept_observed = observed_all[kept]
    kept_authors = [actor] * len(kept)
    kept_stored = [now] * len(kept)
    if live.records:
        # A record sent again unchanged keeps its author and time (records._apply_one).
        live_by_key = {(r.source, r.record_id): r for r in live.records}
        starts = np.concatenate([[0], np.cumsum(kept_lengths)]).tolist()
        dedup_u = entry_u[dedup].tolist()
        for i, row in enumerate(kept.tolist()):
            stored = live_by_key.get((parsed.source[row], parsed.record_id[row]))
            if stored is None or stored.observed_at_us != kept_observed[i]:
                continue
            pids_of = [file_pid_list[u] for u in dedup_u[starts[i] : starts[i + 1]]]
            if list(stored.contact_pids) == pids_of:
                kept_authors[i] = stored.author
                kept_stored[i] = stored.stored_at_us
    r_source.extend(kept_sources)
    r_id.extend(kept_ids)
    r_observed.extend(kept_observed.tolist())
    r_author.extend(kept_authors)
    r_stored.extend(kept_stored)
    lengths.extend(kept_lengths.tolist())
    flat_pid_array = pa.concat_arrays(
        [
            pa.array(flat_pid, pa.binary()),
            file_pids.take(pa.array(entry_u[dedup])).cast(pa.binary()),
        ]
    )
    flat_type.extend(e_type[dedup].tolist())
    flat_source.extend(e_source[dedup].tolist())

    offsets = np.concatenate([[0], np.cumsum(np.array(lengths, np.int64))]).astype(np.int32)
    contacts_struct = pa.StructArray.from_arrays(
        [
            flat_pid_array,
            pa.array(flat_type, pa.string()),
            pa.array(flat_source, pa.string()),
        ],
        fields=list(SCHEMAS["records"].field("contacts").type.value_type),
    )
    tables = {
        "records": pa.table(
            {
                "source": pa.array(r_source, pa.string()),
                "record_id": pa.array(r_id, pa.string()),
                "observed_at_us": pa.array(r_observed, pa.int64()),
                "deleted": pa.array(np.zeros(len(r_source), bool)),
                "contacts": pa.ListArray.from_arrays(pa.array(offsets), contacts_struct),
            },
            schema=SCHEMAS["records"],
        ),
        "contacts": pa.table(
            {
                "contact_pid": pa.array(c_pid, pa.binary()),
                "type": pa.array(c_type, pa.string()),
                "source": pa.array(c_source, pa.string()),
                "invalid_reason": pa.array(c_reason, pa.string()),
                "blocked": pa.array(c_blocked, pa.bool_()),
                "customer_pid": pa.array(c_customer, pa.binary()),
                "first_seen": pa.array(c_first_seen, pa.int64()),
            },
            schema=SCHEMAS["contacts"],
        ),
        "customers": pa.Table.from_pylist(
            [
                {
                    "customer_pid": pid,
                    "created_seq": state.created_seq,
                    "contact_pids": list(state.contact_pids),
                }
                for pid, state in live.customers
            ],
            schema=SCHEMAS["customers"],
        ),
        "key_types": pa.Table.from_pylist(
            key_type_rows(config.key_types.values()), schema=SCHEMAS["key_types"]
        ),
        "contact_policies": pa.Table.from_pylist(live.policies, schema=SCHEMAS["contact_policies"]),
        "account_policy": pa.Table.from_pylist(
            [
                {
                    "max_contacts": config.policy.max_contacts,
                    "isolate_min_connections": config.policy.isolate_min_connections,
                }
            ],
            schema=SCHEMAS["account_policy"],
        ),
    }
    manifest = Manifest(
        format=EXPORT_FORMAT,
        export_id=uuid.uuid4().hex,
        account=account,
        secret_fingerprint=secret_fingerprint(secret),
        change_seq=live.change_seq,
        created_at_us=now,
    )
    export = Export(path, manifest, tables)
    # The file's columns are in the export's tables now: free them before the recluster.
    del parsed, prepared, e_type, e_source, e_cleaned, e_reason, flat_pid, flat_type, flat_source
    del entry_pids, encoded, flat_pid_array, contacts_struct, c_pid, c_blocked, c_customer
    del r_source, r_id, r_observed, c_first_seen, tables
    seconds["merge"] = time.perf_counter() - tick
    tick = time.perf_counter()
    inputs = recluster.load_inputs(export)
    details: dict[str, Any] = {"records_file": str(path.resolve())}
    labels = local.components(inputs, details)
    generation = recluster.finish(inputs, labels, "local", details)
    seconds["recluster"] = time.perf_counter() - tick
    values = ContactValues(c_type, c_source, c_value, c_reason, c_created, c_national)
    return Planned(
        generation=generation,
        values=values,
        record_author=r_author,
        record_stored_at_us=np.array(r_stored, np.int64),
        account=account,
        actor=actor,
        now_us=now,
        live_account=account if live.exists else None,
        contact_seq=contact_seq + len(new_u),
        customer_seq=customer_seq,
        seconds=seconds,
    )


# -- 1b. a recluster output folder -> generation ------------------------------------------------


def generation_from_folder(
    engine: Any, account: str, generation_path: str | Path, export_path: str | Path | None = None
) -> Planned:
    """Read a recluster output folder and its export back as a generation of the live account.

    The generation's manifest must name the export (same export id and
    account) and the store's secret; ``export_path`` defaults to the
    export the generation's manifest names (``details["export"]``). The
    contact values come from the live account, which the export was made of.
    """
    root = Path(generation_path)
    gen_manifest = read_manifest(root, GENERATION_FORMAT)
    if export_path is None:
        named = gen_manifest.details.get("export")
        if not isinstance(named, str) or not named:
            raise ExportError(
                f"{root / 'manifest.json'} does not name its export: give the export folder"
            )
        export_path = named
    secret = engine.secret(account)
    fingerprint = secret_fingerprint(secret)
    if gen_manifest.account != account:
        raise ExportError(
            f"{root / 'manifest.json'} is a generation of account {gen_manifest.account!r}, "
            f"not {account!r}"
        )
    if gen_manifest.secret_fingerprint != fingerprint:
        raise ExportError(
            f"{root / 'manifest.json'} was made under another account secret than this store's"
        )
    export = open_export(export_path, account=account, fingerprint=fingerprint)
    if export.manifest.export_id != gen_manifest.export_id:
        raise ExportError(
            f"{root / 'manifest.json'} was computed from export {gen_manifest.export_id}, "
            f"not from {export.manifest.export_id} ({export_path})"
        )
    import pyarrow.parquet as pq

    def table(name: str) -> pa.Table:
        try:
            return pq.read_table(root / f"{name}.parquet")
        except (OSError, pa.ArrowException) as exc:
            raise ExportError(f"{root / (name + '.parquet')} cannot be read: {exc}") from None

    inputs = recluster.load_inputs(export)
    contacts, customers, changes = table("contacts"), table("customers"), table("changes")
    if contacts.num_rows != inputs.contacts:
        raise ExportError(
            f"{root / 'contacts.parquet'} has {contacts.num_rows} contacts, "
            f"the export {inputs.contacts}"
        )
    gen_pids = recluster._pid_array(contacts.column("contact_pid"), root / "contacts.parquet")
    if not gen_pids.equals(inputs.pids):
        raise ExportError(f"{root / 'contacts.parquet'} does not list the export's contacts")
    customer_pids = customers.column("customer_pid").combine_chunks()
    where = pc.index_in(contacts.column("customer_pid"), value_set=customer_pids)
    if where.null_count:
        raise ExportError(f"{root / 'contacts.parquet'} names a customer customers.parquet lacks")
    part_of = where.to_numpy(zero_copy_only=False).astype(np.int64)
    isolated = contacts.column("isolated").to_numpy(zero_copy_only=False).astype(bool)
    lists = customers.column("contact_pids").combine_chunks()
    member_index = pc.index_in(pc.list_flatten(lists), value_set=inputs.pids)
    members_offsets = np.asarray(lists.offsets.to_numpy(), np.int64)
    members = member_index.to_numpy(zero_copy_only=False).astype(np.int64)
    by_pid = {pid: i for i, pid in enumerate(pid_list(customer_pids))}
    kinds = [""] * customers.num_rows
    others: list[list[bytes]] = [[] for _ in range(customers.num_rows)]
    change_rows = changes.to_pylist()
    for row in change_rows:
        part = by_pid.get(row["customer_pid"])
        if part is None:
            raise ExportError(f"{root / 'changes.parquet'} names a customer it does not hold")
        kinds[part] = row["kind"]
        others[part] = list(row["other_customer_pids"])
    empty = np.zeros(customers.num_rows + 1, np.int64)
    assignment = pid_rules.Assignment(
        part_of=part_of,
        members_offsets=members_offsets,
        members=members,
        customer_pid=pid_list(customer_pids),
        kind=kinds,
        others=others,
        added_offsets=empty,
        added=np.empty(0, np.int64),
        removed_offsets=empty,
        removed=np.empty(0, np.int64),
    )
    generation = Generation(
        inputs, part_of, isolated, str(gen_manifest.details.get("engine", "")), {}, assignment
    )
    # Contact values and record provenance from the live account.
    now = int(engine.clock())
    live = _read_live(engine, account)
    by_contact = dict(live.contacts)
    pids = pid_list(inputs.pids)
    values = ContactValues([], [], [], [], [], [])
    for pid in pids:
        contact = by_contact.get(pid)
        if contact is None:
            raise ExportError(
                f"{export.path} names a contact the live account {account!r} no longer holds "
                "(erased since the export): export and recluster again"
            )
        values.type.append(contact.type)
        values.source.append(contact.source)
        values.value.append(contact.value)
        values.invalid_reason.append(contact.invalid_reason)
        values.created_at_us.append(contact.created_at_us)
        values.national.append(live.national.get(pid, ""))
    live_by_key = {(r.source, r.record_id): r for r in live.records}
    records = export["records"]
    authors: list[str] = []
    stored_at: list[int] = []
    for source, record_id in zip(
        records.column("source").to_pylist(), records.column("record_id").to_pylist(), strict=True
    ):
        stored = live_by_key.get((source, record_id))
        authors.append(stored.author if stored is not None else DEFAULT_ACTOR)
        stored_at.append(stored.stored_at_us if stored is not None else now)
    return Planned(
        generation=generation,
        values=values,
        record_author=authors,
        record_stored_at_us=np.array(stored_at, np.int64),
        account=account,
        actor=DEFAULT_ACTOR,
        now_us=now,
        live_account=account,
        contact_seq=max((c.first_seen for _, c in live.contacts), default=0),
        customer_seq=max((c.created_seq for _, c in live.customers), default=0),
    )


# -- the derived rows ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Replayed:
    """The flagged components replayed exactly: their nodes, record results and watermarks."""

    nodes: dict[int, Node] = field(default_factory=dict)  # contact -> node (usable ones)
    results: dict[int, StepResult] = field(default_factory=dict)  # record row -> result
    watermark: dict[int, bytes] = field(default_factory=dict)  # contact -> its part's


def _replay_flagged(
    inputs: Inputs,
    plain: np.ndarray,
    flagged: np.ndarray,
    canonical: list[bytes],
    pids: list[bytes],
) -> _Replayed:
    out = _Replayed()
    if not len(flagged):
        return out
    is_flagged = np.zeros(int(plain.max()) + 1, bool)
    is_flagged[flagged] = True
    usable_entry = inputs.usable[inputs.entry_contact]
    record_component = np.full(len(inputs.record_rank), -1, np.int64)
    record_component[inputs.entry_record[usable_entry]] = plain[inputs.entry_contact[usable_entry]]
    chosen = np.flatnonzero((record_component >= 0) & is_flagged[np.maximum(record_component, 0)])
    entry_index = np.flatnonzero(np.isin(inputs.entry_record, chosen))
    entries_of: dict[int, list[int]] = {}
    for entry in entry_index.tolist():
        entries_of.setdefault(int(inputs.entry_record[entry]), []).append(
            int(inputs.entry_contact[entry])
        )
    by_component: dict[int, list[int]] = {}
    for record in chosen.tolist():
        by_component.setdefault(int(record_component[record]), []).append(record)
    for component, records in sorted(by_component.items()):
        contacts: dict[int, None] = {}
        replayed: list[tuple[bytes, list[bytes]]] = []
        row_of: dict[bytes, int] = {}
        for record in records:
            members = entries_of.get(record, [])
            contacts.update(dict.fromkeys(members))
            replayed.append((canonical[record], [pids[m] for m in members]))
            row_of[canonical[record]] = record
        graph = LinkGraph(inputs.max_contacts, inputs.isolate_min_connections)
        specs = [(recluster.node_spec(inputs, c), c) for c in contacts]
        index_of = {}
        for spec, c in sorted(specs, key=lambda s: s[0].first_seen):
            graph.add_node(spec.node())
            index_of[spec.pid] = c
        results = graph.replay(replayed)
        for key, result in results.items():
            out.results[row_of[key]] = result
        for part_nodes, watermark in graph.components():
            for node in part_nodes:
                c = index_of[node.pid]
                if plain[c] == component and inputs.usable[c]:
                    out.nodes[c] = node
                    out.watermark[c] = watermark
    return out


def _pairs(records: np.ndarray, contacts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of contacts sharing a record (entries grouped by record), each pair once."""
    lo_parts: list[np.ndarray] = []
    hi_parts: list[np.ndarray] = []
    d = 1
    while d < len(records):
        same = records[:-d] == records[d:]
        if not same.any():
            break
        a, b = contacts[:-d][same], contacts[d:][same]
        lo_parts.append(np.minimum(a, b))
        hi_parts.append(np.maximum(a, b))
        d += 1
    if not lo_parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lo, hi = np.concatenate(lo_parts), np.concatenate(hi_parts)
    keep = lo != hi
    lo, hi = lo[keep], hi[keep]
    width = int(max(hi.max(), 0)) + 1 if len(hi) else 1
    unique = np.unique(lo * width + hi)
    return unique // width, unique % width


def _byte_order(values: list[bytes], width: int) -> np.ndarray:
    """The stable order that sorts equal-length byte strings."""
    if not values:
        return np.empty(0, np.int64)
    return byte_order(np.frombuffer(b"".join(values), np.uint8).reshape(len(values), width))


def _sorted_rows(rows: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``sorted(rows)`` for rows of distinct keys: one argsort when the keys are of one length."""
    keys = [key for key, _ in rows]
    if not rows or len(set(map(len, keys))) != 1:
        return sorted(rows)
    order = _byte_order(keys, len(keys[0]))
    column = np.empty(len(rows), object)
    column[:] = rows
    result: list[tuple[bytes, bytes]] = column[order].tolist()
    return result


def _lazy(build: Callable[[], Batches]) -> Batches:
    """Batches whose columns are built at the first batch (and freed with the function)."""
    made: list[Batches] = []

    def batches(lo: int, hi: int) -> list[tuple[bytes, bytes]]:
        if not made:
            made.append(build())
        return made[0](lo, hi)

    return batches


def _take(values: Sequence[Any], index: np.ndarray) -> list[Any]:
    """``[values[i] for i in index]``, as one whole-column take."""
    if not len(index):
        return []
    column = np.empty(len(values), object)
    column[:] = values
    result: list[Any] = column[index].tolist()
    return result


def _rank_of(order: np.ndarray) -> np.ndarray:
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _live_customers(
    engine: Any, account: str | None, wanted: set[bytes]
) -> dict[bytes, CustomerState]:
    if account is None or not wanted:
        return {}
    found: dict[bytes, CustomerState] = {}
    with engine.read(account) as view:
        if not view.exists:
            return {}
        for pid in wanted:
            state = view.txn.get_customer(pid)
            if state is not None:
                found[pid] = state
    return found


# Rows lo..hi of a table, in key order: (key, clear value).
Batches = Callable[[int, int], list[tuple[bytes, bytes]]]


@dataclass(slots=True)
class _Rows:
    """The generation's rows per table, each a sorted lazy sequence of (key, clear value)."""

    tables: dict[str, tuple[int, Batches]]
    contact_seq: int
    customer_seq: int
    replayed_components: int
    replay_seconds: float


def derive_rows(
    engine: Any, keys: AccountKeys, planned: Planned, live_account: str | None
) -> _Rows:
    """Work out every derived row of a generation, sorted as the sub-databases keep them."""
    generation = planned.generation
    inputs = generation.inputs
    assignment = generation.assignment
    assert assignment is not None
    n = inputs.contacts
    pids: list[bytes] = pid_list(inputs.pids)
    records = inputs.export["records"]
    sources: list[str] = records.column("source").to_pylist()
    ids: list[str] = records.column("record_id").to_pylist()
    observed = records.column("observed_at_us").to_numpy(zero_copy_only=False).astype(np.int64)
    # The records' keys a whole column at a time (columns.py; equal to codec's, tested).
    times = time_keys(observed)
    id_keys = record_id_keys(records.column("source"), records.column("record_id"))
    canonical = canonical_keys(times, id_keys)
    row_of_rank = np.argsort(inputs.record_rank, kind="stable")

    entry_record, entry_contact = inputs.entry_record, inputs.entry_contact
    # Where each contact was first seen (linking.LinkGraph.apply).
    first_rank = np.full(n, -1, np.int64)
    first_position = np.zeros(n, np.int64)
    if len(entry_contact):
        ranks = inputs.record_rank[entry_record]
        order = lex_order((inputs.entry_position, ranks))
        contacts_sorted = entry_contact[order]
        unique, first = np.unique(contacts_sorted, return_index=True)
        first_rank[unique] = ranks[order][first]
        first_position[unique] = inputs.entry_position[order][first]

    # Connections and edges: distinct usable contacts sharing a record.
    usable_entry = inputs.usable[entry_contact]
    u_record, u_contact = entry_record[usable_entry], entry_contact[usable_entry]
    lo, hi = _pairs(u_record, u_contact)
    degree = np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n)

    # The flagged components, replayed exactly for their details.
    started = time.perf_counter()
    plain = local.components(inputs, {})
    flagged = recluster.flagged_components(inputs, plain)
    replayed = _replay_flagged(inputs, plain, flagged, canonical, pids)
    replay_seconds = time.perf_counter() - started

    part_of = assignment.part_of
    parts = assignment.parts
    # Each part's watermark: the newest record naming one of its usable contacts.
    newest = np.full(parts, -1, np.int64)
    if len(u_contact):
        np.maximum.at(newest, part_of[u_contact], inputs.record_rank[u_record])
    watermark: list[bytes] = [canonical[row_of_rank[r]] if r >= 0 else b"" for r in newest.tolist()]
    for c, mark in replayed.watermark.items():
        watermark[int(part_of[c])] = mark

    # Records' groups: usable contacts, non-reassignable first, then the contact order.
    _, rank = recluster.contact_orders(inputs)
    reassignable = np.array([k.reassignable for k in inputs.key_types], bool)[inputs.type_code]
    group_order = lex_order((rank[u_contact], reassignable[u_contact], u_record))
    g_record = u_record[group_order]
    g_contact = u_contact[group_order]
    group_starts = np.searchsorted(g_record, np.arange(len(canonical) + 1))

    # Customers: PIDs, states carried over from the live account (SPEC 3.5).
    wanted: set[bytes] = set()
    for part in range(parts):
        if assignment.kind[part] in (pid_rules.SPLIT,):
            wanted.update(assignment.others[part])
        elif assignment.kind[part] != pid_rules.CREATED:
            wanted.add(assignment.customer_pid[part])
            wanted.update(assignment.others[part])
    old = _live_customers(engine, live_account, wanted)
    customer_seq = planned.customer_seq
    customer_rows: list[tuple[bytes, bytes]] = []
    now = planned.now_us
    members_index = np.asarray(assignment.members, np.int64)
    members_offsets = np.asarray(assignment.members_offsets, np.int64)
    member_pids = _take(pids, members_index)
    member_offsets = members_offsets.tolist()
    kinds = assignment.kind
    customer_pids = assignment.customer_pid
    # New customers with nothing carried over: their messages in one compiled call below.
    fresh_parts: list[int] = []
    fresh_seq: list[int] = []
    fresh_split: list[bytes] = []
    for part in range(parts):
        kind = kinds[part]
        pid = customer_pids[part]
        if kind in (pid_rules.SPLIT, pid_rules.CREATED) or pid not in old:
            customer_seq += 1
            split_from = assignment.others[part][0] if kind == pid_rules.SPLIT else b""
            if split_from not in old:
                fresh_parts.append(part)
                fresh_seq.append(customer_seq)
                fresh_split.append(split_from)
                continue
            state = CustomerState(
                created_seq=customer_seq, created_at_us=now, split_from=split_from
            )
            state.profile.CopyFrom(old[split_from].profile)
            state.updated_at_us = now
        else:
            state = CustomerState()
            state.CopyFrom(old[pid])
            for other in sorted(assignment.others[part]):
                if other in old:
                    merge_profile(state.profile, old[other].profile)
            if kind != pid_rules.UNCHANGED:
                state.updated_at_us = now
        del state.contact_pids[:]
        state.contact_pids.extend(member_pids[member_offsets[part] : member_offsets[part + 1]])
        state.watermark = watermark[part]
        customer_rows.append((keys.customer(pid), state.SerializeToString()))
    if fresh_parts:
        chosen = np.array(fresh_parts, np.int64)
        lengths = members_offsets[chosen + 1] - members_offsets[chosen]
        fresh_offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.repeat(members_offsets[chosen] - fresh_offsets[:-1], lengths) + np.arange(
            int(fresh_offsets[-1])
        )
        fresh_rows = _bulk.customer_states(
            _take(pids, members_index[flat]),
            fresh_offsets.tolist(),
            fresh_seq,
            [now] * len(fresh_parts),
            [watermark[part] for part in fresh_parts],
            fresh_split,
            [now] * len(fresh_parts),
        )
        customer_rows.extend(
            zip(
                keys.contact_keys([customer_pids[part] for part in fresh_parts]),
                fresh_rows,
                strict=True,
            )
        )
        del chosen, lengths, fresh_offsets, flat, fresh_rows
    customer_rows = _sorted_rows(customer_rows)

    # Contacts.
    values = planned.values
    customer_of = assignment.customer_pid
    contact_order = _byte_order(pids, codec.PID_BYTES).tolist()
    isolated_rows: list[tuple[bytes, bytes]] = []
    for c, node in replayed.nodes.items():
        if node.isolated:
            isolated_rows.append((keys.isolated(pids[c]), b""))
    isolated_rows.sort()
    national_at = np.flatnonzero(np.array([bool(n) for n in values.national], bool))
    national_of: list[str] = _take(values.national, national_at)
    national_pid: list[bytes] = _take(pids, national_at)
    national_rows = [(key, b"") for key in keys.nationals(national_of, national_pid)]
    del national_of, national_pid
    national_rows = _sorted_rows(national_rows)

    contact_keys = keys.contact_keys(pids)

    def build_contact_rows() -> Batches:
        # Every column of the contacts taken once in key order (whole-column takes instead of
        # a random access per field per row), then zipped row by row into the messages.
        contact_index = np.array(contact_order, np.int64)
        contact_keys_o = _take(contact_keys, contact_index)
        type_o = _take(values.type, contact_index)
        source_o = _take(values.source, contact_index)
        value_o = _take(values.value, contact_index)
        reason_o = _take(values.invalid_reason, contact_index)
        created_o = _take(values.created_at_us, contact_index)
        first_seen_o = inputs.first_seen.astype(np.int64)[contact_index].tolist()
        customer_o = _take(customer_of, part_of[contact_index])
        connections = degree.copy()
        for c, node in replayed.nodes.items():
            connections[c] = node.connections
        connections_o = connections[contact_index].tolist()
        first_position_o = first_position[contact_index].tolist()
        canonical_or_empty = np.empty(len(canonical) + 1, object)
        canonical_or_empty[: len(canonical)] = canonical
        canonical_or_empty[len(canonical)] = b""
        first_row = np.where(
            first_rank >= 0, row_of_rank[np.maximum(first_rank, 0)], len(canonical)
        )
        first_key_o = canonical_or_empty[first_row[contact_index]].tolist()
        del first_row, canonical_or_empty

        def contact_rows(lo: int, hi: int) -> list[tuple[bytes, bytes]]:
            # The messages of a batch in one compiled call (SerializeToString's bytes); the
            # few contacts of a replayed component, which carry isolation fields, as messages.
            clears = _bulk.contact_states(
                type_o[lo:hi],
                source_o[lo:hi],
                value_o[lo:hi],
                reason_o[lo:hi],
                first_seen_o[lo:hi],
                customer_o[lo:hi],
                connections_o[lo:hi],
                created_o[lo:hi],
                first_key_o[lo:hi],
                first_position_o[lo:hi],
            )
            nodes = replayed.nodes
            if nodes:
                for i, c in enumerate(contact_order[lo:hi]):
                    node = nodes.get(c)
                    if node is None:
                        continue
                    at = lo + i
                    state = ContactState(
                        type=type_o[at],
                        source=source_o[at],
                        value=value_o[at],
                        invalid_reason=reason_o[at],
                        first_seen=first_seen_o[at],
                        customer_pid=customer_o[at],
                        connections=connections_o[at],
                        created_at_us=created_o[at],
                        first_key=first_key_o[at],
                        first_position=first_position_o[at],
                        isolated=node.isolated,
                        isolated_connections=node.isolated_connections,
                        isolated_at=node.isolated_at,
                        moved_at=node.moved_at,
                        refused=node.refused,
                    )
                    clears[i] = state.SerializeToString()
            return list(zip(contact_keys_o[lo:hi], clears, strict=True))

        return contact_rows

    contact_rows_lazy = _lazy(build_contact_rows)

    # Records, keyed by the keyed hash of (source, record id).
    hashes = keys.record_hashes(id_keys.to_pylist())
    del id_keys
    record_order = _byte_order(hashes, codec.RECORD_HASH_BYTES).tolist()

    def build_record_rows() -> Batches:
        # Every column of the records taken once in key order, as for the contacts: the
        # contact lists and the groups flattened in that order, with their offsets.
        record_index = np.array(record_order, np.int64)
        record_keys_o = [keys.record(h) for h in _take(hashes, record_index)]
        source_r = _take(sources, record_index)
        id_r = _take(ids, record_index)
        observed_r = observed[record_index].tolist() if len(record_index) else []
        author_r = _take(planned.record_author, record_index)
        stored_r = planned.record_stored_at_us[record_index].tolist() if len(record_index) else []
        lists = records.column("contacts").combine_chunks()
        taken = lists.take(pa.array(record_index)) if len(record_index) else lists
        offsets_r: list[int] = taken.offsets.to_numpy().tolist()
        flat_r = pid_list(pc.list_flatten(taken).field("contact_pid"))
        del lists, taken
        group_lengths = np.diff(group_starts)[record_index]
        group_rank = _rank_of(record_index)
        group_perm = np.argsort(group_rank[g_record], kind="stable") if len(g_record) else g_record
        group_r = _take(pids, g_contact[group_perm])
        group_offsets_r: list[int] = np.concatenate([[0], np.cumsum(group_lengths)]).tolist()
        del group_perm, group_rank, group_lengths

        def record_rows(lo: int, hi: int) -> list[tuple[bytes, bytes]]:
            # APPLIED records in one compiled call (SerializeToString's bytes); those of a
            # replayed component, with their own outcome, group and refused pairs, as messages.
            clears = _bulk.record_states(
                source_r[lo:hi],
                id_r[lo:hi],
                observed_r[lo:hi],
                flat_r,
                offsets_r[lo : hi + 1],
                group_r,
                group_offsets_r[lo : hi + 1],
                1,  # APPLIED
                author_r[lo:hi],
                stored_r[lo:hi],
            )
            results = replayed.results
            if results:
                for i in range(lo, hi):
                    result = results.get(record_order[i])
                    if result is None:
                        continue
                    state = RecordState(
                        source=source_r[i],
                        record_id=id_r[i],
                        observed_at_us=observed_r[i],
                        contact_pids=flat_r[offsets_r[i] : offsets_r[i + 1]],
                        author=author_r[i],
                        stored_at_us=stored_r[i],
                    )
                    state.outcome = result.outcome
                    state.group_pids.extend(result.group)
                    for a, b in result.refused:
                        state.conflict_contact_pids.extend((a, b))
                    clears[i - lo] = state.SerializeToString()
            return list(zip(record_keys_o[lo:hi], clears, strict=True))

        return record_rows

    record_rows_lazy = _lazy(build_record_rows)

    # The contact -> record index: (contact, (observed_at, record hash)), both sorted.
    ref_matrix = keys.record_refs_of(times, byte_matrix(hashes))
    ref_rank = _rank_of(byte_order(ref_matrix))
    del times
    pid_rank = _rank_of(np.array(contact_order, np.int64)) if n else np.empty(0, np.int64)
    index_order = lex_order((ref_rank[entry_record], pid_rank[entry_contact]))
    index_contacts = entry_contact[index_order]
    index_records = entry_record[index_order]

    # Keys, PIDs and index values are of one length each: rows are gathered as byte matrices.
    key_matrix = byte_matrix(contact_keys)
    pid_matrix = byte_matrix(pids)

    def index_rows(lo: int, hi: int) -> list[tuple[bytes, bytes]]:
        refs = split_rows(ref_matrix[index_records[lo:hi]])
        if key_matrix is not None:
            return list(zip(split_rows(key_matrix[index_contacts[lo:hi]]), refs, strict=True))
        return list(zip(_take(contact_keys, index_contacts[lo:hi]), refs, strict=True))

    # Edges, both directions, sorted by (a, b).
    a_all = np.concatenate([lo, hi])
    b_all = np.concatenate([hi, lo])
    edge_order = lex_order((pid_rank[b_all], pid_rank[a_all])) if len(a_all) else a_all
    edge_a = a_all[edge_order]
    edge_b = b_all[edge_order]

    def edge_rows(lo: int, hi: int) -> list[tuple[bytes, bytes]]:
        if key_matrix is not None and pid_matrix is not None:
            return keys.edge_rows_of(key_matrix, pid_matrix, edge_a[lo:hi], edge_b[lo:hi])
        return keys.edge_rows(contact_keys, pids, edge_a[lo:hi].tolist(), edge_b[lo:hi].tolist())

    def listed(rows: list[tuple[bytes, bytes]]) -> Batches:
        return lambda lo, hi: rows[lo:hi]

    tables: dict[str, tuple[int, Batches]] = {
        "contacts": (n, contact_rows_lazy),
        "records": (len(canonical), record_rows_lazy),
        "contact_records": (len(index_contacts), index_rows),
        "edges": (len(edge_a), edge_rows),
        "customers": (len(customer_rows), listed(customer_rows)),
        "isolated": (len(isolated_rows), listed(isolated_rows)),
        "national": (len(national_rows), listed(national_rows)),
    }
    return _Rows(
        tables=tables,
        contact_seq=max(planned.contact_seq, int(inputs.first_seen.max()) if n else 0),
        customer_seq=customer_seq,
        replayed_components=int(len(flagged)),
        replay_seconds=replay_seconds,
    )


# -- 2. does it fit? -----------------------------------------------------------------------------


def estimate_bytes(planned: Planned) -> int:
    """A generous estimate of the bytes a generation takes in the store (leaf and branch pages)."""
    inputs = planned.inputs
    assignment = planned.generation.assignment
    n = inputs.contacts
    entries = len(inputs.entry_contact)
    records = len(inputs.record_rank)
    values = sum(len(v) for v in planned.values.value) if n else 0
    usable = int(inputs.usable[inputs.entry_contact].sum()) if entries else 0
    pid = codec.PID_BYTES
    overhead = 10
    total = (
        n * (4 + pid + overhead + SEAL_OVERHEAD + 3 * pid + 80)
        + values
        + records * (4 + pid + overhead + SEAL_OVERHEAD + 120)
        + entries * (2 * (pid + 2) + codec.TIME_BYTES + pid + overhead + 64)
        + usable * 4 * (4 + 2 * pid + overhead)
        + (assignment.parts if assignment else n) * (4 + pid + overhead + SEAL_OVERHEAD + 80)
        + n * 2 * (4 + 2 * pid + overhead)
    )
    return int(total * FIT_MARGIN)


def check_fits(engine: Any, planned: Planned) -> None:
    """Refuse (``StoreFull``) before writing a generation that would not fit the map or disk."""
    store = engine.store
    need = estimate_bytes(planned)
    stats = store.stats()
    used = (stats["last_pgno"] + 1) * stats["page_size"]
    free_map = stats["map_size"] - used
    if store.multi_process and need > free_map:
        raise StoreFull(
            f"the generation needs about {need >> 20} MiB and the store map has "
            f"{free_map >> 20} MiB free of {stats['map_size'] >> 20} MiB "
            "(a store shared by several processes cannot grow): raise --map-size and restart"
        )
    disk = shutil.disk_usage(store.path).free
    if need > disk:
        raise StoreFull(
            f"the generation needs about {need >> 20} MiB and the disk of {store.path} "
            f"has {disk >> 20} MiB free"
        )


# -- 3. write --------------------------------------------------------------------------------------


def write_generation(
    engine: Any,
    target_account: str,
    planned: Planned,
    *,
    progress: bool,
    live_account: str | None,
    batch_rows: int = BATCH_ROWS,
) -> WriteReport:
    """Write every derived row of ``planned`` into ``target_account`` (existing, and empty).

    Contacts, records, the contact -> record index, connections, customers,
    the isolated and national-number indexes and the two sequence counters;
    no change events, history, engagements, pins or policies. Each batch of
    at most ``batch_rows`` rows is one durable write transaction.
    """
    with collector.paused():
        return _write_generation(
            engine, target_account, planned, progress, live_account, batch_rows
        )


def _write_generation(
    engine: Any,
    target_account: str,
    planned: Planned,
    progress: bool,
    live_account: str | None,
    batch_rows: int,
) -> WriteReport:
    report = WriteReport()
    started = time.perf_counter()
    actor = planned.actor
    keys = engine.write(target_account, actor, bulk_use.check_target, create=False)
    rows = derive_rows(engine, keys, planned, live_account)
    report.replayed_components = rows.replayed_components
    report.seconds["replay"] = rows.replay_seconds
    report.seconds["derive"] = time.perf_counter() - started
    total = sum(count for count, _ in rows.tables.values())
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="rows", desc=f"load {target_account}", smoothing=0.1)
    try:
        for table in list(rows.tables):
            # Popped, so a table's columns are freed as soon as it is written.
            count, make = rows.tables.pop(table)
            tick = time.perf_counter()
            report.rows[table] = count
            sealed = table in ("contacts", "records", "customers")
            for start in range(0, count, batch_rows):
                batch = make(start, min(start + batch_rows, count))
                if sealed:
                    batch = keys.seal_many(batch)
                appended = engine.write(
                    target_account,
                    actor,
                    lambda unit, t=table, b=batch: bulk_use.write_rows(unit, t, b),
                    create=False,
                )
                if appended:
                    report.appended_batches += 1
                else:
                    report.plain_batches += 1
                if bar is not None:
                    bar.update(len(batch))
                del batch
            del make
            report.seconds[table] = time.perf_counter() - tick
        engine.write(
            target_account,
            actor,
            lambda unit: bulk_use.finish(unit, rows.contact_seq, rows.customer_seq),
            create=False,
        )
    finally:
        if bar is not None:
            bar.close()
    report.seconds["total"] = time.perf_counter() - started
    return report


__all__ = [
    "ContactValues",
    "Planned",
    "WriteReport",
    "check_fits",
    "estimate_bytes",
    "generation_from_folder",
    "generation_from_records",
    "write_generation",
]
