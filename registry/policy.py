"""The registry's rules beyond the EVM, as the miner's :class:`~node.artifacts.ArtifactPolicy`.

Theory of operation
-------------------
Two rules need artifact bytes, which never go on chain (see :mod:`node.artifacts`):

1. **Held artifacts.** :meth:`RegistryPolicy.artifacts_of` names the artifact a
   ModelRegistry transaction registers: ``registerDataset`` (the dataset),
   ``registerModel`` (the weights), ``pushUpdate`` (the update) and ``closeRound`` (the
   aggregate). The replica proposes or votes for the transaction only once it holds
   those blobs. It decodes calldata only and never raises.
2. **Honest aggregates.** :meth:`RegistryPolicy.check` recomputes a ``closeRound``'s
   aggregate: it reads the round, its base version and the included updates from the
   contract state at ``parent`` (the state the block executes on), loads the base and
   update blobs (verified against their digests), runs
   :func:`registry.fl.aggregate_bytes` with the recorded strategy in the recorded update
   order, and refuses the transaction when the SHA-256 or size of the canonical result
   differs from the calldata. A reason is also returned when the inputs cannot be
   checked: an update or round unknown at ``parent`` (pushed in the same block — an
   aggregator must wait for its updates to commit), a blob this miner lacks (and cannot
   fetch), a blob corrupt on disk, a blob whose kind contradicts the chain, or an update
   that does not decode against the base.

   A ``closeRound`` that the contract is bound to revert anyway (round already closed or
   cancelled at ``parent``, an included update of another round) is let through: the
   EVM refuses it and no aggregate is registered.

Results of :meth:`check` are memoised per (transaction, parent): a replica asks again at
each consensus phase and re-aggregating 100 updates of a large model is not free.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from contracts import RoundStatus, UpdateKind
from node.blobs import ArtifactDigest, BlobStore
from node.chain.block import Header
from node.chain.executor import ExecutionReverted
from node.chain.tx import SignedTx
from node.chain.types import Address
from node.errors import InvalidInput, NotFound, StorageError
from registry.api.contract import (
    REGISTRY_ADDRESS_BYTES,
    ZERO32,
    ContractReverted,
    RegistryReader,
    decode_call,
    revert_reason,
)
from registry.fl import aggregate_bytes
from registry.fl.tensorfile import read_tensor_file

__all__ = ["BlobFetch", "RegistryPolicy", "StateCaller", "reader_at"]

log = logging.getLogger("twinchain.registry.policy")

_REGISTERING = {
    "registerDataset": ("digest", "size"),
    "registerModel": ("digest", "size"),
    "pushUpdate": ("update_digest", "size"),
    "closeRound": ("result_digest", "result_size"),
}
_KIND_NAMES = {UpdateKind.DENSE: "dense", UpdateKind.SPARSE: "sparse"}
_MEMO_ENTRIES = 64

#: Makes sure the store holds ``digest`` of ``size`` bytes (e.g. fetching it from peer
#: miners with :func:`node.blobs.fetch_missing`); True once it is held.
BlobFetch = Callable[[ArtifactDigest, int], bool]


class StateCaller(Protocol):
    """What :meth:`RegistryPolicy.check` needs of the executor: a read-only call."""

    def call(self, to: Address, data: bytes, sender: Address = ..., *, at: Header) -> bytes:
        """Return data of a call at ``at``; raises ExecutionReverted when it reverts."""
        ...


def reader_at(executor: StateCaller, at: Header) -> RegistryReader:
    """A :class:`RegistryReader` over the state of block ``at``."""

    def call(data: bytes) -> bytes:
        try:
            return executor.call(Address(REGISTRY_ADDRESS_BYTES), data, at=at)
        except ExecutionReverted as exc:
            raise ContractReverted(_reason_of(exc)) from exc

    return RegistryReader(call)


def _reason_of(exc: ExecutionReverted) -> str:
    return revert_reason(exc.output) or str(exc).removeprefix("execution reverted: ")


class _Refused(Exception):
    """Internal: the aggregate cannot be accepted, for the reason in the message."""


class RegistryPolicy:
    """:class:`node.artifacts.ArtifactPolicy` for the ModelRegistry (thread-safe)."""

    def __init__(self, *, fetch: BlobFetch | None = None) -> None:
        """``fetch`` is asked for a base or update blob this miner lacks; without it a
        missing blob is a reason to refuse."""
        self._fetch = fetch
        self._memo: OrderedDict[tuple[bytes, bytes], str | None] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ rule 1

    def artifacts_of(self, tx: SignedTx) -> Sequence[tuple[ArtifactDigest, int]]:
        """``(digest, size)`` of the artifact a ModelRegistry transaction registers."""
        if tx.to is None or bytes(tx.to) != REGISTRY_ADDRESS_BYTES:
            return ()
        call = decode_call(bytes(tx.evm.data))
        if call is None or call.function not in _REGISTERING:
            return ()
        digest_arg, size_arg = _REGISTERING[call.function]
        raw, size = call.args[digest_arg], call.args[size_arg]
        if raw == ZERO32 or size <= 0:
            return ()  # the contract refuses it ("empty digest", "zero size")
        return ((ArtifactDigest(bytes(raw)), int(size)),)

    def inputs_of(
        self, tx: SignedTx, parent: Header, executor: StateCaller
    ) -> Sequence[tuple[ArtifactDigest, int]]:
        """Blobs :meth:`check` reads for ``tx`` on ``parent``: a ``closeRound``'s base
        model and included updates (so the miner can fetch them from peers first)."""
        if tx.to is None or bytes(tx.to) != REGISTRY_ADDRESS_BYTES:
            return ()
        call = decode_call(bytes(tx.evm.data))
        if call is None or call.function != "closeRound":
            return ()
        reader = reader_at(executor, parent)
        needed: list[tuple[ArtifactDigest, int]] = []
        try:
            round_ = reader.round(int(call.args["round_id"]))
            base = reader.version(round_.base_version)
            needed.append((base.digest, base.size))
            for update_id in call.args["included_update_ids"]:
                update = reader.update(int(update_id))
                needed.append((update.digest, update.size))
        except NotFound:
            pass  # check() explains what is unknown
        return needed

    # ------------------------------------------------------------ rule 2

    def check(
        self, tx: SignedTx, parent: Header, executor: StateCaller, blobs: BlobStore
    ) -> str | None:
        """None if ``tx`` is acceptable on top of ``parent``, else why the block must be
        refused (a ``closeRound`` whose aggregate digest is not the recomputed one)."""
        if tx.to is None or bytes(tx.to) != REGISTRY_ADDRESS_BYTES:
            return None
        call = decode_call(bytes(tx.evm.data))
        if call is None or call.function != "closeRound":
            return None
        key = (bytes(tx.hash), bytes(parent.hash()))
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        try:
            verdict = self._check_close(call.args, reader_at(executor, parent), parent, blobs)
        except _Refused as exc:
            verdict = str(exc)
        if verdict is not None:
            log.warning("refusing transaction 0x%s: %s", bytes(tx.hash).hex(), verdict)
        with self._lock:
            self._memo[key] = verdict
            while len(self._memo) > _MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return verdict

    def _check_close(
        self, args: Mapping[str, Any], reader: RegistryReader, parent: Header, blobs: BlobStore
    ) -> str | None:
        round_id = int(args["round_id"])
        strategy = str(args["strategy"])
        included = [int(u) for u in args["included_update_ids"]]
        claimed = ArtifactDigest(bytes(args["result_digest"]))
        claimed_size = int(args["result_size"])
        where = f"closeRound of round {round_id}"
        try:
            round_ = reader.round(round_id)
        except NotFound:
            raise _Refused(f"{where}: round unknown at height {parent.height}") from None
        if round_.status != RoundStatus.OPEN:
            return None  # the contract reverts it: "round closed" / "round cancelled"
        base = reader.version(round_.base_version)
        base_bytes = self._blob(blobs, base.digest, base.size, f"{where}: base model")
        update_blobs: list[bytes] = []
        samples: list[int] = []
        for update_id in included:
            try:
                update = reader.update(update_id)
            except NotFound:
                raise _Refused(
                    f"{where}: update {update_id} unknown at height {parent.height}"
                ) from None
            if update.round_id != round_id:
                return None  # the contract reverts it: "update not in round"
            what = f"{where}: update {update_id}"
            data = self._blob(blobs, update.digest, update.size, what)
            _check_kind(data, update.kind, what)
            update_blobs.append(data)
            samples.append(update.samples)
        if not included or len(set(included)) != len(included):
            return None  # the contract reverts it: "no updates included" / "duplicate update"
        try:
            model, hex_digest = aggregate_bytes(base_bytes, update_blobs, samples, strategy)
        except InvalidInput as exc:
            raise _Refused(f"{where}: cannot recompute the aggregate: {exc}") from exc
        computed = ArtifactDigest(bytes.fromhex(hex_digest))
        if computed != claimed:
            return (
                f"{where}: aggregate digest mismatch: the transaction records {claimed}, "
                f"recomputing {strategy} over updates {included} gives {computed}"
            )
        if len(model) != claimed_size:
            return (
                f"{where}: aggregate size mismatch: the transaction records {claimed_size} "
                f"bytes, the recomputed aggregate has {len(model)}"
            )
        return None

    def _blob(self, blobs: BlobStore, digest: ArtifactDigest, size: int, what: str) -> bytes:
        """The verified bytes of a blob the check needs (fetched if missing and possible)."""
        held = blobs.size(digest) == size
        if not held and not (self._fetch is not None and self._fetch(digest, size)):
            raise _Refused(f"{what} blob {digest} ({size} bytes) is not held by this miner")
        try:
            data = b"".join(blobs.open_verified(digest))
        except NotFound:
            raise _Refused(f"{what} blob {digest} is not held by this miner") from None
        except StorageError as exc:
            raise _Refused(f"{what} blob {digest} is unusable: {exc}") from exc
        if len(data) != size:
            raise _Refused(f"{what} blob {digest} has {len(data)} bytes, the chain says {size}")
        return data


def _check_kind(data: bytes, kind: int, what: str) -> None:
    """The blob's declared kind must be the kind recorded on chain."""
    expected = _KIND_NAMES.get(UpdateKind(kind)) if kind in (0, 1) else None
    try:
        found = read_tensor_file(data).metadata.get("twinchain.kind")
    except InvalidInput as exc:
        raise _Refused(f"{what}: {exc}") from exc
    if found != expected:
        raise _Refused(f"{what} is recorded as kind {kind} ({expected}) but its blob is {found!r}")
