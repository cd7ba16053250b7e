"""TLS end to end: `vitals serve --certfile/--keyfile` with a CA made in the test
(trustme); the simulator and the query command trust it with `--cafile`."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gateway.client.process import vitals_serve
from tests.support.processes import vitals

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[tuple[str, Path, str, str]]:
    """An https gateway: (base URL, CA file, admin token, clinician token)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))

    db = f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}"
    tokens = {}
    for name, role in (("root", "admin"), ("nurse", "clinician")):
        out = vitals(
            "users", "add", name, "--role", role, "--ward", "icu", "--json", "--database-url", db
        )
        tokens[role] = json.loads(out.stdout)["token"]

    server = vitals_serve(
        "--database-url",
        db,
        "--certfile",
        str(cert_file),
        "--keyfile",
        str(cert_file),
        log_dir=tmp_path,
        ssl_context=ssl.create_default_context(cafile=str(ca_file)),
    )
    try:
        server.start()
        yield server.url, ca_file, tokens["admin"], tokens["clinician"]
    finally:
        server.stop()


def test_devices_stream_and_clients_query_over_tls(
    tls_gateway: tuple[str, Path, str, str],
) -> None:
    """Over https/wss with a private CA: the simulator's readings are acked and stored,
    `vitals query --cafile` reads them back, and a client without the CA is refused."""
    base, ca_file, admin, nurse = tls_gateway
    sim = vitals(
        "simulate",
        "--url",
        base,
        "--admin-token",
        admin,
        "--cafile",
        str(ca_file),
        "--devices",
        "2",
        "--rate",
        "4",
        "--duration",
        "4",
        "--seed",
        "1",
    )
    assert sim.returncode == 0

    out = vitals(
        "query",
        "--url",
        base,
        "--token",
        nurse,
        "--cafile",
        str(ca_file),
        "--patient",
        "p-001",
        "--since",
        "2000-01-01T00:00:00Z",
        "--format",
        "json",
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows
    assert {r["device_id"] for r in rows} == {"watch-001"}

    untrusted = vitals(
        "query",
        "--url",
        base,
        "--token",
        nurse,
        "--patient",
        "p-001",
        "--format",
        "json",
        check=False,
    )
    assert untrusted.returncode != 0
    assert "certificate" in (untrusted.stderr + untrusted.stdout).lower()
