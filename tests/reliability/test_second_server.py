"""Several processes on one data folder (SPEC 9): the server lock, a map grown by another process.

- A second, unrelated ``idlink serve`` on a folder that a server holds exits at
  once with a clear message naming the holder's pid; the first keeps serving,
  and once it has stopped the folder can be served again.
- Another process that writes past the end of a server's LMDB map (any
  command that opens the store with a larger map, as ``idlink keys create``,
  ``backup`` or ``rotate-key`` do) makes LMDB refuse the server's next
  transactions with MDB_MAP_RESIZED. The server adopts the new map size and
  carries on: reads and writes answer correctly and health stays SERVING,
  for a single-process server and for every worker of ``--workers 2``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from grpc_health.v1 import health_pb2

from idlink.v1 import common_pb2, identity_pb2
from tests.reliability.harness import Client, store_problems
from tests.server import Server, free_port, make_token

ACCOUNT = "second"
SERVING = health_pb2.HealthCheckResponse.SERVING
SMALL_MAP = 1 << 20

# Writes 4 MiB through a store opened with the default multi-process map (64 GiB),
# far past the 1 MiB map of the server under test.
_GROW = """
import os, sys
from idlink.security.crypto import open_store
with open_store(sys.argv[1], multi_process=True) as store:
    for i in range(64):
        store.write(lambda txn, i=i: txn.put_meta(b"filler:%d" % i, os.urandom(64 << 10)))
