"""One place that turns errors into HTTP answers: ``{"error": {"code", "message"}}``.

Every deliberate error is a :class:`~node.errors.TwinChainError`; its class decides the
status (see :data:`STATUS`). FastAPI's own validation errors become 422 and Starlette's
404/405 keep their status, in the same body shape. Anything else is a bug on our side:
logged with its traceback and answered 500 "internal error" without details.
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from node.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    StorageError,
    TwinChainError,
    Unauthorized,
)
from node.rpc.remote import MinerFailed, MinerUnavailable

__all__ = [
    "STATUS",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "Unprocessable",
    "error_body",
    "install_error_handlers",
    "status_of",
]

log = logging.getLogger("twinchain.registry.api")


class PayloadTooLarge(InvalidInput):
    """The request body is over the limit (HTTP 413); nothing was stored."""


class Unprocessable(InvalidInput):
    """A well-formed body that does not match the schema (HTTP 422, like FastAPI's own)."""


class RangeNotSatisfiable(InvalidInput):
    """A ``Range`` that lies outside the blob (HTTP 416)."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


#: Most specific class first: the first ``isinstance`` match decides.
STATUS: Final[tuple[tuple[type[TwinChainError], int, str], ...]] = (
    (MinerUnavailable, 503, "miner_unavailable"),
    (MinerFailed, 502, "bad_gateway"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (RangeNotSatisfiable, 416, "range_not_satisfiable"),
    (Unprocessable, 422, "invalid_input"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (InvalidInput, 400, "invalid_input"),
    (StorageError, 500, "storage_error"),
)

_GENERIC = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_input",
    502: "bad_gateway",
    503: "miner_unavailable",
}


def status_of(exc: TwinChainError) -> tuple[int, str]:
    """HTTP status and error code of a TwinChain error."""
    for cls, status, code in STATUS:
        if isinstance(exc, cls):
            return status, code
    return (400, "invalid_input") if exc.caller_fault else (500, "internal")


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON body of every error answer."""
    return {"error": {"code": code, "message": message}}


async def _twinchain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TwinChainError)
    status, code = status_of(exc)
    if status >= 500:
        log.error("%s %s failed on our side: %s", request.method, request.url.path, exc)
    headers: dict[str, str] = {}
    if status == 503:
        headers["Retry-After"] = "5"  # a miner that is down may be back soon
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="twinchain"'
    if isinstance(exc, RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size}"
    return JSONResponse(error_body(code, str(exc)), status_code=status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse(error_body("invalid_input", "; ".join(problems)), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _GENERIC.get(exc.status_code, "error")
    return JSONResponse(
        error_body(code, str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal", "internal error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(TwinChainError, _twinchain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
