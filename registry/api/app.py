"""The registry REST API app, and how it is mounted on a miner.

Layout: the API is its own FastAPI app (routes, error handlers, OpenAPI), mounted under
``/v1`` on the miner's app, which serves JSON-RPC on ``/`` and has its docs switched off.
So the OpenAPI document is ``/v1/openapi.json`` and the interactive docs ``/v1/docs``
(``servers`` in the document says ``/v1``, so "try it out" hits the right paths), and the
API's error handlers never touch JSON-RPC answers.

- :func:`mount` — the miner's route hook: ``mount(app, view, auth)``, blobs from
  ``view.blobs`` unless given;
- :func:`create_v1_app` — the API alone, routes at ``/auth/...``, ``/models/...`` (what
  ``mount`` puts under ``/v1``; what a schema-driven test client loads);
- :func:`create_registry_app` — an app with the API under ``/v1`` over a node view and
  store in this process (tests), ``/docs`` redirecting to ``/v1/docs``;
- :func:`registry.api.remote.create_standalone_app` — the API alone in front of a remote
  miner (``twinchain api serve``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from node.auth import AuthService
from node.blobs import BlobStore
from node.rpc.backend import NodeView
from registry.api import blobs as blob_routes
from registry.api import routes, transactions
from registry.api.deps import RegistryContext, TokenAuthority
from registry.api.errors import install_error_handlers
from registry.audit.api import router as audit_router

__all__ = ["PREFIX", "create_registry_app", "create_v1_app", "mount"]

PREFIX = "/v1"

_DESCRIPTION = """\
The TwinChain model registry: datasets, model versions with lineage, aliases and
federated rounds, recorded on a permissioned chain; artifacts in a content-addressed
store replicated among the miners.

Sign in with `POST /auth/challenge` and `POST /auth/token` (sign the challenge with your
account key, EIP-191); send the token as `Authorization: Bearer <token>`. Writes are
transactions you sign yourself and send to `POST /transactions`; upload the artifact a
transaction registers with `PUT /blobs/{digest}` first.

Errors are `{"error": {"code", "message"}}` with 400/422 bad input, 401 no or bad token,
403 wrong role, 404 unknown, 409 conflict with chain or store state, 413 too large.
"""


def _blobs_of(view: NodeView, blobs: BlobStore | None) -> BlobStore:
    if blobs is not None:
        return blobs
    store = getattr(view, "blobs", None)
    if not isinstance(store, BlobStore):
        raise TypeError("the node view has no `blobs` BlobStore; pass blobs=...")
    return store


def create_v1_app(
    view: NodeView,
    auth: AuthService | TokenAuthority,
    *,
    blobs: BlobStore | None = None,
    **settings: Any,
) -> FastAPI:
    """The registry API with routes at its root (mount it under ``/v1``).

    ``settings`` are fields of :class:`RegistryContext` (``max_wait_seconds``,
    ``verify_first_bytes``, ``upstream``).
    """
    app = FastAPI(
        title="TwinChain registry API",
        version="1",
        description=_DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.registry = RegistryContext(view, auth, _blobs_of(view, blobs), **settings)
    install_error_handlers(app)
    app.include_router(routes.auth_router)
    app.include_router(blob_routes.router)
    app.include_router(transactions.router)
    app.include_router(routes.records_router)
    app.include_router(audit_router)  # /audit/... for AUDITOR members (registry.audit.api)
    return app


def mount(
    app: FastAPI,
    view: NodeView,
    auth: AuthService,
    *,
    blobs: BlobStore | None = None,
    **settings: Any,
) -> None:
    """Mount the registry API under ``/v1`` on ``app`` (the miner's route hook)."""
    app.mount(PREFIX, create_v1_app(view, auth, blobs=blobs, **settings))


def create_registry_app(
    view: NodeView, auth: AuthService, *, blobs: BlobStore | None = None, **settings: Any
) -> FastAPI:
    """A standalone app: the API under ``/v1``; ``/docs`` redirects to ``/v1/docs``."""
    app = FastAPI(title="TwinChain", docs_url=None, redoc_url=None, openapi_url=None)

    async def docs() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/docs")

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    mount(app, view, auth, blobs=blobs, **settings)
    return app
