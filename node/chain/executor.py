"""Block execution over py-evm: build a block, validate a received one, commit, read.

Theory of operation
-------------------
Executing a block means: open the EVM state at the parent's state root, apply the
transactions in order, persist the trie changes into an in-memory write set, and fill
the header with the resulting state root, transactions root, receipts root, bloom and
gas used. :meth:`Executor.build_block` does this for a proposer (skipping transactions
that cannot be included, reporting why); :meth:`Executor.validate_block` does it for a
received block and raises :class:`~node.errors.InvalidBlock` naming the first field
that disagrees. Both are deterministic: same parent state and same transactions give
the same header bytes in every process.

A result is *pending* until :meth:`Executor.commit` hands it to the store with its seal
(the commit certificate). Pending results stay readable, so a block can be built or
validated on top of any stored **or pending** parent — DPoS producers extend blocks
that are not final yet. Committing height ``h`` forgets every pending result at a
height ``<= h`` (they were committed or lost their fork).

Transactions are applied in one batch per block: py-evm's ``MiningChain.apply_
transaction`` rebuilds the block's tries after every transaction (17 tx/s at 300 per
block) and its ``VM.apply_all_transactions`` recomputes the state root after every one
(receipt fields only pre-Byzantium blocks need); here the state root is computed once,
after the last transaction.

A transaction that reverts is included with a status-0 receipt. A transaction that is
not *valid* (bad signature, wrong chain id, wrong nonce, unaffordable, over the block's
gas) makes a received block invalid, and is skipped when building.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, TypeGuard

from eth.abc import ComputationAPI, SignedTransactionAPI, StateAPI
from eth.constants import CREATE_CONTRACT_ADDRESS
from eth.exceptions import VMError
from eth.vm.interrupt import EVMMissingData
from eth.vm.spoof import SpoofTransaction
from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_hash.auto import keccak
from eth_utils.exceptions import ValidationError

from node.chain.block import BLOOM_BYTES, Block, Header, transactions_root
from node.chain.evm import ExecutionDB, TwinChainVM, open_state
from node.chain.receipt import STATUS_FAILURE, STATUS_SUCCESS, Log, Receipt, receipts_root
from node.chain.store import ChainStore
from node.chain.tx import MAX_TX_BYTES, SignedTx, decode_transaction
from node.chain.types import MEMBERSHIP_ADDRESS, ZERO_ADDRESS, Address, Hash32
from node.errors import InvalidBlock, InvalidInput, InvalidTransaction, NotFound, StorageError

__all__ = [
    "CallResult",
    "ExecutionResult",
    "ExecutionReverted",
    "Executor",
    "SealVerifier",
    "receipts_root",
    "transactions_root",
]

#: BLOCKHASH reaches this many ancestors back (the EVM rule).
_BLOCKHASH_DEPTH: Final = 256
#: Committed state nodes kept in memory (~100-500 bytes each).
_NODE_CACHE_ENTRIES: Final = 100_000
#: Selector and encoding of ``Error(string)`` revert data.
_ERROR_SELECTOR: Final = bytes.fromhex("08c379a0")
_ROLES_OF: Final = keccak(b"rolesOf(address)")[:4]

#: Checks a block's seal (commit certificate); raises InvalidBlock if it does not prove
#: the block. Injected by the node (the chain never interprets seals).
SealVerifier = Callable[[Block], None]


class ExecutionReverted(InvalidInput):
    """An ``eth_call``-style read or a gas estimate reverted (or ran out of gas)."""

    def __init__(self, message: str, output: bytes = b"") -> None:
        super().__init__(message)
        #: Raw revert data (ABI-encoded ``Error(string)`` or a custom error), if any.
        self.output = output


@dataclass(frozen=True)
class ExecutionResult:
    """A block with everything its execution produced, ready to commit."""

    block: Block
    receipts: tuple[Receipt, ...]
    state_writes: dict[bytes, bytes]
    #: Transactions left out while building: ``(tx hash or keccak(raw), reason)``.
    rejected: tuple[tuple[Hash32, str], ...] = ()

    @property
    def header(self) -> Header:
        """The executed block's header."""
        return self.block.header


#: Memoised read-only call results (see :meth:`Executor.simulate`).
_MEMO_ENTRIES: Final = 4096
_MEMO_MAX_OUTPUT: Final = 64 * 1024


