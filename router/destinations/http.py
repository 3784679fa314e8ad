"""HTTP destination: POST each output; 5xx, 429 and network errors are retried, other 4xx are permanent."""
from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ..config.durations import Duration
from ..errors import DestinationRejected, DestinationUnavailable
from ..registry import ComponentSpec
from ..retry import short_retry
from .base import DestinationContext, Output


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(pattern=r"^https?://", description="endpoint to POST to")
    timeout: Duration = 10.0
    headers: dict[str, str] = Field(default_factory=dict)


class HttpDestination:
    transactional = False

    def __init__(self, options: HttpOptions, context: DestinationContext) -> None:
        self.options = options
        self.client = httpx.Client(timeout=options.timeout, headers=options.headers)

    def _post(self, out: Output) -> None:
        try:
            resp = self.client.post(self.options.url, content=out.body, headers={
                "Content-Type": out.content_type, "X-Message-Id": out.envelope.id,
                "X-Correlation-Id": out.envelope.correlation_id})
        except httpx.HTTPError as exc:
            raise DestinationUnavailable(f"POST {self.options.url} failed: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise DestinationUnavailable(f"POST {self.options.url} answered {resp.status_code}")
        if resp.status_code >= 300:  # redirects are not followed: the message was not delivered
            raise DestinationRejected(f"POST {self.options.url} answered {resp.status_code}: {resp.text[:200]}")

    def write(self, outputs: list[Output], tx: Any) -> None:
        for out in outputs:
            short_retry(self._post, out)

    def close(self) -> None:
        self.client.close()


SPEC = ComponentSpec("destination", "http", "POST each message to an HTTP endpoint", HttpOptions,
                     lambda o, c: HttpDestination(o, c))
