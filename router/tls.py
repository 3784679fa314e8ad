"""TLS for the engine: its listeners (MLLP and HTTP: one options model, one server context) and
its clients (the mllp destination)."""
from __future__ import annotations

import ssl
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import RouterError


class TlsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cert_file: str = Field(description="server certificate (PEM, with its chain); relative to routes.yaml")
    key_file: str = Field(description="its private key (PEM, unencrypted); relative to routes.yaml")
    ca_file: str | None = Field(None, description="CA certificates (PEM) of the clients: when set, every client "
                                                   "must present a certificate they signed (mutual TLS)")
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="lowest TLS version accepted")

    @field_validator("min_version", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:  # `min_version: 1.3` unquoted is a YAML float
        return str(v) if isinstance(v, float) else v

    def key(self) -> str:
        """What two listeners sharing a port must agree on."""
        return f"tls({self.cert_file},{self.key_file},{self.ca_file},{self.min_version})"


class ClientTlsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ca_file: str | None = Field(None, description="CA certificates (PEM) that signed the receiver's certificate; "
                                                  "default: the system's trusted CAs. Relative to routes.yaml")
    cert_file: str | None = Field(None, description="client certificate (PEM) for mutual TLS; relative to routes.yaml")
    key_file: str | None = Field(None, description="its private key (PEM, unencrypted); relative to routes.yaml")
    server_hostname: str | None = Field(None, description="name the receiver's certificate must carry; "
                                                          "default: host")


def _in(base_dir: str) -> Callable[[str], str]:
    """A file name from routes.yaml: absolute, or relative to the folder of routes.yaml."""
    def path(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else Path(base_dir) / q)
    return path


def client_context(tls: ClientTlsOptions, base_dir: str, what: str) -> ssl.SSLContext:
    """A client's TLS context (TLS 1.2 at least). Raises RouterError naming `what` (e.g. "mllp
    destination tls") when its files cannot be loaded."""
    path = _in(base_dir)
    try:
        ctx = ssl.create_default_context(cafile=path(tls.ca_file) if tls.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert_file:
            ctx.load_cert_chain(path(tls.cert_file), path(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise RouterError(f"{what}: cannot load its files: {why}") from None
    return ctx


def server_context(tls: TlsOptions | None, base_dir: str, what: str) -> ssl.SSLContext | None:
    """The listener's TLS context (None without `tls`). Raises RouterError naming `what` (e.g.
    "mllp source tls") and the file at fault."""
    if tls is None:
        return None
    path = _in(base_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(path(tls.cert_file), path(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise RouterError(f"{what}: cannot load cert_file {path(tls.cert_file)} / key_file "
                          f"{path(tls.key_file)}: {getattr(exc, 'strerror', None) or exc}") from None
    if tls.ca_file:
        try:
            ctx.load_verify_locations(cafile=path(tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise RouterError(f"{what}: cannot load ca_file {path(tls.ca_file)}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
