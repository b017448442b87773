"""The audit log and anomaly detection (SPEC 8).

Every read of customer data and every change is appended: who (the key id,
never the token), when, what (the RPC and the customer PIDs) and the outcome.
Events are buffered for ``FLUSH_SECONDS`` and written in one write
transaction per batch, so that reads do not each pay for a durable commit;
``flush()`` writes what is buffered (the admin listing calls it first, and a
graceful stop writes the rest). The price is a bound, not a guarantee: a
kill -9 loses the events of the reads answered in the last ``FLUSH_SECONDS``
plus one commit (docs/security.md, "Audit", has the measured figure).

Audit events hold PIDs, never contact values, so erasing a customer leaves
nothing in the audit log that names the erased values.

Anomaly detection: each key's distinct customers read in a sliding window are
counted in memory, before an answer reveals them; the answer that would take a
key over its account's threshold is refused, the key is flagged in the store
(so every server process refuses it) and an ``anomaly`` event is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from idlink.security import apikeys
from idlink.security.policy import load_policy
from idlink.store.env import Store
from idlink.store.txn import AccountTxn, AuditEventState, Txn

log = logging.getLogger("idlink.audit")

# Short, so that a kill -9 loses little; a batch commit costs about a millisecond.
FLUSH_SECONDS = 0.05
MAX_BUFFERED = 10_000


@dataclass(slots=True)
class PendingEvent:
    account: str
    key_id: str
    role: str
    method: str
    customer_pids: list[bytes]
    outcome: str
    detail: str = ""
    at_us: int = field(default_factory=lambda: time.time_ns() // 1000)


class AuditLog:
    """Buffers audit events and appends them to the store in batches."""

    def __init__(self, store: Store, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self._buffer: list[PendingEvent] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idlink-audit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()

    def append(self, event: PendingEvent) -> None:
        with self._lock:
            if len(self._buffer) >= MAX_BUFFERED:
                log.warning("audit buffer full: writing now")
                flush_now = True
            else:
                flush_now = False
            self._buffer.append(event)
        if flush_now:
            self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception as exc:  # the store failed: the server's health shows it
                log.error("audit flush failed, will retry: %s", exc)

    def flush(self) -> None:
        """Write every buffered event (in one write transaction)."""
        with self._flush_lock:
            with self._lock:
                events, self._buffer = self._buffer, []
            if not events:
                return
            try:
                self.store.write(lambda txn: write_events(txn, events), bookkeeping=True)
            except Exception:
                # Keep the events for the next flush (the store may come back);
                # past the bound the oldest go, and the log says how many.
                with self._lock:
                    kept = events + self._buffer
                    lost = max(0, len(kept) - MAX_BUFFERED)
                    self._buffer = kept[lost:]
                if lost:
                    log.error("audit buffer full while the store fails: %d events lost", lost)
                raise


def write_events(txn: Txn, events: Iterable[PendingEvent]) -> None:
    """Append events; events of an account that does not exist (nothing to read) are dropped.

    Each account's events keep their order and take their sequence numbers in
    one step (one counter write per account, not one per event).
    """
    txn.buffer_writes()  # the batch's rows in one sorted putmulti (the store flushes it)
    by_account: dict[str, list[PendingEvent]] = {}
    for event in events:
        by_account.setdefault(event.account, []).append(event)
    for account, batch in by_account.items():
        account_id = txn.account_id(account)
        if account_id is None:
            continue
        scoped = txn.account(account_id)
        first = scoped.next_audit_seqs(len(batch))
        for seq, event in enumerate(batch, first):
            scoped.append_audit(
                AuditEventState(
                    seq=seq,
                    at_us=event.at_us,
                    key_id=event.key_id,
                    role=event.role,
                    method=event.method,
                    customer_pids=event.customer_pids,
                    outcome=event.outcome,
                    detail=event.detail,
                ),
            )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    start_us: int = 0
    end_us: int = 0
    key_id: str = ""
    customer_pid: bytes = b""


def list_events(
    txn: AccountTxn, flt: AuditFilter, after_seq: int, limit: int
) -> tuple[list[AuditEventState], int]:
    """Up to ``limit`` events after ``after_seq`` that pass the filter, and the last seq read."""
    out: list[AuditEventState] = []
    last = after_seq
    for event in txn.audit_after(after_seq):
        last = event.seq
        if flt.start_us and event.at_us < flt.start_us:
            continue
        if flt.end_us and event.at_us >= flt.end_us:
            continue
        if flt.key_id and event.key_id != flt.key_id:
            continue
        if flt.customer_pid and flt.customer_pid not in event.customer_pids:
            continue
        out.append(event)
        if len(out) >= limit:
            break
    return out, last


class AnomalyDetector:
    """Distinct customers read per key in a sliding window; flags keys over the threshold."""

    def __init__(self, store: Store, audit: AuditLog, clock: Any = time.monotonic) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[deque[tuple[float, bytes]], dict[bytes, int]]] = {}
        # Keys this process flagged: reason, and whether the flag is in the store
        # yet. Answers of calls admitted before the flag was stored are refused too.
        self._flagged: dict[str, tuple[str, bool]] = {}

    def reveal(
        self, key_id: str, customer_pids: Iterable[bytes], max_customers: int, window_seconds: int
    ) -> tuple[str, bool]:
        """Count customers an answer is about to reveal, before it is sent.

        ``(reason, crossed)``: an empty reason when the answer may go. Else the
        answer is refused and nothing is counted; ``crossed`` is true for the
        answer that took the key over its threshold of distinct customers in
        the window (the caller flags the key), false for any answer of a key
        this process has flagged already. Customers the key read earlier in
        the window cost nothing again.
        """
        pids = [pid for pid in customer_pids if pid]
        now = self.clock()
        with self._lock:
            flagged = self._flagged.get(key_id)
            if flagged is not None:
                return flagged[0], False
            window, counts = self._seen.setdefault(key_id, (deque(), {}))
            limit = now - window_seconds
            while window and window[0][0] < limit:
                _, old = window.popleft()
                counts[old] -= 1
                if not counts[old]:
                    del counts[old]
            fresh = {pid for pid in pids if pid not in counts}
            distinct = len(counts) + len(fresh)
            if distinct > max_customers:
                window.clear()
                counts.clear()
                reason = (
                    f"asked for {distinct} distinct customers in {window_seconds} s"
                    f" (threshold {max_customers})"
                )
                self._flagged[key_id] = (reason, False)
                return reason, True
            for pid in pids:
                window.append((now, pid))
                counts[pid] = counts.get(pid, 0) + 1
        return "", False

    def flag(self, account: str, key_id: str, role: str, reason: str) -> None:
        """Flag a key in the store (every process then throttles it) and audit it."""
        self.store.write(lambda txn: apikeys.set_flag(txn, account, key_id, reason))
        with self._lock:
            if key_id in self._flagged:
                self._flagged[key_id] = (reason, True)
        self.audit.append(PendingEvent(account, key_id, role, "anomaly", [], "FLAGGED", reason))
        log.warning("API key flagged", extra={"key_id": key_id, "reason": reason})

    def seen_unflagged(self, key_id: str) -> None:
        """The store shows the key not flagged: a flag stored earlier was cleared by an admin."""
        with self._lock:
            flagged = self._flagged.get(key_id)
            if flagged is not None and flagged[1]:
                del self._flagged[key_id]

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._seen.pop(key_id, None)
            self._flagged.pop(key_id, None)


def thresholds(txn: AccountTxn) -> tuple[int, int]:
    """The account's anomaly threshold and window (defaults for an unknown account)."""
    policy = load_policy(txn)
    return policy.anomaly_max_customers, policy.anomaly_window_seconds
