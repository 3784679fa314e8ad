"""The schema of routes.yaml: the one place in code that says what a route is.

Component options (a source's port, a destination's URL, ...) are not here: each
component declares its own options model in its module, and the loader validates
them through the registry (see router.registry).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..tls import TlsOptions
from .durations import Duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(Strict):
    """How transient failures are retried before the message is dead-lettered."""

    attempts: int = Field(5, ge=1, le=100, description="total attempts, the first one included")
    initial_delay: Duration = Field(1.0, description="delay before the second attempt")
    max_delay: Duration = Field(300.0, description="no delay is longer than this")
    multiplier: float = Field(2.0, ge=1.0, le=10.0, description="each delay is the previous one times this")
    jitter: float = Field(0.1, ge=0.0, le=0.5, description="random +/- fraction applied to each delay")

    @model_validator(mode="after")
    def _bounds(self) -> RetryPolicy:
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must not be shorter than initial_delay")
        return self


class ComponentRef(BaseModel):
    """`type` plus that component's own options (validated through the registry)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _as_component(value: Any) -> Any:
    # `source: mllp` is short for `source: {type: mllp}`
    return {"type": value} if isinstance(value, str) else value


# The shorthands of routes.yaml, in one place: the Route validators use them, and so does the
# loader when it checks the components of a route that failed the schema (from its raw dict).

def as_source(value: Any) -> Any:
    return _as_component(value)


def as_filter(value: Any) -> Any:
    if isinstance(value, (list, dict)) and not (isinstance(value, dict) and "type" in value):
        # a bare condition list/dict is the built-in declarative field filter
        return {"type": "fields", "where": value}
    return _as_component(value)


def as_destination(value: Any) -> Any:
    return _as_component(value)


def as_destinations(value: Any) -> Any:
    if isinstance(value, (str, dict)):
        value = [value]
    return [_as_component(d) for d in value] if isinstance(value, list) else value


class ApplicationAck(Strict):
    """Where the route sends application acknowledgments (enhanced mode, MSH-16): after a message is
    processed (committed: AA) or dead-lettered (AE, or AR when refused), as MSH-16 asks (AL always,
    ER on errors, SU on success, NE never). They go through their own queue with this retry policy:
    a return address that is down is retried, then the ACK is dead-lettered with the reason."""

    destination: ComponentRef = Field(description="where the ACKs go, declared like one of `destinations` "
                                                  "(e.g. {type: mllp, host: lis.example, port: 2576, "
                                                  "wait_for_ack: false}); not `store`")
    retry: RetryPolicy = Field(RetryPolicy(attempts=10, initial_delay=2.0, max_delay=600.0),
                               description="how an ACK that cannot be delivered is retried before it is "
                                           "dead-lettered (about 17 minutes with the default)")

    @field_validator("destination", mode="before")
    @classmethod
    def _destination(cls, v: Any) -> Any:
        return as_destination(v)


class Route(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
                      description="unique, used in queue names: up to 63 lowercase letters, digits, '.', '_' or '-'")
    description: str = ""
    source: ComponentRef
    accept: list[str] = Field(default_factory=list, description="HL7 message types (e.g. ORU^R01, ADT^*); empty accepts all")
    filter: ComponentRef | None = None
    mapping: str | None = Field(None, description="a mapping name (mappings/ or a registered one) or package.module:function")
    destinations: list[ComponentRef] = Field(min_length=1)
    retry: RetryPolicy = RetryPolicy()
    dead_letter_queue: str | None = Field(None, description="name of the dead-letter queue (prefixed with the namespace); default <name>.dlq")
    prefetch: int = Field(200, ge=1, le=10000)
    concurrency: int = Field(1, ge=1, le=64, description="consumer threads per worker process")
    batch_size: int = Field(50, ge=1, le=5000, description="messages per database commit")
    batch_wait: Duration = Field(0.05, description="how long a worker waits for the first message of a batch; it then takes what is ready, up to batch_size")
    queue_type: Literal["classic", "quorum"] = "classic"
    unmapped_codes: Literal["error", "pass", "warn"] | None = Field(
        None, description="a code a concept map does not cover: error (dead-letter), pass, or warn (journaled); "
                          "default: the mapping's own `unmapped`, else error")
    application_ack: ApplicationAck | None = Field(
        None, description="send application ACKs (MSH-16) to the sender's return address: {destination, retry}; "
                          "without it, none are sent")

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, v: Any) -> Any:
        return as_source(v)

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, v: Any) -> Any:
        return as_filter(v)

    @field_validator("destinations", mode="before")
    @classmethod
    def _destinations(cls, v: Any) -> Any:
        return as_destinations(v)


class ListenerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class HttpListenerSettings(ListenerSettings):
    tls: TlsOptions | None = Field(None, description="HTTPS on the HTTP listener (FHIR API, HTTP intake, health, "
                                                     "metrics): {cert_file, key_file, ca_file, min_version}; "
                                                     "ca_file makes it mutual TLS")


class JwtSettings(Strict):
    """OAuth 2.0 bearer tokens (JWT): the signing key (a PEM public key file, a JWKS URL, or an
    HMAC secret read from an environment variable), and the issuer and audience they must carry."""

    issuer: str = Field(description="required `iss` claim")
    audience: str = Field(description="required `aud` claim")
    public_key_file: str | None = Field(None, description="PEM public key (RS256/ES256), relative to routes.yaml")
    jwks_url: str | None = Field(None, description="JWKS endpoint of the identity provider")
    secret_env: str | None = Field(None, description="environment variable holding an HS256 shared secret")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "HS256"])
    leeway: Duration = Field(30.0, description="clock skew allowed on exp/nbf")

    @model_validator(mode="after")
    def _one_key(self) -> JwtSettings:
        if sum(x is not None for x in (self.public_key_file, self.jwks_url, self.secret_env)) != 1:
            raise ValueError("give exactly one of public_key_file, jwks_url, secret_env")
        return self


class ApiSettings(Strict):
    """The FHIR REST API served by `router run` and `router api`."""

    enabled: bool = True
    base_path: str = Field("/fhir", pattern=r"^/[A-Za-z0-9/_-]*$")
    jwt: JwtSettings | None = Field(None, description="accept bearer tokens; without it only API keys work")
    page_size: int = Field(50, ge=1, le=1000, description="default _count")
    max_page_size: int = Field(500, ge=1, le=5000)


class Settings(Strict):
    plugins: list[str] = Field(default_factory=list, description="modules that register extra components, e.g. adapters.lis")
    mappings_dir: str = "mappings"
    mllp: ListenerSettings = ListenerSettings(port=2575)
    http: HttpListenerSettings = HttpListenerSettings(port=8080)
    api: ApiSettings = ApiSettings()
    timezone: str = Field("Europe/Moscow", description="zone of HL7 times that carry no offset")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Moscow)") from None
        return v


class RoutesFile(Strict):
    settings: Settings = Settings()
    routes: list[Route] = Field(description="required; an empty list is allowed")