"""


def idlink(*args: str) -> subprocess.CompletedProcess[str]:
    # A refused server exits within a second or two; one that starts runs until the timeout.
    return subprocess.run(
        [sys.executable, "-m", "idlink", *args], capture_output=True, text=True, timeout=60
    )


def grow_the_file(data: Path) -> None:
    before = (data / "data.mdb").stat().st_size
    done = subprocess.run(
        [sys.executable, "-c", _GROW, str(data)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert before < SMALL_MAP < (data / "data.mdb").stat().st_size


def key(kind: str, value: str) -> common_pb2.ContactKey:
    return common_pb2.ContactKey(type=kind, value=value)


def link(client: Client, record_id: str, *contacts: common_pb2.ContactKey) -> str:
    request = identity_pb2.LinkRequest(
        account=ACCOUNT, source="crm", record_id=record_id, contacts=list(contacts)
    )
    request.observed_at.FromSeconds(1_700_000_000)
    answer = client.identity.Link(request, metadata=client.metadata, timeout=30)
    assert answer.outcome == common_pb2.RECORD_OUTCOME_APPLIED
    return answer.customer.customer_pid


def resolve(client: Client, contact: common_pb2.ContactKey) -> identity_pb2.ResolveResponse:
    return client.identity.Resolve(
        identity_pb2.ResolveRequest(account=ACCOUNT, contact=contact),
        metadata=client.metadata,
        timeout=30,
    )


def test_a_second_server_on_the_folder_is_refused_and_names_the_first(tmp_path):
    data = tmp_path / "data"
    token = make_token(data, ACCOUNT)
    first = Server(data).start()
    try:
        second = idlink("serve", "--data", str(data), "--listen", f"127.0.0.1:{free_port()}")
        assert second.returncode == 1, second.stderr
        assert f"in use by pid {first.pid} (idlink serve --listen {first.target})" in second.stderr
        assert "--workers" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.health() == SERVING
        with Client(first.target, token) as client:
            pid = link(client, "r1", key("email", "one@example.com"))
            assert resolve(client, key("email", "one@example.com")).customer.customer_pid == pid
    finally:
        assert first.stop() == 0
    again = Server(data).start()  # the lock ended with the first server
    assert again.stop() == 0


def test_a_second_server_is_refused_beside_the_workers_of_the_first(tmp_path):
    data = tmp_path / "data"
    workers = Server(data, "--workers", "2", port=free_port()).start()
    try:
        second = idlink("serve", "--data", str(data), "--listen", f"127.0.0.1:{free_port()}")
        assert second.returncode == 1, second.stderr
        assert f"in use by pid {workers.pid} " in second.stderr  # the workers' parent
        assert workers.health() == SERVING
    finally:
        assert workers.stop() == 0
    assert workers.log().count('"msg": "serving"') == 2


def test_a_server_carries_on_when_another_process_grows_the_map(tmp_path):
    data = tmp_path / "data"
    token = make_token(data, ACCOUNT)
    server = Server(data, "--map-size", str(SMALL_MAP), "--health-interval", "0.2").start()
    try:
        with Client(server.target, token) as client:
            before = link(
                client, "r1", key("email", "before@example.com"), key("phone", "+14155550101")
            )
            grow_the_file(data)
            # Reads first: every read of the old code answered MDB_MAP_RESIZED from here on.
            found = resolve(client, key("phone", "+1 415 555 0101"))
            assert found.status == identity_pb2.RESOLVE_STATUS_FOUND
            assert found.customer.customer_pid == before
            after = link(
                client, "r2", key("email", "after@example.com"), key("phone", "+14155550101")
            )
            assert after == before
            assert {
                c.value
                for c in resolve(client, key("email", "after@example.com")).customer.contacts
            } >= {"after@example.com", "+14155550101"}
        # A key made now, by another process, works at once.
        with Client(server.target, make_token(data, ACCOUNT, "reader")) as reader:
            assert (
                resolve(reader, key("email", "before@example.com")).customer.customer_pid == before
            )
        # Health follows the store, which can still be written: probes keep passing.
        assert server.wait_health(SERVING, 5)
        assert server.health() == SERVING
    finally:
        assert server.stop() == 0
    log = server.log()
    assert "store map size adopted from another process" in log
    assert "MAP_RESIZED" not in log and "Traceback" not in log
    assert store_problems(data) == []


def free_port_pair() -> int:
    """A port p with p and p + 1 both free: worker i of --workers serves metrics on p + i."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def wait_for_metrics(ports: list[int], timeout: float = 60.0) -> None:
    """Every worker answers /metrics (a worker may still be starting when the first serves)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def resolved_by_each_worker(ports: list[int]) -> list[float]:
    counts = []
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        counts.append(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("idlink_calls_total{")
                and 'code="OK"' in line
                and 'method="/idlink.v1.IdentityService/Resolve"' in line
            )
        )
    return counts


def test_every_worker_carries_on_when_another_process_grows_the_map(tmp_path):
    data = tmp_path / "data"
    token = make_token(data, ACCOUNT)
    metrics = free_port_pair()
    workers = Server(
        data,
        "--workers",
        "2",
        "--map-size",
        str(SMALL_MAP),
        "--metrics-port",
        str(metrics),
        port=free_port(),
    ).start()
    try:
        wait_for_metrics([metrics, metrics + 1])
        emails = [f"w{i}@example.com" for i in range(6)]
        pids = {}
        for i, email in enumerate(emails):
            with Client(workers.target, token) as client:  # a new connection: either worker
                pids[email] = link(client, f"w{i}", key("email", email))
        grow_the_file(data)
        seen = resolved_by_each_worker([metrics, metrics + 1])
        # Enough new connections that both workers answer (SO_REUSEPORT spreads them).
        for n in range(40):
            email = emails[n % len(emails)]
            with Client(workers.target, token) as client:
                found = resolve(client, key("email", email))
                assert found.status == identity_pb2.RESOLVE_STATUS_FOUND, n
                assert found.customer.customer_pid == pids[email]
                if n % 8 == 0:
                    link(client, f"after{n}", key("email", f"after{n}@example.com"))
            if (
                min(
                    a - b
                    for a, b in zip(
                        resolved_by_each_worker([metrics, metrics + 1]), seen, strict=True
                    )
                )
                > 0
                and n >= 16
            ):
                break
        gained = [
            a - b
            for a, b in zip(resolved_by_each_worker([metrics, metrics + 1]), seen, strict=True)
        ]
        assert min(gained) > 0, f"one worker answered nothing after the growth: {gained}"
        assert workers.health() == SERVING
    finally:
        assert workers.stop() == 0
    log = workers.log()
    assert log.count("store map size adopted from another process") >= 2
    assert "MAP_RESIZED" not in log and "Traceback" not in log
    assert store_problems(data) == []
