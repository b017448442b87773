"""Offline invariant check of a store (``idlink check``, docs/operations.md).

Reads one consistent snapshot per account and reports every problem found
instead of stopping at the first, so an operator sees the whole damage:

- every contact's customer exists and holds it; every customer's contacts
  exist and point back; no contact is in two customers;
- the stored partition equals a rebuild from the records (SPEC 3.2), and so
  do each contact's isolation and where it was first seen (the contact
  order of SPEC 3.8; a contact written before first-seen keys were stored
  has none yet, which is not a problem: its next replay fills it in);
- no customer exceeds the account's cap (3.3) or a key type's
  ``max_per_customer`` (3.4);
- the contact -> record index matches the records, both ways;
- the isolated index matches the contacts' isolated flags;
- every redirect leads (through its chain) to an existing or erased customer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from idlink.domain.engine import IdentityEngine
from idlink.domain.linking import CAPPED, CONFLICT
from idlink.store import codec

MAX_REDIRECT_CHAIN = 64
# Enough to show what is wrong without flooding a terminal on a badly broken store.
MAX_PROBLEMS_PER_ACCOUNT = 1000


@dataclass(slots=True)
class AccountReport:
    """What the check found in one account."""

    account: str
    contacts: int = 0
    customers: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS_PER_ACCOUNT:
            self.problems.append(problem)


def _pid(pid: bytes) -> str:
    return pid.hex()


def check_account(engine: IdentityEngine, account: str) -> AccountReport:
    """Check every invariant of one account; the report lists each problem found."""
    report = AccountReport(account)
    with engine.read(account) as view:
        if not view.exists:
            return report
        config, txn = view.config, view.txn
        contacts = dict(txn.iter_contacts())
        customers = dict(txn.iter_customers())
        records = list(txn.iter_records())
        report.contacts, report.customers, report.records = (
            len(contacts),
            len(customers),
            len(records),
        )

        for pid, contact in contacts.items():
            customer = customers.get(contact.customer_pid)
            if customer is None:
                report.add(
                    f"contact {_pid(pid)}: its customer {_pid(contact.customer_pid)} does not exist"
                )
            elif pid not in customer.contact_pids:
                report.add(
                    f"contact {_pid(pid)}: customer {_pid(contact.customer_pid)} does not hold it"
                )

        owner: dict[bytes, bytes] = {}
        cap = config.policy.max_contacts
        for customer_pid, customer in customers.items():
            members = list(customer.contact_pids)
            if not members:
                report.add(f"customer {_pid(customer_pid)}: has no contacts")
            if len(members) > cap:
                report.add(
                    f"customer {_pid(customer_pid)}: {len(members)} contacts, over the cap {cap}"
                )
            types: Counter[str] = Counter()
            for pid in members:
                if pid in owner:
                    report.add(
                        f"contact {_pid(pid)}: in customers {_pid(owner[pid])} "
                        f"and {_pid(customer_pid)}"
                    )
                owner[pid] = customer_pid
                member = contacts.get(pid)
                if member is None:
                    report.add(f"customer {_pid(customer_pid)}: contact {_pid(pid)} does not exist")
                    continue
                if member.customer_pid != customer_pid:
                    report.add(
                        f"customer {_pid(customer_pid)}: contact {_pid(pid)} points to "
                        f"{_pid(member.customer_pid)}"
                    )
                types[member.type] += 1
            for name, count in sorted(types.items()):
                key_type = config.key_types.get(name)
                limit = key_type.max_per_customer if key_type is not None else 0
                if limit and count > limit:
                    report.add(
                        f"customer {_pid(customer_pid)}: {count} contacts of type {name!r}, "
                        f"over its limit {limit}"
                    )

        indexed: dict[bytes, set[bytes]] = {}
        for record in records:
            canonical = codec.canonical_key(record.observed_at_us, record.source, record.record_id)
            where = f"record {record.source!r}/{record.record_id!r}"
            for pid in set(record.contact_pids):
                if pid not in contacts:
                    report.add(f"{where}: contact {_pid(pid)} does not exist")
                keys = indexed.get(pid)
                if keys is None:
                    keys = indexed[pid] = set(txn.record_keys_of(pid))
                if canonical not in keys:
                    report.add(f"{where}: not in the index of contact {_pid(pid)}")
        for pid in contacts:
            keys = indexed.get(pid)
            if keys is None:
                keys = set(txn.record_keys_of(pid))
            for canonical in sorted(keys):
                indexed_record = txn.get_record_by_canonical(canonical)
                source, record_id = codec.split_canonical_key(canonical)[1:]
                if indexed_record is None:
                    report.add(
                        f"contact {_pid(pid)}: indexed record {source!r}/{record_id!r} "
                        "does not exist"
                    )
                elif (
                    pid not in indexed_record.contact_pids
                    or indexed_record.observed_at_us != codec.split_canonical_key(canonical)[0]
                ):
                    report.add(
                        f"contact {_pid(pid)}: stale index entry for record "
                        f"{source!r}/{record_id!r}"
                    )

        if config.marks_refusals:
            # A linkable contact a refused record names must say so: its resolve
            # reads its records for suggestions only then (ContactState.refused).
            unmarked = set()
            for record in records:
                if record.outcome in (CAPPED, CONFLICT):
                    for pid in record.contact_pids:
                        named = contacts.get(pid)
                        if (
                            named is not None
                            and not named.refused
                            and not view.unlinkable_reason(pid, named)
                        ):
                            unmarked.add(pid)
            for pid in sorted(unmarked):
                report.add(f"contact {_pid(pid)}: named by a refused record but not marked so")

        isolated = set(txn.iter_isolated())
        for pid, contact in contacts.items():
            if contact.isolated and pid not in isolated:
                report.add(f"contact {_pid(pid)}: isolated but not in the isolated index")
        for pid in isolated - {p for p, c in contacts.items() if c.isolated}:
            report.add(f"contact {_pid(pid)}: in the isolated index but not isolated")

        for source_pid, target in txn.iter_redirects():
            if source_pid in customers:
                report.add(f"redirect {_pid(source_pid)}: the PID is also a live customer")
            current = target
            for _ in range(MAX_REDIRECT_CHAIN):
                following = txn.get_redirect(current)
                if following is None:
                    break
                current = following
            else:
                report.add(f"redirect {_pid(source_pid)}: chain longer than {MAX_REDIRECT_CHAIN}")
                continue
            if current not in customers and txn.tombstone(current) is None:
                report.add(
                    f"redirect {_pid(source_pid)}: leads to {_pid(current)}, which does not exist"
                )

    rebuild = engine.rebuild(account)
    for pid, contact in sorted(contacts.items()):
        node = rebuild.contacts.get(pid)
        if node is None:
            continue
        if contact.isolated != node.isolated:
            report.add(
                f"contact {_pid(pid)}: isolated={contact.isolated}, a rebuild says {node.isolated}"
            )
        if contact.first_key and (contact.first_key, contact.first_position) != (
            node.first_key,
            node.position,
        ):
            report.add(f"contact {_pid(pid)}: first seen elsewhere than a rebuild says")
    stored = sorted(sorted(c) for c in engine.partition(account))
    rebuilt = sorted(sorted(c) for c in rebuild.partition)
    if stored != rebuilt:
        only_stored = {tuple(c) for c in stored} - {tuple(c) for c in rebuilt}
        only_rebuilt = {tuple(c) for c in rebuilt} - {tuple(c) for c in stored}
        report.add(
            f"partition differs from a rebuild from the records: {len(only_stored)} stored "
            f"customers are not in the rebuild, {len(only_rebuilt)} rebuilt ones are not stored"
        )
    return report


def check_store(engine: IdentityEngine) -> list[AccountReport]:
    """Check every account of the store."""
    with engine.read_keys() as txn:
        accounts = sorted(txn.iter_account_names())
    return [check_account(engine, account) for account in accounts]
