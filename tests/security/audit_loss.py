"""How many audit events of reads a kill -9 loses (docs/security.md, "Audit").

Audit events are buffered and written in batches (``security/audit.py``,
``FLUSH_SECONDS``), so the events of the reads answered just before a
SIGKILL may be lost. Each run: a fresh server, ``--reads`` Resolves of a
reader key one after another, SIGKILL right after the last answer, a restart,
and a count of the reader's audit events that made it to the store.

``python -m tests.security.audit_loss --reads 300 --runs 5`` prints one line
per run and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from idlink.v1 import admin_pb2, admin_pb2_grpc, common_pb2, identity_pb2, identity_pb2_grpc
from tests.server import Server, make_token

ACCOUNT = "audit-loss"


def one_run(folder: Path, reads: int) -> dict[str, float]:
    server = Server(folder / "data").start()
    admin = make_token(server.data, ACCOUNT, "admin")
    reader = make_token(server.data, ACCOUNT, "reader")
    contact = common_pb2.ContactKey(type="email", value="loss@x.com")
    try:
        with grpc.insecure_channel(server.target) as channel:
            identity = identity_pb2_grpc.IdentityServiceStub(channel)
            identity.Link(
                identity_pb2.LinkRequest(
                    account=ACCOUNT, source="crm", record_id="r1", contacts=[contact]
                ),
                metadata=[("authorization", f"Bearer {admin}")],
                timeout=10,
            )
            request = identity_pb2.ResolveRequest(account=ACCOUNT, contact=contact)
            md = [("authorization", f"Bearer {reader}")]
            started = time.monotonic()
            for _ in range(reads):
                identity.Resolve(request, metadata=md, timeout=10)
            seconds = time.monotonic() - started
        server.kill()  # right after the last answer
        server.start()
        with grpc.insecure_channel(server.target) as channel:
            admin_stub = admin_pb2_grpc.AdminServiceStub(channel)
            md = [("authorization", f"Bearer {admin}")]
            keys = admin_stub.ListApiKeys(
                admin_pb2.ListApiKeysRequest(account=ACCOUNT), metadata=md
            )
            reader_id = next(k.key_id for k in keys.keys if k.role == admin_pb2.ROLE_READER)
            kept, token = 0, ""
            while True:
                page = admin_stub.ListAuditEvents(
                    admin_pb2.ListAuditEventsRequest(
                        account=ACCOUNT, key_id=reader_id, page_size=1000, page_token=token
                    ),
                    metadata=md,
                )
                kept += sum(1 for e in page.events if e.method.endswith("/Resolve"))
                token = page.next_page_token
                if not token:
                    break
    finally:
        server.stop()
    return {"reads": reads, "kept": kept, "lost": reads - kept, "reads_per_second": reads / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.security.audit_loss")
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="idlink-audit-loss-") as folder:
            figures = one_run(Path(folder), args.reads)
        runs.append(figures)
        print(
            f"run {n + 1}: {figures['lost']:.0f} of {figures['reads']:.0f} read events lost"
            f" at kill -9 ({figures['reads_per_second']:.0f} reads/s)",
            flush=True,
        )
    lost = [r["lost"] for r in runs]
    print(
        json.dumps(
            {
                "reads": args.reads,
                "runs": args.runs,
                "lost_min": min(lost),
                "lost_median": statistics.median(lost),
                "lost_max": max(lost),
                "reads_per_second_median": round(
                    statistics.median(r["reads_per_second"] for r in runs)
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
