"""``idlink load``: compute or read a generation, write it beside the live account, switch.

The whole path of a load (docs/operations.md, "Loading a generation"):

1. the generation: from a records file merged with the account's records
   (``--records``, :func:`materialize.generation_from_records`) or from a
   recluster output folder and its export (``--in``,
   :func:`materialize.generation_from_folder`); bad input is refused here,
   before anything is written;
2. :func:`materialize.check_fits`: a load that would not fit the map or the
   disk says so before it writes;
3. the staging account (:func:`switch.begin`), the generation's derived rows
   written into it (:func:`materialize.write_generation`), the live
   account's non-derived data copied (:func:`switch.copy_base`);
4. catch-up rounds of what the live account received since the export,
   then the switch (:func:`switch.switch`), one transaction;
5. the old account id dropped in batches (:func:`switch.drop_pending`).

It runs beside a live server (the store opened as ``idlink check`` opens it,
shared by processes) or on a folder no server holds. A load that fails after
the staging account was made drops it again; one killed on the way leaves it,
hidden, and the next load drops it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from idlink.domain import switch
from idlink.domain.engine import IdentityEngine
from idlink.generations.manifest import GENERATION_FORMAT, ExportError, read_manifest

# A round that leaves fewer log entries than this behind is followed by the switch.
FINAL_ENTRIES = switch.FINAL_ENTRIES


@dataclass(slots=True)
class LoadResult:
    """What a load did."""

    account: str
    records: int = 0
    contacts: int = 0
    customers: int = 0
    rounds: int = 0
    caught_up: int = 0
    dropped_entries: int = 0
    switch: switch.SwitchReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def open_engine(data: str | os.PathLike[str]) -> Iterator[IdentityEngine]:
    """The store of ``data`` opened as a command beside a server opens it (or alone)."""
    from idlink.security.crypto import open_store
    from idlink.security.secrets import load_master_secret

    path = Path(data)
    if not (path / "data.mdb").is_file():
        raise ExportError(f"no idlink store in {path}")
    with open_store(path, multi_process=True) as store:
        yield IdentityEngine(store, load_master_secret(path))


def generation_account(generation: str | os.PathLike[str]) -> str:
    """The account a generation folder is of (its manifest, checked whole)."""
    return read_manifest(generation, GENERATION_FORMAT).account


def baseline_now(engine: IdentityEngine, account: str) -> switch.Baseline:
    """Where the live account stands now (a records load reads the account just after)."""
    with engine.read(account) as view:
        if not view.exists:
            return switch.Baseline(0, 0)
        txn = view.txn
        return switch.Baseline(
            change_seq=txn.change_seq(),
            record_log_seq=txn.record_log_seq(),
            account_id=txn.account_id,
            config_version=txn.config_version(),
        )


def baseline_of_export(planned: Any, folder: str | os.PathLike[str]) -> switch.Baseline:
    """Where the live account stood at the export a generation was computed from."""
    manifest = planned.generation.inputs.export.manifest
    if manifest.record_log_seq is None:
        raise ExportError(
            f"{Path(folder) / 'manifest.json'}: its export does not record the store's record "
            "log position (an export of an older idlink): export again"
        )
    return switch.Baseline(
        change_seq=manifest.change_seq,
        record_log_seq=manifest.record_log_seq,
        account_id=manifest.account_id,
        config_version=manifest.config_version,
        export_id=manifest.export_id,
    )


def merges_of(planned: Any) -> list[tuple[bytes, list[bytes]]]:
    """The generation's merges: (survivor, absorbed customer PIDs)."""
    assignment = planned.generation.assignment
    if assignment is None:
        return []
    return [
        (pid, list(others))
        for pid, kind, others in zip(
            assignment.customer_pid, assignment.kind, assignment.others, strict=True
        )
        if kind == "merged" and others
    ]


Writer = Callable[..., Any]


