"""API authentication: JWT bearer tokens (RS256/ES256 key file, HS256 secret from the environment,
a JWKS endpoint served by a local HTTP server), API keys, citizens' patient identifiers and
`router apikey`. Tests touching the database run on SQLite and on PostgreSQL."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from router.api.auth import Authenticator, create_api_key, list_api_keys, revoke_api_key
from router.cli import main
from router.config.schema import ApiSettings, JwtSettings
from router.db import create_schema, make_engine
from router.errors import ConfigError, InputError, UnauthorizedError
from router.store import audit
from router.store.store import Store
from router.store.tables import api_keys

ISS = "https://idp.example.ru/realms/health"
AUD = "hl7-router"
SECRET = "s3cret-of-at-least-thirty-two-bytes-long!"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    e = make_engine(sqlite_url)
    create_schema(e)
    yield e
    e.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    e = make_engine(database_url)
    create_schema(e)
    yield e
    e.dispose()


def settings(**jwt_options: Any) -> ApiSettings:
    return ApiSettings(jwt=JwtSettings(issuer=ISS, audience=AUD, **jwt_options))


@pytest.fixture
def rs_auth(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, sqlite_engine: sa.Engine) -> Authenticator:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "idp.pem").write_bytes(pem(rsa_key))
    return Authenticator(settings(public_key_file="keys/idp.pem"), tmp_path, sqlite_engine)


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    c = {"iss": ISS, "aud": AUD, "sub": "lab-lis-01", "role": "lab", "org": "lab1", "iat": now, "exp": now + 300,
         "scope": "system/Observation.write system/Patient.read"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rs256(key: Any, **over: Any) -> str:
    return jwt.encode(claims(**over), key, algorithm="RS256")


def refused(auth: Authenticator, headers: dict[str, str], reason: str) -> UnauthorizedError:
    with pytest.raises(UnauthorizedError, match=reason) as info:
        auth.authenticate(headers)
    return info.value


# ------------------------------------------------------------------------------------------ JWT, key file
def test_a_valid_rs256_token_gives_the_principal(rs_auth: Authenticator, rsa_key: Any) -> None:
    p = rs_auth.authenticate(bearer(rs256(rsa_key)))
    assert (p.client_id, p.role, p.organization, p.patient) == ("lab-lis-01", "lab", "lab1", None)
    assert p.scopes == {"system/Observation.write", "system/Patient.read"}
    # header names are case-insensitive; "Organization/<id>" is accepted for org
    p = rs_auth.authenticate({"authorization": "bearer " + rs256(rsa_key, org="Organization/ins1", role="insurer")})
    assert (p.role, p.organization) == ("insurer", "ins1")


def test_an_es256_key_file(tmp_path: Path, sqlite_engine: sa.Engine) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(pem(key))
    auth = Authenticator(settings(public_key_file=str(tmp_path / "ec.pem")), "/elsewhere", sqlite_engine)
    assert auth.authenticate(bearer(jwt.encode(claims(), key, algorithm="ES256"))).client_id == "lab-lis-01"


@pytest.mark.parametrize(("over", "reason"), [
    ({"exp": int(time.time()) - 120}, "token expired"),
    ({"nbf": int(time.time()) + 600}, "not yet valid"),
    ({"iat": int(time.time()) + 600}, "not yet valid"),
    ({"iss": "https://evil.example"}, "issuer is not the configured one"),
    ({"aud": "another-api"}, "audience is not the configured one"),
    ({"exp": None}, "lacks the exp claim"),
    ({"iss": None}, "lacks the iss claim"),
    ({"aud": None}, "lacks the aud claim"),
    ({"sub": None}, "lacks the sub claim"),
    ({"role": "superuser"}, "role claim missing or not one of"),
    ({"role": "router"}, "role claim missing or not one of"),
    ({"role": None}, "role claim missing"),
    ({"org": None}, "a lab token needs the org claim"),
    ({"role": "citizen", "org": None}, "citizen token needs the patient claim or patient_identifier"),
    ({"sub": "x" * 200}, "sub claim must be a client id"),
])
def test_bad_claims_are_refused(rs_auth: Authenticator, rsa_key: Any, over: dict[str, Any], reason: str) -> None:
    token = rs256(rsa_key, **over)
    exc = refused(rs_auth, bearer(token), reason)
    assert token not in str(exc) and "lab-lis-01" not in str(exc)  # no token contents in the reason


def test_clock_skew_within_the_leeway_is_accepted(rs_auth: Authenticator, rsa_key: Any) -> None:
    assert rs_auth.authenticate(bearer(rs256(rsa_key, exp=int(time.time()) - 10))).role == "lab"


def test_a_token_signed_by_another_key_is_refused(rs_auth: Authenticator, other_rsa_key: Any) -> None:
    refused(rs_auth, bearer(rs256(other_rsa_key)), "signature does not verify")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_the_public_key_cannot_be_used_as_an_hmac_secret(rs_auth: Authenticator, rsa_key: Any) -> None:
    """Algorithm confusion: HS256 'signed' with the (public) PEM must not verify."""
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims()).encode())}"
    sig = hmac.new(pem(rsa_key), signing_input.encode(), hashlib.sha256).digest()
    refused(rs_auth, bearer(f"{signing_input}.{_b64(sig)}"), "algorithm is not accepted")
    refused(rs_auth, bearer(jwt.encode(claims(), None, algorithm="none")), "algorithm is not accepted")


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "no credentials"),
    ({"Authorization": "Bearer"}, "unsupported Authorization scheme"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "unsupported Authorization scheme"),
    ({"Authorization": "Bearer not-a-jwt"}, "malformed token"),
    ({"Authorization": "Bearer " + "a" * 20000}, "too large"),
    ({"Authorization": "Bearer x.y.z", "X-API-Key": "k.s"}, "not both"),
])
def test_missing_or_malformed_credentials(rs_auth: Authenticator, headers: dict[str, str], reason: str) -> None:
    refused(rs_auth, headers, reason)


def test_a_missing_or_bad_key_file_is_a_config_error(tmp_path: Path, sqlite_engine: sa.Engine) -> None:
    with pytest.raises(ConfigError, match="public_key_file"):
        Authenticator(settings(public_key_file="nope.pem"), tmp_path, sqlite_engine)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        Authenticator(settings(public_key_file="bad.pem"), tmp_path, sqlite_engine)


def test_without_jwt_settings_only_api_keys_work(sqlite_engine: sa.Engine, rsa_key: Any) -> None:
    auth = Authenticator(ApiSettings(), ".", sqlite_engine)
    refused(auth, bearer(rs256(rsa_key)), "bearer tokens are not accepted")


# ------------------------------------------------------------------------------------------ JWT, HS256
def test_hs256_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_engine: sa.Engine,
                                           rsa_key: Any) -> None:
    monkeypatch.setenv("ROUTER_TEST_JWT_SECRET", SECRET)
    auth = Authenticator(settings(secret_env="ROUTER_TEST_JWT_SECRET"), ".", sqlite_engine)
    p = auth.authenticate(bearer(jwt.encode(claims(role="pharmacy", org="pharm1"), SECRET, algorithm="HS256")))
    assert (p.role, p.organization) == ("pharmacy", "pharm1")
    refused(auth, bearer(jwt.encode(claims(), SECRET + "x", algorithm="HS256")), "signature does not verify")
    refused(auth, bearer(rs256(rsa_key)), "algorithm is not accepted")
    refused(auth, bearer(jwt.encode(claims(exp=int(time.time()) - 100), SECRET, algorithm="HS256")), "expired")


def test_hs256_secret_must_be_set_and_long(monkeypatch: pytest.MonkeyPatch, sqlite_engine: sa.Engine) -> None:
    monkeypatch.delenv("ROUTER_TEST_JWT_SECRET", raising=False)
    with pytest.raises(ConfigError, match="unset or empty"):
        Authenticator(settings(secret_env="ROUTER_TEST_JWT_SECRET"), ".", sqlite_engine)
    monkeypatch.setenv("ROUTER_TEST_JWT_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Authenticator(settings(secret_env="ROUTER_TEST_JWT_SECRET"), ".", sqlite_engine)
    monkeypatch.setenv("ROUTER_TEST_JWT_SECRET", SECRET)
    with pytest.raises(ConfigError, match="none usable"):
        Authenticator(settings(secret_env="ROUTER_TEST_JWT_SECRET", algorithms=["RS256"]), ".", sqlite_engine)


# ------------------------------------------------------------------------------------------ JWT, JWKS
class JwksServer:
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/realms/health/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks(rsa_key: Any) -> Iterator[JwksServer]:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    server = JwksServer({"keys": [{**jwk, "kid": "key-1", "use": "sig", "alg": "RS256"}]})
    yield server
    server.close()


def test_jwks_keys_are_fetched_once_and_cached(jwks: JwksServer, rsa_key: Any, sqlite_engine: sa.Engine) -> None:
    auth = Authenticator(settings(jwks_url=jwks.url), ".", sqlite_engine)
    assert jwks.hits == 0  # nothing fetched before the first token
    for sub in ("client-a", "client-b", "client-c"):
        token = jwt.encode(claims(sub=sub), rsa_key, algorithm="RS256", headers={"kid": "key-1"})
        assert auth.authenticate(bearer(token)).client_id == sub
    assert jwks.hits == 1


def test_jwks_refusals(jwks: JwksServer, rsa_key: Any, other_rsa_key: Any, sqlite_engine: sa.Engine) -> None:
    auth = Authenticator(settings(jwks_url=jwks.url), ".", sqlite_engine)
    refused(auth, bearer(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "key-9"})),
            "no key in the identity provider's JWKS matches")
    refused(auth, bearer(jwt.encode(claims(), rsa_key, algorithm="RS256")), "no kid header")
    refused(auth, bearer(jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers={"kid": "key-1"})),
            "signature does not verify")
    refused(auth, bearer(jwt.encode(claims(aud="x"), rsa_key, algorithm="RS256", headers={"kid": "key-1"})),
            "audience")
    refused(auth, bearer(jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "key-1"})),
            "algorithm is not accepted")


def test_an_unreachable_jwks_refuses_the_token(rsa_key: Any, sqlite_engine: sa.Engine) -> None:
    server = JwksServer({"keys": []})
    url = server.url
    server.close()  # nothing listens there any more
    auth = Authenticator(settings(jwks_url=url), ".", sqlite_engine)
    refused(auth, bearer(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "key-1"})),
            "cannot fetch the identity provider's keys")


# ------------------------------------------------------------------------------------------ citizens
def test_citizen_patient_claim_and_identifier_resolution(tmp_path: Path, rsa_key: Any, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        Store().transaction(conn, {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {
            "resourceType": "Patient", "id": "pat-42",
            "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": "112-233-445 95"}]}}]})
    (tmp_path / "idp.pem").write_bytes(pem(rsa_key))
    auth = Authenticator(settings(public_key_file="idp.pem"), tmp_path, engine)

    def citizen(**over: Any) -> Any:
        return auth.authenticate(bearer(rs256(rsa_key, sub="esia-123", role="citizen", org=None, **over)))

    assert citizen(patient="pat-7").patient == "pat-7"
    assert citizen(patient="Patient/pat-7").patient == "pat-7"
    for ident in ("urn:oid:1.2.643.100.3|11223344595", "urn:oid:1.2.643.100.3|112-233-445 95",
                  "http://fhir.ru/core/systems/snils|112 233 445 95"):
        p = citizen(patient_identifier=ident)
        assert (p.client_id, p.role, p.patient) == ("esia-123", "citizen", "pat-42")
    unknown = citizen(patient_identifier="urn:oid:1.2.643.100.3|08765430300")
    assert (unknown.role, unknown.patient) == ("citizen", None)  # sees nothing, but is not refused
    refused(auth, bearer(rs256(rsa_key, role="citizen", org=None, patient_identifier="urn:oid:1.2.643.100.3|11223344596")),
            "not valid for its system")
    refused(auth, bearer(rs256(rsa_key, role="citizen", org=None, patient_identifier="11223344595")),
            "citizen token needs")


# ------------------------------------------------------------------------------------------ API keys
def test_api_key_create_verify_revoke(engine: sa.Engine) -> None:
    auth = Authenticator(ApiSettings(), ".", engine)
    with engine.begin() as conn:
        key = create_api_key(conn, "lis-gemotest", "lab", organization="lab1")
        citizen_key = create_api_key(conn, "citizen-app", "citizen", patient="Patient/pat-1")
    key_id, _, secret = key.partition(".")
    assert len(secret) >= 43  # 256 bits, url-safe base64
    with engine.connect() as conn:
        stored = conn.execute(sa.select(api_keys.c.secret_hash).where(api_keys.c.key_id == key_id)).scalar_one()
        listed = list_api_keys(conn)
    assert secret not in stored and stored.startswith("sha256$")
    assert [(r["key_id"], r["client_id"], r["role"], r["organization"], r["revoked"]) for r in listed][0] == \
        (key_id, "lis-gemotest", "lab", "lab1", False)
    assert all("secret_hash" not in r for r in listed)

    for headers in ({"X-API-Key": key}, {"x-api-key": key}, {"Authorization": f"ApiKey {key}"}):
        p = auth.authenticate(headers)
        assert (p.client_id, p.role, p.organization, p.patient) == ("lis-gemotest", "lab", "lab1", None)
    p = auth.authenticate({"X-API-Key": citizen_key})
    assert (p.role, p.patient) == ("citizen", "pat-1")

    exc = refused(auth, {"X-API-Key": f"{key_id}.{secret[:-1]}x"}, "secret does not match")
    assert secret[:10] not in str(exc)
    refused(auth, {"X-API-Key": f"rk0000000000000000.{secret}"}, "unknown API key")
    refused(auth, {"X-API-Key": secret}, "malformed API key")
    refused(auth, {"Authorization": "ApiKey "}, "unsupported Authorization scheme")

    with engine.begin() as conn:
        assert revoke_api_key(conn, key_id) is True
        assert revoke_api_key(conn, key_id) is False
        assert revoke_api_key(conn, "rk-nothing") is False
    refused(auth, {"X-API-Key": key}, "API key revoked")
    assert auth.authenticate({"X-API-Key": citizen_key}).role == "citizen"  # the others still work


@pytest.mark.parametrize(("args", "reason"), [
    (("c", "router"), "role must be one of"),
    (("c", "superuser"), "role must be one of"),
    (("c", "lab"), "needs the organization"),
    (("c", "insurer"), "needs the organization"),
    (("c", "citizen"), "needs the patient"),
    (("", "admin"), "client id"),
])
def test_api_key_creation_checks_its_scope(engine: sa.Engine, args: tuple[str, str], reason: str) -> None:
    with engine.begin() as conn, pytest.raises(InputError, match=reason):
        create_api_key(conn, *args)


def test_router_apikey_command(engine: sa.Engine, database_url: str) -> None:
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["apikey", *args, "--database-url", database_url])
        assert result.exit_code == code, result.output
        return result.output

    out = run("create", "--client-id", "ins-sogaz", "--role", "insurer", "--organization", "ins1")
    key = out.splitlines()[0]
    key_id = key.partition(".")[0]
    assert "cannot be shown again" in out
    auth = Authenticator(ApiSettings(), ".", engine)
    assert auth.authenticate({"X-API-Key": key}).organization == "ins1"

    listed = run("list")
    assert key_id in listed and "ins-sogaz" in listed and "active" in listed and key.partition(".")[2] not in listed
    assert json.loads(run("list", "--json").splitlines()[0])["key_id"] == key_id
    run("create", "--client-id", "x", "--role", "lab", code=1)  # no organization

    assert f"revoked {key_id}" in run("revoke", key)  # the whole key pasted: only its id is used
    assert "revoked" in run("list")
    run("revoke", key_id, code=1)
    refused(auth, {"X-API-Key": key}, "revoked")
    with engine.connect() as conn:
        rows = audit.search(conn, resource_type="ApiKey", resource_id=key_id)
    assert [(r["action"], r["role"]) for r in rows] == [("apikey-revoke", "admin"), ("apikey-create", "admin")]
    assert all(r["client_id"].startswith("cli:") for r in rows)
