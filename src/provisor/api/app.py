"""The FastAPI application: `/api/v1/...`, OpenAPI at `/api/v1/openapi.json`, its
interactive docs at `/api/v1/docs` (Swagger UI served from the installed package, so
the page works on a server with no way out to a CDN)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from provisor import __version__
from provisor.api import (
    alerts,
    backups,
    blueprints,
    changes,
    deployments,
    errors,
    gathering,
    identity,
    jobs,
    keys,
    lifecycle,
    metrics,
    patches,
    providers,
    routes,
    uploads,
)
from provisor.api.auth import SignInGuard
from provisor.api.guards import RequestGuard
from provisor.api.jobs import ServerJobs
from provisor.services import alerts as alerts_service
from provisor.services.context import Settings, Store

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
DOCS_URL = "/api/v1/docs"
DOCS_ASSETS = f"{DOCS_URL}/assets"  # Swagger UI's script, style sheet and icon


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API. Without `settings`, read afresh from the environment: `provisor server`
    puts the names it answers to there (PROVISOR_ALLOWED_HOSTS) before uvicorn calls this."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.jobs = ServerJobs(settings, app.state.store)
        stopping = asyncio.Event()  # the alert dispatcher runs as long as the server
        dispatcher = asyncio.create_task(
            alerts_service.run_dispatcher(settings, app.state.store, stopping)
        )
        yield
        stopping.set()
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
        await app.state.jobs.close()
        app.state.store.close()

    app = FastAPIOffline(
        title="provisor",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=DOCS_URL,
        static_url=DOCS_ASSETS,
        redoc_url=None,
        lifespan=lifespan,
        responses={
            400: {"model": errors.ErrorBody},
            401: {"model": errors.ErrorBody},
            403: {"model": errors.ErrorBody},
            404: {"model": errors.ErrorBody},
            409: {"model": errors.ErrorBody},
            413: {"model": errors.ErrorBody},
            422: {"model": errors.ErrorBody},
            429: {"model": errors.ErrorBody},
        },
    )
    app.state.settings = settings
    app.state.store = Store(settings.effective_database_url)
    app.state.sign_ins = SignInGuard(settings.sign_in_failures)
    errors.install(app)
    app.add_middleware(RequestGuard, allowed_hosts=[*LOCAL_NAMES, *settings.allowed_host_names])
    app.include_router(gathering.router, prefix="/api/v1")  # before /hosts/{name}
    app.include_router(routes.router, prefix="/api/v1")
    app.include_router(identity.router, prefix="/api/v1")
    app.include_router(keys.router, prefix="/api/v1")
    app.include_router(jobs.router, prefix="/api/v1")
    app.include_router(changes.router, prefix="/api/v1")
    app.include_router(blueprints.router, prefix="/api/v1")
    app.include_router(providers.router, prefix="/api/v1")
    app.include_router(deployments.router, prefix="/api/v1")
    app.include_router(lifecycle.router, prefix="/api/v1")
    app.include_router(uploads.router, prefix="/api/v1")
    app.include_router(alerts.router, prefix="/api/v1")
    app.include_router(metrics.router)  # /metrics, where Prometheus looks
    app.include_router(backups.router, prefix="/api/v1")
    app.include_router(patches.router, prefix="/api/v1")
    return app
