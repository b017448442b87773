"""A client in another language: Node's @grpc/grpc-js and @grpc/proto-loader call Link, Resolve.

``npm ci`` installs the packages of ``node/package-lock.json`` into
``node/node_modules`` once; later runs reuse them. The test is skipped only
when node or npm is missing or the npm registry cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools
import pytest
from google.api import annotations_pb2

from idlink.v1 import identity_pb2

NODE_DIR = Path(__file__).resolve().parent / "node"
INSTALLED_MARKER = NODE_DIR / "node_modules" / ".package-lock.json"
WELL_KNOWN_PROTOS = Path(grpc_tools.__file__).resolve().parent / "_proto"
# google/api/annotations.proto, which the service protos import, where setup.py finds it.
GOOGLEAPIS_PROTOS = Path(annotations_pb2.__file__).resolve().parents[2]
NPM_TIMEOUT = 240
# npm's words for a registry it cannot reach (DNS, refused, timed out, proxy, offline).
NETWORK_FAILURE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"network|socket hang up|getaddrinfo|proxy|offline|ERR_SOCKET_TIMEOUT|\b(502|503|504)\b",
    re.IGNORECASE,
)


def install_node_packages() -> None:
    """Install the Node packages once (kept in node_modules); skip if npm cannot reach them."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the Node.js client test needs node and npm")
    if INSTALLED_MARKER.exists():
        return
    try:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm ci did not finish in {NPM_TIMEOUT} s: the npm registry is not reachable")
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if NETWORK_FAILURE.search(output):
            pytest.skip(f"the npm registry cannot be reached (npm ci failed):\n{output[-1500:]}")
        pytest.fail(f"npm ci failed:\n{output[-4000:]}")


def node_env() -> dict[str, str]:
    """The client's environment: where the well-known and the googleapis protos are."""
    return {
        **os.environ,
        "IDLINK_WELL_KNOWN_PROTOS": str(WELL_KNOWN_PROTOS),
        "IDLINK_GOOGLEAPIS_PROTOS": str(GOOGLEAPIS_PROTOS),
        "PYTHON": sys.executable,
    }


def test_node_client_links_and_resolves(server, token, account, idlink):
    install_node_packages()
    done = subprocess.run(
        ["node", "client.js", server.target, token, account],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env=node_env(),
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["link"]["outcome"] == "RECORD_OUTCOME_APPLIED"
    assert answer["resolve"]["status"] == "RESOLVE_STATUS_FOUND"
    customer = answer["resolve"]["customer"]
    assert customer["customer_pid"] == answer["link"]["customer"]["customer_pid"]
    assert {c["value"] for c in customer["contacts"]} == {"+15550102030", "node.user@example.com"}
    # The Python client sees the same customer.
    seen = idlink.resolve(account, "phone", "+15550102030")
    assert seen.status == identity_pb2.RESOLVE_STATUS_FOUND
    assert seen.customer.customer_pid == customer["customer_pid"]


def test_node_client_without_a_key_is_refused(server, account):
    install_node_packages()
    done = subprocess.run(
        ["node", "client.js", server.target, "", account],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env=node_env(),
    )
    assert done.returncode == 1
    # UNAUTHENTICATED, and the ErrorInfo reason read from the google.rpc.Status.
    assert "idlink node client: 16 API_KEY_MISSING: missing API key" in done.stderr
