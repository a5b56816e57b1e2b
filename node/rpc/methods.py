"""The JSON-RPC methods: one small handler per method over a :class:`NodeView`.

A handler takes the request context and the positional ``params`` list, parses them
with :mod:`node.rpc.params` and returns a JSON-ready value (encoded by
:mod:`node.rpc.results`). :data:`METHODS` maps each name to its handler and says whether
it needs a bearer token: every method does except the handful a client needs before it
can authenticate, and ``eth_sendRawTransaction``, which is authorised by the
transaction's own signature and its sender's roles (checked by the mempool).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from node.auth import AuthService, Principal
from node.chain.block import Header
from node.chain.executor import ExecutionReverted
from node.chain.types import ZERO_ADDRESS, Address
from node.errors import InvalidInput
from node.rpc import params as p
from node.rpc import results as r
from node.rpc.backend import NodeView
from node.rpc.errors import LIMIT_EXCEEDED, SERVER_ERROR, RpcError, invalid_params

__all__ = ["METHODS", "PUBLIC_METHODS", "Method", "RpcContext", "RpcLimits"]


@dataclass(frozen=True)
class RpcLimits:
    """Bounds on what one request may ask for."""

    max_body_bytes: int = 5 * 1024 * 1024
    max_batch: int = 100
    max_log_blocks: int = 10_000  # eth_getLogs block range
    max_logs: int = 10_000  # eth_getLogs results
    max_fee_history_blocks: int = 1024


@dataclass
class RpcContext:
    """What a handler may use: the node, the auth service, limits, the caller."""

    view: NodeView
    auth: AuthService
    limits: RpcLimits
    principal: Principal | None = None


Handler = Callable[[RpcContext, list[Any]], Any]


@dataclass(frozen=True)
class Method:
    """A handler and whether it needs a bearer token."""

    handler: Handler
    public: bool = False


# ---------------------------------------------------------------- helpers


def _header(view: NodeView, ref: p.BlockRef) -> Header:
    """The header a state read refers to; -32000 "header not found" if absent."""
    header = _find_header(view, ref)
    if header is None:
        raise RpcError(SERVER_ERROR, "header not found")
    return header


def _find_header(view: NodeView, ref: p.BlockRef) -> Header | None:
    if ref.hash is not None:
        block = view.block_by_hash(ref.hash)
        return None if block is None else block.header
    return view.header_by_number(_height(view, ref))


def _height(view: NodeView, ref: p.BlockRef) -> int:
    """Height named by a tag or number (every tag but ``earliest`` is the committed
    head: the store holds only final blocks)."""
    if ref.number is not None:
        return ref.number
    if ref.tag == "earliest":
        return 0
    return view.head().height


def _number_only(value: object, name: str) -> p.BlockRef:
    ref = p.block_ref(value, name)
    if ref.hash is not None:
        raise invalid_params(f"{name}: expected a block number or tag, not a hash")
    return ref


def _full(params: list[Any]) -> bool:
    raw = p.param(params, 1, "fullTransactions", required=False)
    return False if raw is None else p.boolean(raw, "fullTransactions")


def _sender(request: p.CallRequest) -> Address:
    return request.sender if request.sender is not None else ZERO_ADDRESS


# ---------------------------------------------------------------- web3 / net


def web3_client_version(ctx: RpcContext, params: list[Any]) -> Any:
    """``web3_clientVersion``."""
    p.check_arity(params, 0)
    return ctx.view.client_version


def net_version(ctx: RpcContext, params: list[Any]) -> Any:
    """``net_version``: the chain id in decimal (there is one network per chain)."""
    p.check_arity(params, 0)
    return str(ctx.view.chain_id)


def net_peer_count(ctx: RpcContext, params: list[Any]) -> Any:
    """``net_peerCount``."""
    p.check_arity(params, 0)
    return r.hexq(ctx.view.peer_count())


# ---------------------------------------------------------------- eth: chain


def eth_chain_id(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_chainId``."""
    p.check_arity(params, 0)
    return r.hexq(ctx.view.chain_id)


