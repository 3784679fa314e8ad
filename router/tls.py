"""TLS for the engine's listeners (MLLP and HTTP): one options model, one server context."""
from __future__ import annotations

import ssl
from pathlib import Path
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


def server_context(tls: TlsOptions | None, base_dir: str, what: str) -> ssl.SSLContext | None:
    """The listener's TLS context (None without `tls`). Raises RouterError naming `what` (e.g.
    "mllp source tls") and the file at fault."""
    if tls is None:
        return None

    def path(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else Path(base_dir) / q)

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
