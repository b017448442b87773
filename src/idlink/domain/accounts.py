"""Accounts: their configuration, its cache, and the one mapping of key types to the store.

An account's configuration (key types and policy, :mod:`keytypes`) is stored
whole in the ``accounts`` sub-database and versioned: every write bumps the
account's configuration version, and :class:`Accounts` keeps the last
configuration it read with that version, so a read checks one counter instead
of parsing the configuration again.
"""

from __future__ import annotations

from dataclasses import replace

from idlink.domain import pids
from idlink.domain.contacts import check_text
from idlink.domain.keytypes import AccountConfig, AccountPolicy, KeyType
from idlink.domain.unit import AccountUnit
from idlink.errors import InvalidArgument
from idlink.store.txn import HIDDEN_MARK, AccountState, AccountTxn, KeyTypeState, Txn

MAX_ACCOUNT_BYTES = 128


class Accounts:
    """The configuration of every account, cached by account id and version.

    The cache is keyed by name but holds the account id it was read for: a
    generation load repoints a name to a new account id (domain/switch.py),
    whose configuration version can equal the old one's.
    """

    def __init__(self) -> None:
        self._configs: dict[str, tuple[int, int, AccountConfig]] = {}

    def find(self, txn: Txn, account: str) -> AccountConfig | None:
        """The account's configuration, or None when the account does not exist."""
        check_account_name(account)
        account_id = txn.account_id(account)
        if account_id is None:
            return None
        scoped = txn.account(account_id)
        version = scoped.config_version()
        cached = self._configs.get(account)
        if cached is not None and cached[0] == account_id and cached[1] == version:
            return cached[2]
        state = scoped.get_config()
        assert state is not None, "an account id without its configuration"
        config = config_of(state)
        self._configs[account] = (account_id, version, config)
        return config

    def find_or_create(self, txn: Txn, account: str, now: int) -> AccountConfig:
        """The account's configuration; a new account is created with the defaults."""
        config = self.find(txn, account)
        if config is None:
            if is_staging_name(account):
                raise InvalidArgument("a staging account is created by a load only")
            # A new account keeps every contact's refusal mark from its first record.
            config = AccountConfig(account, txn.create_account_id(account), marks_refusals=True)
            put_config(txn.account(config.account_id), config, now)
        return config


# A load's staging account (domain/switch.py): the live name and a suffix users cannot
# send (account names are checked text, and a NUL is a control character).
STAGING_SUFFIX = HIDDEN_MARK + "staging"


def staging_name(account: str) -> str:
    return account + STAGING_SUFFIX


def is_staging_name(account: str) -> bool:
    return account.endswith(STAGING_SUFFIX)


def check_account_name(account: str) -> None:
    """An account name is checked text; the engine also reaches a load's staging account."""
    base = account.removesuffix(STAGING_SUFFIX)
    check_text(base, "account", MAX_ACCOUNT_BYTES)


def put_config(txn: AccountTxn, config: AccountConfig, now: int) -> None:
    """Store an account's configuration; readers see a new version and reload it.

    The account keeps the time it was created: a later key type or policy
    write does not move it.
    """
    stored = txn.get_config()
    created = stored.created_at_us if stored is not None and stored.created_at_us else now
    txn.put_config(state_of(config, created))


def put_key_type(unit: AccountUnit, key_type: KeyType) -> KeyType:
    """Add or change a key type; links are worked out again when linking rules change."""
    config = unit.config
    existing = config.key_types.get(key_type.name)
    refuse_identity_change(unit.txn, config, key_type)
    updated = config.with_key_type(key_type)
    rebuild = existing is not None and existing != key_type
    if rebuild:
        updated = _marking(updated)
    put_config(unit.txn, updated, unit.now)
    if rebuild:
        unit.config = updated
        unit.rebuild_account()
    return key_type


def set_policy(unit: AccountUnit, policy: AccountPolicy) -> AccountPolicy:
    """Change the account's cap and isolation threshold; customers are worked out again."""
    config = unit.config
    updated = config.with_policy(policy)
    rebuild = updated.policy != config.policy
    if rebuild:
        updated = _marking(updated)
    put_config(unit.txn, updated, unit.now)
    if rebuild:
        unit.config = updated
        unit.rebuild_account()
    return policy


def _marking(config: AccountConfig) -> AccountConfig:
    """The configuration of an account about to be rebuilt, keeping refusal marks.

    A rebuild replays every contact from all its records, so an account made
    before the marks has exact ones after it.
    """
    return config if config.marks_refusals else replace(config, marks_refusals=True)


def refuse_identity_change(txn: AccountTxn, config: AccountConfig, key_type: KeyType) -> None:
    """A key type's normalizer and scoping decide contact PIDs: fixed once it has contacts."""
    existing = config.key_types.get(key_type.name)
    if existing is None or not existing.identity_changed(key_type):
        return
    if any(c.type == key_type.name for _, c in txn.iter_contacts()):
        raise pids.type_in_use(key_type.name)


# -- the one mapping between key types and their stored form ---------------------------------


def key_type_state(k: KeyType) -> KeyTypeState:
    return KeyTypeState(
        name=k.name,
        normalizer=k.normalizer,
        source_scoped=k.source_scoped,
        max_per_customer=k.max_per_customer,
        reassignable=k.reassignable,
        anonymous=k.anonymous,
        blocked_values=list(k.blocked_values),
        blocked_patterns=list(k.blocked_patterns),
        priority=k.priority,
    )


def key_type_of(k: KeyTypeState) -> KeyType:
    return KeyType(
        name=k.name,
        normalizer=k.normalizer,
        source_scoped=k.source_scoped,
        max_per_customer=k.max_per_customer,
        reassignable=k.reassignable,
        anonymous=k.anonymous,
        blocked_values=tuple(k.blocked_values),
        blocked_patterns=tuple(k.blocked_patterns),
        priority=k.priority,  # 0 in a store written before priorities: the default
    )


def state_of(config: AccountConfig, created_at_us: int) -> AccountState:
    return AccountState(
        account_id=config.account_id,
        name=config.name,
        max_contacts=config.policy.max_contacts,
        isolate_min_connections=config.policy.isolate_min_connections,
        key_types=[key_type_state(k) for k in config.key_types.values()],
        created_at_us=created_at_us,
        refusals_marked=config.marks_refusals,
    )


def config_of(state: AccountState) -> AccountConfig:
    return AccountConfig(
        name=state.name,
        account_id=state.account_id,
        key_types={k.name: key_type_of(k) for k in state.key_types},
        policy=AccountPolicy(state.max_contacts, state.isolate_min_connections),
        marks_refusals=state.refusals_marked,
    )
