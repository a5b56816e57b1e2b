"""The registry API run alone, in front of a remote miner (``twinchain api serve``).

A standalone API process serves the same ``/v1`` routes as a miner, with the same
OpenAPI document, but holds no chain, no key and no token secret:

- **Reads** of records go through :class:`~node.rpc.remote.RemoteNodeView`, the node
  view over the miner's JSON-RPC; the route code is the miner's own.
- **Auth: the miner is the authority.** ``/v1/auth/challenge`` and ``/v1/auth/token``
  are the miner's ``twin_authChallenge``/``twin_authToken``; a bearer token is accepted
  once the miner has accepted it (an authenticated ``eth_blockNumber`` with the client's
  token), and that answer is remembered for at most :data:`TOKEN_CACHE_SECONDS` (never
  past the token's expiry). Every read the API then makes on the client's behalf carries
  the client's own token, so the miner authorises it again. The alternative — verifying
  tokens locally — would need the consortium-wide token secret on every API host, and
  whoever holds that secret can mint a token for any member; forwarding keeps the secret
  on the miners, and revocation or a secret rotation there applies here within a minute.
  The principal (address, roles) is read from the claims of the token the miner accepted,
  so a wrong role is the same 403 as on a miner.
- **Writes** are forwarded: ``POST /v1/transactions`` goes to the miner's own route
  (its preflight needs the miner's blob store and head), ``PUT /v1/blobs/{digest}``
  streams the body to the miner, which verifies the digest while storing it.
- **Blobs** are served from a local cache by digest when it holds them (verified at rest
  like a miner's store); otherwise the miner's ``GET`` is streamed through. A full
  download is hashed while it streams, and the last chunk is withheld unless the bytes
  hash to the digest in the URL, so bytes a miner corrupted never complete a download
  here either; verified bytes are written to the cache on the way (atomic, by digest).
  Ranged answers are relayed as they are (the client checks the assembled whole).
- **JSON-RPC** on ``POST /`` is relayed to the miner with the client's token, so the
  SDK (which reads the chain with ``eth_call``) works against this process unchanged.
- **A miner that is down** is HTTP 503 ``miner_unavailable`` with the miner's URL and
  the connection error; a miner that answers with a 5xx or garbage is 502
  ``bad_gateway``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from node.auth import Principal, bearer_token
from node.blobs import ArtifactDigest, BlobStore, BlobWriter
from node.chain.types import Address
from node.errors import InvalidInput, StorageError, Unauthorized
from node.rpc.remote import (
    MinerFailed,
    MinerUnavailable,
    RemoteNodeView,
    RpcClient,
    current_token,
    token_claims,
)

__all__ = [
    "TOKEN_CACHE_SECONDS",
    "RemoteAuth",
    "Upstream",
    "create_standalone_app",
]

log = logging.getLogger("twinchain.registry.remote")

#: How long a token the miner accepted is trusted without asking again.
TOKEN_CACHE_SECONDS: Final = 60.0
#: Tokens remembered at most.
MAX_CACHED_TOKENS: Final = 4096
#: Largest JSON body relayed (a raw transaction is at most 256 KiB of hex).
MAX_RELAY_BYTES: Final = 512 * 1024
#: Verified bytes gathered before they are written to the cache in a worker thread.
_CACHE_BATCH: Final = 4 << 20
#: Answer headers of a blob download relayed to the client.
_BLOB_HEADERS: Final = (
    "content-length",
    "content-range",
    "etag",
    "repr-digest",
    "accept-ranges",
    "cache-control",
    "content-type",
)
_REQUEST_HEADERS: Final = ("authorization", "range", "if-range", "if-none-match")


class RemoteAuth:
    """The :class:`~node.auth.AuthService` calls the API makes, answered by the miner."""

    def __init__(
        self,
        rpc: RpcClient,
        *,
        cache_seconds: float = TOKEN_CACHE_SECONDS,
        clock: Any = time.time,
    ) -> None:
        self.rpc = rpc
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._accepted: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()  # handlers verify from worker threads

    def challenge(self, address: Address) -> str:
        """The miner's sign-in challenge for ``address``."""
        reply = self.rpc.call("twin_authChallenge", ["0x" + bytes(address).hex()], public=True)
        return str(reply["message"])

    def token(self, address: Address, signature: bytes | str) -> tuple[str, int]:
        """The miner's token for a signed challenge, and its expiry (Unix seconds)."""
        text = signature if isinstance(signature, str) else "0x" + bytes(signature).hex()
        if not text.startswith(("0x", "0X")):
            text = "0x" + text
        reply = self.rpc.call(
            "twin_authToken", ["0x" + bytes(address).hex(), text.lower()], public=True
        )
        return str(reply["token"]), int(str(reply["expiresAt"]), 16)

    def verify(self, token: str | None) -> Principal:
        """The principal of a token the miner accepts; Unauthorized with its reason."""
        if not token:
            raise Unauthorized("no token")
        now = self._clock()
        with self._lock:
            hit = self._accepted.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        self.rpc.call("eth_blockNumber", bearer=token)  # the miner's verdict, or its error
        claims = token_claims(token)
        try:
            subject = str(claims["sub"])
            principal = Principal(
                Address(bytes.fromhex(subject[2:])), int(claims["roles"]), int(claims["exp"])
            )
        except (KeyError, TypeError, ValueError):
            raise Unauthorized("malformed token") from None
        with self._lock:
            self._accepted[token] = (principal, min(principal.expires_at, now + self.cache_seconds))
            while len(self._accepted) > MAX_CACHED_TOKENS:
                self._accepted.popitem(last=False)
        return principal


