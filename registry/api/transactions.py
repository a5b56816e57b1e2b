"""``/v1/transactions``: submit client-signed transactions, read their fate.

The server never holds a member's key: a client builds and signs the transaction, and
this route checks it before it reaches the mempool (the *preflight*, on by default, off
with ``?preflight=false``), so that a bad request gets a precise status at once instead
of a reverted receipt later:

1. the transaction decodes and is valid for this chain (400 otherwise);
2. for a ModelRegistry registration, the artifact it names is stored here with the
   declared size (409 "artifact ... is not stored on this miner" otherwise: upload first);
3. for ``pushUpdate``, the update blob decodes against the round's base model with the
   declared kind and sample count (400 with the decoder's reason otherwise) — when this
   miner holds the base; otherwise the miners' aggregate check is the backstop;
4. for ``closeRound``, the miner rule of :class:`~registry.policy.RegistryPolicy` holds
   at the head: the recorded aggregate is the recomputed one (400 otherwise);
5. the call does not revert at the head: ``not a ...`` is 403, an unknown round or
   version 404, a state conflict ("digest already registered", "round closed", "round
   deadline passed", ...) 409, anything else 400 — with the contract's reason.

The preflight runs against the committed head, so a client that pipelines dependent
transactions (say ``setAlias`` to a version still in the mempool) must switch it off.
``?wait=true`` then waits (at most ``timeout`` seconds, bounded by the server) for the
receipt; 202 means admitted but not yet committed.
"""

from __future__ import annotations

import time
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from contracts import Role
from node.blobs import ArtifactDigest
from node.chain.block import Header
from node.chain.executor import ExecutionReverted
from node.chain.store import ReceiptRecord
from node.chain.tx import SignedTx, decode_transaction
from node.chain.types import Address, Hash32
from node.errors import Conflict, Forbidden, InvalidInput, NotFound
from registry.api.contract import (
    REGISTRY_ADDRESS_BYTES,
    Call,
    decode_call,
    decode_event,
    revert_reason,
)
from registry.api.deps import Context, CurrentMember, RegistryContext, json_body, json_body_schema
from registry.api.schemas import (
    AccountPublic,
    ChainPublic,
    ErrorBody,
    EventPublic,
    TransactionCreate,
    TransactionPublic,
)
from registry.fl import decode_update, load_model
from registry.fl.tensorfile import read_tensor_file
from registry.policy import RegistryPolicy

__all__ = ["preflight", "router"]

_POLL_SECONDS: Final = 0.05
_CONFLICTS: Final = (
    "already",
    "round closed",
    "round cancelled",
    "deadline passed",
    "revoked",
    "round full",
    "min updates not reached",
    "too many aliases",
    "not in round",
)
_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422)
}

router = APIRouter(tags=["transactions"])
_policy = RegistryPolicy()


