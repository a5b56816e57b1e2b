"""The PBFT message log: what a replica has seen per height and view, and checkpoints.

Theory of operation
-------------------
Every admitted PRE-PREPARE, PREPARE and COMMIT for a height above the stable checkpoint is
kept in a :class:`Slot` (one per height and view); messages for heights the replica has
not reached yet are kept too and looked at once the height becomes pending, so message
order does not matter. Blocks are kept per height by digest once the injected validator
has confirmed that the bytes hash to the digest. CHECKPOINT messages are kept per height
until a quorum agrees. Everything at or below the stable checkpoint is dropped by
:meth:`MessageLog.collect_through` (garbage collection).

Only the first message per signer and slot is kept; a second, conflicting one is the
equivocation detector's business, not the log's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.consensus.engine import BlockInfo
from node.consensus.messages import SignedMessage
from node.consensus.types import Address, Hash32


@dataclass
class Slot:
    """One (height, view): its PRE-PREPARE and the PREPAREs and COMMITs seen."""

    pre_prepare: SignedMessage | None = None
    accepted: bool = False  # PRE-PREPARE checked against the parent at the pending height
    rejected: bool = False  # ... and found not to extend our chain
    prepares: dict[Address, SignedMessage] = field(default_factory=dict)
    commits: dict[Address, SignedMessage] = field(default_factory=dict)

    def matching_prepares(self, digest: Hash32, primary: Address) -> list[SignedMessage]:
        """PREPAREs for ``digest`` from backups (the primary's PRE-PREPARE is its vote)."""
        return [
            self.prepares[s]
            for s in sorted(self.prepares)
            if s != primary and self.prepares[s].digest == digest
        ]

    def commit_groups(self) -> list[tuple[Hash32, list[SignedMessage]]]:
        """COMMITs grouped by digest, digests sorted, votes sorted by signer."""
        groups: dict[Hash32, list[SignedMessage]] = {}
        for s in sorted(self.commits):
            msg = self.commits[s]
            groups.setdefault(msg.digest, []).append(msg)
        return sorted(groups.items())


@dataclass
class HeightLog:
    """Everything seen for one height."""

    slots: dict[int, Slot] = field(default_factory=dict)
    blocks: dict[Hash32, bytes] = field(default_factory=dict)  # digest -> validated bytes
    infos: dict[Hash32, BlockInfo] = field(default_factory=dict)
    # Blocks of PRE-PREPAREs for heights we have not reached: the validator can only judge
    # a block once its parent is committed, so they wait here unverified.
    unverified: dict[Hash32, bytes] = field(default_factory=dict)

    def payload(self, digest: Hash32) -> bytes | None:
        """The bytes of block ``digest`` if we hold them (verified or not)."""
        return self.blocks.get(digest, self.unverified.get(digest))

    def slot(self, view: int) -> Slot:
        """The slot for ``view`` (created empty on first use)."""
        s = self.slots.get(view)
        if s is None:
            s = self.slots[view] = Slot()
        return s

    def views(self) -> list[int]:
        """Views with a slot, ascending."""
        return sorted(self.slots)


class MessageLog:
    """Per-height logs and checkpoint votes above the stable checkpoint."""

    def __init__(self) -> None:
        self._heights: dict[int, HeightLog] = {}
        self._checkpoints: dict[int, dict[Address, SignedMessage]] = {}

    def at(self, height: int) -> HeightLog:
        """The log of ``height`` (created empty on first use)."""
        log = self._heights.get(height)
        if log is None:
            log = self._heights[height] = HeightLog()
        return log

    def peek(self, height: int) -> HeightLog | None:
        """The log of ``height`` if anything was recorded for it."""
        return self._heights.get(height)

    def add_checkpoint(self, msg: SignedMessage) -> None:
        """Record a CHECKPOINT vote (the first per signer and height counts)."""
        self._checkpoints.setdefault(msg.height, {}).setdefault(msg.signer, msg)

    def checkpoint_quorum(self, height: int, quorum: int) -> tuple[Hash32, list[SignedMessage]]:
        """The digest with at least ``quorum`` CHECKPOINT votes at ``height`` and its votes
        (sorted by signer, exactly ``quorum``), or ``(b"", [])`` if there is none."""
        groups: dict[Hash32, list[SignedMessage]] = {}
        by = self._checkpoints.get(height, {})
        for s in sorted(by):
            groups.setdefault(by[s].digest, []).append(by[s])
        for digest, votes in sorted(groups.items()):
            if len(votes) >= quorum:
                return digest, votes[:quorum]
        return Hash32(b""), []

    def own_checkpoints(self, signer: Address) -> list[SignedMessage]:
        """This replica's CHECKPOINT votes still kept, by height."""
        return [
            self._checkpoints[h][signer]
            for h in sorted(self._checkpoints)
            if signer in self._checkpoints[h]
        ]

    def collect_through(self, height: int) -> None:
        """Garbage-collect everything at or below ``height`` (the new stable checkpoint)."""
        for h in [h for h in self._heights if h <= height]:
            del self._heights[h]
        for h in [h for h in self._checkpoints if h <= height]:
            del self._checkpoints[h]

    def heights(self) -> list[int]:
        """Heights with a log, ascending (for tests and status)."""
        return sorted(self._heights)

    def checkpoint_heights(self) -> list[int]:
        """Heights with CHECKPOINT votes, ascending."""
        return sorted(self._checkpoints)
