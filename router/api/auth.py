"""Who is calling the API: OAuth 2.0 bearer tokens (JWT) and API keys, turned into a Principal.

Credentials, one per request:

* ``Authorization: Bearer <JWT>`` - signed by the key configured in ``settings.api.jwt``: a PEM
  public key file (RS*/PS*/ES*/EdDSA), a JWKS URL (keys cached, refetched on an unknown ``kid``),
  or an HS256 secret from an environment variable (at least 32 bytes). Only algorithms that fit
  the kind of key are accepted, so a public key can never be used as an HMAC secret. ``exp``,
  ``iss``, ``aud`` and ``sub`` are required; ``exp``/``nbf``/``iat`` are checked with the
  configured leeway. Claims: ``sub`` -> client id; ``role`` (one of ROLES but "router");
  ``org`` -> the Organization id the client acts for (required for lab, insurer, pharmacy,
  organization; "Organization/<id>" is accepted); for a citizen ``patient`` (a Patient id) or
  ``patient_identifier`` ("system|value", e.g. urn:oid:1.2.643.100.3|11223344595), resolved
  through the store's identifiers - an unknown identifier is not an error, the citizen simply
  sees nothing; ``scope`` (space-separated, informational).
* ``X-API-Key: <key_id>.<secret>`` or ``Authorization: ApiKey <key_id>.<secret>`` - machine
  clients registered with ``router apikey create``.

API keys are stored as ``sha256$<hex>`` of the key id and a 256-bit random secret, compared in
constant time. A slow password hash (scrypt, argon2) protects low-entropy secrets that people
choose; a 256-bit random secret cannot be guessed whatever the hash speed, so a slow hash would
only cost every request tens of milliseconds and megabytes of memory (a denial-of-service lever)
and buy nothing. The key id (public) goes into the hash, so equal secrets never hash alike.

Every failure is an UnauthorizedError with the reason, never the token or key contents.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ..config.schema import ApiSettings, JwtSettings
from ..errors import ConfigError, InputError, UnauthorizedError, ValidationError
from ..store import identity
from ..store.principal import ROLES, Principal
from ..store.tables import api_keys, identifiers

CLIENT_ROLES = tuple(r for r in ROLES if r != "router")
NEEDS_ORG = frozenset({"lab", "insurer", "pharmacy", "organization"})
MAX_CREDENTIAL = 16384  # bytes of an Authorization header we look at
MIN_HMAC_SECRET = 32
JWKS_LIFESPAN = 300.0  # seconds a fetched key set is trusted
_HASH = "sha256"

_JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid (nbf or iat in the future)"),
    (jwt.InvalidSignatureError, "token signature does not verify"),
    (jwt.InvalidIssuerError, "token issuer is not the configured one"),
    (jwt.InvalidAudienceError, "token audience is not the configured one"),
    (jwt.InvalidAlgorithmError, "token algorithm is not accepted"),
    (jwt.InvalidIssuedAtError, "token iat is not a number"),
    (jwt.DecodeError, "malformed token"),
    (jwt.InvalidKeyError, "the signing key is unusable for this token"),
)


def _algorithms(settings: JwtSettings, key: Any) -> list[str]:
    """The configured algorithms that fit the kind of key (never HMAC with a public key)."""
    if isinstance(key, bytes):
        prefixes: tuple[str, ...] = ("HS",)
    elif isinstance(key, rsa.RSAPublicKey):
        prefixes = ("RS", "PS")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        prefixes = ("ES",)
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        prefixes = ("EdDSA",)
    else:  # JWKS: any asymmetric algorithm; PyJWT checks the token's alg against each JWK's
        prefixes = ("RS", "PS", "ES", "EdDSA")
    algs = [a for a in settings.algorithms if a.startswith(prefixes)]
    if not algs:
        raise ConfigError(f"api.jwt.algorithms {settings.algorithms} has none usable with this kind of key "
                          f"(needs one of {', '.join(p + '*' for p in prefixes)})")
    return algs


def _load_key(settings: JwtSettings, base_dir: Path) -> tuple[Any, jwt.PyJWKClient | None]:
    if settings.public_key_file is not None:
        path = Path(settings.public_key_file)
        path = path if path.is_absolute() else base_dir / path
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"api.jwt.public_key_file {str(path)!r}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"api.jwt.public_key_file {str(path)!r} is not a PEM public key") from None
        return key, None
    if settings.jwks_url is not None:
        try:
            client = jwt.PyJWKClient(settings.jwks_url, cache_keys=False, lifespan=JWKS_LIFESPAN, timeout=10)
        except jwt.PyJWKClientError as exc:
            raise ConfigError(f"api.jwt.jwks_url: {exc}") from None
        return None, client
    assert settings.secret_env is not None
    secret = os.environ.get(settings.secret_env, "")
    if len(secret.encode()) < MIN_HMAC_SECRET:
        raise ConfigError(f"api.jwt.secret_env: environment variable {settings.secret_env} must hold a secret "
                          f"of at least {MIN_HMAC_SECRET} bytes" + ("" if secret else " (it is unset or empty)"))
    return secret.encode(), None


def _hash_secret(key_id: str, secret: str) -> str:
    return f"{_HASH}$" + hashlib.sha256(f"{key_id}.{secret}".encode()).hexdigest()


_DUMMY_HASH = _hash_secret("none", "none")


def _org_id(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().removeprefix("Organization/")


class Authenticator:
    """Turns request headers into a Principal, or raises UnauthorizedError."""

    def __init__(self, settings: ApiSettings, base_dir: str | Path, engine: sa.Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.jwt = settings.jwt
        self._key: Any = None
        self._jwks: jwt.PyJWKClient | None = None
        self._algorithms: list[str] = []
        if self.jwt is not None:
            self._key, self._jwks = _load_key(self.jwt, Path(base_dir))
            self._algorithms = _algorithms(self.jwt, self._key)

    # ---------------------------------------------------------------- entry point
    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        h = {str(k).lower(): str(v) for k, v in headers.items()}
        api_key = h.get("x-api-key", "").strip()
        authz = h.get("authorization", "").strip()
        if api_key and authz:
            raise UnauthorizedError("send one credential: Authorization or X-API-Key, not both")
        if api_key:
            return self.verify_api_key(api_key)
        if not authz:
            raise UnauthorizedError("no credentials: send Authorization: Bearer <token> or X-API-Key: <key>")
        if len(authz) > MAX_CREDENTIAL:
            raise UnauthorizedError("Authorization header too large")
        scheme, _, value = authz.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return self.verify_token(value)
        if scheme.lower() == "apikey" and value:
            return self.verify_api_key(value)
        raise UnauthorizedError("unsupported Authorization scheme (use Bearer or ApiKey)")

    # ---------------------------------------------------------------- JWT
    def verify_token(self, token: str) -> Principal:
        if self.jwt is None:
            raise UnauthorizedError("bearer tokens are not accepted here (no api.jwt configured); use an API key")
        claims = self._decode(token)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > 128:
            raise UnauthorizedError("token sub claim must be a client id of 1-128 characters")
        role = claims.get("role")
        if role not in CLIENT_ROLES:
            raise UnauthorizedError(f"token role claim missing or not one of {', '.join(CLIENT_ROLES)}")
        org = _org_id(claims.get("org"))
        if role in NEEDS_ORG and org is None:
            raise UnauthorizedError(f"a {role} token needs the org claim (the Organization id it acts for)")
        patient = None
        if role == "citizen":
            patient = self._citizen_patient(claims)
        scope = claims.get("scope", claims.get("scp", ""))
        scopes = frozenset(scope.split() if isinstance(scope, str) else
                           [s for s in scope if isinstance(s, str)] if isinstance(scope, list) else [])
        return Principal(client_id=sub, role=role, organization=org, patient=patient, scopes=scopes)

    def _decode(self, token: str) -> dict[str, Any]:
        assert self.jwt is not None
        try:
            key = self._key
            if self._jwks is not None:
                key = self._signing_key(token)
            claims = jwt.decode(
                token, key, algorithms=self._algorithms, audience=self.jwt.audience, issuer=self.jwt.issuer,
                leeway=self.jwt.leeway,
                options={"require": ["exp", "iss", "aud", "sub"], "enforce_minimum_key_length": True})
        except jwt.MissingRequiredClaimError as exc:
            raise UnauthorizedError(f"token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            for cls, reason in _JWT_ERRORS:
                if isinstance(exc, cls):
                    raise UnauthorizedError(reason) from None
            raise UnauthorizedError("invalid token") from None
        if not isinstance(claims, dict):
            raise UnauthorizedError("token payload is not a JSON object")
        return claims

    def _signing_key(self, token: str) -> Any:
        assert self._jwks is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UnauthorizedError("malformed token") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnauthorizedError("token has no kid header (needed to pick the key from the JWKS)")
        try:
            return self._jwks.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise UnauthorizedError("cannot fetch the identity provider's keys (JWKS) to verify the token") from None
        except jwt.PyJWKClientError:
            raise UnauthorizedError("no key in the identity provider's JWKS matches the token's kid") from None
        except jwt.PyJWTError:
            raise UnauthorizedError("the identity provider's JWKS is unusable") from None

    def _citizen_patient(self, claims: dict[str, Any]) -> str | None:
        patient = claims.get("patient")
        if isinstance(patient, str) and patient.strip():
            return patient.strip().removeprefix("Patient/")
        ident = claims.get("patient_identifier")
        if not isinstance(ident, str) or "|" not in ident:
            raise UnauthorizedError('a citizen token needs the patient claim or patient_identifier ("system|value")')
        system, _, value = ident.partition("|")
        if not system or not value.strip():
            raise UnauthorizedError('patient_identifier must be "system|value"')
        try:
            system, value = identity.canonical(system, value)
        except ValidationError:
            raise UnauthorizedError("patient_identifier value is not valid for its system") from None
        return resolve_patient(self.engine, system, value)

    # ---------------------------------------------------------------- API keys
    def verify_api_key(self, key: str) -> Principal:
        key_id, dot, secret = key.strip().partition(".")
        if not dot or not key_id or not secret or len(key_id) > 32 or len(secret) > 256:
            raise UnauthorizedError("malformed API key (expected <key_id>.<secret>)")
        k = api_keys.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(k.secret_hash, k.client_id, k.role, k.organization, k.patient, k.revoked)
                               .where(k.key_id == key_id)).first()
        stored = row.secret_hash if row is not None else _DUMMY_HASH
        ok = hmac.compare_digest(_hash_secret(key_id, secret).encode(), stored.encode())
        if row is None:
            raise UnauthorizedError("unknown API key")
        if not ok:
            raise UnauthorizedError("API key secret does not match")
        if row.revoked:
            raise UnauthorizedError("API key revoked")
        if row.role not in CLIENT_ROLES:
            raise UnauthorizedError("API key has an unknown role")
        return Principal(client_id=row.client_id, role=row.role, organization=row.organization, patient=row.patient)


def resolve_patient(engine: sa.Engine, system: str, value: str) -> str | None:
    """The Patient id holding the identifier (canonical system, value), or None."""
    i = identifiers.c
    with engine.connect() as conn:
        return conn.execute(sa.select(i.id).where(  # type: ignore[no-any-return]
            i.resource_type == "Patient", i.system == system, i.value == value)).scalar()


def create_api_key(conn: sa.Connection, client_id: str, role: str, organization: str | None = None,
                   patient: str | None = None) -> str:
    """Register a machine client; returns the full key ``<key_id>.<secret>`` - the only time it
    is ever available (the store keeps a hash)."""
    if role not in CLIENT_ROLES:
        raise InputError(f"role must be one of {', '.join(CLIENT_ROLES)}, not {role!r}")
    if not client_id or len(client_id) > 128:
        raise InputError("client id must have 1-128 characters")
    organization = _org_id(organization)
    if role in NEEDS_ORG and organization is None:
        raise InputError(f"a {role} key needs the organization (Organization id) it acts for")
    if role == "citizen" and not patient:
        raise InputError("a citizen key needs the patient (Patient id)")
    key_id = "rk" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # 256 random bits
    conn.execute(api_keys.insert().values(
        key_id=key_id, secret_hash=_hash_secret(key_id, secret), client_id=client_id, role=role,
        organization=organization, patient=patient.removeprefix("Patient/") if patient else None,
        created_at=time.time(), revoked=False))
    return f"{key_id}.{secret}"


def revoke_api_key(conn: sa.Connection, key_id: str) -> bool:
    """Revoke a key for good; False when no such key exists (or it was revoked already)."""
    k = api_keys.c
    res = conn.execute(api_keys.update().where(k.key_id == key_id, k.revoked.is_(False)).values(revoked=True))
    return bool(res.rowcount)


def list_api_keys(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every registered key without its hash, oldest first."""
    k = api_keys.c
    rows = conn.execute(sa.select(k.key_id, k.client_id, k.role, k.organization, k.patient, k.created_at,
                                  k.revoked).order_by(k.created_at, k.key_id))
    return [{str(key): v for key, v in r._mapping.items()} for r in rows]
