"""Assembles the engine from configuration: transport, database, routes, workers, sources, HTTP."""
from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from . import __version__
from .config.loader import Config, listener_key, load_config
from .db import create_schema, database_url, make_engine
from .intake import Intake, JournalWriter
from .logging import get
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .runtime import RouteRuntime, build_routes
from .sources.base import SourceContext
from .tls import server_context
from .transport import Transport, open_transport
from .worker import Worker

log = get("router.app")


@dataclass(frozen=True)
class AppOptions:
    routes_file: str = "routes.yaml"
    broker_url: str | None = None
    database_url: str | None = None
    namespace: str = "router"
    data_dir: str = "var"
    mllp_host: str | None = None
    mllp_port: int | None = None
    http_host: str | None = None
    http_port: int | None = None
    run_sources: bool = True
    run_workers: bool = True
    run_http: bool = True
    run_routes: bool = True  # False: an API-only node (`router api`): no transport, no routes
    run_api: bool = True  # False: the HTTP server has /health and /metrics only (`router worker --http-port`)


def load(options: AppOptions) -> Config:
    config = load_config(options.routes_file)
    s = config.settings
    upd_mllp = {k: v for k, v in (("host", options.mllp_host), ("port", options.mllp_port)) if v is not None}
    upd_http = {k: v for k, v in (("host", options.http_host), ("port", options.http_port)) if v is not None}
    if upd_mllp or upd_http:
        s = s.model_copy(update={"mllp": s.mllp.model_copy(update=upd_mllp), "http": s.http.model_copy(update=upd_http)})
        config = dataclasses.replace(config, settings=s)
    return config


class App:
    def __init__(self, options: AppOptions) -> None:
        self.options = options
        self.config = load(options)
        self.db_url = database_url(options.database_url, options.data_dir)
        self.engine: sa.Engine = make_engine(self.db_url)
        self.http_app = FastAPI(title="router", version=__version__)
        self.http_app.add_api_route("/health", self._health, methods=["GET"])
        self.metrics = Metrics({"version": __version__, "transport": "none" if not options.run_routes else
                                "rabbitmq" if options.broker_url else "embedded",
                                "database": self.engine.dialect.name})
        self.http_app.add_api_route("/metrics", self._metrics, methods=["GET"])
        # the FHIR API, built before any connection opens (a missing JWT secret is a ConfigError here)
        if options.run_http and options.run_api and self.config.settings.api.enabled:
            from .api.fhir import fhir_router

            self.http_app.include_router(fhir_router(self.engine, self.config.settings.api, str(self.config.base_dir)))
        self.transport: Transport | None = None
        if options.run_routes:
            self.transport = open_transport(options.broker_url, namespace=options.namespace,
                                            data_dir=options.data_dir)
        self.routes: list[RouteRuntime] = []
        self.worker: Worker | None = None
        self.sources: list[Any] = []
        self.journal_writer: JournalWriter | None = None
        self.http_server: uvicorn.Server | None = None
        self.ready = asyncio.Event()

    async def _metrics(self) -> Response:
        body = await asyncio.to_thread(self.metrics.exposition)  # queue depths may ask the broker
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    async def _health(self) -> JSONResponse:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            db = "ok"
        except Exception as exc:  # noqa: BLE001
            db = f"error: {type(exc).__name__}"
        body = {"status": "ok" if db == "ok" else "degraded", "version": __version__, "database": db,
                "transport": ("none" if self.transport is None
                              else "rabbitmq" if self.options.broker_url else "embedded"),
                "routes": [r.name for r in self.routes]}
        if self.worker is not None:
            st = self.worker.stats
            body["worker"] = {k: getattr(st, k) for k in ("processed", "filtered", "duplicates", "retried",
                                                          "dead_lettered", "batches")}
        return JSONResponse(body, status_code=200 if db == "ok" else 503)

    def start_core(self) -> None:
        create_schema(self.engine)
        if self.transport is None:
            return
        self.routes = build_routes(self.config, self.transport, self.options.namespace,
                                   with_destinations=self.options.run_workers)
        self.transport.setup([r.queues for r in self.routes])
        self.metrics.watch(self.routes, self.transport.depth, lambda: self.worker.stats if self.worker else None,
                           outcomes=self.options.run_workers)
        if self.options.run_workers:
            self.worker = Worker(self.routes, self.transport, self.engine)
            self.worker.start()

    async def start_sources(self) -> None:
        self.journal_writer = JournalWriter(self.engine)
        groups: dict[tuple[str, str], list[RouteRuntime]] = defaultdict(list)
        for r in self.routes:  # the same grouping `router check` validated
            if r.config.source is not None:  # None: an internal route (application ACKs)
                groups[listener_key(r.config.source, self.config.settings)].append(r)
        for routes in groups.values():
            src = routes[0].config.source
            assert src is not None
            intake = Intake(routes, self.transport, self.journal_writer,
                            publish_timeout=getattr(src.options, "ack_timeout", 30.0))
            ctx = SourceContext(intake=intake, settings=self.config.settings, base_dir=str(self.config.base_dir),
                                extra={"http_app": self.http_app})
            source = src.build(ctx)
            await source.start()
            self.sources.append(source)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then stop taking work, finish in-flight work, close."""
        await asyncio.to_thread(self.start_core)
        if self.options.run_sources:
            await self.start_sources()
        http_task = None
        if self.options.run_http:
            h = self.config.settings.http
            cfg = uvicorn.Config(self.http_app, host=h.host, port=h.port, log_level="warning", lifespan="off")
            if h.tls is not None:  # our context (minimum version, client certificates), not uvicorn's
                ctx = server_context(h.tls, str(self.config.base_dir), "settings.http.tls")
                cfg.load()
                cfg.ssl = ctx
            self.http_server = uvicorn.Server(cfg)
            self.http_server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            http_task = asyncio.create_task(self.http_server.serve())
            while not self.http_server.started and not http_task.done():
                await asyncio.sleep(0.02)
            if http_task.done():
                http_task.result()  # raises the bind error
        log.info("router started", routes=[r.name for r in self.routes],
                 transport="rabbitmq" if self.options.broker_url else "embedded",
                 database=self.engine.dialect.name)
        self.ready.set()
        await stop.wait()
        log.info("stopping: no new messages; finishing work in flight")
        for s in self.sources:
            await s.stop()
        if self.http_server is not None and http_task is not None:
            self.http_server.should_exit = True
            await http_task
        await asyncio.to_thread(self.close)
        log.info("router stopped")

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.journal_writer is not None:
            self.journal_writer.close()
        for r in self.routes:
            r.close()
        if self.transport is not None:
            self.transport.close()
        self.engine.dispose()


def run_forever(options: AppOptions) -> None:
    """Run until SIGTERM or SIGINT (Ctrl-C)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        app = App(options)
        await app.serve(stop)

    asyncio.run(main())
