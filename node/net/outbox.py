"""Per-peer bounded outbound queues and reconnect backoff.

**Drop policy: drop-oldest.** When a peer's queue is over its frame or byte bound, the
*oldest* queued frames are discarded (and counted) to make room for the new one. For
consensus traffic the newest message is the most useful one (an old prepare for a view
that has since changed is worthless), and a request whose frame is dropped simply times
out, so its caller retries. A queue holds frames while its peer is disconnected; they go
out, oldest first, once a connection is up again.

Control frames (PING, GOODBYE) travel in a separate, tiny *urgent* lane that is drained
first and never dropped, so keep-alives are not starved behind a blob transfer.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque


class Outbox:
    """A bounded FIFO of encoded frames for one peer, dropping the oldest on overflow."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("outbox bounds must be positive")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: deque[bytes] = deque()
        self._urgent: deque[bytes] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._frames) + len(self._urgent)

    @property
    def queued_bytes(self) -> int:
        """Bytes held in the (non-urgent) queue."""
        return self._bytes

    def put(self, frame: bytes) -> int:
        """Queue ``frame``; return how many older frames were dropped to make room.

        A frame larger than ``max_bytes`` on its own is refused with ``ValueError``
        (callers bound frames by the max frame size, which is smaller).
        """
        if len(frame) > self.max_bytes:
            raise ValueError(f"frame of {len(frame)} bytes exceeds the queue bound")
        dropped = 0
        while self._frames and (
            len(self._frames) >= self.max_frames or self._bytes + len(frame) > self.max_bytes
        ):
            self._bytes -= len(self._frames.popleft())
            dropped += 1
        self._frames.append(frame)
        self._bytes += len(frame)
        self._ready.set()
        return dropped

    def put_urgent(self, frame: bytes) -> None:
        """Queue a control frame ahead of data; at most a few are ever pending."""
        if len(self._urgent) < 8:
            self._urgent.append(frame)
            self._ready.set()

    def get_nowait(self) -> bytes | None:
        """Next frame (urgent lane first), or None if empty."""
        if self._urgent:
            return self._urgent.popleft()
        if self._frames:
            frame = self._frames.popleft()
            self._bytes -= len(frame)
            return frame
        return None

    async def get(self) -> bytes:
        """Wait for and remove the next frame.

        The frame is removed without any await after the wake-up, so a task cancelled
        while waiting never loses a frame.
        """
        while True:
            frame = self.get_nowait()
            if frame is not None:
                return frame
            self._ready.clear()
            await self._ready.wait()


class Backoff:
    """Capped exponential backoff with jitter: delay ``n`` is uniform in ``[d/2, d]``
    where ``d = min(maximum, initial * 2**n)``.

    Half the delay is fixed so that a peer is not hammered, half is random so that many
    miners restarting together do not dial in lock-step.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the base, up to the cap."""
        ceiling = min(self.maximum, self.initial * 2 ** min(self._attempt, 62))
        self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from ``initial`` (after a successful connection)."""
        self._attempt = 0