def _hex(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def _reverted(reason: str) -> Exception:
    """The error for a call the contract refuses, by what its reason says."""
    message = f"the contract refuses it: {reason}"
    if reason.startswith("not a "):
        return Forbidden(message)
    if reason.startswith("unknown"):
        return NotFound(message)
    if any(marker in reason for marker in _CONFLICTS):
        return Conflict(message)
    return InvalidInput(message)


def _check_artifacts(context: RegistryContext, tx: SignedTx) -> None:
    for digest, size in _policy.artifacts_of(tx):
        stored = context.blobs.size(digest)
        if stored != size:
            detail = "" if stored is None else f" (a blob of {stored} bytes is)"
            raise Conflict(
                f"artifact {digest} of {size} bytes is not stored on this miner{detail}: "
                f"upload it with PUT /v1/blobs/{digest} first"
            )


def _blob(context: RegistryContext, digest: ArtifactDigest, what: str) -> bytes:
    try:
        return b"".join(context.blobs.open_verified(digest))
    except NotFound:
        raise Conflict(f"{what} blob {digest} is not stored on this miner") from None


def _check_update(context: RegistryContext, call: Call) -> None:
    """A pushed update must decode against the base model of its round."""
    args = call.args
    reader = context.reader()
    round_ = reader.round(int(args["round_id"]))  # NotFound: "unknown round"
    base = reader.version(round_.base_version)
    if not context.blobs.has(base.digest):
        return  # not replicated here (yet): the aggregating miner checks it instead
    try:
        shapes = {n: t.shape for n, t in load_model(_blob(context, base.digest, "base")).items()}
    except InvalidInput:
        return  # a base that is not a safetensors model: nothing to check against
    digest = ArtifactDigest(bytes(args["update_digest"]))
    data = _blob(context, digest, "update")
    kind = int(args["kind"])
    if kind not in (0, 1):
        raise InvalidInput(f"update kind {kind} is not 0 (dense) or 1 (sparse)")
    try:
        decode_update(data, shapes, samples=int(args["samples"]))
        declared = read_tensor_file(data).metadata.get("twinchain.kind")
    except InvalidInput as exc:
        raise InvalidInput(f"update {digest}: {exc}") from exc
    expected = ("dense", "sparse")[kind]
    if declared != expected:
        raise InvalidInput(
            f"update {digest} is a {declared} update, the transaction says {expected}"
        )


def _check_aggregate(context: RegistryContext, tx: SignedTx) -> None:
    reason = _policy.check(tx, context.view.head(), _NodeCaller(context), context.blobs)
    if reason is not None:
        raise InvalidInput(reason)


class _NodeCaller:
    """The policy's ``executor.call`` over the node view."""

    def __init__(self, context: RegistryContext) -> None:
        self._view = context.view

    def call(self, to: bytes, data: bytes, sender: bytes = bytes(20), *, at: object) -> bytes:
        assert isinstance(at, Header)
        return self._view.call(Address(to), data, Address(sender), value=0, gas=None, at=at)


def preflight(context: RegistryContext, tx: SignedTx) -> None:
    """The checks of the module docstring, against the committed head."""
    if tx.to is not None and bytes(tx.to) == REGISTRY_ADDRESS_BYTES:
        _check_artifacts(context, tx)
        call = decode_call(bytes(tx.evm.data))
        if call is not None and call.function == "pushUpdate":
            _check_update(context, call)
        if call is not None and call.function == "closeRound":
            _check_aggregate(context, tx)
    head = context.view.head()
    try:
        context.view.call(
            tx.to, bytes(tx.evm.data), tx.sender, value=tx.evm.value, gas=tx.gas, at=head
        )
    except ExecutionReverted as exc:
        reason = revert_reason(exc.output) or str(exc).removeprefix("execution reverted: ")
        raise _reverted(reason) from exc


def _public(tx_hash: bytes, record: ReceiptRecord | None) -> TransactionPublic:
    if record is None:
        return TransactionPublic(tx_hash=_hex(tx_hash), status="pending")
    receipt = record.receipt
    events = []
    for entry in record.block_logs():
        if bytes(entry.log.address) != REGISTRY_ADDRESS_BYTES:
            continue
        decoded = decode_event(entry.log.topics, entry.log.data)
        if decoded is not None:
            events.append(
                EventPublic(name=decoded.name, log_index=entry.log_index, args=dict(decoded.args))
            )
    return TransactionPublic(
        tx_hash=_hex(tx_hash),
        status="committed" if receipt.status == 1 else "reverted",
        block_height=record.block_height,
        block_hash=_hex(record.block_hash),
        index=receipt.tx_index,
        sender=_hex(receipt.sender),
        to=_hex(receipt.to) if receipt.to is not None else None,
        gas_used=receipt.gas_used,
        events=events,
    )


def _parse_hash(text: str) -> Hash32:
    body = text[2:] if text[:2] in ("0x", "0X") else text
    if len(body) != 64:
        raise InvalidInput(f"transaction hash must be 32 bytes of hex, got {text[:80]!r}")
    try:
        return Hash32(bytes.fromhex(body))
    except ValueError:
        raise InvalidInput(f"transaction hash is not hex: {text[:80]!r}") from None


@router.post(
    "/transactions",
    response_model=TransactionPublic,
    responses={202: {"model": TransactionPublic, "description": "Admitted, pending"}, **_ERRORS},
    openapi_extra=json_body_schema(TransactionCreate),
    summary="Submit a signed raw transaction",
)
async def submit_transaction(
    request: Request,
    context: Context,
    _member: CurrentMember,
    body: Annotated[TransactionCreate, Depends(json_body(TransactionCreate))],
    wait: Annotated[bool, Query(description="Wait for the receipt.")] = False,
    timeout: Annotated[float, Query(ge=0, le=600, description="Seconds to wait at most.")] = 30,
    preflight_checks: Annotated[
        bool, Query(alias="preflight", description="Check against the head before admitting.")
    ] = True,
) -> Response:
    """Check, admit to the mempool (gossiped to every miner), optionally wait."""
    if context.upstream is not None:  # standalone: the miner checks and admits it
        relayed: Response = await context.upstream.relay_json(
            request, "/v1/transactions", body.model_dump_json().encode()
        )
        return relayed
    return await run_in_threadpool(
        _submit, context, body, wait=wait, timeout=timeout, preflight_checks=preflight_checks
    )


def _submit(
    context: RegistryContext,
    body: TransactionCreate,
    *,
    wait: bool,
    timeout: float,
    preflight_checks: bool,
) -> JSONResponse:
    text = body.raw[2:] if body.raw[:2] in ("0x", "0X") else body.raw
    raw = bytes.fromhex(text)
    tx = decode_transaction(raw, context.view.chain_id)
    if preflight_checks:
        preflight(context, tx)
    tx_hash = bytes(context.view.submit_transaction(raw))
    record = context.view.receipt(Hash32(tx_hash))
    if wait:
        deadline = time.monotonic() + min(timeout, context.max_wait_seconds)
        while record is None and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
            record = context.view.receipt(Hash32(tx_hash))
    public = _public(tx_hash, record)
    return JSONResponse(public.model_dump(mode="json"), status_code=202 if record is None else 200)


@router.get(
    "/transactions/{tx_hash}",
    response_model=TransactionPublic,
    responses=_ERRORS,
    summary="A committed transaction's receipt and decoded registry events",
)
def get_transaction(
    tx_hash: Annotated[str, Path(description="0x + 64 hex")],
    context: Context,
    _member: CurrentMember,
) -> TransactionPublic:
    """404 until the transaction is committed."""
    parsed = _parse_hash(tx_hash)
    record = context.view.receipt(parsed)
    if record is None:
        raise NotFound(f"transaction {_hex(parsed)} is not committed (unknown or pending)")
    return _public(bytes(parsed), record)


@router.get("/chain", response_model=ChainPublic, responses=_ERRORS, summary="Chain id and head")
def get_chain(context: Context, _member: CurrentMember) -> ChainPublic:
    """What a client needs to sign transactions for this network."""
    head = context.view.head()
    return ChainPublic(
        chain_id=context.view.chain_id,
        height=head.height,
        head_hash=_hex(head.hash()),
        registry_address=_hex(REGISTRY_ADDRESS_BYTES),
    )


@router.get(
    "/accounts/{address}",
    response_model=AccountPublic,
    responses=_ERRORS,
    summary="An account's next nonce and roles",
)
def get_account(
    address: Annotated[str, Path(description="0x + 40 hex")],
    context: Context,
    _member: CurrentMember,
) -> AccountPublic:
    """The nonce counts transactions still in the mempool."""
    body = address[2:] if address[:2] in ("0x", "0X") else ""
    if len(body) != 40:
        raise InvalidInput(f"address must be 0x + 40 hex digits, got {address[:80]!r}")
    try:
        raw = Address(bytes.fromhex(body))
    except ValueError:
        raise InvalidInput(f"address is not hex: {address[:80]!r}") from None
    bits = context.view.roles_of(raw)
    roles = [role.name for role in Role if bits & role and role.name is not None]
    return AccountPublic(
        address=_hex(raw), nonce=context.view.next_nonce(raw), roles=roles, role_bits=bits
    )
