"""The node's hook for application rules that the EVM cannot check.

Two registry rules need the artifact bytes, which never go on chain:

1. a transaction that registers an artifact (model version, dataset, training update,
   aggregate) is proposed or voted for only by a miner that *holds* the artifact — so a
   committed artifact is stored on at least a quorum of miners;
2. a round's aggregate transaction is valid only if the digest it records is the digest
   of the aggregate this miner recomputes from the update blobs — so a lying aggregator
   is stopped by consensus.

`node` never imports `registry`, so the rules are injected: the registry implements
:class:`ArtifactPolicy` and the command that starts a miner hands it to the daemon. A
miner without a policy (a bare node) enforces neither rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from node.blobs import ArtifactDigest, BlobStore
from node.chain.block import Header
from node.chain.executor import Executor
from node.chain.tx import SignedTx


class ArtifactPolicy(Protocol):
    """Application rules over a block's transactions (implemented by the registry)."""

    def artifacts_of(self, tx: SignedTx) -> Sequence[tuple[ArtifactDigest, int]]:
        """``(digest, size)`` of every artifact ``tx`` registers (empty if none).

        Pure: decodes the calldata only; never raises for foreign transactions."""

    def inputs_of(
        self, tx: SignedTx, parent: Header, executor: Executor
    ) -> Sequence[tuple[ArtifactDigest, int]]:
        """``(digest, size)`` of the artifacts :meth:`check` reads for ``tx`` on
        ``parent`` (an aggregate's base model and updates), fetched before voting."""

    def check(
        self, tx: SignedTx, parent: Header, executor: Executor, blobs: BlobStore
    ) -> str | None:
        """Rules beyond the EVM for ``tx`` executed on top of ``parent`` (e.g. recompute
        an aggregate from the update blobs). ``None`` if acceptable, else the reason
        the block must be refused. Artifacts of ``artifacts_of`` are already held."""
