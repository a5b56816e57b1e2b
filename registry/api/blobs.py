"""``/v1/blobs/{digest}``: upload, download and probe content-addressed artifacts.

Upload (``PUT``) streams the body into :meth:`BlobStore.writer` with the digest of the
URL as the expected one: the SHA-256 is computed while streaming, a body over the
store's limit is cut off at once (413), a digest mismatch is refused (400 "digest
mismatch: ..."), and a refused or interrupted upload leaves nothing stored.

Download (``GET``) answers with ``ETag: "sha256:<hex>"``, ``Repr-Digest:
sha-256=:<base64>:`` (RFC 9530; the digest of the whole blob, also on 206 answers),
``Accept-Ranges: bytes``, and honours one ``Range`` (``bytes=a-b``, ``a-``, ``-n``;
``If-Range`` with the ETag) and ``If-None-Match``. A blob corrupt on disk is never
served as valid:

- a blob whose file is *known good* — this process hashed these very bytes when it
  stored them or since, and the file's fingerprint ``(dev, inode, size, mtime, ctime)``
  is unchanged (:meth:`BlobStore.open_blob`) — is sent straight from the file in
  :data:`SERVE_CHUNK` pieces without hashing it again: re-hashing every download cost
  as much CPU as the transfer. Any write to the file moves its ctime, so a modified
  blob is never known good;
- other blobs up to ``verify_first_bytes`` (64 MiB by default) are re-hashed *before*
  the first byte is sent, for full and ranged requests alike: a corrupt one is a 500
  ``storage_error`` with nothing streamed;
- other, larger full downloads are re-hashed while streaming and the last chunk of a
  corrupt blob is withheld and the response aborted, so the client sees a truncated
  body (the declared ``Content-Length`` is never reached), never a complete one; a good
  stream makes the file known good;
- other, larger ranged requests are served unverified (a range cannot be checked
  without reading the whole blob); the client checks the assembled whole against the
  digest, as the SDK does.

The residual risk (corruption a fingerprint cannot see: bit rot under the filesystem,
a change during a send) is covered by clients verifying the SHA-256 they receive
against the chain, which the SDK always does.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from functools import partial
from typing import Annotated, Final

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from node.blobs import ArtifactDigest, BlobStore, parse_digest
from node.errors import NotFound, StorageError
from registry.api.deps import Context, CurrentMember, RegistryContext, Uploader
from registry.api.errors import PayloadTooLarge, RangeNotSatisfiable
from registry.api.schemas import BlobPublic, ErrorBody

__all__ = [
    "DIGEST_PATTERN",
    "SERVE_CHUNK",
    "DigestPath",
    "blob_response",
    "local_blob_response",
    "router",
]

DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"
#: Bytes gathered before a write is handed to a worker thread.
_WRITE_BATCH: Final = 1 << 20
#: Bytes read from a blob file per response chunk (one worker-thread hop each).
SERVE_CHUNK: Final = 4 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

DigestPath = Annotated[
    str, Path(description="sha256:<64 lowercase hex>", examples=["sha256:" + "0" * 64])
]

router = APIRouter(prefix="/blobs", tags=["blobs"])

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    413: {"model": ErrorBody},
    416: {"model": ErrorBody},
}


def _headers(digest: ArtifactDigest, size: int) -> dict[str, str]:
    return {
        "ETag": f'"{digest}"',
        "Repr-Digest": f"sha-256=:{base64.b64encode(digest.raw).decode('ascii')}:",
        "Accept-Ranges": "bytes",
        "Cache-Control": "public, max-age=31536000, immutable",
    }


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` half-open for one satisfiable byte range; None to serve it all.

    A header we do not understand (other units, several ranges) is ignored, as RFC 9110
    allows; a well-formed range outside the blob is 416.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if len(first) > 20 or len(last) > 20:
        raise RangeNotSatisfiable(f"range {header!r} is outside the blob of {size} bytes", size)
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {header!r} selects no byte", size)
        return max(0, size - n), size
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(f"range {header!r} is outside the blob of {size} bytes", size)
    return start, end + 1


def _etag_matches(header: str | None, digest: ArtifactDigest) -> bool:
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or f'"{digest}"' in tags


async def blob_response(
    request: Request,
    context: RegistryContext,
    digest: ArtifactDigest,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    """The GET/HEAD answer for a blob: from the store, or relayed from the miner that a
    standalone API fronts (:meth:`registry.api.remote.Upstream.blob_response`)."""
    if context.upstream is not None:
        response: Response = await context.upstream.blob_response(request, digest, extra_headers)
        return response
    return await local_blob_response(
        request, context.blobs, digest, context.verify_first_bytes, extra_headers
    )


async def local_blob_response(
    request: Request,
    blobs: BlobStore,
    digest: ArtifactDigest,
    verify_first_bytes: int,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    """The GET/HEAD answer for a blob in ``blobs`` (see the module docstring)."""
    size = blobs.size(digest)
    if size is None:
        raise NotFound(f"blob {digest} is not stored")
    headers = _headers(digest, size) | (extra_headers or {})
    if _etag_matches(request.headers.get("if-none-match"), digest):
        return Response(status_code=304, headers=headers)
    wanted = _parse_range(request.headers.get("range"), size)
    if_range = request.headers.get("if-range")
    if wanted is not None and if_range is not None and if_range.strip() != f'"{digest}"':
        wanted = None  # the client's partial copy is of something else: send it all
    start, end = wanted if wanted is not None else (0, size)
    headers["Content-Length"] = str(end - start)
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    opened = await run_in_threadpool(
        partial(blobs.open_blob, digest, verify=size <= verify_first_bytes)
    )
    if opened.size != size:  # replaced between stat and open: never serve a mix
        opened.close()
        raise StorageError(f"blob {digest} changed while it was opened")
    body: Iterator[bytes]
    if opened.verified or wanted is not None:
        body = opened.chunks(start, end, SERVE_CHUNK)
    else:
        body = opened.verified_chunks(SERVE_CHUNK)
    return StreamingResponse(
        body, status_code=status, headers=headers, media_type="application/octet-stream"
    )


@router.put(
    "/{digest}",
    response_model=BlobPublic,
    status_code=201,
    responses={200: {"model": BlobPublic, "description": "Already stored"}, **_ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    summary="Upload an artifact (verified while streaming)",
)
async def put_blob(
    digest: DigestPath, request: Request, context: Context, _member: Uploader
) -> Response:
    """Store the body under ``digest``; refuse it if its SHA-256 differs."""
    expected = parse_digest(digest)
    if context.upstream is not None:  # standalone: the miner stores (and verifies) it
        relayed: Response = await context.upstream.put_blob(request, expected)
        return relayed
    blobs = context.blobs
    limit = blobs.max_blob_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"blob exceeds the limit of {limit} bytes (declared {declared})")
    existed = blobs.has(expected)
    writer = await run_in_threadpool(blobs.writer, expected)
    try:
        pending = bytearray()
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"blob exceeds the limit of {limit} bytes")
            pending += chunk
            if len(pending) >= _WRITE_BATCH:
                await run_in_threadpool(writer.write, bytes(pending))
                pending.clear()
        if pending:
            await run_in_threadpool(writer.write, bytes(pending))
        stored = await run_in_threadpool(writer.commit)
    finally:
        writer.abort()  # a no-op after commit; removes the temp file otherwise
    body = BlobPublic(digest=str(stored.digest), size=stored.size, created=not existed)
    return Response(
        body.model_dump_json(),
        status_code=200 if existed else 201,
        media_type="application/json",
        headers={"Location": f"{request.url.path}"},
    )


@router.get(
    "/{digest}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The blob"},
        206: {"content": {"application/octet-stream": {}}, "description": "A byte range"},
        304: {"description": "Not modified"},
        **_ERRORS,
    },
    summary="Download an artifact (Range, ETag, Repr-Digest)",
)
async def get_blob(
    digest: DigestPath, request: Request, context: Context, _member: CurrentMember
) -> Response:
    """The blob's bytes, or one range of them."""
    return await blob_response(request, context, parse_digest(digest))


@router.head(
    "/{digest}",
    response_class=Response,
    responses={200: {"description": "Stored"}, **_ERRORS},
    summary="Whether an artifact is stored, and its size",
)
async def head_blob(
    digest: DigestPath, request: Request, context: Context, _member: CurrentMember
) -> Response:
    """The GET headers without the body."""
    return await blob_response(request, context, parse_digest(digest))
