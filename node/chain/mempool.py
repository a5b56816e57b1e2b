"""The mempool: admission of client transactions, and their order for block building.

Admission (:meth:`Mempool.add`) applies, in this order, and raises
:class:`~node.errors.InvalidTransaction` with the reason at the first failure; a
refused transaction leaves the pool exactly as it was:

1. already pending -> accepted again, same hash (submitting twice is harmless);
2. stateless validity (:func:`node.chain.tx.decode_transaction`): size, envelope type,
   canonical encoding, chain id, signature, intrinsic gas;
3. gas limit at most the block gas limit (else it could never be included);
4. the sender holds a role in Membership (the contracts check roles again);
5. nonce: not below the account nonce, at most ``max_nonce_gap`` above it, and not
   already taken by another pending transaction of the sender (no fee market, so no
   replacement by price);
6. the sender can pay ``value + gas * max fee`` (zero-fee transactions need no funds);
7. room in the pool.

Order (:meth:`Mempool.select`): each sender's transactions in nonce order, senders
interleaved first come, first served (by arrival of each sender's next transaction).
After a block commits, :meth:`Mempool.on_commit` removes its transactions and rechecks
the rest (nonces consumed, roles revoked).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from eth_hash.auto import keccak

from node.chain.block import Block
from node.chain.executor import Executor
from node.chain.tx import MAX_TX_BYTES, SignedTx, decode_transaction
from node.chain.types import Address, Hash32
from node.errors import InvalidInput, InvalidTransaction

__all__ = ["AccountLookup", "Mempool", "MempoolLimits", "mempool_for"]

#: Reads one number of an account at the current head (nonce, role bits, balance).
AccountLookup = Callable[[Address], int]


@dataclass(frozen=True)
class MempoolLimits:
    """Bounds that keep one client from filling the pool."""

    max_tx_bytes: int = MAX_TX_BYTES
    max_nonce_gap: int = 64
    max_transactions: int = 20_000

    def __post_init__(self) -> None:
        # The transaction size bound is also a block validity rule: a pool admitting
        # larger transactions would propose blocks the other validators refuse.
        if not 0 < self.max_tx_bytes <= MAX_TX_BYTES:
            raise InvalidInput(f"max_tx_bytes must be in 1..{MAX_TX_BYTES}")
        if self.max_nonce_gap < 0 or self.max_transactions < 1:
            raise InvalidInput("max_nonce_gap must be >= 0 and max_transactions >= 1")


@dataclass(frozen=True)
class _Entry:
    tx: SignedTx
    arrival: int


class Mempool:
    """Pending transactions, admitted once and ordered for block building.

    Thread-safe. Account state comes from injected lookups (the executor's head
    state in a node; plain functions in tests).
    """

    def __init__(
        self,
        *,
        chain_id: int,
        block_gas_limit: int,
        nonce_of: AccountLookup,
        roles_of: AccountLookup,
        balance_of: AccountLookup | None = None,
        limits: MempoolLimits | None = None,
    ) -> None:
        """``balance_of`` None skips the funds check (e.g. a zero-fee-only network)."""
        self.chain_id = chain_id
        self.block_gas_limit = block_gas_limit
        self.limits = limits or MempoolLimits()
        self._nonce_of = nonce_of
        self._roles_of = roles_of
        self._balance_of = balance_of
        self._by_hash: dict[Hash32, _Entry] = {}
        self._by_sender: dict[Address, dict[int, Hash32]] = {}
        self._arrivals = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------ admission

    def add(self, raw: bytes) -> Hash32:
        """Admit a raw signed transaction; returns its hash.

        Raises InvalidTransaction (nothing changed) when it is not admissible.
        """
        if not isinstance(raw, bytes | bytearray):
            raise InvalidTransaction(f"transaction must be bytes, got {type(raw).__name__}")
        with self._lock:
            tx_hash = Hash32(keccak(bytes(raw)))
            if tx_hash in self._by_hash:
                return tx_hash
            tx = decode_transaction(bytes(raw), self.chain_id, max_bytes=self.limits.max_tx_bytes)
            self._check(tx)
            self._arrivals += 1
            self._by_hash[tx.hash] = _Entry(tx, self._arrivals)
            self._by_sender.setdefault(tx.sender, {})[tx.nonce] = tx.hash
            return tx.hash

    def _check(self, tx: SignedTx) -> None:
        sender = "0x" + tx.sender.hex()
        if tx.gas > self.block_gas_limit:
            raise InvalidTransaction(
                f"gas {tx.gas} exceeds the block gas limit {self.block_gas_limit}"
            )
        if self._roles_of(tx.sender) == 0:
            raise InvalidTransaction(f"sender {sender} holds no role on this network")
        account_nonce = self._nonce_of(tx.sender)
        if tx.nonce < account_nonce:
            raise InvalidTransaction(
                f"nonce {tx.nonce} too low: sender {sender} is at nonce {account_nonce}"
            )
        if tx.nonce > account_nonce + self.limits.max_nonce_gap:
            raise InvalidTransaction(
                f"nonce {tx.nonce} too far ahead: sender {sender} is at nonce "
                f"{account_nonce}, at most {self.limits.max_nonce_gap} ahead is accepted"
            )
        taken = self._by_sender.get(tx.sender, {}).get(tx.nonce)
        if taken is not None:
            raise InvalidTransaction(
                f"sender {sender} already has pending transaction 0x{taken.hex()} with "
                f"nonce {tx.nonce}"
            )
        if self._balance_of is not None:
            evm = tx.evm
            price = evm.max_fee_per_gas if tx.tx_type == 2 else evm.gas_price
            cost = evm.value + tx.gas * price
            if cost and self._balance_of(tx.sender) < cost:
                raise InvalidTransaction(f"sender {sender} cannot pay {cost} wei (value + gas)")
        if len(self._by_hash) >= self.limits.max_transactions:
            raise InvalidTransaction(
                f"mempool full ({self.limits.max_transactions} transactions); retry later"
            )

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> SignedTx | None:
        """A pending transaction by hash."""
        entry = self._by_hash.get(Hash32(tx_hash))
        return None if entry is None else entry.tx

    def pending_nonce(self, sender: Address) -> int:
        """Next nonce a client should use: past the last gapless pending transaction."""
        with self._lock:
            nonce = self._nonce_of(sender)
            taken = self._by_sender.get(sender, {})
            while nonce in taken:
                nonce += 1
            return nonce

    def select(
        self,
        *,
        max_gas: int | None = None,
        max_count: int | None = None,
        nonce_of: AccountLookup | None = None,
    ) -> list[SignedTx]:
        """Transactions for the next block, in inclusion order.

        Per sender in nonce order starting at its account nonce (``nonce_of``, default
        the head's; pass the parent's when building on a pending block), without gaps;
        senders interleaved by arrival of their next transaction. Stops a sender at the
        first transaction that does not fit ``max_gas`` (the block gas limit by default).
        """
        gas_left = self.block_gas_limit if max_gas is None else max_gas
        lookup = nonce_of or self._nonce_of
        with self._lock:
            heap: list[tuple[int, Address, int]] = []
            for sender, by_nonce in self._by_sender.items():
                nonce = lookup(sender)
                if nonce in by_nonce:
                    heap.append((self._by_hash[by_nonce[nonce]].arrival, sender, nonce))
            heapq.heapify(heap)
            chosen: list[SignedTx] = []
            while heap and (max_count is None or len(chosen) < max_count):
                _, sender, nonce = heapq.heappop(heap)
                tx = self._by_hash[self._by_sender[sender][nonce]].tx
                if tx.gas > gas_left:
                    continue  # the sender's later nonces would have a gap
                gas_left -= tx.gas
                chosen.append(tx)
                following = self._by_sender[sender].get(nonce + 1)
                if following is not None:
                    heapq.heappush(heap, (self._by_hash[following].arrival, sender, nonce + 1))
            return chosen

    # ------------------------------------------------------------ after a commit

    def on_commit(self, block: Block) -> list[tuple[Hash32, str]]:
        """Remove ``block``'s transactions, then :meth:`recheck` the rest.

        Returns the ``(hash, reason)`` of every other transaction evicted.
        """
        with self._lock:
            self.remove(block.tx_hashes)
            return self.recheck()

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        """Forget these transactions (included in a block, or abandoned)."""
        with self._lock:
            for tx_hash in tx_hashes:
                entry = self._by_hash.pop(Hash32(tx_hash), None)
                if entry is None:
                    continue
                by_nonce = self._by_sender[entry.tx.sender]
                del by_nonce[entry.tx.nonce]
                if not by_nonce:
                    del self._by_sender[entry.tx.sender]

    def recheck(self) -> list[tuple[Hash32, str]]:
        """Evict transactions whose nonce was consumed or whose sender lost its roles."""
        evicted: list[tuple[Hash32, str]] = []
        with self._lock:
            for sender, by_nonce in list(self._by_sender.items()):
                if self._roles_of(sender) == 0:
                    reason = f"sender 0x{sender.hex()} no longer holds a role"
                    evicted += [(h, reason) for h in by_nonce.values()]
                    continue
                account_nonce = self._nonce_of(sender)
                evicted += [
                    (h, f"nonce {n} already used (account nonce {account_nonce})")
                    for n, h in by_nonce.items()
                    if n < account_nonce
                ]
            self.remove(h for h, _ in evicted)
        return evicted


def mempool_for(executor: Executor, limits: MempoolLimits | None = None) -> Mempool:
    """A mempool reading nonces, roles (Membership.rolesOf) and balances at the head of
    ``executor``'s store, memoized per head block."""
    cache = _HeadCache(executor)
    return Mempool(
        chain_id=executor.chain_id,
        block_gas_limit=executor.gas_limit,
        nonce_of=lambda a: cache.get("nonce", a, executor.nonce_of),
        roles_of=lambda a: cache.get("roles", a, executor.roles_of),
        balance_of=lambda a: cache.get("balance", a, executor.balance_of),
        limits=limits,
    )


class _HeadCache:
    """Account reads at the current head, dropped as soon as the head changes."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._head = executor.store.head().hash()
        self._values: dict[tuple[str, Address], int] = {}

    def get(self, kind: str, address: Address, read: Callable[[Address], int]) -> int:
        head = self._executor.store.head().hash()
        if head != self._head:
            self._head, self._values = head, {}
        key = (kind, address)
        if key not in self._values:
            self._values[key] = read(address)
        return self._values[key]