def _relay_headers(source: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    return {name: source[name] for name in names if name in source}


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:200]


class Upstream:
    """The miner a standalone API serves: JSON-RPC for reads, REST for relayed requests."""

    def __init__(
        self,
        miner_url: str,
        cache: BlobStore,
        *,
        verify: Any = True,
        timeout: float = 60.0,
        verify_first_bytes: int = 64 * 2**20,
    ) -> None:
        self.url = miner_url.rstrip("/")
        self.cache = cache
        self.verify_first_bytes = verify_first_bytes
        self.rpc = RpcClient(self.url, verify=verify, timeout=timeout)
        self.view = RemoteNodeView(self.rpc)
        self.auth = RemoteAuth(self.rpc)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            verify=verify,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        """Close every connection to the miner."""
        await self.http.aclose()
        self.rpc.close()

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        content: Any = None,
        params: Any = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request to the miner; unreachable is MinerUnavailable, broken MinerFailed."""
        request = self.http.build_request(
            method, self.url + path, headers=headers, content=content, params=params
        )
        try:
            return await self.http.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise MinerUnavailable(f"the miner at {self.url} is unreachable: {exc}") from exc
        except httpx.HTTPError as exc:
            raise MinerFailed(
                f"the miner at {self.url} broke off {method} {path}: {exc!r}"
            ) from exc

    def _relay(self, response: httpx.Response, what: str) -> Response:
        """The miner's answer as ours; its 5xx becomes MinerFailed (502)."""
        if response.status_code >= 500:
            raise MinerFailed(
                f"the miner at {self.url} failed on {what} "
                f"(HTTP {response.status_code}: {_error_message(response)})"
            )
        headers = _relay_headers(response.headers, ("www-authenticate", "location"))
        return Response(
            response.content,
            status_code=response.status_code,
            headers=headers,
            media_type=response.headers.get("content-type"),
        )

    async def relay_json(self, request: Request, path: str, body: bytes) -> Response:
        """Forward a JSON request (with the client's token and query) and relay the answer."""
        if len(body) > MAX_RELAY_BYTES:
            raise InvalidInput(f"request body exceeds the limit of {MAX_RELAY_BYTES} bytes")
        headers = _relay_headers(request.headers, ("authorization",))
        headers["content-type"] = "application/json"
        response = await self.send(
            request.method, path, headers=headers, content=body, params=request.query_params
        )
        return self._relay(response, f"{request.method} {path}")

    async def put_blob(self, request: Request, digest: ArtifactDigest) -> Response:
        """Stream an upload to the miner (which verifies it) and relay its answer."""
        headers = _relay_headers(request.headers, ("authorization", "content-length"))
        headers["content-type"] = "application/octet-stream"
        response = await self.send(
            "PUT", f"/v1/blobs/{digest}", headers=headers, content=request.stream()
        )
        relayed = self._relay(response, f"PUT /v1/blobs/{digest}")
        relayed.headers["location"] = request.url.path
        return relayed

    async def blob_response(
        self,
        request: Request,
        digest: ArtifactDigest,
        extra_headers: dict[str, str] | None = None,
    ) -> Response:
        """A blob from the cache, or streamed from the miner and verified on the way."""
        from registry.api.blobs import local_blob_response

        if self.cache.has(digest):
            return await local_blob_response(
                request, self.cache, digest, self.verify_first_bytes, extra_headers
            )
        response = await self.send(
            request.method,
            f"/v1/blobs/{digest}",
            headers=_relay_headers(request.headers, _REQUEST_HEADERS),
            stream=True,
        )
        if response.status_code >= 300 or request.method == "HEAD":
            await response.aread()
            await response.aclose()
            if response.status_code >= 400:
                return self._relay(response, f"GET /v1/blobs/{digest}")
            headers = _relay_headers(response.headers, _BLOB_HEADERS) | (extra_headers or {})
            return Response(status_code=response.status_code, headers=headers)
        headers = _relay_headers(response.headers, _BLOB_HEADERS) | (extra_headers or {})
        if response.status_code == 200:
            body = self._verified(response, digest)
        else:  # 206: a range cannot be verified alone; the client checks the whole
            body = self._relayed(response)
        return StreamingResponse(body, status_code=response.status_code, headers=headers)

    async def _relayed(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    async def _verified(
        self, response: httpx.Response, digest: ArtifactDigest
    ) -> AsyncIterator[bytes]:
        """The miner's bytes, hashed on the way; the last chunk only if they verify."""
        size = int(response.headers.get("content-length", "-1"))
        writer: BlobWriter | None = None
        if 0 <= size <= self.cache.max_blob_bytes:
            writer = await run_in_threadpool(partial(self.cache.writer, digest, size))
        h = hashlib.sha256()
        pending = bytearray()
        held = b""
        try:
            async for chunk in response.aiter_raw():
                h.update(chunk)
                if writer is not None:
                    pending += chunk
                    if len(pending) >= _CACHE_BATCH:
                        await run_in_threadpool(writer.write, bytes(pending))
                        pending.clear()
                if held:
                    yield held
                held = chunk
            if h.digest() != digest.raw:
                log.error("the miner at %s sent bytes that do not hash to %s", self.url, digest)
                raise StorageError(f"the miner at {self.url} sent a corrupt copy of {digest}")
            if writer is not None:
                if pending:
                    await run_in_threadpool(writer.write, bytes(pending))
                await run_in_threadpool(writer.commit)
            if held:
                yield held
        finally:
            if writer is not None:
                writer.abort()  # a no-op after commit
            await response.aclose()


class _TokenContext:
    """ASGI middleware: the request's bearer token in :data:`current_token`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        reset = current_token.set(bearer_token(authorization))
        try:
            await self.app(scope, receive, send)
        finally:
            current_token.reset(reset)


def create_standalone_app(
    miner_url: str,
    cache: BlobStore,
    *,
    verify: Any = True,
    timeout: float = 60.0,
    **settings: Any,
) -> FastAPI:
    """The registry API under ``/v1`` in front of the miner at ``miner_url``.

    ``cache`` holds blobs by digest (fill-on-read, verified); ``verify`` is httpx's TLS
    verification for an ``https://`` miner (a CA bundle path or an SSL context);
    ``settings`` are :class:`~registry.api.deps.RegistryContext` fields.
    """
    from registry.api.app import PREFIX, create_v1_app
    from registry.api.deps import read_limited
    from registry.api.errors import install_error_handlers

    verify_first = int(settings.get("verify_first_bytes", 64 * 2**20))
    upstream = Upstream(
        miner_url, cache, verify=verify, timeout=timeout, verify_first_bytes=verify_first
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await upstream.aclose()

    app = FastAPI(
        title="TwinChain registry API (standalone)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.state.upstream = upstream

    async def docs() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/docs")

    async def json_rpc(request: Request) -> Response:
        body = await read_limited(request, MAX_RELAY_BYTES)
        return await upstream.relay_json(request, "/", body)

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", json_rpc, methods=["POST"], include_in_schema=False)
    v1 = create_v1_app(upstream.view, upstream.auth, blobs=cache, upstream=upstream, **settings)
    app.mount(PREFIX, v1)
    app.add_middleware(_TokenContext)
    return app
