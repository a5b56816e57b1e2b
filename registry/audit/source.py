"""A miner's data directory, opened read-only for auditing.

The audit tools read what a miner stores — ``chain.db`` (blocks, receipts, state,
certificates), ``consensus.db`` (equivocation evidence), ``blobs/`` (artifacts) — plus the
network's ``genesis.json``. Nothing here writes to the miner's files; SQLite's WAL mode lets
the miner keep running while an analyst reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.chain.genesis import Genesis, load_genesis
from node.errors import InvalidInput

__all__ = ["MinerData"]


@dataclass(frozen=True)
class MinerData:
    """Paths of one miner's stored data and the network's genesis."""

    data_dir: Path
    genesis_path: Path
    genesis: Genesis

    @classmethod
    def open(cls, data_dir: str | Path, genesis: str | Path | None = None) -> MinerData:
        """``data_dir`` holds ``chain.db``; ``genesis`` defaults to the one beside it.

        Raises :class:`InvalidInput` naming what is missing.
        """
        data = Path(data_dir)
        if not (data / "chain.db").is_file():
            raise InvalidInput(f"{data}: no chain.db here (expected a miner's data directory)")
        if genesis is None:
            candidates = [data / "genesis.json", data.parent / "genesis.json"]
            candidates += [data.parent.parent / "genesis.json"]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise InvalidInput(f"{data}: no genesis.json found nearby; pass --genesis")
            genesis = found
        return cls(data, Path(genesis), load_genesis(genesis))

    @property
    def chain_db(self) -> Path:
        """The chain store (blocks, receipts, state, certificates)."""
        return self.data_dir / "chain.db"

    @property
    def consensus_db(self) -> Path:
        """The replica's own store (hard state, equivocation evidence)."""
        return self.data_dir / "consensus.db"

    @property
    def blobs_dir(self) -> Path:
        """The content-addressed artifact store."""
        return self.data_dir / "blobs"
