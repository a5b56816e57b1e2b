"""JSON-RPC error objects and the one place TwinChain errors map to them.

Codes: JSON-RPC 2.0 (-32700 parse, -32600 invalid request, -32601 method not found,
-32602 invalid params, -32603 internal), the Ethereum dialect (-32000 server error such
as a rejected transaction, 3 "execution reverted" with the revert data, as geth does;
-32005 limit exceeded, as EIP-1474) and TwinChain's -32001 for failed authentication or
authorisation (EIP-1474 uses -32001 for "resource not found", which no method here
returns: absent blocks and transactions are ``null`` results, as in geth).
"""

from __future__ import annotations

from typing import Any, Final

from node.chain.executor import ExecutionReverted
from node.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidTransaction,
    NotFound,
    TwinChainError,
    Unauthorized,
)

__all__ = [
    "EXECUTION_REVERTED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LIMIT_EXCEEDED",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_ERROR",
    "UNAUTHORIZED",
    "RpcError",
    "from_exception",
]

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SERVER_ERROR: Final = -32000
UNAUTHORIZED: Final = -32001
LIMIT_EXCEEDED: Final = -32005
EXECUTION_REVERTED: Final = 3


class RpcError(Exception):
    """An error to return as a JSON-RPC error object.

    ``http_status`` is the status a *single* (non-batch) request answers with: 200 for
    ordinary errors, as geth does; 401/403 for failed authentication/authorisation.
    """

    def __init__(
        self, code: int, message: str, data: Any = None, *, http_status: int = 200
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.http_status = http_status

    def to_json(self) -> dict[str, Any]:
        """The ``error`` member of a response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    """-32602 with ``message``."""
    return RpcError(INVALID_PARAMS, f"invalid params: {message}")


def from_exception(exc: TwinChainError) -> RpcError:
    """Map a deliberate TwinChain error raised by the node to its JSON-RPC error."""
    if isinstance(exc, ExecutionReverted):
        if exc.output:  # geth: code 3, message with the reason, data = raw revert bytes
            return RpcError(EXECUTION_REVERTED, str(exc), "0x" + exc.output.hex())
        return RpcError(SERVER_ERROR, str(exc))
    if isinstance(exc, Unauthorized):
        return RpcError(UNAUTHORIZED, f"unauthorized: {exc}", http_status=401)
    if isinstance(exc, Forbidden):
        return RpcError(UNAUTHORIZED, f"forbidden: {exc}", http_status=403)
    if isinstance(exc, InvalidTransaction | Conflict):
        return RpcError(SERVER_ERROR, str(exc))  # geth reports txpool refusals as -32000
    if isinstance(exc, InvalidInput):
        return invalid_params(str(exc))
    if isinstance(exc, NotFound):
        return RpcError(SERVER_ERROR, f"not found: {exc}")
    return RpcError(SERVER_ERROR, str(exc))
