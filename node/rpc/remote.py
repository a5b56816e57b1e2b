"""A :class:`~node.rpc.backend.NodeView` over a remote miner's JSON-RPC.

What it is for: serving the registry REST API from a process that is not a miner
(``twinchain registry serve --miner URL``). Every read becomes one ``eth_*``/``twin_*``
request to the miner, and the answers are decoded back into the node's own types, so the
code above a view cannot tell a remote miner from a local one.

Theory of operation
-------------------
- **Credentials are the caller's.** A remote view holds no key and no token secret of its
  own. Each request carries the bearer token found in :data:`current_token` (a context
  variable the serving app sets per HTTP request from the client's ``Authorization``
  header), so the miner authenticates and authorises every read exactly as if the client
  had asked it directly. Public methods (``eth_chainId``, ``twin_authChallenge``...)
  need none.
- **Errors come back as the node's errors.** The JSON-RPC error of a method maps back to
  the :mod:`node.errors` class the miner raised (the inverse of
  :func:`node.rpc.errors.from_exception`): -32001 to :class:`Unauthorized` /
  :class:`Forbidden` with the miner's reason, code 3 to :class:`ExecutionReverted` with
  the revert data, ``not found: ...`` to :class:`NotFound`, a refused raw transaction to
  :class:`InvalidTransaction`. A miner that cannot be reached (connection refused,
  connect timeout) is :class:`MinerUnavailable` (HTTP 503 in the API); a miner that
  answers garbage, a 5xx or an internal error, or breaks a connection mid-answer, is
  :class:`MinerFailed` (HTTP 502).
- **Headers are checked.** A header is rebuilt from ``eth_getBlockByNumber`` (which
  carries TwinChain's ``epoch`` and ``validatorSetHash``) and its hash recomputed; an
  answer whose fields do not hash to the block hash it claims is :class:`MinerFailed`.
- **Reads at a block are by number.** Committed blocks are final (BFT), so a height names
  one block for good; state reads at a header ask for that height.

Not available remotely (they raise :class:`NotImplementedError`): whole blocks with their
seals, raw transactions, the consensus status snapshot, validator sets and evidence —
nothing the registry API needs. Ask the miner directly for those.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, Final

import httpx

from node.chain.block import Block, Header
from node.chain.executor import ExecutionReverted
from node.chain.receipt import BlockLog, Log, Receipt
from node.chain.store import ReceiptRecord, TopicFilter
from node.chain.types import Address, Hash32
from node.consensus.engine import EngineStatus
from node.consensus.evidence import EquivocationEvidence
from node.consensus.types import ValidatorSet
from node.errors import (
    Forbidden,
    InvalidInput,
    InvalidTransaction,
    NotFound,
    TwinChainError,
    Unauthorized,
)
from node.rpc import wire
from node.rpc.backend import SyncProgress
from node.rpc.errors import (
    EXECUTION_REVERTED,
    INVALID_PARAMS,
    LIMIT_EXCEEDED,
    SERVER_ERROR,
    UNAUTHORIZED,
)

__all__ = [
    "MinerFailed",
    "MinerUnavailable",
    "RemoteNodeView",
    "RpcClient",
    "current_token",
    "token_claims",
]

#: The bearer token of the request being served (set per HTTP request by the caller).
current_token: ContextVar[str | None] = ContextVar("twinchain_remote_token", default=None)

#: Largest JSON-RPC answer accepted from the miner.
MAX_REPLY_BYTES: Final = 64 * 2**20


class MinerUnavailable(TwinChainError):
    """The remote miner cannot be reached (HTTP 503 in the API)."""

    caller_fault = False


class MinerFailed(TwinChainError):
    """The remote miner answered with an error of its own or an unusable answer (HTTP 502)."""

    caller_fault = False


def token_claims(token: str) -> dict[str, Any]:
    """The JSON claims inside a ``tc1.<payload>.<mac>`` token, *not* authenticated.

    Only meaningful once the token's issuer (the miner) accepted the token; raises
    :class:`Unauthorized` "malformed token" if it cannot be decoded.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthorized("malformed token")
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, RecursionError):
        raise Unauthorized("malformed token") from None
    if not isinstance(claims, dict):
        raise Unauthorized("malformed token")
    return claims


