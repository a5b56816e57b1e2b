"""The simulator's only source of randomness: a seeded SplitMix64 generator.

``node.consensus`` may not import ``random`` (the sans-IO boundary test forbids it), and
the simulator must replay a seed byte for byte on any Python version, so it carries its own
tiny PRNG. SplitMix64 (Steele, Lea & Flood 2014; the seeder of xoroshiro) passes BigCrush,
is three lines long and has no platform-dependent behaviour. One :class:`SimRng` is created
from the run's seed and handed explicitly to whatever needs randomness; independent
sub-streams come from :meth:`SimRng.fork`, which is itself a draw from the parent, so the
whole run is still a function of the one seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


class SimRng:
    """A deterministic SplitMix64 stream seeded by an integer."""

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK

    def next_u64(self) -> int:
        """The next 64-bit output."""
        self._state = (self._state + _GOLDEN) & _MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def random(self) -> float:
        """A float uniform in ``[0, 1)`` (53 bits of precision)."""
        return (self.next_u64() >> 11) / float(1 << 53)

    def below(self, n: int) -> int:
        """An integer uniform in ``[0, n)``, without modulo bias."""
        if n <= 0:
            raise ValueError("below() needs a positive bound")
        # Rejection sampling over the largest multiple of n that fits in 64 bits.
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            x = self.next_u64()
            if x < limit:
                return x % n

    def between(self, lo: int, hi: int) -> int:
        """An integer uniform in ``[lo, hi]`` (both inclusive)."""
        if hi < lo:
            raise ValueError("between() needs lo <= hi")
        return lo + self.below(hi - lo + 1)

    def chance(self, p: float) -> bool:
        """True with probability ``p`` (no draw is made when ``p`` is 0 or 1)."""
        if p <= 0.0:
            return False
        if p >= 1.0:
            return True
        return self.random() < p

    def choice(self, items: Sequence[T]) -> T:
        """One element of a non-empty sequence."""
        return items[self.below(len(items))]

    def shuffle(self, items: list[T]) -> None:
        """Fisher-Yates shuffle in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """``k`` distinct elements, in random order."""
        pool = list(items)
        self.shuffle(pool)
        return pool[:k]

    def bytes(self, n: int) -> bytes:
        """``n`` pseudo-random bytes."""
        out = bytearray()
        while len(out) < n:
            out += self.next_u64().to_bytes(8, "big")
        return bytes(out[:n])

    def fork(self) -> SimRng:
        """An independent stream seeded from this one."""
        return SimRng(self.next_u64())
