"""Which engines the simulator can run, and the configuration it runs them with.

Engines are imported lazily, so the simulator (and its own tests) work while an engine
module is still being written. The simulator's default configuration shortens the
timeouts so that a few hundred ticks contain many view changes; ``--config key=value``
overrides any field of the engine's config dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node.consensus.engine import BlockValidator, Engine
from node.consensus.messages import Kind, SignedMessage, Signer
from node.consensus.sim.host import EngineFactory, Unwrap
from node.consensus.types import Hash32, ValidatorSet

#: The simulator's chain id: a run's signatures are never valid on a real network.
SIM_CHAIN_ID = 0x5117


@dataclass(frozen=True)
class EngineSpec:
    """How to build one engine kind for a run."""

    name: str
    commit_kind: Kind
    build: Callable[[int, dict[str, int]], EngineFactory]
    defaults: tuple[tuple[str, int], ...] = ()
    epoch_key: str | None = None  # config field that must match the simulated epochs
    unwrap: Callable[[int], Unwrap] | None = None  # signatures that travel inside bodies


def _pbft(chain_id: int, overrides: dict[str, int]) -> EngineFactory:
    from node.consensus.pbft import PbftConfig, PbftEngine

    config = PbftConfig(chain_id=chain_id, **overrides)

    def make(
        signer: Signer,
        validators: ValidatorSet,
        validate: BlockValidator,
        height: int,
        tip: Hash32,
        hard_state: bytes | None,
    ) -> Engine:
        return PbftEngine(
            config,
            signer,
            validators,
            validate,
            committed_height=height,
            committed_hash=tip,
            hard_state=hard_state,
        )

    return make


def _dpos(chain_id: int, overrides: dict[str, int]) -> EngineFactory:
    from node.consensus.dpos import DposConfig, DposEngine

    config = DposConfig(chain_id=chain_id, **overrides)

    def make(
        signer: Signer,
        validators: ValidatorSet,
        validate: BlockValidator,
        height: int,
        tip: Hash32,
        hard_state: bytes | None,
    ) -> Engine:
        return DposEngine(
            config,
            signer,
            validators,
            validate,
            committed_height=height,
            committed_hash=tip,
            hard_state=hard_state,
        )

    return make


def _pbft_unwrap(chain_id: int) -> Unwrap:
    """PRE-PREPAREs a NEW-VIEW re-issues travel as bare signatures inside its body.

    The checker must see them too (an honest primary signing a re-proposal and a fresh
    proposal for one height and view equivocates). Each is rebuilt from the prepared
    certificate it carries over and kept only if its signature verifies, so a rebuilding
    mistake can hide an equivocation but never invent one.
    """
    from node.consensus.pbft_codec import NewViewBody, ProofError, ViewChangeBody

    def unwrap(msg: SignedMessage) -> list[SignedMessage]:
        if msg.kind != Kind.NEW_VIEW:
            return []
        try:
            body = NewViewBody.decode(msg.payload)
            blocks: dict[tuple[int, bytes], bytes] = {}
            for vc in body.view_changes:
                for cert in ViewChangeBody.decode(vc.payload).prepared:
                    blocks[(cert.height, cert.digest)] = cert.pre_prepare.payload
        except ProofError:
            return []
        out = []
        for prop in body.reproposals:
            payload = blocks.get((prop.height, prop.digest))
            if prop.is_null or payload is None:
                continue
            pp = SignedMessage(
                msg.engine,
                Kind.PRE_PREPARE,
                prop.height,
                msg.round,
                Hash32(prop.digest),
                payload,
                msg.signer,
                prop.signature,
            )
            if pp.verify(chain_id):
                out.append(pp)
        return out

    return unwrap


ENGINES: dict[str, EngineSpec] = {
    "pbft": EngineSpec(
        "pbft",
        Kind.COMMIT,
        _pbft,
        defaults=(("base_timeout", 10), ("max_timeout", 80)),
        unwrap=_pbft_unwrap,
    ),
    "dpos": EngineSpec("dpos", Kind.CONFIRM, _dpos, epoch_key="epoch_length"),
}


def register_engine(spec: EngineSpec) -> None:
    """Make another engine available to the simulator (tests plug in toy engines)."""
    ENGINES[spec.name] = spec


def engine_factory(
    name: str, chain_id: int, config: tuple[tuple[str, int], ...], epoch_length: int = 0
) -> EngineFactory:
    """The factory for ``name``: simulator defaults, then the epochs, then ``config``."""
    try:
        spec = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; one of {sorted(ENGINES)}") from None
    settings = dict(spec.defaults)
    if epoch_length > 0 and spec.epoch_key is not None:
        settings[spec.epoch_key] = epoch_length
    settings.update(config)
    return spec.build(chain_id, settings)
