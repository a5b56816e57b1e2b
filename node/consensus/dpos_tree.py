"""The DPoS block tree above the last final block, and its fork choice.

Theory of operation
-------------------
The tree is rooted at the last final block; everything below it is gone (final blocks
never revert, so nothing there can matter again). A produced block arrives as a signed
BLOCK message and goes through two gates before it joins the tree:

1. *validation* by the injected :data:`BlockValidator` — which may answer "no" merely
   because the host lacks the parent yet, so a block that fails is kept *pending* and
   retried whenever the tree changes, until its height is final (then it is counted as
   invalid: it never validated);
2. *linkage*: its parent is in the tree, its height is the parent's plus one, and its slot
   is later than the parent's (or the same slot, by the same producer, for at most
   ``blocks_per_slot`` blocks in a row). A block that breaks a linkage rule is rejected
   for good.

Fork choice walks down from the root and at every fork takes the child with, in order:

1. the highest *POL round* (a quorum of pre-confirms in that confirmation round; see
   :mod:`node.consensus.dpos_votes`) — a block the committee may already be locked on
   beats any block it cannot be; without this rule, a longer branch built by a Byzantine
   producer could hold honest producers away from the block the honest delegates are
   locked on for ever;
2. the longest chain below it (DPoS's longest-chain rule);
3. the earliest slot (the block produced first by the schedule);
4. the lowest hash (a total order, so ties never depend on arrival order).

Given the same blocks and votes every delegate picks the same head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node.consensus.engine import BlockInfo, BlockValidator
from node.consensus.messages import SignedMessage
from node.consensus.types import ZERO_HASH, Address, Hash32

UNKNOWN_SLOT = -1
"""Slot of a root known only by hash (after a restart or a catch-up)."""


@dataclass(frozen=True)
class BlockNode:
    """A block in the tree (or the root, when ``message`` is None)."""

    hash: Hash32
    parent: Hash32
    height: int
    slot: int
    producer: Address | None
    run: int  # consecutive blocks of this producer's slot ending here
    message: SignedMessage | None  # the producer's signed BLOCK, relayed on demand


@dataclass
class _Pending:
    message: SignedMessage
    info: BlockInfo | None = None


class BlockTree:
    """Non-final blocks above the last final one (see the module docstring)."""

    def __init__(
        self,
        root_hash: Hash32,
        root_height: int,
        blocks_per_slot: int = 1,
        max_pending: int = 64,
    ) -> None:
        self.blocks_per_slot = blocks_per_slot
        self.max_pending = max_pending
        self.root = BlockNode(root_hash, ZERO_HASH, root_height, UNKNOWN_SLOT, None, 0, None)
        self._nodes: dict[Hash32, BlockNode] = {root_hash: self.root}
        self._children: dict[Hash32, list[Hash32]] = {}
        self._pending: dict[Hash32, _Pending] = {}
        self._best: list[BlockNode] | None = None

    # -- queries ----------------------------------------------------------------------

    def get(self, block_hash: bytes) -> BlockNode | None:
        """The node for ``block_hash`` (the root included), or None."""
        return self._nodes.get(Hash32(block_hash))

    def knows(self, block_hash: bytes) -> bool:
        """True if the block is in the tree or pending."""
        return block_hash in self._nodes or block_hash in self._pending

    def children(self, block_hash: bytes) -> list[BlockNode]:
        """Children of a block, sorted by hash."""
        return [self._nodes[c] for c in sorted(self._children.get(Hash32(block_hash), []))]

    def pending_count(self) -> int:
        """Blocks admitted but not (yet) in the tree."""
        return len(self._pending)

    # -- changes ----------------------------------------------------------------------

    def offer(self, message: SignedMessage) -> bool:
        """Queue an admitted BLOCK message; False if there is no room for it."""
        digest = Hash32(message.digest)
        if digest in self._nodes or digest in self._pending:
            return True
        if message.height <= self.root.height:
            return True  # final height: nothing to do
        if len(self._pending) >= self.max_pending:
            return False
        self._pending[digest] = _Pending(message)
        return True

    def settle(self, validate: BlockValidator) -> tuple[list[BlockNode], int]:
        """Validate and link pending blocks; returns ``(attached, rejected)``."""
        attached: list[BlockNode] = []
        rejected = 0
        progress = True
        while progress:
            progress = False
            for digest in sorted(self._pending, key=lambda d: (self._pending[d].message.height, d)):
                verdict = self._try_attach(digest, validate)
                if verdict is None:
                    continue
                del self._pending[digest]
                if isinstance(verdict, BlockNode):
                    attached.append(verdict)
                    progress = True
                else:
                    rejected += 1
        if attached:
            self._best = None
        return attached, rejected

    def _try_attach(self, digest: Hash32, validate: BlockValidator) -> BlockNode | bool | None:
        """A new node, False (reject for good) or None (keep waiting)."""
        p = self._pending[digest]
        msg = p.message
        if p.info is None:
            p.info = validate(msg.payload)
            if p.info is None:
                return None
            if p.info.hash != msg.digest or p.info.height != msg.height:
                return False
        parent = self._nodes.get(p.info.parent_hash)
        if parent is None:
            return None
        run = self._run_after(parent, msg.round, msg.signer)
        if p.info.height != parent.height + 1 or run is None:
            return False
        node = BlockNode(digest, parent.hash, msg.height, msg.round, msg.signer, run, msg)
        self._nodes[digest] = node
        self._children.setdefault(parent.hash, []).append(digest)
        return node

    def _run_after(self, parent: BlockNode, slot: int, producer: Address) -> int | None:
        """Run length of a child in ``slot`` by ``producer``, or None if not allowed."""
        if slot > parent.slot:
            return 1
        same_run = slot == parent.slot and producer == parent.producer
        return parent.run + 1 if same_run and parent.run < self.blocks_per_slot else None

    def finalize(self, block_hash: Hash32, height: int) -> int:
        """Make ``block_hash`` (at ``height``) the root; drop everything not below it.

        Returns how many pending blocks were dropped without ever having validated.
        """
        node = self._nodes.get(block_hash)
        if node is None:
            node = BlockNode(block_hash, ZERO_HASH, height, UNKNOWN_SLOT, None, 0, None)
        keep: dict[Hash32, BlockNode] = {block_hash: node}
        frontier = [block_hash]
        while frontier:
            nxt: list[Hash32] = []
            for h in frontier:
                for c in self._children.get(h, []):
                    keep[c] = self._nodes[c]
                    nxt.append(c)
            frontier = nxt
        self._children = {h: cs for h, cs in self._children.items() if h in keep}
        self._nodes = keep
        self.root = node
        never_valid = sum(
            1 for p in self._pending.values() if p.message.height <= height and p.info is None
        )
        self._pending = {d: p for d, p in self._pending.items() if p.message.height > height}
        self._best = None
        return never_valid

    def invalidate(self) -> None:
        """Votes changed: recompute the fork choice on the next query."""
        self._best = None

    # -- fork choice ------------------------------------------------------------------

    def best_chain(self, pol_round: Callable[[bytes], int]) -> list[BlockNode]:
        """The fork-choice chain, from the root's child to the head (may be empty)."""
        if self._best is not None:
            return self._best
        depth: dict[Hash32, int] = {}
        for node in sorted(self._nodes.values(), key=lambda n: -n.height):
            kids = self._children.get(node.hash, [])
            depth[node.hash] = 1 + max((depth[c] for c in kids), default=-1)
        chain: list[BlockNode] = []
        at = self.root.hash
        while self._children.get(at):
            at = min(
                self._children[at],
                key=lambda c: (-pol_round(c), -depth[c], self._nodes[c].slot, c),
            )
            chain.append(self._nodes[at])
        self._best = chain
        return chain

    def head(self, pol_round: Callable[[bytes], int]) -> BlockNode:
        """The fork-choice head (the root when no block is above it)."""
        chain = self.best_chain(pol_round)
        return chain[-1] if chain else self.root
