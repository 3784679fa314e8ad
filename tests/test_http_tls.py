"""HTTPS on the HTTP listener (FHIR API, HTTP intake, health): settings.http.tls, with mutual TLS
when ca_file is set; a certificate that cannot be loaded stops `router run` with a message."""
from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import pytest

from tests.support.hl7 import free_port
from tests.support.proc import RouterProcess, router_env, run_cli
from tests.test_mllp import client_context, make_certs

ROUTES = """
settings:
  http:
    port: {port}
    tls: {{cert_file: certs/server.pem, key_file: certs/server.key{ca}}}
routes:
  - name: lab-http
    source: {{type: http, path: /hl7}}
    destinations: [discard]
"""


def _wait_https(port: int, ctx: ssl.SSLContext, proc: RouterProcess, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"router exited:\n{proc.output()}")
        try:
            return httpx.get(f"https://localhost:{port}/health", verify=ctx, timeout=2)
        except httpx.ConnectError:
            time.sleep(0.2)
    raise AssertionError(f"no HTTPS answer after {timeout}s:\n{proc.output()}")


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_http_listener_serves_https(tmp_path: Path, mutual: bool) -> None:
    certs = make_certs(tmp_path / "certs")
    port = free_port()
    (tmp_path / "routes.yaml").write_text(ROUTES.format(port=port, ca=", ca_file: certs/ca.pem" if mutual else ""))
    proc = RouterProcess(["run"], tmp_path, router_env())
    try:
        client = client_context(certs, "client" if mutual else None)
        res = _wait_https(port, client, proc)
        assert res.status_code == 200 and res.json()["status"] == "ok", res.text
        # plain HTTP on the HTTPS port gets no HTTP answer
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).raise_for_status()
        if mutual:  # without a client certificate, or with one from another CA: no connection
            for ctx in (client_context(certs), client_context(certs, "stranger")):
                with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                    httpx.get(f"https://localhost:{port}/health", verify=ctx, timeout=3)
        else:  # a client that does not trust our CA refuses the server
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"https://localhost:{port}/health", verify=ssl.create_default_context(), timeout=3)
    finally:
        proc.kill()


def test_a_missing_http_certificate_stops_run_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(
        "settings:\n  http: {port: " + str(free_port()) + ", tls: {cert_file: nope.pem, key_file: nope.key}}\n"
        "routes: []\n")
    res = run_cli(["run"], tmp_path, router_env(), timeout=60)
    assert res.returncode != 0
    assert "settings.http.tls: cannot load cert_file" in res.stderr and str(tmp_path / "nope.pem") in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
