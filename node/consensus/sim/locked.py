"""The IBFT-1.0 "locked on different blocks" liveness case, staged with drop rules.

IBFT 1.0 locks a replica on the block it prepared and never releases it. With
``n = 4``: replica ``a`` prepares block A in view ``v``, commits are lost, the view change
that starts view ``v' > v`` does not include ``a``'s view-change message, so the new
primary proposes a fresh block B and replica ``b`` prepares B in ``v'``; commits are lost
again. Crash one more replica: the three left are ``a`` (locked on A), ``b`` (locked on B)
and one free replica, and no block can gather a quorum of three — IBFT 1.0 stalls for ever.
PBFT must not: the next VIEW-CHANGE carries both prepared certificates, NEW-VIEW re-proposes
the block prepared in the highest view, and ``a`` is released from A by it.

The scenario is engine-agnostic: it only looks at ``Kind`` and ``(height, round)`` of
messages. Stage 1 delivers the round-``v`` PREPAREs at the target height only to ``a`` (the
first replica seen sending one: certainly a backup) and drops every COMMIT at that height
and every VIEW-CHANGE ``a`` sends. Stage 2 does the same for ``b`` in the next round seen.
Stage 3 crashes ``f`` replicas other than ``a`` and ``b``, lifts the rules, and expects the
height to commit; the report says whether the two locks really differed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.consensus.messages import Kind, SignedMessage
from node.consensus.sim.network import Envelope
from node.consensus.sim.scenarios import Scenario

if TYPE_CHECKING:
    from node.consensus.sim.cluster import Simulation

STAGE_TIMEOUT = 200  # ticks a stage may wait for its lock before the scenario moves on


class LockedScenario(Scenario):
    """See the module docstring."""

    name = "locked"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        self.arm_at = sim.rng.between(10, 30)
        self.stage = 0
        self.height = -1
        self.stage_since = 0
        self.target_of: dict[int, int] = {}  # round -> replica receiving its PREPAREs
        self.rounds: list[int] = []  # locked rounds, in order (a's, then b's)
        self._prepares: dict[tuple[int, int, bytes], set[bytes]] = {}
        self.locks: dict[int, tuple[int, bytes]] = {}  # replica -> (round, digest) prepared
        self.crashed: list[int] = []
        self.released_at = -1
        self.committed_at = -1

    # -- staging ----------------------------------------------------------------------

    def on_tick(self, now: int) -> None:
        """Arm at ``arm_at``; release once both locks exist (or a stage times out)."""
        sim = self.sim
        if sim.healed and self.stage < 3:
            self.stage = 3
        if self.stage == 0 and now >= self.arm_at:
            self.height = sim.max_honest_tip() + 2
            self.stage, self.stage_since = 1, now
            sim.network.drop_rules.append(self._drop)
        elif self.stage in (1, 2) and (
            len(self.locks) >= 2 or now - self.stage_since > STAGE_TIMEOUT
        ):
            self._release(now)
        if (
            self.stage == 3
            and self.committed_at < 0
            and self.released_at >= 0
            and all(sim.checker.tip(i) >= self.height for i in sim.running_honest())
        ):
            self.committed_at = now

    def _release(self, now: int) -> None:
        sim = self.sim
        self.stage, self.released_at = 3, now
        if self._drop in sim.network.drop_rules:
            sim.network.drop_rules.remove(self._drop)
        spare = [i for i in sim.running_honest() if i not in self.locks]
        self.crashed = sim.rng.sample(spare, min(len(spare), sim.validators.f))
        for i in self.crashed:
            sim.crash(i)
        sim.expect_progress(now + sim.options.recovery_ticks)

    def _drop(self, src: int, dst: int, msg: SignedMessage, now: int) -> bool:
        if self.stage not in (1, 2):
            return False
        if msg.kind == Kind.VIEW_CHANGE:
            return bool(self.rounds) and src == self.target_of[self.rounds[0]]
        if msg.height != self.height:
            return False
        if msg.kind == Kind.COMMIT:
            return True
        if msg.kind != Kind.PREPARE:
            return False
        if msg.round not in self.target_of:
            if len(self.target_of) >= 2 or src in self.target_of.values():
                return True  # a third round, or a lock target would be re-used: starve it
            self.target_of[msg.round] = src
            self.rounds.append(msg.round)
            self.stage, self.stage_since = len(self.rounds), now
        return dst != self.target_of[msg.round]

    # -- observing locks --------------------------------------------------------------

    def on_deliver(self, env: Envelope) -> None:
        """Count PREPAREs delivered to the lock targets to spot when they are prepared.

        (PBFT re-proposals travel inside NEW-VIEW, so the PREPARE count is the signal.)
        """
        msg = env.body
        if not isinstance(msg, SignedMessage) or msg.height != self.height:
            return
        if msg.kind == Kind.PREPARE and self.target_of.get(msg.round) == env.dst:
            voters = self._prepares.setdefault((env.dst, msg.round, msg.digest), set())
            voters.add(msg.signer)
            if len(voters) >= self.sim.validators.quorum - 1 and env.dst not in self.locks:
                self.locks[env.dst] = (msg.round, msg.digest)

    def report(self) -> dict[str, int | str]:
        """The locks created, whether they differ, and when the height committed."""
        digests = {d for _, d in self.locks.values()}
        return {
            "height": self.height,
            "locks": ";".join(f"r{i}@v{v}:{d.hex()[:8]}" for i, (v, d) in self.locks.items()),
            "locks_differ": int(len(self.locks) >= 2 and len(digests) >= 2),
            "crashed": ",".join(str(i) for i in self.crashed),
            "released_at": self.released_at,
            "committed_at": self.committed_at,
        }