def load(
    engine: IdentityEngine,
    account: str,
    *,
    records: str | Path | None = None,
    generation: str | Path | None = None,
    export: str | Path | None = None,
    progress: bool = False,
    log: TextIO | None = None,
    writer: Writer | None = None,
    between: Callable[[str], None] | None = None,
) -> LoadResult:
    """Load a records file or a generation folder into ``account`` and switch it in.

    ``writer`` replaces :func:`materialize.write_generation` (same
    arguments); ``between(step)`` is called after each step (the crash tests
    stop a load there).
    """
    from idlink.generations import materialize

    say = (lambda text: print(text, file=log, flush=True)) if log is not None else (lambda _: None)
    mark = between or (lambda _: None)
    result = LoadResult(account)
    started = time.perf_counter()
    result.dropped_entries += switch.drop_pending(engine)
    if records is not None:
        baseline = baseline_now(engine, account)
        planned = materialize.generation_from_records(engine, account, records, progress=False)
    elif generation is not None:
        planned = materialize.generation_from_folder(engine, account, generation, export)
        baseline = baseline_of_export(planned, generation)
    else:
        raise ValueError("a load needs a records file or a generation folder")
    inputs = planned.generation.inputs
    result.records = int(len(inputs.record_rank))
    result.contacts = int(inputs.contacts)
    assignment = planned.generation.assignment
    result.customers = int(assignment.parts) if assignment is not None else 0
    result.seconds["generation"] = time.perf_counter() - started
    say(
        f"generation of {account}: {result.records} records, {result.contacts} contacts, "
        f"{result.customers} customers"
    )
    materialize.check_fits(engine, planned)
    mark("planned")
    staging = switch.begin(engine, account, baseline)
    mark("staging")
    try:
        tick = time.perf_counter()
        (writer or materialize.write_generation)(
            engine, staging.name, planned, progress=progress, live_account=account
        )
        result.seconds["write"] = time.perf_counter() - tick
        mark("written")
        tick = time.perf_counter()
        switch.copy_base(engine, staging, merges_of(planned))
        result.seconds["copy"] = time.perf_counter() - tick
        mark("copied")
        tick = time.perf_counter()
        while result.rounds < switch.MAX_ROUNDS:
            left = switch.catch_up(engine, staging)
            result.rounds += 1
            mark("round")
            if left < FINAL_ENTRIES:
                break
        result.seconds["catch_up"] = time.perf_counter() - tick
        tick = time.perf_counter()
        result.switch = switch.switch(engine, staging)
        result.seconds["switch"] = time.perf_counter() - tick
    except BaseException:
        # Not switched: the staging account goes (a kill here leaves it to the next load).
        switch.abandon(engine, staging)
        raise
    mark("switched")
    result.caught_up = result.switch.caught_up_records
    events = ", ".join(f"{n} {kind}" for kind, n in sorted(result.switch.events.items()))
    say(
        f"switched {account} to the new generation (account id {staging.staging_id}): "
        f"change events {result.switch.first_seq}..{result.switch.last_seq} "
        f"({events or 'none'}), {result.rounds} catch-up rounds"
    )
    tick = time.perf_counter()
    result.dropped_entries += switch.drop_pending(engine)
    result.seconds["drop"] = time.perf_counter() - tick
    result.seconds["total"] = time.perf_counter() - started
    return result


def run(
    data: str,
    account: str | None,
    *,
    records: str | None,
    generation: str | None,
    export: str | None,
    progress: bool,
) -> LoadResult:
    """``idlink load`` on the store in ``data`` (the command's body)."""
    if generation is not None:
        named = generation_account(generation)
        if account is not None and account != named:
            raise ExportError(
                f"{Path(generation) / 'manifest.json'} is a generation of account {named!r}, "
                f"not {account!r}"
            )
        account = named
    if account is None:
        raise ExportError("--records needs --account")
    with open_engine(data) as engine:
        return load(
            engine,
            account,
            records=records,
            generation=generation,
            export=export,
            progress=progress,
            log=sys.stderr if progress else None,
        )
