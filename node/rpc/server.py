"""The miner's Ethereum JSON-RPC server (FastAPI/Starlette app factory).

Theory of operation
-------------------
``POST /`` (or ``/rpc``) carries one JSON-RPC 2.0 request or a batch. The endpoint reads
the body with a hard size limit (HTTP 413 with a -32600 error body beyond it), then hands
the bytes and the ``Authorization`` header to :class:`Dispatcher` in a worker thread,
because node reads block (EVM calls, SQLite). The dispatcher parses the JSON (-32700),
checks each request's shape (-32600), finds the method (-32601), checks the bearer token
unless the method is public (-32001, HTTP 401 for a single request), and runs the
handler from :mod:`node.rpc.methods`. Errors map to JSON-RPC codes in one place
(:func:`node.rpc.errors.from_exception`); anything unexpected is logged with its
traceback and answered with -32603 "internal error", never with a crash or an HTTP 500.

Batches: at most ``RpcLimits.max_batch`` requests, answered in order; requests without
an ``id`` (notifications) are executed and not answered; an all-notification batch gets
HTTP 204. A batch always answers HTTP 200: authentication failures are per item.

``/ws`` speaks the same protocol over a WebSocket (one request or batch per message)
and adds ``eth_subscribe("newHeads")`` / ``eth_unsubscribe`` (see :mod:`node.rpc.ws`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from node.auth import AuthService, Principal, bearer_token
from node.errors import TwinChainError, Unauthorized
from node.rpc import wire
from node.rpc.backend import NodeView
from node.rpc.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    from_exception,
    invalid_params,
)
from node.rpc.methods import METHODS, RpcContext, RpcLimits

__all__ = ["Dispatcher", "RpcLimits", "create_rpc_app"]

logger = logging.getLogger("node.rpc")

_JSON = "application/json"


@dataclass
class _Caller:
    """The HTTP caller's credentials, verified at most once per HTTP request."""

    verify: Callable[[str | None], Principal]
    token: str | None
    _principal: Principal | None = None
    _error: Unauthorized | None = None

    def principal(self) -> Principal:
        """The verified principal; raises Unauthorized (the same error every time)."""
        if self._principal is None and self._error is None:
            try:
                self._principal = self.verify(self.token)
            except Unauthorized as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        assert self._principal is not None
        return self._principal


