"""Preview: what a change of key type or policy would do, before it is made (SPEC 3.7).

The account's records are replayed in memory under the changed configuration
and the components are compared with the stored customers: a component that
holds contacts of several customers is a merge, a customer whose contacts fall
into several components is a split. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from idlink.domain.accounts import refuse_identity_change
from idlink.domain.keytypes import AccountPolicy, KeyType
from idlink.domain.linking import LinkGraph
from idlink.domain.reads import AccountView
from idlink.domain.unit import AccountUnit


@dataclass(slots=True)
class Preview:
    """How many customers a configuration change would merge or split, with examples."""

    merges: int = 0
    splits: int = 0
    merge_examples: list[list[bytes]] = field(default_factory=list)
    split_examples: list[bytes] = field(default_factory=list)


def _compare(graph: LinkGraph, examples: int) -> Preview:
    preview = Preview()
    parts: dict[bytes, set[int]] = {}
    for index, (nodes, _) in enumerate(graph.components()):
        customers = sorted({n.customer_pid for n in nodes if n.customer_pid})
        for pid in customers:
            parts.setdefault(pid, set()).add(index)
        if len(customers) > 1:
            preview.merges += 1
            if len(preview.merge_examples) < examples:
                preview.merge_examples.append(customers)
    for pid, indexes in sorted(parts.items()):
        if len(indexes) > 1:
            preview.splits += 1
            if len(preview.split_examples) < examples:
                preview.split_examples.append(pid)
    return preview


def preview(
    view: AccountView,
    now: int,
    key_type: KeyType | None,
    policy: AccountPolicy | None,
    examples: int,
) -> Preview:
    """Compare the stored customers with a replay under the changed configuration."""
    if not view.exists:
        return Preview()
    config = view.config
    changed = config
    if key_type is not None:
        refuse_identity_change(view.txn, config, key_type)
        changed = changed.with_key_type(key_type)
    if policy is not None:
        changed = changed.with_policy(policy)
    graph, _ = AccountUnit(view.txn, changed, "", now).replayed_account_graph()
    return _compare(graph, examples)