def _strip(message: str, prefix: str) -> str:
    return message[len(prefix) :] if message.startswith(prefix) else message


def _error(method: str, error: Any, http_status: int, url: str) -> TwinChainError:
    """The node error a JSON-RPC error object stands for."""
    if not isinstance(error, dict):
        return MinerFailed(f"the miner at {url} answered {method} with a malformed error")
    code, message, data = error.get("code"), str(error.get("message", "")), error.get("data")
    if code == UNAUTHORIZED:
        if http_status == 403 or message.startswith("forbidden: "):
            return Forbidden(_strip(message, "forbidden: "))
        return Unauthorized(_strip(message, "unauthorized: "))
    if code == EXECUTION_REVERTED:
        output = b""
        if isinstance(data, str) and data.startswith("0x"):
            try:
                output = bytes.fromhex(data[2:])
            except ValueError:
                output = b""
        return ExecutionReverted(message, output)
    if code == INVALID_PARAMS:
        return InvalidInput(_strip(message, "invalid params: "))
    if code == LIMIT_EXCEEDED:
        return InvalidInput(message)
    if code == SERVER_ERROR:
        if message.startswith("not found: "):
            return NotFound(_strip(message, "not found: "))
        if message.startswith("execution reverted") or message.startswith("out of gas"):
            return ExecutionReverted(message)
        if method == "eth_sendRawTransaction":
            return InvalidTransaction(message)
    return MinerFailed(f"the miner at {url} failed on {method}: {message}")