class Dispatcher:
    """Parses JSON-RPC payloads and runs the methods (synchronous; call from a thread)."""

    def __init__(self, view: NodeView, auth: AuthService, limits: RpcLimits) -> None:
        """Dispatch to ``view`` with tokens checked by ``auth``."""
        self.view = view
        self.auth = auth
        self.limits = limits

    def handle(self, body: bytes, authorization: str | None) -> tuple[int, bytes | None]:
        """Answer one HTTP body: ``(HTTP status, response body or None for 204)``.

        Never raises: a failure outside any one method (say, a result that cannot be
        serialized) is logged and answered with -32603.
        """
        try:
            return self._handle(body, authorization)
        except Exception:
            logger.exception("internal error answering a JSON-RPC request")
            return 200, wire.dump(_error(None, RpcError(INTERNAL_ERROR, "internal error")))

    def _handle(self, body: bytes, authorization: str | None) -> tuple[int, bytes | None]:
        caller = _Caller(self.auth.verify, bearer_token(authorization))
        try:
            payload = wire.load(body)
        except (ValueError, RecursionError) as exc:
            # ValueError: bad JSON, bad UTF-8, over-long integer literals, nesting too deep
            return 200, wire.dump(
                _error(None, RpcError(PARSE_ERROR, f"parse error: {_brief(exc)}"))
            )
        if isinstance(payload, list):
            return self._batch(payload, caller)
        response, status = self.handle_request(payload, caller)
        if response is None:
            return 204, None
        return status, wire.dump(response)

    def _batch(self, items: list[Any], caller: _Caller) -> tuple[int, bytes | None]:
        if not items:
            return 200, wire.dump(_error(None, RpcError(INVALID_REQUEST, "empty batch")))
        if len(items) > self.limits.max_batch:
            error = RpcError(
                INVALID_REQUEST,
                f"batch of {len(items)} requests exceeds the limit of {self.limits.max_batch}",
            )
            return 200, wire.dump(_error(None, error))
        responses = [self.handle_request(item, caller)[0] for item in items]
        answered = [r for r in responses if r is not None]
        return (200, wire.dump(answered)) if answered else (204, None)

    def handle_request(self, request: object, caller: _Caller) -> tuple[dict[str, Any] | None, int]:
        """Answer one request object: ``(response or None for a notification, status)``."""
        if not isinstance(request, dict):
            return _error(None, RpcError(INVALID_REQUEST, "invalid request: not an object")), 200
        request_id = request.get("id")
        id_ok = "id" not in request or _valid_id(request_id)
        reply_id = request_id if id_ok else None
        problem = _request_problem(request, id_ok)
        if problem is not None:
            return _error(reply_id, RpcError(INVALID_REQUEST, f"invalid request: {problem}")), 200
        is_notification = "id" not in request
        try:
            result = self._call(request["method"], request.get("params"), caller)
        except RpcError as exc:
            return (None if is_notification else _error(reply_id, exc)), exc.http_status
        return (None if is_notification else _result(reply_id, result)), 200

    def _call(self, method_name: str, params: object, caller: _Caller) -> Any:
        method = METHODS.get(method_name)
        if method is None:
            raise RpcError(
                METHOD_NOT_FOUND, f"the method {method_name} does not exist/is not available"
            )
        if params is None:
            params = []
        if not isinstance(params, list):
            raise invalid_params("params must be an array (by-name params are not supported)")
        context = RpcContext(self.view, self.auth, self.limits)
        try:
            if not method.public:
                context.principal = caller.principal()
            return method.handler(context, params)
        except RpcError:
            raise
        except TwinChainError as exc:
            if not exc.caller_fault:
                logger.error("%s failed on the node's side: %s", method_name, exc)
            raise from_exception(exc) from exc
        except Exception as exc:
            logger.exception("internal error in %s", method_name)
            raise RpcError(INTERNAL_ERROR, "internal error") from exc


def _request_problem(request: dict[str, Any], id_ok: bool) -> str | None:
    if request.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    if not id_ok:
        return "id must be a string, a number or null"
    if not isinstance(request.get("method"), str):
        return "method must be a string"
    return None


def _valid_id(value: object) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _result(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _error(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def _brief(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


class _BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_rpc_app(
    view: NodeView,
    auth: AuthService,
    *,
    max_body_bytes: int | None = None,
    limits: RpcLimits | None = None,
    websocket: bool = True,
) -> FastAPI:
    """The JSON-RPC app for one node: ``POST /`` and ``POST /rpc``, and ``/ws``."""
    limits = limits or RpcLimits()
    if max_body_bytes is not None:
        limits = RpcLimits(
            max_body_bytes=max_body_bytes,
            max_batch=limits.max_batch,
            max_log_blocks=limits.max_log_blocks,
            max_logs=limits.max_logs,
            max_fee_history_blocks=limits.max_fee_history_blocks,
        )
    dispatcher = Dispatcher(view, auth, limits)
    app = FastAPI(title="TwinChain JSON-RPC", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dispatcher = dispatcher

    async def rpc(request: Request) -> Response:
        try:
            body = await _read_body(request, limits.max_body_bytes)
        except _BodyTooLarge:
            error = RpcError(
                INVALID_REQUEST, f"request body too large: limit is {limits.max_body_bytes} bytes"
            )
            return Response(wire.dump(_error(None, error)), status_code=413, media_type=_JSON)
        authorization = request.headers.get("authorization")
        status, payload = await run_in_threadpool(dispatcher.handle, body, authorization)
        if payload is None:
            return Response(status_code=204)
        headers = {"WWW-Authenticate": 'Bearer realm="twinchain"'} if status == 401 else None
        return Response(payload, status_code=status, media_type=_JSON, headers=headers)

    app.add_api_route("/", rpc, methods=["POST"], include_in_schema=False)
    app.add_api_route("/rpc", rpc, methods=["POST"], include_in_schema=False)
    if websocket:
        from node.rpc.ws import add_websocket_route

        add_websocket_route(app, dispatcher)
    return app
