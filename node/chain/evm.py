"""The py-evm configuration TwinChain executes with, and the state database it reads.

The EVM is py-evm's Prague fork with four changes, made by configuration (subclassing
the state and account-database classes), not by patching py-evm:

- **base fee 0**: the execution context carries ``base_fee_per_gas = 0``, so zero-price
  transactions are valid (a permissioned network, like Besu's free-gas networks); the
  block gas limit is fixed by genesis, never adjusted per block;
- **no beacon-chain system contracts**: py-evm's Cancun/Prague state writes the EIP-4788
  beacon-roots and EIP-2935 history contracts into every state it opens. This chain has
  no beacon chain, so :class:`TwinChainState` writes nothing behind our back;
- **no block rewards**: blocks are executed transaction by transaction here, never
  through ``VM.finalize_block``; priority fees (zero on this network unless a client
  pays them) go to the block's proposer, which is the EVM ``COINBASE``;
- **storage tries updated once per block**: py-evm writes each storage slot into the
  account's trie one key at a time (re-encoding the path to the root every time);
  here the writes are buffered and applied in one pass when the block's state root is
  computed (:mod:`node.chain.trie`). Same roots, same nodes; about a third of a
  registry-heavy block's time.

State is a Merkle-Patricia trie whose nodes (and contract code) are content-addressed
by keccak. :class:`ExecutionDB` collects the nodes one execution writes and reads
everything else through a lookup function (pending executions, then the durable store),
so a block's state changes stay in memory until the store commits them atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from eth.abc import (
    AccountStorageDatabaseAPI,
    AtomicDatabaseAPI,
    ComputationAPI,
    DatabaseAPI,
    StateAPI,
)
from eth.db.account import AccountDB
from eth.db.atomic import AtomicDB
from eth.db.backends.base import BaseDB
from eth.db.batch import BatchDB
from eth.db.cache import CacheDB
from eth.db.journal import JournalDB
from eth.db.storage import AccountStorageDB, StorageLookup
from eth.vm.execution_context import ExecutionContext
from eth.vm.forks.prague import PragueVM
from eth.vm.forks.prague.state import PragueState
from eth.vm.message import Message
from eth_typing import BlockNumber
from trie.hexary import HexaryTrie

from node.chain.trie import update_trie
from node.chain.types import SYSTEM_ADDRESS, ZERO_HASH, Address, Hash32

__all__ = [
    "SYSTEM_CALL_GAS",
    "ExecutionDB",
    "NodeLookup",
    "TwinChainState",
    "TwinChainVM",
    "open_state",
    "system_call",
]

#: Gas given to a genesis system message. Not a transaction, so not bound by the block
#: gas limit: initializing Membership with 256 members costs well over 10M gas.
SYSTEM_CALL_GAS = 1_000_000_000

#: Reads a trie node or code blob by its keccak key; None when absent.
NodeLookup = Callable[[bytes], bytes | None]


class _BufferedStorageTrie:
    """Stands in for the ``HexaryTrie`` py-evm writes one account's storage into.

    Writes are buffered and applied in one pass (:func:`node.chain.trie.update_trie`)
    when the storage root is asked for, once per block, instead of re-encoding the
    path to the root on every slot written. Reads of unwritten slots go to the trie at
    the last computed root. Duck-typed: py-evm only uses the methods below.
    """

    def __init__(self, db: DatabaseAPI, root: Hash32) -> None:
        self._db = db
        self._root = root
        self._pending: dict[bytes, bytes] = {}

    def __getitem__(self, key: bytes) -> bytes:
        if key in self._pending:
            return self._pending[key]
        return bytes(HexaryTrie(self._db, self._root)[key])  # b"" when absent

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._pending[key] = value  # b"" deletes, as in HexaryTrie

    def __delitem__(self, key: bytes) -> None:
        self._pending[key] = b""

    def __contains__(self, key: bytes) -> bool:
        return self[key] != b""

    @property
    def root_hash(self) -> Hash32:
        """The storage root with every buffered write applied (their nodes stored)."""
        if self._pending:
            self._root, nodes = update_trie(self._root, self._pending, self._db.__getitem__)
            for node_hash, node in nodes.items():
                self._db[node_hash] = node
            self._pending = {}
        return self._root


class _BufferedStorageLookup(StorageLookup):
    def _get_write_trie(self) -> HexaryTrie:
        if self._trie_nodes_batch is None:
            self._trie_nodes_batch = BatchDB(self._db, read_through_deletes=True)
        if self._write_trie is None:
            trie = _BufferedStorageTrie(self._trie_nodes_batch, self._starting_root_hash)
            self._write_trie = cast(HexaryTrie, trie)
        return self._write_trie

    def commit_to(self, db: DatabaseAPI) -> None:
        if self._write_trie is not None:
            _ = self._write_trie.root_hash  # flush the buffered writes into the batch
        super().commit_to(db)


class _BufferedAccountStorageDB(AccountStorageDB):
    def __init__(self, db: AtomicDatabaseAPI, storage_root: Hash32, address: Address) -> None:
        super().__init__(db, storage_root, address)
        # The same pipeline as the parent's, over the buffered lookup.
        self._storage_lookup = _BufferedStorageLookup(db, storage_root, address)
        self._storage_cache = CacheDB(self._storage_lookup)
        self._locked_changes = JournalDB(self._storage_cache)
        self._journal_storage = JournalDB(self._locked_changes)


class _BufferedAccountDB(AccountDB):
    """py-evm's AccountDB, with each account's storage trie updated once per block."""

    def _get_address_store(self, address: Address) -> AccountStorageDatabaseAPI:
        store = self._account_stores.get(address)
        if store is None:
            storage_root = self._get_storage_root(address)
            store = _BufferedAccountStorageDB(self._raw_store_db, storage_root, address)
            self._account_stores[address] = store
        return store


class TwinChainState(PragueState):
    """Prague state without the beacon-chain system contracts, with batched storage
    trie updates."""

    account_db_class = _BufferedAccountDB

    def set_system_contracts(self) -> None:
        """Write nothing: this chain has no beacon roots and no EIP-2935 history."""


TwinChainVM = PragueVM.configure(__name__="TwinChainVM", _state_class=TwinChainState)
"""The VM class (used for its transaction builder, receipt rules and gas accounting)."""


class ExecutionDB(BaseDB):
    """Key-value view for one execution: its own writes over a read-only lookup.

    ``writes`` holds every node the execution stored; they reach disk only when the
    store commits the block. Deletes are ignored on purpose: nodes are content-addressed
    and may be shared by other state roots (py-evm never prunes them in our setup).
    """

    def __init__(self, lookup: NodeLookup) -> None:
        self.writes: dict[bytes, bytes] = {}
        self._lookup = lookup

    def __getitem__(self, key: bytes) -> bytes:
        value = self.writes.get(key)
        if value is None:
            value = self._lookup(key)
            if value is None:
                raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def __delitem__(self, key: bytes) -> None:
        """Ignored: see the class docstring."""

    def _exists(self, key: bytes) -> bool:
        return key in self.writes or self._lookup(key) is not None


def open_state(
    db: ExecutionDB,
    state_root: Hash32,
    *,
    chain_id: int,
    height: int,
    timestamp: int,
    proposer: Address,
    gas_limit: int,
    prev_hashes: Iterable[Hash32] = (),
) -> StateAPI:
    """Open the EVM state at ``state_root`` for executing block ``height``.

    ``prev_hashes`` are the ancestor block hashes, newest first (BLOCKHASH); it may be
    a lazy iterable, consumed only if a contract asks.
    """
    context = ExecutionContext(
        coinbase=proposer,
        timestamp=timestamp,
        block_number=BlockNumber(height),
        difficulty=0,
        # PREVRANDAO: a permissioned BFT chain has no randomness beacon; zero says so
        # plainly instead of offering something that looks random and is not.
        mix_hash=ZERO_HASH,
        gas_limit=gas_limit,
        prev_hashes=prev_hashes,
        chain_id=chain_id,
        base_fee_per_gas=0,
        excess_blob_gas=0,
    )
    return TwinChainState(AtomicDB(db), context, state_root)


def system_call(
    state: StateAPI, to: Address, data: bytes, gas: int = SYSTEM_CALL_GAS
) -> ComputationAPI:
    """Run a message from :data:`SYSTEM_ADDRESS` to ``to``: no transaction, no nonce,
    no fee. Used for the genesis ``initialize`` calls."""
    message = Message(
        gas=gas,
        to=to,
        sender=SYSTEM_ADDRESS,
        value=0,
        data=data,
        code=state.get_code(to),
        code_address=to,
    )
    context = state.get_transaction_context_class()(gas_price=0, origin=SYSTEM_ADDRESS)
    state.lock_changes()
    return state.computation_class.apply_message(state, message, context)