class RpcClient:
    """A synchronous JSON-RPC client for one miner (thread-safe; pooled connections).

    ``token`` returns the bearer token to send (default: :data:`current_token`).
    """

    def __init__(
        self,
        url: str,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 30.0,
        token: Callable[[], str | None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self._token = token if token is not None else current_token.get
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            verify=verify,
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._ids = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def call(
        self,
        method: str,
        params: Sequence[Any] = (),
        *,
        public: bool = False,
        bearer: str | None = None,
    ) -> Any:
        """Run ``method`` on the miner and return its ``result``; raise its error.

        ``public`` sends no token (for the methods the miner serves to anyone);
        ``bearer`` sends that token instead of the current one.
        """
        with self._lock:
            self._ids += 1
            request_id = self._ids
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        headers = {"Content-Type": "application/json"}
        token = None if public else (bearer if bearer is not None else self._token())
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._http.post(self.url, content=json.dumps(body), headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise MinerUnavailable(f"the miner at {self.url} is unreachable: {exc}") from exc
        except httpx.HTTPError as exc:
            raise MinerFailed(f"the miner at {self.url} broke off {method}: {exc!r}") from exc
        if response.status_code >= 500 or len(response.content) > MAX_REPLY_BYTES:
            raise MinerFailed(
                f"the miner at {self.url} answered {method} with HTTP {response.status_code}"
            )
        try:
            reply = wire.load(response.content)
        except (ValueError, RecursionError):
            raise MinerFailed(
                f"the miner at {self.url} answered {method} with HTTP {response.status_code} "
                "and no JSON-RPC body"
            ) from None
        if not isinstance(reply, dict):
            raise MinerFailed(f"the miner at {self.url} answered {method} with a batch")
        if "error" in reply:
            raise _error(method, reply["error"], response.status_code, self.url)
        if "result" not in reply:
            raise MinerFailed(f"the miner at {self.url} answered {method} without a result")
        return reply["result"]


# ---------------------------------------------------------------- decoding answers


def _b(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise MinerFailed(f"miner answer: {what} is not 0x-hex: {value!r:.80}")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError:
        raise MinerFailed(f"miner answer: {what} is not hex: {value!r:.80}") from None
    if size is not None and len(data) != size:
        raise MinerFailed(f"miner answer: {what} is {len(data)} bytes, expected {size}")
    return data


def _q(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise MinerFailed(f"miner answer: {what} is not a quantity: {value!r:.80}")
    try:
        return int(value, 16)
    except ValueError:
        raise MinerFailed(f"miner answer: {what} is not a quantity: {value!r:.80}") from None


def _field(obj: Any, name: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise MinerFailed(f"miner answer: missing {name!r}")
    return obj[name]


def _hex(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def _log(entry: Any) -> BlockLog:
    return BlockLog(
        block_height=_q(_field(entry, "blockNumber"), "log.blockNumber"),
        block_hash=Hash32(_b(_field(entry, "blockHash"), "log.blockHash", 32)),
        tx_hash=Hash32(_b(_field(entry, "transactionHash"), "log.transactionHash", 32)),
        tx_index=_q(_field(entry, "transactionIndex"), "log.transactionIndex"),
        log_index=_q(_field(entry, "logIndex"), "log.logIndex"),
        log=Log(
            address=Address(_b(_field(entry, "address"), "log.address", 20)),
            topics=tuple(Hash32(_b(t, "log.topic", 32)) for t in _field(entry, "topics")),
            data=_b(_field(entry, "data"), "log.data"),
        ),
    )


def _optional_address(value: Any, what: str) -> Address | None:
    return None if value is None else Address(_b(value, what, 20))


def _receipt(obj: Any) -> ReceiptRecord:
    logs = [_log(entry) for entry in _field(obj, "logs")]
    receipt = Receipt(
        tx_hash=Hash32(_b(_field(obj, "transactionHash"), "transactionHash", 32)),
        tx_index=_q(_field(obj, "transactionIndex"), "transactionIndex"),
        tx_type=_q(_field(obj, "type"), "type"),
        sender=Address(_b(_field(obj, "from"), "from", 20)),
        to=_optional_address(_field(obj, "to"), "to"),
        contract_address=_optional_address(_field(obj, "contractAddress"), "contractAddress"),
        status=_q(_field(obj, "status"), "status"),
        gas_used=_q(_field(obj, "gasUsed"), "gasUsed"),
        cumulative_gas_used=_q(_field(obj, "cumulativeGasUsed"), "cumulativeGasUsed"),
        effective_gas_price=_q(_field(obj, "effectiveGasPrice"), "effectiveGasPrice"),
        logs=tuple(entry.log for entry in logs),
    )
    return ReceiptRecord(
        block_height=_q(_field(obj, "blockNumber"), "blockNumber"),
        block_hash=Hash32(_b(_field(obj, "blockHash"), "blockHash", 32)),
        receipt=receipt,
        first_log_index=logs[0].log_index if logs else 0,
    )


def _topics_param(topics: Sequence[TopicFilter] | None) -> list[Any]:
    out: list[Any] = []
    for topic in topics or ():
        if topic is None:
            out.append(None)
        elif isinstance(topic, bytes):
            out.append(_hex(topic))
        else:
            out.append([_hex(t) for t in topic])
    return out


class RemoteNodeView:
    """The :class:`~node.rpc.backend.NodeView` of a miner reached over JSON-RPC.

    Thread-safe. See the module docstring for credentials, errors and what is missing.
    """

    def __init__(self, rpc: RpcClient) -> None:
        self.rpc = rpc
        self._chain_id: int | None = None
        self._client_version: str | None = None

    # ------------------------------------------------------------ identity

    @property
    def chain_id(self) -> int:
        """EIP-155 chain id (asked once, ``eth_chainId``)."""
        if self._chain_id is None:
            self._chain_id = _q(self.rpc.call("eth_chainId", public=True), "chainId")
        return self._chain_id

    @property
    def client_version(self) -> str:
        """The miner's ``web3_clientVersion``."""
        if self._client_version is None:
            self._client_version = str(self.rpc.call("web3_clientVersion", public=True))
        return self._client_version

    # ------------------------------------------------------------ blocks and transactions

    def _header(self, obj: Any) -> Header:
        header = Header(
            chain_id=self.chain_id,
            parent_hash=Hash32(_b(_field(obj, "parentHash"), "parentHash", 32)),
            height=_q(_field(obj, "number"), "number"),
            timestamp=_q(_field(obj, "timestamp"), "timestamp"),
            proposer=Address(_b(_field(obj, "miner"), "miner", 20)),
            epoch=_q(_field(obj, "epoch"), "epoch"),
            validator_set_hash=Hash32(_b(_field(obj, "validatorSetHash"), "validatorSetHash", 32)),
            state_root=Hash32(_b(_field(obj, "stateRoot"), "stateRoot", 32)),
            transactions_root=Hash32(_b(_field(obj, "transactionsRoot"), "transactionsRoot", 32)),
            receipts_root=Hash32(_b(_field(obj, "receiptsRoot"), "receiptsRoot", 32)),
            logs_bloom=_b(_field(obj, "logsBloom"), "logsBloom", 256),
            gas_used=_q(_field(obj, "gasUsed"), "gasUsed"),
            gas_limit=_q(_field(obj, "gasLimit"), "gasLimit"),
        )
        claimed = _b(_field(obj, "hash"), "hash", 32)
        if bytes(header.hash()) != claimed:
            raise MinerFailed(
                f"the miner at {self.rpc.url} sent block {header.height} whose fields do not "
                f"hash to the hash it claims ({_hex(claimed)})"
            )
        return header

    def _block_json(self, ref: str) -> Any:
        return self.rpc.call("eth_getBlockByNumber", [ref, False])

    def head(self) -> Header:
        """Header of the miner's last committed block."""
        obj = self._block_json("latest")
        if obj is None:
            raise MinerFailed(f"the miner at {self.rpc.url} has no head block")
        return self._header(obj)

    def header_by_number(self, height: int) -> Header | None:
        """Committed header at ``height``, or None."""
        obj = self._block_json(hex(height))
        return None if obj is None else self._header(obj)

    def block_by_number(self, height: int) -> Block | None:
        """Not available remotely."""
        raise NotImplementedError("whole blocks are not available through a remote view")

    def block_by_hash(self, block_hash: Hash32) -> Block | None:
        """Not available remotely."""
        raise NotImplementedError("whole blocks are not available through a remote view")

    def tx_location(self, tx_hash: Hash32) -> tuple[int, int] | None:
        """``(height, index)`` of a committed transaction, or None."""
        obj = self.rpc.call("eth_getTransactionByHash", [_hex(tx_hash)])
        if obj is None or obj.get("blockNumber") is None:
            return None
        return _q(obj["blockNumber"], "blockNumber"), _q(
            _field(obj, "transactionIndex"), "transactionIndex"
        )

    def raw_transaction(self, tx_hash: Hash32) -> bytes | None:
        """Not available remotely."""
        raise NotImplementedError("raw transactions are not available through a remote view")

    def receipt(self, tx_hash: Hash32) -> ReceiptRecord | None:
        """Receipt of a committed transaction, or None."""
        obj = self.rpc.call("eth_getTransactionReceipt", [_hex(tx_hash)])
        return None if obj is None else _receipt(obj)

    def receipts(self, height: int) -> Sequence[Receipt]:
        """Receipts of the committed block at ``height`` in transaction order."""
        obj = self._block_json(hex(height))
        if obj is None:
            return []
        out = []
        for tx_hash in _field(obj, "transactions"):
            record = self.receipt(Hash32(_b(tx_hash, "transaction hash", 32)))
            if record is None:
                raise MinerFailed(f"the miner at {self.rpc.url} lost a receipt of block {height}")
            out.append(record.receipt)
        return out

    def logs(
        self,
        from_height: int,
        to_height: int,
        address: Sequence[Address] | None,
        topics: Sequence[TopicFilter] | None,
        *,
        limit: int,
    ) -> Sequence[BlockLog]:
        """``eth_getLogs``; InvalidInput when more than ``limit`` match."""
        flt: dict[str, Any] = {"fromBlock": hex(from_height), "toBlock": hex(to_height)}
        if address:
            flt["address"] = [_hex(a) for a in address]
        if topics:
            flt["topics"] = _topics_param(topics)
        entries = [_log(e) for e in self.rpc.call("eth_getLogs", [flt])]
        if len(entries) > limit:
            raise InvalidInput(f"more than {limit} logs match")
        return entries

    # ------------------------------------------------------------ state

    def call(
        self,
        to: Address | None,
        data: bytes,
        sender: Address,
        *,
        value: int,
        gas: int | None,
        at: Header,
    ) -> bytes:
        """``eth_call`` at block ``at``: return data, or ExecutionReverted."""
        request: dict[str, Any] = {"from": _hex(sender), "data": _hex(data), "value": hex(value)}
        if to is not None:
            request["to"] = _hex(to)
        if gas is not None:
            request["gas"] = hex(gas)
        return _b(self.rpc.call("eth_call", [request, hex(at.height)]), "call result")

    def estimate_gas(
        self, to: Address | None, data: bytes, sender: Address, *, value: int, at: Header
    ) -> int:
        """``eth_estimateGas`` at block ``at``."""
        request: dict[str, Any] = {"from": _hex(sender), "data": _hex(data), "value": hex(value)}
        if to is not None:
            request["to"] = _hex(to)
        return _q(self.rpc.call("eth_estimateGas", [request, hex(at.height)]), "gas")

    def nonce_of(self, address: Address, at: Header) -> int:
        """Account nonce in the state of block ``at``."""
        return _q(
            self.rpc.call("eth_getTransactionCount", [_hex(address), hex(at.height)]), "nonce"
        )

    def next_nonce(self, address: Address) -> int:
        """Nonce of the account's next transaction (mempool included)."""
        return _q(self.rpc.call("eth_getTransactionCount", [_hex(address), "pending"]), "nonce")

    def balance_of(self, address: Address, at: Header) -> int:
        """Balance in wei at block ``at``."""
        return _q(self.rpc.call("eth_getBalance", [_hex(address), hex(at.height)]), "balance")

    def code_of(self, address: Address, at: Header) -> bytes:
        """Runtime code at block ``at``."""
        return _b(self.rpc.call("eth_getCode", [_hex(address), hex(at.height)]), "code")

    def storage_at(self, address: Address, slot: int, at: Header) -> int:
        """One storage slot at block ``at``."""
        value = self.rpc.call("eth_getStorageAt", [_hex(address), hex(slot), hex(at.height)])
        return int.from_bytes(_b(value, "storage"), "big")

    def roles_of(self, address: Address, at: Header | None = None) -> int:
        """Role bits of ``address`` (``twin_rolesOf``; the head by default)."""
        block = "latest" if at is None else hex(at.height)
        reply = self.rpc.call("twin_rolesOf", [_hex(address), block])
        return _q(_field(reply, "roles"), "roles")

    # ------------------------------------------------------------ submitting

    def submit_transaction(self, raw: bytes) -> Hash32:
        """``eth_sendRawTransaction``; InvalidTransaction with the miner's reason."""
        return Hash32(_b(self.rpc.call("eth_sendRawTransaction", [_hex(raw)]), "tx hash", 32))

    # ------------------------------------------------------------ consensus

    def consensus_status(self) -> EngineStatus:
        """Not available remotely (ask the miner's ``twin_consensusStatus``)."""
        raise NotImplementedError("the consensus status is not available through a remote view")

    def validator_set(self, epoch: int) -> ValidatorSet | None:
        """Not available remotely (ask the miner's ``twin_getValidatorSet``)."""
        raise NotImplementedError("validator sets are not available through a remote view")

    def evidence(self) -> Sequence[EquivocationEvidence]:
        """Not available remotely (ask the miner's ``twin_getEvidence``)."""
        raise NotImplementedError("evidence is not available through a remote view")

    def sync_progress(self) -> SyncProgress | None:
        """``eth_syncing``."""
        reply = self.rpc.call("eth_syncing")
        if not reply:
            return None
        return SyncProgress(
            starting_block=_q(_field(reply, "startingBlock"), "startingBlock"),
            current_block=_q(_field(reply, "currentBlock"), "currentBlock"),
            highest_block=_q(_field(reply, "highestBlock"), "highestBlock"),
        )

    def peer_count(self) -> int:
        """``net_peerCount``."""
        return _q(self.rpc.call("net_peerCount"), "peerCount")
