"""DPoS time and membership: committees per epoch, the producer schedule, the slot clock.

Committees
----------
Heights are grouped in epochs of ``E`` heights: epoch ``k`` is ``[k*E, (k+1)*E)``. The
committee of epoch ``k >= 1`` is read by the host from Election contract state after it
executes the *final* block at height ``(k-1)*E`` (the epoch boundary block), and handed
over with ``set_validators(committee, k*E)``. It takes effect at height ``k*E``, the
first epoch boundary after the block that determined it — and never before that block is
final *and applied*: :meth:`Committees.resolve` only fixes epoch ``k`` once the host has
acknowledged (``advance()``) the Ready that committed block ``(k-1)*E``. Until then,
nothing at heights ``>= k*E`` is produced, confirmed or admitted, so a non-final boundary
block can never switch the schedule. If the host offered no committee for ``k*E`` by then,
the committee of epoch ``k-1`` carries over (the Election contract elected the same
delegates). Both outcomes depend only on final chain state, so every honest delegate
resolves the same committee. Once resolved, an epoch's committee never changes.

Producer schedule
-----------------
Slots are absolute: slot ``s`` spans ``slot_ticks`` ticks of the delegate's slot clock.
The producer of slot ``s`` for a block at height ``h`` is
``committee(epoch of h).member_at(s)``: round-robin over the committee.

Slot clock
----------
Every delegate counts slots with its own ticks, which run at slightly different rates (the
simulator skews them) and restart from the persisted slot after a crash. Delegates
announce their slot in every block (its round) and every pre-confirm (its payload). A
delegate moves its clock *forward* to the ``(f+1)``-th highest slot announced by the other
members: at least one honest delegate is that far, so Byzantine announcements alone never
drag an honest clock anywhere. Clocks never move backward; a clock more than one slot
ahead of that reference runs at half speed until the others catch up, so a fast clock
cannot run away from the committee (and out of everyone's slot window) for ever.
"""

from __future__ import annotations

from node.consensus.types import Address, ValidatorSet


class Committees:
    """The committee of every epoch, resolved only after its boundary block is applied."""

    def __init__(self, epoch_length: int, validators: ValidatorSet, next_height: int) -> None:
        if epoch_length < 1:
            raise ValueError("epoch_length >= 1")
        self.epoch_length = epoch_length
        first = next_height // epoch_length
        self._resolved: dict[int, ValidatorSet] = {first: validators}
        self._offered: dict[int, ValidatorSet] = {}
        self._first = first
        self._last = first

    def epoch_of(self, height: int) -> int:
        """Epoch index of ``height``."""
        return height // self.epoch_length

    def offer(self, validators: ValidatorSet, start_height: int) -> None:
        """Record the committee the host read for the epoch starting at ``start_height``.

        Raises ``ValueError`` (the host's fault) for a start that is not an epoch boundary
        or for a different committee of an epoch that is already resolved.
        """
        if start_height < 0 or start_height % self.epoch_length:
            raise ValueError(
                f"committee start {start_height} is not an epoch boundary "
                f"(multiple of {self.epoch_length})"
            )
        epoch = start_height // self.epoch_length
        if epoch < self._first:
            return  # an old epoch, re-announced at restart: nothing to do
        current = self._resolved.get(epoch)
        if current is not None:
            if current.members != validators.members:
                raise ValueError(
                    f"committee of epoch {epoch} is already fixed and differs; "
                    "set_validators came after the boundary block was applied"
                )
            return
        self._offered[epoch] = validators

    def resolve(self, applied_height: int) -> None:
        """Fix every epoch whose determining block is at or below ``applied_height``."""
        # The committee of epoch k+1 is determined by the block at height k*E.
        while self._last * self.epoch_length <= applied_height:
            nxt = self._last + 1
            self._resolved[nxt] = self._offered.pop(nxt, self._resolved[self._last])
            self._last = nxt

    def at(self, height: int) -> ValidatorSet | None:
        """The committee for ``height``, or None if not resolved (or forgotten)."""
        return self._resolved.get(height // self.epoch_length)

    @property
    def first_height(self) -> int:
        """Lowest height with a known committee."""
        return self._first * self.epoch_length

    @property
    def last_height(self) -> int:
        """Highest height with a resolved committee."""
        return (self._last + 1) * self.epoch_length - 1

    def producer(self, height: int, slot: int) -> Address | None:
        """Who may produce the block at ``height`` in ``slot`` (None: unknown committee)."""
        committee = self.at(height)
        return None if committee is None else committee.member_at(slot)

    def forget_below(self, height: int) -> None:
        """Forget committees of epochs that end below ``height`` (keeps the current one)."""
        keep_from = min(height // self.epoch_length, self._last)
        for epoch in [e for e in self._resolved if e < keep_from]:
            del self._resolved[epoch]
        self._first = max(self._first, keep_from)


class SlotClock:
    """Counts slots in ticks and follows the delegates' announced slots forward."""

    def __init__(self, slot_ticks: int, slot: int = 0) -> None:
        if slot_ticks < 1:
            raise ValueError("slot_ticks >= 1")
        self.slot_ticks = slot_ticks
        self.slot = slot
        self.ticks_in_slot = 0
        self._claims: dict[Address, int] = {}
        self._reference: int | None = None
        self._skip = False

    def tick(self) -> bool:
        """One tick; True when it ended the current slot (and started the next)."""
        # More than a slot ahead of the committee: half speed. (One slot ahead is normal:
        # nobody announces a slot before signing in it, and a silent producer's slot
        # sees no signature at all.)
        if self._reference is not None and self.slot > self._reference + 1:
            self._skip = not self._skip
            if self._skip:
                return False
        self.ticks_in_slot += 1
        if self.ticks_in_slot < self.slot_ticks:
            return False
        self.ticks_in_slot = 0
        self.slot += 1
        return True

    def announce(self, who: Address, slot: int) -> None:
        """``who`` (a verified member) was at ``slot`` when it signed something."""
        if slot > self._claims.get(who, -1):
            self._claims[who] = slot

    def follow(self, committee: ValidatorSet, me: Address) -> bool:
        """Jump forward to the ``(f+1)``-th highest slot announced by other members.

        Returns True if the clock moved.
        """
        claims = sorted(
            (self._claims[m] for m in committee.members if m != me and m in self._claims),
            reverse=True,
        )
        k = committee.weak_quorum
        if len(claims) < k:
            self._reference = None
            return False
        self._reference = claims[k - 1]
        if self._reference <= self.slot:
            return False
        self.slot = self._reference
        self.ticks_in_slot = 0
        return True