@dataclass(frozen=True)
class CallResult:
    """Outcome of a read-only call."""

    success: bool
    output: bytes
    gas_used: int
    error: str | None


@dataclass
class _Outcome:
    """What applying a list of transactions produced (internal)."""

    included: list[SignedTx]
    receipts: list[Receipt]
    rejected: list[tuple[Hash32, str]]
    state_root: Hash32
    writes: dict[bytes, bytes]
    gas_used: int
    bloom: int


class Executor:
    """Executes blocks against a :class:`ChainStore` and keeps pending results.

    Not meant for concurrent block execution: the node drives it from one task.
    Reads (``call``, ``estimate_gas``, ``nonce_of``...) may come from other threads.
    """

    def __init__(
        self,
        store: ChainStore,
        *,
        verify_seal: SealVerifier | None = None,
        max_pending: int = 256,
    ) -> None:
        """``verify_seal`` defaults to accepting any seal (tests, single node)."""
        self.store = store
        self.chain_id = store.chain_id
        self.gas_limit = store.genesis_header.gas_limit
        self._verify_seal = verify_seal
        self._max_pending = max_pending
        self._pending: dict[Hash32, ExecutionResult] = {}
        self._pending_nodes: dict[bytes, bytes] = {}
        self._node_cache: dict[bytes, bytes] = {}
        self._lock = threading.RLock()
        self._calls: OrderedDict[tuple[object, ...], CallResult] = OrderedDict()
        self._calls_lock = threading.Lock()

    # ------------------------------------------------------------ building / validating

    def build_block(
        self,
        parent: Header,
        transactions: Iterable[bytes | SignedTx],
        *,
        timestamp: int,
        proposer: Address,
        epoch: int,
        validator_set_hash: Hash32,
    ) -> ExecutionResult:
        """Build an unsealed block on ``parent`` from transactions, in order.

        ``transactions`` are raw signed bytes, or already decoded :class:`SignedTx`
        (the mempool's, which skips decoding and sender recovery a second time).
        Transactions that cannot be included (malformed, bad nonce, over the remaining
        block gas...) are skipped and listed in ``rejected``; reverting ones are included.
        """
        self._require_known(parent)
        if timestamp < parent.timestamp:
            raise InvalidInput(f"timestamp {timestamp} is before the parent's {parent.timestamp}")
        if epoch < parent.epoch:
            raise InvalidInput(f"epoch {epoch} is before the parent's {parent.epoch}")
        decoded: list[SignedTx] = []
        rejected: list[tuple[Hash32, str]] = []
        for item in transactions:
            if _predecoded(item, self.chain_id):
                decoded.append(item)
                continue
            raw = item.raw if isinstance(item, SignedTx) else item
            try:
                decoded.append(decode_transaction(raw, self.chain_id))
            except InvalidTransaction as exc:
                rejected.append((Hash32(keccak(bytes(raw))), str(exc)))
        template = Header(
            chain_id=self.chain_id,
            parent_hash=parent.hash(),
            height=parent.height + 1,
            timestamp=timestamp,
            proposer=proposer,
            epoch=epoch,
            validator_set_hash=validator_set_hash,
            state_root=parent.state_root,  # placeholders, filled after execution
            transactions_root=parent.transactions_root,
            receipts_root=parent.receipts_root,
            logs_bloom=parent.logs_bloom,
            gas_used=0,
            gas_limit=self.gas_limit,
        )
        outcome = self._apply(parent, template, decoded, strict=False)
        header = template.replace(
            state_root=outcome.state_root,
            transactions_root=transactions_root([tx.raw for tx in outcome.included]),
            receipts_root=receipts_root(outcome.receipts),
            logs_bloom=outcome.bloom.to_bytes(BLOOM_BYTES, "big"),
            gas_used=outcome.gas_used,
        )
        block = Block(header, tuple(tx.raw for tx in outcome.included))
        result = ExecutionResult(
            block, tuple(outcome.receipts), outcome.writes, tuple(rejected + outcome.rejected)
        )
        self._remember(result)
        return result

    def validate_block(
        self, block: Block, *, known: Callable[[Hash32], SignedTx | None] | None = None
    ) -> ExecutionResult:
        """Re-execute a received block; InvalidBlock names the first field that is wrong.

        The parent must be committed or pending. The seal is not checked here (see
        :meth:`commit` and :meth:`import_block`). ``known`` looks up already decoded
        transactions by hash (the mempool's ``get``): a hash is ``keccak(raw)``, so a
        hit is the same bytes, already checked, and decoding is skipped.
        """
        header = block.header
        parent = self.header_by_hash(header.parent_hash)
        if parent is None:
            raise InvalidBlock(
                f"block {header.height}: unknown parent_hash 0x{header.parent_hash.hex()}"
            )
        self._check_header_fields(header, parent)
        computed_tx_root = transactions_root(block.transactions)
        if computed_tx_root != header.transactions_root:
            raise _mismatch(header, "transactions_root", header.transactions_root, computed_tx_root)
        decoded = []
        for i, raw in enumerate(block.transactions):
            hit = known(block.tx_hashes[i]) if known is not None else None
            if hit is not None and _predecoded(hit, self.chain_id):
                decoded.append(hit)
                continue
            try:
                decoded.append(decode_transaction(raw, self.chain_id))
            except InvalidTransaction as exc:
                raise InvalidBlock(
                    f"block {header.height}: transaction {i} (0x{keccak(raw).hex()}) is "
                    f"invalid: {exc}"
                ) from exc
        outcome = self._apply(parent, header, decoded, strict=True)
        if outcome.gas_used != header.gas_used:
            raise InvalidBlock(
                f"block {header.height}: gas_used mismatch: header {header.gas_used}, "
                f"executed {outcome.gas_used}"
            )
        computed_receipts_root = receipts_root(outcome.receipts)
        if computed_receipts_root != header.receipts_root:
            raise _mismatch(header, "receipts_root", header.receipts_root, computed_receipts_root)
        if outcome.bloom.to_bytes(BLOOM_BYTES, "big") != header.logs_bloom:
            raise InvalidBlock(f"block {header.height}: logs_bloom mismatch")
        if outcome.state_root != header.state_root:
            raise _mismatch(header, "state_root", header.state_root, outcome.state_root)
        result = ExecutionResult(block, tuple(outcome.receipts), outcome.writes)
        self._remember(result)
        return result

    def _check_header_fields(self, header: Header, parent: Header) -> None:
        h = header.height
        if header.chain_id != self.chain_id:
            raise InvalidBlock(f"block {h}: chain_id {header.chain_id}, expected {self.chain_id}")
        if h != parent.height + 1:
            raise InvalidBlock(f"block {h}: height is not parent height {parent.height} + 1")
        if header.timestamp < parent.timestamp:
            raise InvalidBlock(
                f"block {h}: timestamp {header.timestamp} is before the parent's {parent.timestamp}"
            )
        if header.gas_limit != self.gas_limit:
            raise InvalidBlock(
                f"block {h}: gas_limit {header.gas_limit}, genesis fixes {self.gas_limit}"
            )
        if header.gas_used > header.gas_limit:
            raise InvalidBlock(f"block {h}: gas_used exceeds gas_limit")
        if header.epoch < parent.epoch:
            raise InvalidBlock(f"block {h}: epoch {header.epoch} before parent's {parent.epoch}")

    def _apply(
        self, parent: Header, header: Header, txs: Sequence[SignedTx], *, strict: bool
    ) -> _Outcome:
        """Apply ``txs`` on the parent state. ``strict``: an invalid tx raises InvalidBlock
        (validation); otherwise it is skipped and reported (building)."""
        db = ExecutionDB(self._node)
        state = open_state(
            db,
            parent.state_root,
            chain_id=self.chain_id,
            height=header.height,
            timestamp=header.timestamp,
            proposer=header.proposer,
            gas_limit=self.gas_limit,
            prev_hashes=self._ancestor_hashes(parent),
        )
        out = _Outcome([], [], [], parent.state_root, db.writes, 0, 0)
        for i, tx in enumerate(txs):
            reason = self._apply_one(state, tx, out)
            if reason is None:
                continue
            if strict:
                raise InvalidBlock(
                    f"block {header.height}: transaction {i} (0x{tx.hash.hex()}) is invalid: "
                    f"{reason}"
                )
            out.rejected.append((tx.hash, reason))
        try:
            state.persist()
        except EVMMissingData as exc:
            raise StorageError(f"state node missing while persisting: {exc!r}") from exc
        out.state_root = Hash32(state.state_root)
        return out

    def _apply_one(self, state: StateAPI, tx: SignedTx, out: _Outcome) -> str | None:
        """Apply one transaction; returns why it is not includable, or None."""
        if out.gas_used + tx.gas > self.gas_limit:
            return f"gas {tx.gas} exceeds the block's remaining {self.gas_limit - out.gas_used}"
        # Ends the previous transaction: SSTORE's "original value" and the EIP-2929
        # warm sets are per transaction.
        state.lock_changes()
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(tx.evm)
        except ValidationError as exc:
            state.revert(snapshot)
            return str(exc)
        except EVMMissingData as exc:
            raise StorageError(f"state node missing during execution: {exc!r}") from exc
        gas = TwinChainVM.finalize_gas_used(tx.evm, computation)
        out.gas_used += gas
        receipt = _receipt(tx, len(out.included), computation, gas, out.gas_used)
        out.included.append(tx)
        out.receipts.append(receipt)
        out.bloom |= int.from_bytes(receipt.bloom(), "big")
        return None

    # ------------------------------------------------------------ committing

    def commit(self, result: ExecutionResult, seal: bytes) -> Block:
        """Seal and durably commit an executed block as the new head.

        Checks the seal with the injected verifier first; then forgets every pending
        result at or below the committed height. Returns the sealed block.
        """
        block = result.block.with_seal(seal)
        if self._verify_seal is not None:
            self._verify_seal(block)
        with self._lock:
            self.store.commit(block, result.receipts, result.state_writes)
            self._forget_through(block.height)
        return block

    def import_block(self, block: Block) -> ExecutionResult:
        """Validate and commit an already sealed block (catching up from a peer)."""
        if self._verify_seal is not None:
            self._verify_seal(block)
        result = self.validate_block(block)
        self.commit(result, block.seal)
        return result

    def forget(self, block_hash: Hash32) -> None:
        """Drop a pending result (its fork was abandoned)."""
        with self._lock:
            if self._pending.pop(block_hash, None) is not None:
                self._rebuild_pending_nodes()

    def pending(self, block_hash: Hash32) -> ExecutionResult | None:
        """A pending (executed, uncommitted) result by block hash."""
        return self._pending.get(block_hash)

    def _remember(self, result: ExecutionResult) -> None:
        with self._lock:
            self._pending[result.block.hash()] = result
            self._pending_nodes.update(result.state_writes)
            if len(self._pending) > self._max_pending:
                oldest = min(self._pending.values(), key=lambda r: r.block.height)
                del self._pending[oldest.block.hash()]
                self._rebuild_pending_nodes()

    def _forget_through(self, height: int) -> None:
        stale = [h for h, r in self._pending.items() if r.block.height <= height]
        for block_hash in stale:
            del self._pending[block_hash]
        if stale:
            self._rebuild_pending_nodes()

    def _rebuild_pending_nodes(self) -> None:
        nodes: dict[bytes, bytes] = {}
        for result in self._pending.values():
            nodes.update(result.state_writes)
        self._pending_nodes = nodes

    # ------------------------------------------------------------ lookups

    def header_by_hash(self, block_hash: bytes) -> Header | None:
        """Header of a pending or committed block."""
        result = self._pending.get(Hash32(block_hash))
        if result is not None:
            return result.header
        return self.store.header_by_hash(block_hash)

    def has_state(self, state_root: bytes) -> bool:
        """True if state at ``state_root`` can be read (committed or pending)."""
        return state_root in self._pending_nodes or self.store.has_state(state_root)

    def _require_known(self, parent: Header) -> None:
        if not self.has_state(parent.state_root):
            raise NotFound(
                f"state root 0x{parent.state_root.hex()} of block {parent.height} is not "
                "stored or pending"
            )

    def _node(self, key: bytes) -> bytes | None:
        value = self._pending_nodes.get(key) or self._node_cache.get(key)
        if value is None:
            value = self.store.state_node(key)
            if value is not None:
                # Committed nodes never change (content-addressed), so caching them is
                # safe; the upper trie levels are read by nearly every account access.
                if len(self._node_cache) >= _NODE_CACHE_ENTRIES:
                    del self._node_cache[next(iter(self._node_cache))]  # oldest first
                self._node_cache[key] = value
        return value

    def _ancestor_hashes(self, parent: Header) -> Iterator[Hash32]:
        """Hashes of ``parent`` and its ancestors, newest first (lazy: BLOCKHASH only)."""
        header: Header | None = parent
        for _ in range(_BLOCKHASH_DEPTH):
            if header is None:
                return
            yield header.hash()
            if header.height == 0:
                return
            header = self.header_by_hash(header.parent_hash)

    # ------------------------------------------------------------ reads

    def _read_state(self, at: Header | Hash32 | None, head: Header | None = None) -> StateAPI:
        head = self.store.head() if head is None else head
        base = head if at is None else at
        if isinstance(base, Header):
            context, root = base, base.state_root
        else:
            context, root = head, base
        if not self.has_state(root):
            raise NotFound(f"state root 0x{bytes(root).hex()} is not stored or pending")
        return open_state(
            ExecutionDB(self._node),
            root,
            chain_id=self.chain_id,
            height=context.height + 1,
            timestamp=context.timestamp,
            proposer=ZERO_ADDRESS,
            gas_limit=self.gas_limit,
            prev_hashes=self._ancestor_hashes(context),
        )

    def simulate(
        self,
        to: Address | None,
        data: bytes,
        sender: Address = ZERO_ADDRESS,
        *,
        value: int = 0,
        gas: int | None = None,
        at: Header | Hash32 | None = None,
    ) -> CallResult:
        """Run a message as a zero-price transaction from ``sender`` and discard the
        changes. ``to=None`` simulates a contract creation. ``at`` is a header or a
        state root (default: the head). Raises InvalidInput if the transaction itself
        is not valid (e.g. ``value`` above the sender's balance).

        Results are memoised per (block context, state root, message): execution is a
        pure function of them, so a burst of identical reads at one head (twins warm-
        starting the same model) executes once.
        """
        head = self.store.head()  # one head for the key and the state (commits race reads)
        key = self._call_key(head, at, to, data, sender, value, gas or self.gas_limit)
        with self._calls_lock:
            cached = self._calls.get(key)
            if cached is not None:
                self._calls.move_to_end(key)
                return cached
        state = self._read_state(at, head)
        result = self._simulate(state, to, data, sender, value, gas or self.gas_limit)
        if len(result.output) <= _MEMO_MAX_OUTPUT:
            with self._calls_lock:
                self._calls[key] = result
                if len(self._calls) > _MEMO_ENTRIES:
                    self._calls.popitem(last=False)
        return result

    @staticmethod
    def _call_key(
        head: Header,
        at: Header | Hash32 | None,
        to: Address | None,
        data: bytes,
        sender: Address,
        value: int,
        gas: int,
    ) -> tuple[object, ...]:
        if isinstance(at, Header):
            context: bytes = at.hash()
            root: bytes = at.state_root
        else:
            context = head.hash()
            root = head.state_root if at is None else bytes(at)
        return (context, root, to, bytes(data), sender, value, gas)

    def _simulate(
        self,
        state: StateAPI,
        to: Address | None,
        data: bytes,
        sender: Address,
        value: int,
        gas: int,
    ) -> CallResult:
        unsigned = TwinChainVM.create_unsigned_transaction(
            nonce=state.get_nonce(sender),
            gas_price=0,
            gas=gas,
            to=to if to is not None else CREATE_CONTRACT_ADDRESS,
            value=value,
            data=data,
        )
        tx: SignedTransactionAPI = SpoofTransaction(unsigned, from_=sender)  # type: ignore[assignment]
        state.lock_changes()  # before the snapshot: locking drops journal checkpoints
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(tx)
        except ValidationError as exc:
            raise InvalidInput(f"call is not executable: {exc}") from exc
        finally:
            state.revert(snapshot)
        gas_used = TwinChainVM.finalize_gas_used(tx, computation)
        if computation.is_error:
            return CallResult(
                False, _revert_output(computation), gas_used, _error_text(computation)
            )
        return CallResult(True, computation.output, gas_used, None)

    def call(
        self,
        to: Address,
        data: bytes,
        sender: Address = ZERO_ADDRESS,
        *,
        value: int = 0,
        gas: int | None = None,
        at: Header | Hash32 | None = None,
    ) -> bytes:
        """``eth_call``: the return data, or ExecutionReverted with the reason."""
        result = self.simulate(to, data, sender, value=value, gas=gas, at=at)
        if not result.success:
            raise ExecutionReverted(f"execution reverted: {result.error}", result.output)
        return result.output

    def estimate_gas(
        self,
        to: Address | None,
        data: bytes,
        sender: Address = ZERO_ADDRESS,
        *,
        value: int = 0,
        at: Header | Hash32 | None = None,
    ) -> int:
        """Smallest gas limit with which the transaction succeeds (``eth_estimateGas``).

        Runs once with the block gas limit, then bisects between the gas it used and a
        cap: EIP-150's 63/64 rule and refunds make the needed limit exceed the gas used.
        """
        state = self._read_state(at)
        first = self._simulate(state, to, data, sender, value, self.gas_limit)
        if not first.success:
            raise ExecutionReverted(f"execution reverted: {first.error}", first.output)
        low, high = first.gas_used - 1, self.gas_limit
        optimistic = min(high, first.gas_used * 64 // 63 + 2_300)
        if self._simulate(state, to, data, sender, value, optimistic).success:
            high = optimistic
        while high - low > 1:
            middle = (low + high) // 2
            if self._simulate(state, to, data, sender, value, middle).success:
                high = middle
            else:
                low = middle
        return high

    def nonce_of(self, address: Address, at: Header | Hash32 | None = None) -> int:
        """Account nonce (head state by default)."""
        return int(self._read_state(at).get_nonce(address))

    def balance_of(self, address: Address, at: Header | Hash32 | None = None) -> int:
        """Account balance in wei (head state by default)."""
        return int(self._read_state(at).get_balance(address))

    def code_of(self, address: Address, at: Header | Hash32 | None = None) -> bytes:
        """Contract runtime code (empty for an externally owned account)."""
        return bytes(self._read_state(at).get_code(address))

    def storage_at(self, address: Address, slot: int, at: Header | Hash32 | None = None) -> int:
        """One storage slot of a contract."""
        return int(self._read_state(at).get_storage(address, slot))

    def roles_of(self, address: Address, at: Header | Hash32 | None = None) -> int:
        """Role bits of ``address`` in the Membership contract (0 if none, or if the
        contract is not deployed)."""
        output = self.call(MEMBERSHIP_ADDRESS, _ROLES_OF + bytes(12) + address, at=at)
        if not output:
            return 0
        (roles,) = abi_decode(["uint256"], output)
        return int(roles)


# ---------------------------------------------------------------- helpers


def _receipt(
    tx: SignedTx, index: int, computation: ComputationAPI, gas_used: int, cumulative: int
) -> Receipt:
    evm_tx = tx.evm
    if tx.tx_type == 2:
        price = min(evm_tx.max_fee_per_gas, evm_tx.max_priority_fee_per_gas)  # base fee 0
    else:
        price = evm_tx.gas_price
    return Receipt(
        tx_hash=tx.hash,
        tx_index=index,
        tx_type=tx.tx_type,
        sender=tx.sender,
        to=tx.to,
        contract_address=(Address(computation.msg.storage_address) if tx.to is None else None),
        status=STATUS_FAILURE if computation.is_error else STATUS_SUCCESS,
        gas_used=gas_used,
        cumulative_gas_used=cumulative,
        effective_gas_price=price,
        logs=tuple(
            Log(Address(address), tuple(Hash32(t.to_bytes(32, "big")) for t in topics), data)
            for address, topics, data in computation.get_log_entries()
        ),
    )


def _predecoded(item: bytes | SignedTx, chain_id: int) -> TypeGuard[SignedTx]:
    """True for a transaction decoded under the same rules this block is checked with
    (a mempool may be stricter than consensus, never looser: size is a block rule)."""
    return (
        isinstance(item, SignedTx)
        and item.evm.chain_id == chain_id
        and len(item.raw) <= MAX_TX_BYTES
    )


def _mismatch(header: Header, field: str, claimed: bytes, computed: bytes) -> InvalidBlock:
    return InvalidBlock(
        f"block {header.height}: {field} mismatch: header 0x{claimed.hex()}, "
        f"computed 0x{computed.hex()}"
    )


def _revert_output(computation: ComputationAPI) -> bytes:
    try:
        return bytes(computation.output)
    except VMError:
        return b""


def _error_text(computation: ComputationAPI) -> str:
    output = _revert_output(computation)
    if output[:4] == _ERROR_SELECTOR:
        try:
            (reason,) = abi_decode(["string"], output[4:])
            return str(reason)
        except DecodingError:  # malformed revert data: report it raw below
            return f"malformed Error(string): 0x{output.hex()}"
    error = computation.error
    name = type(error).__name__
    return f"{name}: 0x{output.hex()}" if output else name
