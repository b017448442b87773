"""The whole path of issue 12: a running server, export, recluster on Spark, load, switch.

Records go in through a running server; the account is exported and
reclustered on Spark (``local[2]``, the session of conftest.py); the
generation is loaded beside the server while a client keeps resolving and
ingesting with durable acknowledgements. At the end the stored partition
equals a rebuild from the records, no acknowledged record is missing,
``idlink check`` is clean, resolves never failed, and the change feed
reports the switch after every event it had before.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest

from idlink.domain import switch
from idlink.domain.check import check_store
from idlink.generations import load as loading
from idlink.generations.engines import recluster
from idlink.generations.export import export_records
from idlink.v1 import common_pb2, identity_pb2
from tests.reliability.crash import _stream
from tests.reliability.harness import (
    Client,
    batch_records,
    configure_account,
    missing_records,
)
from tests.server import Server, make_token

ACCOUNT = "crash-test"  # the account the harness's batches are made for
BATCH = 50


class _Traffic:
    """A client that ingests numbered batches and resolves, until stopped."""

    def __init__(self, target: str, token: str, first_seq: int) -> None:
        self.target, self.token = target, token
        self.acked = first_seq - 1
        self.resolves = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._ingest, daemon=True),
            threading.Thread(target=self._resolve, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _ingest(self) -> None:
        with Client(self.target, self.token) as client:
            while not self._stop.is_set():
                acked, ended = _stream(
                    client, 1, self.acked + 1, self.acked + 2, BATCH, lambda _: None
                )
                self.acked = max(self.acked, acked)
                if ended != "OK":
                    self.failures.append(f"ingest: {ended}")

    def _resolve(self) -> None:
        with Client(self.target, self.token) as client:
            person = 0
            while not self._stop.is_set():
                person = (person + 7) % 5000
                request = identity_pb2.ResolveRequest(
                    account=ACCOUNT,
                    contact=common_pb2.ContactKey(type="phone", value=f"+1415{person:07d}"),
                )
                try:
                    client.identity.Resolve(request, metadata=client.metadata, timeout=30)
                    self.resolves += 1
                except grpc.RpcError as exc:
                    self.failures.append(f"resolve: {exc.code().name}")  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ingest_export_recluster_on_spark_load_while_serving(
    tmp_path: Path, spark_session: object
) -> None:
    data = tmp_path / "data"
    token = make_token(data, ACCOUNT)
    server = Server(data).start()
    traffic: _Traffic | None = None
    try:
        with Client(server.target, token) as client:
            configure_account(client, ACCOUNT)
            acked, ended = _stream(client, 1, 1, 30, BATCH, lambda _: None)
        assert (acked, ended) == (30, "OK")
        export_records(data, ACCOUNT, tmp_path / "export")
        recluster(tmp_path / "export", tmp_path / "gen", "spark", master="local[2]")
        traffic = _Traffic(server.target, token, acked + 1)
        traffic.start()
        with loading.open_engine(data) as engine:
            feed_before = engine.changes_after(ACCOUNT, 0, 1_000_000)
            result = loading.load(
                engine, ACCOUNT, generation=tmp_path / "gen", export=tmp_path / "export"
            )
            traffic.stop()
            acked = traffic.acked
            assert acked > 30, "the client kept ingesting during the load"
            assert traffic.resolves > 0 and traffic.failures == []
            assert result.switch is not None
            missing = [
                m
                for seq in range(1, acked + 1)
                for m in missing_records(engine, ACCOUNT, batch_records(1, seq, BATCH))
            ]
            assert missing == []
            stored = sorted(sorted(c) for c in engine.partition(ACCOUNT))
            assert stored == sorted(sorted(c) for c in engine.rebuild_partition(ACCOUNT))
            assert [r.problems for r in check_store(engine)] == [[]]
            assert switch.staging_accounts(engine) == [] and switch.pending_drops(engine) == []
            feed = engine.changes_after(ACCOUNT, 0, 1_000_000)
            assert feed[: len(feed_before)] == feed_before
            seqs = [e.seq for e in feed]
            assert seqs == sorted(set(seqs))
            told = [e for e in feed if e.detail == "generation load"]
            assert told and told[0].seq == result.switch.first_seq
    finally:
        if traffic is not None:
            traffic.stop()
        server.stop()
