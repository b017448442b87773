"""``idlink recluster``: the customers of an export, computed on an engine, exactly.

Why it is exact (issue 12, docs/scale-out.md): the customers are a pure
function of the records (SPEC 3.2). Take the plain connected components of
the graph whose nodes are the *usable* contacts (valid, not blocked, not
do-not-link) and whose edges join the usable contacts of each record. A
component with at most ``max_contacts`` contacts and no key type over its
``max_per_customer`` is exactly what the canonical algorithm gives: every
customer the algorithm builds on the way is a subset of it, so no cap and no
key limit ever fires, nobody is isolated and no device moves. Only the other
components need the canonical order, and each is independent of all others
(a record's usable contacts are all in one component). So an engine computes
the plain components, and the domain's own :class:`~idlink.domain.linking.LinkGraph`
replays the records of just the flagged components, in canonical order.

This module holds what every engine shares: the export turned into dense
integer arrays (:class:`Inputs`), the flagging of components, the exact
replay of one component (:func:`replay_component`, also run inside Spark),
the customer PIDs (:mod:`idlink.generations.pids`) and the output folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from idlink.domain.keytypes import KeyType
from idlink.domain.linking import LinkGraph, Node
from idlink.generations import pids as pid_rules
from idlink.generations.columns import lex_order, pid_list
from idlink.generations.export import Export
from idlink.generations.manifest import (
    GENERATION_FORMAT,
    META_ACCOUNT,
    META_EXPORT_ID,
    META_TABLE,
    ExportError,
    Manifest,
    write_manifest,
)
from idlink.store import codec

GENERATION_SCHEMAS: dict[str, pa.Schema] = {
    "contacts": pa.schema(
        [("contact_pid", pa.binary()), ("customer_pid", pa.binary()), ("isolated", pa.bool_())]
    ),
    "customers": pa.schema(
        [("customer_pid", pa.binary()), ("contact_pids", pa.list_(pa.binary()))]
    ),
    "changes": pa.schema(
        [
            ("customer_pid", pa.binary()),
            ("kind", pa.string()),
            ("other_customer_pids", pa.list_(pa.binary())),
            ("contacts_added", pa.list_(pa.binary())),
            ("contacts_removed", pa.list_(pa.binary())),
        ]
    ),
}


# -- the export as arrays ---------------------------------------------------------------


@dataclass(slots=True)
class Inputs:
    """An export as dense integer arrays: contact ``i`` is row ``i`` of contacts.parquet."""

    export: Export
    max_contacts: int
    isolate_min_connections: int
    pids: pa.FixedSizeBinaryArray
    key_types: list[KeyType]
    type_code: np.ndarray  # contact -> index into key_types
    usable: np.ndarray
    never_isolate: np.ndarray
    first_seen: np.ndarray
    old_customer: np.ndarray  # contact -> row of customers.parquet, -1 for none
    # Record contacts, flattened in record order: entry -> record row, position, contact.
    entry_record: np.ndarray
    entry_position: np.ndarray
    entry_contact: np.ndarray
    record_rank: np.ndarray  # record row -> place in canonical order (SPEC 3.2)
    live_records: np.ndarray  # record rows not marked deleted

    @property
    def contacts(self) -> int:
        return len(self.pids)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """A spanning star per record over its usable contacts: (contact, the record's first)."""
        usable = self.usable[self.entry_contact]
        records = self.entry_record[usable]
        contacts = self.entry_contact[usable]
        if not len(records):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        starts = np.flatnonzero(np.r_[True, records[1:] != records[:-1]])
        head = np.repeat(contacts[starts], np.diff(np.r_[starts, len(records)]))
        keep = contacts != head
        return contacts[keep], head[keep]


def _type_for(name: str, table: dict[str, KeyType]) -> KeyType:
    # As the engine does for a contact whose type is not configured (engine._Session.node).
    return table.get(name) or KeyType(name)


def _pid_array(column: pa.ChunkedArray | pa.Array, path: Path) -> pa.FixedSizeBinaryArray:
    """Contact PIDs as 16-byte values (hashing them is several times faster than as binary)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    try:
        return column.cast(pa.binary(16))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ExportError(f"{path} holds a contact PID that is not 16 bytes") from None


def load_inputs(export: Export) -> Inputs:
    """Check the export's rows against each other and turn them into dense arrays."""
    root = export.path
    contacts = export["contacts"]
    records = export["records"]
    pids = _pid_array(contacts.column("contact_pid"), root / "contacts.parquet")
    if len(pids.unique()) != len(pids):
        raise ExportError(f"{root / 'contacts.parquet'} names a contact twice")
    types: dict[str, KeyType] = {}
    for row in export["key_types"].to_pylist():
        types[row["name"]] = KeyType(
            name=row["name"],
            normalizer=row["normalizer"],
            source_scoped=row["source_scoped"],
            max_per_customer=row["max_per_customer"],
            reassignable=row["reassignable"],
            anonymous=row["anonymous"],
            blocked_values=tuple(row["blocked_values"]),
            blocked_patterns=tuple(row["blocked_patterns"]),
            priority=row["priority"],
        )
    type_names = contacts.column("type").combine_chunks().dictionary_encode()
    key_types = [_type_for(str(name), types) for name in type_names.dictionary.to_pylist()]
    type_code = type_names.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    invalid = pc.not_equal(contacts.column("invalid_reason"), "").to_numpy(zero_copy_only=False)
    blocked = contacts.column("blocked").to_numpy(zero_copy_only=False)
    do_not_link = np.zeros(len(pids), bool)
    never_isolate = np.zeros(len(pids), bool)
    policies = export["contact_policies"]
    if policies.num_rows:
        policy_pids = _pid_array(policies.column("contact_pid"), root / "contact_policies.parquet")
        where = pc.index_in(policy_pids, value_set=pids).to_numpy(zero_copy_only=False)
        known = ~np.isnan(where.astype(float))
        rows = where[known].astype(np.int64)
        do_not_link[rows] = policies.column("do_not_link").to_numpy(zero_copy_only=False)[known]
        never_isolate[rows] = policies.column("never_isolate").to_numpy(zero_copy_only=False)[known]
    usable = ~invalid & ~blocked & ~do_not_link

    customers = export["customers"]
    customer_pids = customers.column("customer_pid").combine_chunks()
    if len(customer_pids.unique()) != len(customer_pids):
        raise ExportError(f"{root / 'customers.parquet'} names a customer twice")
    old = pc.index_in(contacts.column("customer_pid"), value_set=customer_pids)
    old_customer = pc.fill_null(old, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    keys = pc.binary_join_element_wise(records.column("source"), records.column("record_id"), "\0")
    if len(keys.unique()) != records.num_rows:
        raise ExportError(f"{root / 'records.parquet'} names a record (source, record_id) twice")
    deleted = records.column("deleted").to_numpy(zero_copy_only=False)
    order = pc.sort_indices(
        records.select(["observed_at_us", "source", "record_id"]),
        sort_keys=[
            ("observed_at_us", "ascending"),
            ("source", "ascending"),
            ("record_id", "ascending"),
        ],
    ).to_numpy()
    record_rank = np.empty(records.num_rows, np.int64)
    record_rank[order] = np.arange(records.num_rows)

    lists = records.column("contacts").combine_chunks()
    flat = pc.list_flatten(lists)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    entry_record = np.repeat(np.arange(records.num_rows, dtype=np.int64), lengths)
    starts = np.r_[0, np.cumsum(lengths)[:-1]] if len(lengths) else np.empty(0, np.int64)
    entry_position = (np.arange(len(entry_record)) - np.repeat(starts, lengths)).astype(np.int64)
    where = pc.index_in(
        _pid_array(flat.field("contact_pid"), root / "records.parquet"), value_set=pids
    )
    if where.null_count:
        raise ExportError(
            f"{root / 'records.parquet'} names {where.null_count} contact(s) that "
            f"{root / 'contacts.parquet'} does not hold"
        )
    entry_contact = where.to_numpy(zero_copy_only=False).astype(np.int64)
    live = ~deleted[entry_record]
    policy = export["account_policy"].to_pylist()[0]
    return Inputs(
        export=export,
        max_contacts=int(policy["max_contacts"]),
        isolate_min_connections=int(policy["isolate_min_connections"]),
        pids=pids,
        key_types=key_types,
        type_code=type_code,
        usable=usable,
        never_isolate=never_isolate,
        first_seen=contacts.column("first_seen").to_numpy(zero_copy_only=False),
        old_customer=old_customer,
        entry_record=entry_record[live],
        entry_position=entry_position[live],
        entry_contact=entry_contact[live],
        record_rank=record_rank,
        live_records=np.flatnonzero(~deleted),
    )


# -- flagged components and their exact replay ----------------------------------------


def flagged_components(inputs: Inputs, labels: np.ndarray) -> np.ndarray:
    """Labels of the plain components over the cap or over a key type's limit."""
    sizes = np.bincount(labels)
    flagged = sizes > inputs.max_contacts
    for code, key_type in enumerate(inputs.key_types):
        if key_type.max_per_customer:
            members = labels[(inputs.type_code == code) & inputs.usable]
            counts = np.bincount(members, minlength=len(sizes))
            flagged |= counts > key_type.max_per_customer
    return np.flatnonzero(flagged)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What linking needs of one contact (a plain row, so it can travel to a Spark executor)."""

    pid: bytes
    type_name: str
    usable: bool
    reassignable: bool
    type_limit: int
    priority: int
    never_isolate: bool
    first_seen: int

    def node(self) -> Node:
        """The linking step's node of this contact."""
        return Node(
            pid=self.pid,
            type_name=self.type_name,
            usable=self.usable,
            reassignable=self.reassignable,
            type_limit=self.type_limit,
            first_seen=self.first_seen,
            priority=self.priority,
            never_isolate=self.never_isolate,
        )


def replay_component(
    max_contacts: int,
    isolate_min_connections: int,
    nodes: Sequence[NodeSpec],
    records: Sequence[tuple[bytes, Sequence[bytes]]],
) -> dict[bytes, tuple[int, bool]]:
    """Replay one component's records with the domain's step: contact -> (part, isolated).

    ``records`` are (canonical key, contact PIDs in the record's order); the
    nodes are every contact they name. Parts are numbered from 0.
    """
    graph = LinkGraph(max_contacts, isolate_min_connections)
    for spec in sorted(nodes, key=lambda s: s.first_seen):
        graph.add_node(spec.node())
    graph.replay(records)
    out: dict[bytes, tuple[int, bool]] = {}
    for part, (members, _) in enumerate(graph.components()):
        for node in members:
            out[node.pid] = (part, node.isolated)
    return out


def node_spec(inputs: Inputs, contact: int) -> NodeSpec:
    key_type = inputs.key_types[inputs.type_code[contact]]
    return NodeSpec(
        pid=inputs.pids[contact].as_py(),
        type_name=key_type.name,
        usable=bool(inputs.usable[contact]),
        reassignable=key_type.reassignable,
        type_limit=key_type.max_per_customer,
        priority=key_type.priority,
        never_isolate=bool(inputs.never_isolate[contact]),
        first_seen=int(inputs.first_seen[contact]),
    )


def record_key(inputs: Inputs, record: int) -> bytes:
    records = inputs.export["records"]
    return codec.canonical_key(
        records.column("observed_at_us")[record].as_py(),
        records.column("source")[record].as_py(),
        records.column("record_id")[record].as_py(),
    )


def replay_flagged(
    inputs: Inputs, labels: np.ndarray, flagged: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split the flagged components by the exact replay; returns (labels, isolated)."""
    labels = labels.astype(np.int64, copy=True)
    isolated = np.zeros(inputs.contacts, bool)
    if not len(flagged):
        return labels, isolated
    is_flagged = np.zeros(int(labels.max()) + 1, bool)
    is_flagged[flagged] = True
    usable_entry = inputs.usable[inputs.entry_contact]
    record_component = np.full(len(inputs.record_rank), -1, np.int64)
    record_component[inputs.entry_record[usable_entry]] = labels[inputs.entry_contact[usable_entry]]
    chosen = np.flatnonzero((record_component >= 0) & is_flagged[np.maximum(record_component, 0)])
    entries_of: dict[int, list[int]] = {}
    entry_index = np.flatnonzero(np.isin(inputs.entry_record, chosen))
    for entry in entry_index.tolist():
        entries_of.setdefault(int(inputs.entry_record[entry]), []).append(entry)
    by_component: dict[int, list[int]] = {}
    for record in chosen.tolist():
        by_component.setdefault(int(record_component[record]), []).append(record)
    next_label = int(labels.max()) + 1
    index_of = {}
    for component, records in sorted(by_component.items()):
        replayed = []
        contacts: dict[int, None] = {}
        for record in records:
            members = [int(inputs.entry_contact[e]) for e in entries_of.get(record, [])]
            contacts.update(dict.fromkeys(members))
            replayed.append((record_key(inputs, record), [inputs.pids[m].as_py() for m in members]))
        specs = [node_spec(inputs, c) for c in contacts]
        index_of = {spec.pid: c for spec, c in zip(specs, contacts, strict=True)}
        parts = replay_component(
            inputs.max_contacts, inputs.isolate_min_connections, specs, replayed
        )
        numbering: dict[int, int] = {}
        for pid, (part, alone) in parts.items():
            contact = index_of[pid]
            if labels[contact] != component:
                continue  # an unusable contact of the record: a customer of its own already
            if part not in numbering:
                numbering[part] = next_label
                next_label += 1
            labels[contact] = numbering[part]
            isolated[contact] = alone
    return labels, isolated


# -- the generation -----------------------------------------------------------------------


@dataclass(slots=True)
class Generation:
    """A computed generation: every contact's customer, and what the engine did."""

    inputs: Inputs
    labels: np.ndarray  # contact -> final component (any integers)
    isolated: np.ndarray
    engine: str
    details: dict[str, Any] = field(default_factory=dict)
    assignment: pid_rules.Assignment | None = None

    def partition(self) -> list[frozenset[bytes]]:
        """The customers as sets of contact PIDs."""
        groups: dict[int, set[bytes]] = {}
        pids = pid_list(self.inputs.pids)
        for contact, label in enumerate(self.labels.tolist()):
            groups.setdefault(label, set()).add(pids[contact])
        return [frozenset(g) for g in groups.values()]


def finish(inputs: Inputs, labels: np.ndarray, engine: str, details: dict[str, Any]) -> Generation:
    """From plain components: flag, replay the flagged ones exactly, assign customer PIDs."""
    started = time.perf_counter()
    flagged = flagged_components(inputs, labels)
    final, isolated = replay_flagged(inputs, labels, flagged)
    details["replayed_components"] = int(len(flagged))
    details["replay_seconds"] = round(time.perf_counter() - started, 3)
    return assign_pids(Generation(inputs, final, isolated, engine, details))


def contact_orders(inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """Per contact: its place in the heir order and in the contact order (SPEC 3.5, 3.8).

    Where a contact was first seen is the first record naming it in canonical
    order and its position there (linking.LinkGraph.apply); contacts no record names
    come last, by arrival (linking.seen_key).
    """
    n = inputs.contacts
    first_rank = np.full(n, np.iinfo(np.int64).max, np.int64)
    first_position = np.zeros(n, np.int64)
    if len(inputs.entry_contact):
        ranks = inputs.record_rank[inputs.entry_record]
        order = lex_order((inputs.entry_position, ranks))
        contacts_sorted = inputs.entry_contact[order]
        unique, first = np.unique(contacts_sorted, return_index=True)
        first_rank[unique] = ranks[order][first]
        first_position[unique] = inputs.entry_position[order][first]
    unseen = first_rank == np.iinfo(np.int64).max
    reassignable = np.array([k.reassignable for k in inputs.key_types], bool)[inputs.type_code]
    priority = np.array([k.priority for k in inputs.key_types], np.int64)[inputs.type_code]
    seen = (inputs.first_seen, first_position, first_rank, unseen)
    heir = np.empty(n, np.int64)
    heir[lex_order((*seen, reassignable))] = np.arange(n)
    rank = np.empty(n, np.int64)
    rank[lex_order((*seen, priority))] = np.arange(n)
    return heir, rank


def assign_pids(generation: Generation) -> Generation:
    inputs = generation.inputs
    heir, rank = contact_orders(inputs)
    customers = inputs.export["customers"]
    generation.assignment = pid_rules.assign(
        generation.labels,
        heir_rank=heir,
        contact_rank=rank,
        old_customer=inputs.old_customer,
        old_created_seq=customers.column("created_seq").to_numpy(zero_copy_only=False),
        old_pids=pid_list(customers.column("customer_pid")),
    )
    return generation


def write_generation(generation: Generation, out: str | os.PathLike[str]) -> Manifest:
    """Write the generation folder: contacts, customers, changes, then the manifest."""
    assignment = generation.assignment
    assert assignment is not None
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError(
            f"{folder} is not an empty folder: a generation is written into a new one"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    source = generation.inputs.export.manifest
    manifest = Manifest(
        format=GENERATION_FORMAT,
        export_id=source.export_id,
        account=source.account,
        secret_fingerprint=source.secret_fingerprint,
        change_seq=source.change_seq,
        created_at_us=time.time_ns() // 1000,
        details={
            "engine": generation.engine,
            # Where its export is: ``idlink load --in`` finds it there by default.
            "export": str(generation.inputs.export.path.resolve()),
            **generation.details,
            **assignment.counts(),
        },
    )
    pids = generation.inputs.pids
    tables = {
        "contacts": pa.table(
            {
                "contact_pid": pids,
                "customer_pid": assignment.customer_pid_of_contacts(generation.labels),
                "isolated": pa.array(generation.isolated),
            }
        ),
        "customers": assignment.customers_table(pids),
        "changes": assignment.changes_table(pids),
    }
    for name, table in tables.items():
        schema = GENERATION_SCHEMAS[name].with_metadata(
            {
                META_EXPORT_ID: source.export_id.encode(),
                META_ACCOUNT: source.account.encode(),
                META_TABLE: name.encode(),
            }
        )
        path = folder / f"{name}.parquet"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as sink:
            pq.write_table(table.cast(schema), sink)
        manifest.add_file(folder, path.name, table.num_rows)
    write_manifest(folder, manifest)
    return manifest
