"""What route handlers depend on: the node, the token service, the blob store, the caller.

:class:`RegistryContext` is the app's one piece of state (``app.state.registry``). The
``Annotated`` aliases (:data:`Context`, :data:`CurrentMember`, :data:`Uploader`) are what
handlers declare, after the FastAPI full-stack template's ``CurrentUser``.

JSON bodies are read here, not by FastAPI: py-evm raises the interpreter's recursion
limit at import, so ``json.loads`` of a deeply nested body would overflow the C stack
and kill the miner. :func:`json_body` reads at most :data:`MAX_JSON_BYTES`, parses with
the depth-checked :func:`node.rpc.wire.load` and validates with the pydantic model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Protocol, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from contracts import Role
from node.auth import AuthService, Principal
from node.blobs import BlobStore
from node.chain.block import Header
from node.chain.executor import ExecutionReverted
from node.chain.types import Address
from node.errors import Forbidden, InvalidInput, Unauthorized
from node.rpc import wire
from node.rpc.backend import NodeView
from registry.api.contract import (
    REGISTRY_ADDRESS_BYTES,
    ContractReverted,
    RegistryReader,
    revert_reason,
)
from registry.api.errors import PayloadTooLarge, Unprocessable

__all__ = [
    "MAX_JSON_BYTES",
    "Context",
    "CurrentMember",
    "RegistryContext",
    "TokenAuthority",
    "Uploader",
    "json_body",
    "json_body_schema",
    "read_limited",
]

#: Largest JSON request body (a raw transaction is at most 128 KiB, 256 KiB as hex).
MAX_JSON_BYTES: Final = 512 * 1024
#: Roles that may upload artifacts (an auditor only reads).
UPLOAD_ROLES: Final = Role.TWIN | Role.PUBLISHER | Role.MINER | Role.ADMIN

M = TypeVar("M", bound=BaseModel)


class TokenAuthority(Protocol):
    """Who issues and checks bearer tokens: the node's :class:`~node.auth.AuthService`,
    or, in a standalone API, :class:`registry.api.remote.RemoteAuth` (the miner's)."""

    def challenge(self, address: Address) -> str:
        """A single-use sign-in challenge for ``address``."""
        ...

    def token(self, address: Address, signature: bytes | str) -> tuple[str, int]:
        """A token and its expiry for a signed challenge."""
        ...

    def verify(self, token: str | None) -> Principal:
        """The principal of a valid token; Unauthorized with the reason otherwise."""
        ...


@dataclass
class RegistryContext:
    """The node and stores one registry API instance serves."""

    view: NodeView
    auth: TokenAuthority | AuthService
    blobs: BlobStore
    #: In a standalone API, the miner it fronts (:class:`registry.api.remote.Upstream`):
    #: blob requests and transactions are relayed to it; None on a miner.
    upstream: Any = None
    #: Longest ``?wait=true`` on a transaction, in seconds.
    max_wait_seconds: float = 120.0
    #: Full downloads of blobs up to this size are verified before the first byte is
    #: sent (a corrupt blob is a clean 500); larger ones are verified while streaming.
    verify_first_bytes: int = 64 * 2**20
    clock: Callable[[], float] = field(default=time.monotonic)

    def reader(self, at: Header | None = None) -> RegistryReader:
        """Typed ModelRegistry views at ``at`` (default: the committed head)."""
        header = at if at is not None else self.view.head()
        view = self.view

        def call(data: bytes) -> bytes:
            try:
                return view.call(
                    Address(REGISTRY_ADDRESS_BYTES),
                    data,
                    Address(bytes(20)),
                    value=0,
                    gas=None,
                    at=header,
                )
            except ExecutionReverted as exc:
                reason = revert_reason(exc.output) or str(exc).removeprefix("execution reverted: ")
                raise ContractReverted(reason) from exc

        return RegistryReader(call)


def get_context(request: Request) -> RegistryContext:
    """The app's :class:`RegistryContext`."""
    context = request.app.state.registry
    assert isinstance(context, RegistryContext)
    return context


Context = Annotated[RegistryContext, Depends(get_context)]

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from POST /v1/auth/token (challenge signed with the account key).",
)


def current_member(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: Request,
) -> Principal:
    """The verified caller; 401 with the precise reason otherwise."""
    if credentials is None:
        header = request.headers.get("authorization")
        raise Unauthorized("no token" if header is None else "malformed authorization header")
    return context.auth.verify(credentials.credentials)


CurrentMember = Annotated[Principal, Depends(current_member)]


def uploader(principal: CurrentMember) -> Principal:
    """A caller allowed to upload artifacts (TWIN, PUBLISHER, MINER or ADMIN)."""
    if principal.roles & UPLOAD_ROLES == 0:
        raise Forbidden(
            f"0x{bytes(principal.address).hex()} may not upload artifacts: "
            "needs TWIN, PUBLISHER, MINER or ADMIN"
        )
    return principal


Uploader = Annotated[Principal, Depends(uploader)]


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond, before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(model: type[M]) -> Callable[[Request], Coroutine[Any, Any, M]]:
    """A dependency that reads, depth-checks and validates a JSON body as ``model``."""

    async def dependency(request: Request) -> M:
        body = await read_limited(request, MAX_JSON_BYTES)
        try:
            document = wire.load(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidInput(f"body is not acceptable JSON: {exc}") from exc
        try:
            return model.model_validate(document)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise Unprocessable(f"invalid body: {problems}") from None

    return dependency


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body read by :func:`json_body`."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
