"""DPoS engine parameters (re-exported by :mod:`node.consensus.dpos`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DposConfig:
    """Parameters of the DPoS engine (all times in ticks)."""

    chain_id: int
    slot_ticks: int = 10  # ticks per producer slot
    blocks_per_slot: int = 1  # blocks a producer may chain within its slot
    epoch_length: int = 64  # heights per epoch (committee term)
    confirm_timeout: int = 40  # scale of the confirmation-round timers (see below)
    slot_window: int = 3  # accept blocks at most this many slots ahead of the local slot
    max_lag: int = 8  # produce at most this many heights above the last final block

    def __post_init__(self) -> None:
        for name in ("slot_ticks", "blocks_per_slot", "epoch_length", "confirm_timeout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} >= 1")
        if self.slot_window < 0 or self.max_lag < 1:
            raise ValueError("slot_window >= 0 and max_lag >= 1")

    def propose_wait(self, round_: int) -> int:
        """Ticks a delegate waits in ``round_`` for a block to pre-confirm before it
        pre-confirms nil: half the timeout, +1/8 per round up to a full timeout."""
        base = self.confirm_timeout
        return max(1, base // 2 + base * min(round_, 4) // 8)

    def vote_wait(self, round_: int) -> int:
        """Ticks a round lasts once a quorum took part in it without making a block
        final: a quarter of the timeout, growing to half."""
        base = self.confirm_timeout
        return max(1, base // 4 + base * min(round_, 4) // 16)

    @property
    def retransmit_every(self) -> int:
        """Ticks without progress after which a delegate re-sends its round's votes."""
        return self.confirm_timeout

    @property
    def amnesia_watch(self) -> int:
        """Ticks a delegate restarted without hard state listens before it votes."""
        return self.confirm_timeout + self.confirm_timeout // 2
