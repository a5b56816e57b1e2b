"""JSON-RPC over WebSocket at ``/ws``, with ``eth_subscribe("newHeads")``.

Every text message is a JSON-RPC request or batch, answered by the same
:class:`~node.rpc.server.Dispatcher` as HTTP. The bearer token comes from the upgrade
request's ``Authorization`` header (or a ``?token=`` query parameter, for browser
clients that cannot set headers) and is checked per request, so a token that expires
during a connection stops working for new requests; running subscriptions continue
until the client unsubscribes or disconnects.

``eth_subscribe("newHeads")`` returns a subscription id; each newly committed block's
header (the block object without transactions) is then pushed as an
``eth_subscription`` notification, in height order. The node is polled for its head
(cheap: an in-memory read), which keeps :class:`~node.rpc.backend.NodeView` free of a
callback interface. ``logs`` and other subscription kinds are not offered.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any, Final

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from node.auth import bearer_token
from node.errors import TwinChainError
from node.rpc import results, wire
from node.rpc.errors import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    RpcError,
    from_exception,
    invalid_params,
)

if TYPE_CHECKING:
    from node.rpc.server import Dispatcher

__all__ = ["MAX_SUBSCRIPTIONS", "POLL_SECONDS", "add_websocket_route"]

logger = logging.getLogger("node.rpc.ws")

POLL_SECONDS: Final = 0.2
MAX_SUBSCRIPTIONS: Final = 16


def add_websocket_route(app: FastAPI, dispatcher: Dispatcher) -> None:
    """Serve JSON-RPC and ``newHeads`` subscriptions at ``/ws``."""

    @app.websocket("/ws")
    async def rpc_websocket(websocket: WebSocket) -> None:
        authorization = websocket.headers.get("authorization")
        if authorization is None and "token" in websocket.query_params:
            authorization = "Bearer " + websocket.query_params["token"]
        await websocket.accept()
        session = _Session(websocket, dispatcher, authorization)
        try:
            await session.serve()
        except WebSocketDisconnect:
            pass
        finally:
            session.close()


class _Session:
    """One WebSocket connection: its requests, its subscriptions, one send lock."""

    def __init__(
        self, websocket: WebSocket, dispatcher: Dispatcher, authorization: str | None
    ) -> None:
        self.websocket = websocket
        self.dispatcher = dispatcher
        self.authorization = authorization
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()

    async def send(self, text: str | bytes) -> None:
        async with self._send_lock:
            await self.websocket.send_text(text if isinstance(text, str) else text.decode())

    async def serve(self) -> None:
        limit = self.dispatcher.limits.max_body_bytes
        while True:
            event = await self.websocket.receive()
            if event["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(event.get("code", 1000))
            raw = event.get("bytes")
            message = event.get("text") or (raw.decode("utf-8", "replace") if raw else "")
            if len(message) > limit:
                error = RpcError(INVALID_REQUEST, f"message too large: limit is {limit} bytes")
                await self.send(_text(_error(None, error)))
                continue
            reply = await self._subscription_request(message)
            if reply is None:
                _, body = await run_in_threadpool(
                    self.dispatcher.handle, message.encode(), self.authorization
                )
                if body is None:
                    continue
                reply = body.decode()
            await self.send(reply)

    async def _subscription_request(self, message: str) -> str | None:
        """Answer eth_subscribe/eth_unsubscribe; None for anything else."""
        if "_subscribe" not in message and "_unsubscribe" not in message:
            return None  # most messages: skip parsing twice
        try:
            request = wire.load(message)
        except (ValueError, RecursionError):
            return None  # the dispatcher reports the parse error
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or request.get("method") not in ("eth_subscribe", "eth_unsubscribe")
        ):
            return None
        request_id = request.get("id")
        if not (request_id is None or isinstance(request_id, str | int)) or isinstance(
            request_id, bool
        ):
            return None  # the dispatcher reports the invalid request
        try:
            await run_in_threadpool(self._authorize)
            params = request.get("params") or []
            if not isinstance(params, list):
                raise invalid_params("params must be an array")
            if request["method"] == "eth_subscribe":
                result: Any = self._subscribe(params)
            else:
                result = self._unsubscribe(params)
        except RpcError as exc:
            return _text(_error(request_id, exc))
        return _text({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _authorize(self) -> None:
        try:
            self.dispatcher.auth.verify(bearer_token(self.authorization))
        except TwinChainError as exc:
            raise from_exception(exc) from exc

    def _subscribe(self, params: list[Any]) -> str:
        if not params or params[0] != "newHeads" or len(params) > 1:
            raise RpcError(INVALID_PARAMS, 'invalid params: only "newHeads" is supported')
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise RpcError(
                LIMIT_EXCEEDED, f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
            )
        subscription = "0x" + secrets.token_hex(16)
        self.subscriptions[subscription] = asyncio.create_task(self._new_heads(subscription))
        return subscription

    def _unsubscribe(self, params: list[Any]) -> bool:
        if len(params) != 1 or not isinstance(params[0], str):
            raise invalid_params("expected [subscriptionId]")
        task = self.subscriptions.pop(params[0], None)
        if task is None:
            return False
        task.cancel()
        return True

    async def _new_heads(self, subscription: str) -> None:
        view = self.dispatcher.view
        try:
            last = (await run_in_threadpool(view.head)).height
            while True:
                await asyncio.sleep(POLL_SECONDS)
                head = await run_in_threadpool(view.head)
                for height in range(last + 1, head.height + 1):
                    header = await run_in_threadpool(view.header_by_number, height)
                    if header is None:
                        break
                    note = {
                        "jsonrpc": "2.0",
                        "method": "eth_subscription",
                        "params": {
                            "subscription": subscription,
                            "result": results.header_json(header),
                        },
                    }
                    await self.send(_text(note))
                    last = height
        except asyncio.CancelledError:
            raise
        except Exception:  # a closed socket or a node error ends this subscription only
            logger.debug("newHeads subscription %s ended", subscription, exc_info=True)

    def close(self) -> None:
        for task in self.subscriptions.values():
            task.cancel()
        self.subscriptions.clear()


def _error(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def _text(payload: object) -> str:
    return wire.dump(payload).decode()
