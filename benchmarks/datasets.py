"""The records the benchmarks share: one seeded generator, as CSV for ``idlink ingest``, in memory.

Every record comes from ``bench_engine.make_records`` (records of a CRM export: a
phone and an email of one person, every other record also a CRM id), so the
customers idlink serves in ``bench_grpc`` (seed ``SERVED_SEED``) are the ones
Redis serves in ``bench_redis``, and the CSV ``idlink ingest`` loads in
``bench_bulk`` (seed ``BULK_SEED``, as bench_grpc's bulk load) is the one the
peers (Splink, DuckDB, scipy) cluster in the same run.

Two variants (docs/benchmarks.md):

- **cap-free** (``make_records`` unchanged): no component is over the cluster
  cap and no key type has a limit, so idlink's customers are exactly the plain
  connected components (SPEC 3.1, 3.3), and every engine must give scipy's
  partition;
- **CRM-like** (``cap_free=False``): the same records, except that one record in
  ``PLACEHOLDER_EVERY`` carries the placeholder email of SPEC 3.3 instead of its
  person's address, a hub that plain connected components follow and idlink
  isolates.

Contacts are written clean (SPEC 2.1 changes none of them), so an exact match
in a peer is an exact match in idlink.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks.bench_engine import make_records
from idlink.domain.contacts import ContactKey
from idlink.domain.engine import RecordInput

# The sizes of the full runs: bench_grpc's bulk-load CSV, and the served and bulk sets.
SIZES = (200_000, 1_000_000)
SMOKE_SIZE = 5_000
# bench_grpc ingests make_records(N) with its default seed and resolves those contacts.
SERVED_SEED = 11
# bench_grpc's bulk-load CSV (``_bulk_load``) uses seed 23.
BULK_SEED = 23
PLACEHOLDER_EMAIL = "no@email.com"
PLACEHOLDER_EVERY = 200
SOURCE_SCOPED = frozenset({"id"})
# The CSV header: the columns of ``idlink ingest`` (idlink.client.records).
CSV_COLUMNS = ("source", "record_id", "observed_at", "phone", "email", "id")

Contact = tuple[str, str, str]  # (type, source for source-scoped types else "", value)


def contact_of(key: ContactKey) -> Contact:
    """The identity of a contact as idlink keys it (SPEC 2.3): the source only for scoped types."""
    return (key.type, key.source if key.type in SOURCE_SCOPED else "", key.value)


@dataclass
class Dataset:
    """Records in memory, with their contact graph and its plain connected components."""

    records: list[RecordInput]
    cap_free: bool
    seed: int
    _labels: np.ndarray | None = field(default=None, repr=False)
    _contacts: dict[Contact, int] | None = field(default=None, repr=False)
    _contact_labels: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def name(self) -> str:
        kind = "cap-free" if self.cap_free else "CRM-like"
        return f"{len(self) // 1000}k {kind} records"

    def write_csv(self, path: Path) -> Path:
        """Write the records in the CSV format of ``idlink ingest``."""
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            for r in self.records:
                values = {c.type: c.value for c in r.contacts}
                writer.writerow(
                    [
                        r.source,
                        r.record_id,
                        f"{r.observed_at_us / 1e6:.6f}",
                        values["phone"],
                        values["email"],
                        values.get("id", ""),
                    ]
                )
        return path

    def graph(self) -> tuple[dict[Contact, int], np.ndarray, np.ndarray]:
        """Dense contact ids and the edges (first contact of a record -> each other one)."""
        ids: dict[Contact, int] = {}
        src: list[int] = []
        dst: list[int] = []
        for r in self.records:
            nodes = [ids.setdefault(contact_of(c), len(ids)) for c in r.contacts]
            for other in nodes[1:]:
                src.append(nodes[0])
                dst.append(other)
        return ids, np.asarray(src, np.int64), np.asarray(dst, np.int64)

    def _components(self) -> None:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        ids, src, dst = self.graph()
        matrix = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(len(ids), len(ids)))
        _, labels = connected_components(matrix.tocsr(), directed=False)
        first = np.fromiter(
            (ids[contact_of(r.contacts[0])] for r in self.records), np.int64, len(self.records)
        )
        self._contacts = ids
        self._contact_labels = labels.astype(np.int64)
        self._labels = self._contact_labels[first]

    def record_labels(self) -> np.ndarray:
        """The plain connected component of every record (scipy), in record order."""
        if self._labels is None:
            self._components()
        assert self._labels is not None
        return self._labels

    def customers(self) -> dict[int, list[Contact]]:
        """Component label -> its contacts, first seen first: the customers of the cap-free set."""
        if self._contact_labels is None:
            self._components()
        assert self._contacts is not None and self._contact_labels is not None
        out: dict[int, list[Contact]] = {}
        for contact, node in self._contacts.items():
            out.setdefault(int(self._contact_labels[node]), []).append(contact)
        return out

    def largest_component(self) -> int:
        """Contacts in the largest plain connected component."""
        customers = self.customers()
        return max(len(members) for members in customers.values())


def crm_records(count: int, seed: int = BULK_SEED, *, cap_free: bool = True) -> Dataset:
    """``count`` records of the shared generator; ``cap_free=False`` adds the placeholder hub."""
    records = make_records(count, seed=seed)
    if not cap_free:
        for i in range(PLACEHOLDER_EVERY // 2, count, PLACEHOLDER_EVERY):
            r = records[i]
            contacts = [
                ContactKey("email", PLACEHOLDER_EMAIL) if c.type == "email" else c
                for c in r.contacts
            ]
            records[i] = replace(r, contacts=contacts)
    return Dataset(records, cap_free, seed)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings of the same items group them identically (labels may differ)."""
    if a.shape != b.shape:
        return False
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def customer_ids(labels: list[int], seed: int) -> dict[int, str]:
    """A random-looking UUID per customer, as idlink's customer PIDs look (SPEC 3.5)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**63, size=(len(labels), 2), dtype=np.int64)
    return {
        label: str(uuid.UUID(int=(int(hi) << 64) | int(lo), version=4))
        for label, (hi, lo) in zip(labels, words, strict=True)
    }