def eth_block_number(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_blockNumber``: the committed head."""
    p.check_arity(params, 0)
    return r.hexq(ctx.view.head().height)


def eth_syncing(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_syncing``: false, or catch-up progress."""
    p.check_arity(params, 0)
    progress = ctx.view.sync_progress()
    if progress is None:
        return False
    return {
        "startingBlock": r.hexq(progress.starting_block),
        "currentBlock": r.hexq(progress.current_block),
        "highestBlock": r.hexq(progress.highest_block),
    }


def eth_gas_price(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_gasPrice``: 0 (base fee 0, permissioned network)."""
    p.check_arity(params, 0)
    return "0x0"


def eth_max_priority_fee_per_gas(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_maxPriorityFeePerGas``: 0."""
    p.check_arity(params, 0)
    return "0x0"


def eth_fee_history(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_feeHistory(blockCount, newestBlock, rewardPercentiles?)``."""
    p.check_arity(params, 3)
    count = p.quantity(p.param(params, 0, "blockCount"), "blockCount", maximum=p.MAX_HEIGHT)
    newest_ref = _number_only(p.param(params, 1, "newestBlock"), "newestBlock")
    raw_percentiles = p.param(params, 2, "rewardPercentiles", required=False)
    percentiles = _percentiles(raw_percentiles)
    count = min(count, ctx.limits.max_fee_history_blocks)
    head = ctx.view.head().height
    newest = _height(ctx.view, newest_ref)
    if newest > head:
        raise RpcError(SERVER_ERROR, f"request beyond head block: requested {newest}, head {head}")
    if count == 0:
        return {"oldestBlock": "0x0", "baseFeePerGas": [], "gasUsedRatio": []}
    oldest = max(0, newest - count + 1)
    ratios: list[float] = []
    rewards: list[list[str]] = []
    for height in range(oldest, newest + 1):
        header = ctx.view.header_by_number(height)
        if header is None:
            raise RpcError(SERVER_ERROR, f"header not found: block {height}")
        ratios.append(header.gas_used / header.gas_limit if header.gas_limit else 0.0)
        if percentiles is not None:
            receipts = ctx.view.receipts(height)
            rewards.append(r.fee_rewards(receipts, header.gas_used, percentiles))
    result: dict[str, Any] = {
        "oldestBlock": r.hexq(oldest),
        "baseFeePerGas": ["0x0"] * (len(ratios) + 1),
        "gasUsedRatio": ratios,
    }
    if percentiles is not None:
        result["reward"] = rewards
    return result


def _percentiles(value: object) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise invalid_params("rewardPercentiles: expected a list of at most 100 numbers")
    out: list[float] = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise invalid_params(f"rewardPercentiles[{i}]: expected a number")
        if not 0 <= item <= 100 or (out and item < out[-1]):
            raise invalid_params(f"rewardPercentiles[{i}]: must be in 0..100, non-decreasing")
        out.append(float(item))
    return out


# ---------------------------------------------------------------- eth: blocks and txs


def eth_get_block_by_number(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getBlockByNumber(block, fullTransactions)``; null when absent."""
    p.check_arity(params, 2)
    ref = _number_only(p.param(params, 0, "block"), "block")
    full = _full(params)
    block = ctx.view.block_by_number(_height(ctx.view, ref))
    return None if block is None else r.block_json(block, full=full, chain_id=ctx.view.chain_id)


def eth_get_block_by_hash(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getBlockByHash(hash, fullTransactions)``; null when absent."""
    p.check_arity(params, 2)
    block_hash = p.hash32(p.param(params, 0, "blockHash"), "blockHash")
    full = _full(params)
    block = ctx.view.block_by_hash(block_hash)
    return None if block is None else r.block_json(block, full=full, chain_id=ctx.view.chain_id)


def eth_get_transaction_by_hash(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getTransactionByHash``: committed transactions only; null otherwise."""
    p.check_arity(params, 1)
    tx_hash = p.hash32(p.param(params, 0, "hash"), "hash")
    location = ctx.view.tx_location(tx_hash)
    raw = ctx.view.raw_transaction(tx_hash)
    if location is None or raw is None:
        return None
    header = ctx.view.header_by_number(location[0])
    if header is None:
        return None
    return r.transaction_json(raw, ctx.view.chain_id, header, location[1])


def eth_get_transaction_receipt(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getTransactionReceipt``; null until the transaction is committed."""
    p.check_arity(params, 1)
    record = ctx.view.receipt(p.hash32(p.param(params, 0, "hash"), "hash"))
    return None if record is None else r.receipt_json(record)


def eth_send_raw_transaction(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_sendRawTransaction``: admitted to the mempool, or -32000 with the reason."""
    p.check_arity(params, 1)
    raw = p.data(p.param(params, 0, "transaction"), "transaction")
    return r.tx_hash_json(ctx.view.submit_transaction(raw))


def eth_get_logs(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getLogs(filter)`` over committed blocks."""
    p.check_arity(params, 1)
    flt = p.log_filter(p.param(params, 0, "filter"))
    if flt.block_hash is not None:
        block = ctx.view.block_by_hash(flt.block_hash)
        if block is None:
            raise RpcError(SERVER_ERROR, "unknown block")
        low = high = block.height
    else:
        head = ctx.view.head().height
        low = min(_height(ctx.view, flt.from_block), head + 1)
        high = min(_height(ctx.view, flt.to_block), head)
        if flt.from_block.number is not None and flt.to_block.number is not None and low > high:
            raise invalid_params("fromBlock is after toBlock")
        if low > high:
            return []
        if high - low + 1 > ctx.limits.max_log_blocks:
            raise RpcError(
                LIMIT_EXCEEDED,
                f"block range {high - low + 1} exceeds the limit of {ctx.limits.max_log_blocks}",
            )
    try:
        logs = ctx.view.logs(low, high, flt.addresses, flt.topics, limit=ctx.limits.max_logs)
    except InvalidInput as exc:  # the store's only refusal left: too many results
        raise RpcError(LIMIT_EXCEEDED, str(exc)) from exc
    return [r.log_json(entry) for entry in logs]


# ---------------------------------------------------------------- eth: state


def eth_get_transaction_count(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getTransactionCount(address, block)``; ``pending`` counts the mempool."""
    p.check_arity(params, 2)
    account = p.address(p.param(params, 0, "address"), "address")
    ref = p.block_ref(p.param(params, 1, "block", required=False), default="latest")
    if ref.tag == "pending":
        return r.hexq(ctx.view.next_nonce(account))
    return r.hexq(ctx.view.nonce_of(account, _header(ctx.view, ref)))


def eth_get_balance(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getBalance(address, block)``."""
    p.check_arity(params, 2)
    account = p.address(p.param(params, 0, "address"), "address")
    ref = p.block_ref(p.param(params, 1, "block", required=False), default="latest")
    return r.hexq(ctx.view.balance_of(account, _header(ctx.view, ref)))


def eth_get_code(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getCode(address, block)``."""
    p.check_arity(params, 2)
    account = p.address(p.param(params, 0, "address"), "address")
    ref = p.block_ref(p.param(params, 1, "block", required=False), default="latest")
    return r.hexb(ctx.view.code_of(account, _header(ctx.view, ref)))


def eth_get_storage_at(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_getStorageAt(address, slot, block)``: a 32-byte word."""
    p.check_arity(params, 3)
    account = p.address(p.param(params, 0, "address"), "address")
    slot = p.storage_slot(p.param(params, 1, "slot"), "slot")
    ref = p.block_ref(p.param(params, 2, "block", required=False), default="latest")
    word = ctx.view.storage_at(account, slot, _header(ctx.view, ref))
    return r.hexb(word.to_bytes(32, "big"))


@contextmanager
def _not_executable() -> Iterator[None]:
    """A call the EVM refuses to start (value above the balance, gas above the block
    limit...) is an execution error (-32000, as geth), not malformed params."""
    try:
        yield
    except ExecutionReverted:
        raise
    except InvalidInput as exc:
        raise RpcError(SERVER_ERROR, str(exc)) from exc


def _state_overrides(params: list[Any]) -> None:
    if len(params) > 2 and params[2] not in (None, {}):
        raise invalid_params("state overrides are not supported")


def eth_call(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_call(transaction, block)``: return data, or code 3 with the revert data."""
    p.check_arity(params, 3)
    request = p.call_request(p.param(params, 0, "transaction"))
    ref = p.block_ref(p.param(params, 1, "block", required=False), default="latest")
    _state_overrides(params)
    at = _header(ctx.view, ref)
    with _not_executable():
        output = ctx.view.call(
            request.to, request.data, _sender(request), value=request.value, gas=request.gas, at=at
        )
    return r.hexb(output)


def eth_estimate_gas(ctx: RpcContext, params: list[Any]) -> Any:
    """``eth_estimateGas(transaction, block)``."""
    p.check_arity(params, 3)
    request = p.call_request(p.param(params, 0, "transaction"))
    ref = p.block_ref(p.param(params, 1, "block", required=False), default="latest")
    _state_overrides(params)
    at = _header(ctx.view, ref)
    with _not_executable():
        gas = ctx.view.estimate_gas(
            request.to, request.data, _sender(request), value=request.value, at=at
        )
    return r.hexq(gas)


# ---------------------------------------------------------------- twin_


def twin_auth_challenge(ctx: RpcContext, params: list[Any]) -> Any:
    """``twin_authChallenge(address)``: the text to sign (EIP-191) for a token."""
    p.check_arity(params, 1)
    account = p.address(p.param(params, 0, "address"), "address")
    message = ctx.auth.challenge(account)
    return {"message": message, "expiresIn": r.hexq(ctx.auth.challenge_ttl_seconds)}


def twin_auth_token(ctx: RpcContext, params: list[Any]) -> Any:
    """``twin_authToken(address, signature)``: a bearer token for a signed challenge."""
    p.check_arity(params, 2)
    account = p.address(p.param(params, 0, "address"), "address")
    signature = p.fixed_data(p.param(params, 1, "signature"), "signature", 65)
    token, expires_at = ctx.auth.token(account, signature)
    principal = ctx.auth.verify(token)
    return {
        "token": token,
        "expiresAt": r.hexq(expires_at),
        **r.roles_json(account, principal.roles),
    }


def twin_get_commit_certificate(ctx: RpcContext, params: list[Any]) -> Any:
    """``twin_getCommitCertificate(block)``: header RLP, seal and decoded certificate
    of a committed block (by number, tag or hash); null when absent."""
    p.check_arity(params, 1)
    ref = p.block_ref(p.param(params, 0, "block"))
    if ref.hash is not None:
        block = ctx.view.block_by_hash(ref.hash)
    else:
        block = ctx.view.block_by_number(_height(ctx.view, ref))
    return None if block is None else r.certificate_json(block)


def twin_get_validator_set(ctx: RpcContext, params: list[Any]) -> Any:
    """``twin_getValidatorSet(epoch?)``: the set of an epoch (default: the head's)."""
    p.check_arity(params, 1)
    raw = p.param(params, 0, "epoch", required=False)
    if raw is None or raw == "latest":
        epoch = ctx.view.head().epoch
    else:
        epoch = p.quantity(raw, "epoch", maximum=p.MAX_HEIGHT)
    validators = ctx.view.validator_set(epoch)
    return None if validators is None else r.validator_set_json(validators)


def twin_get_evidence(ctx: RpcContext, params: list[Any]) -> Any:
    """``twin_getEvidence(validator?)``: recorded equivocation evidence."""
    p.check_arity(params, 1)
    raw = p.param(params, 0, "validator", required=False)
    wanted = None if raw is None else p.address(raw, "validator")
    return [
        r.evidence_json(e)
        for e in ctx.view.evidence()
        if wanted is None or bytes(e.validator) == bytes(wanted)
    ]


def twin_consensus_status(ctx: RpcContext, params: list[Any]) -> Any:
    """``twin_consensusStatus``: the engine's status snapshot."""
    p.check_arity(params, 0)
    return r.status_json(ctx.view.consensus_status())


def twin_roles_of(ctx: RpcContext, params: list[Any]) -> Any:
    """``twin_rolesOf(address, block?)``: role bits and names."""
    p.check_arity(params, 2)
    account = p.address(p.param(params, 0, "address"), "address")
    ref = p.block_ref(p.param(params, 1, "block", required=False), default="latest")
    return r.roles_json(account, ctx.view.roles_of(account, _header(ctx.view, ref)))


METHODS: Final[dict[str, Method]] = {
    "web3_clientVersion": Method(web3_client_version, public=True),
    "net_version": Method(net_version, public=True),
    "net_peerCount": Method(net_peer_count),
    "eth_chainId": Method(eth_chain_id, public=True),
    "eth_blockNumber": Method(eth_block_number),
    "eth_syncing": Method(eth_syncing),
    "eth_gasPrice": Method(eth_gas_price),
    "eth_maxPriorityFeePerGas": Method(eth_max_priority_fee_per_gas),
    "eth_feeHistory": Method(eth_fee_history),
    "eth_getBlockByNumber": Method(eth_get_block_by_number),
    "eth_getBlockByHash": Method(eth_get_block_by_hash),
    "eth_getTransactionByHash": Method(eth_get_transaction_by_hash),
    "eth_getTransactionReceipt": Method(eth_get_transaction_receipt),
    "eth_sendRawTransaction": Method(eth_send_raw_transaction, public=True),
    "eth_getLogs": Method(eth_get_logs),
    "eth_getTransactionCount": Method(eth_get_transaction_count),
    "eth_getBalance": Method(eth_get_balance),
    "eth_getCode": Method(eth_get_code),
    "eth_getStorageAt": Method(eth_get_storage_at),
    "eth_call": Method(eth_call),
    "eth_estimateGas": Method(eth_estimate_gas),
    "twin_authChallenge": Method(twin_auth_challenge, public=True),
    "twin_authToken": Method(twin_auth_token, public=True),
    "twin_getCommitCertificate": Method(twin_get_commit_certificate),
    "twin_getValidatorSet": Method(twin_get_validator_set),
    "twin_getEvidence": Method(twin_get_evidence),
    "twin_consensusStatus": Method(twin_consensus_status),
    "twin_rolesOf": Method(twin_roles_of),
}

#: Methods callable without a bearer token.
PUBLIC_METHODS: Final = frozenset(name for name, m in METHODS.items() if m.public)
