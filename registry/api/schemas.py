"""Pydantic models at the API edge: ``XCreate`` in, ``XPublic`` out.

Digests are ``sha256:<hex>``, addresses and hashes ``0x``-prefixed lowercase hex.
Every on-chain record carries a :class:`Proof`: the transaction that created it and the
block that holds it, so a client can check it against any miner or an evidence bundle.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AccountPublic",
    "BlobPublic",
    "ChainPublic",
    "ChallengeCreate",
    "ChallengePublic",
    "DatasetPublic",
    "ErrorBody",
    "EventPublic",
    "LineagePublic",
    "ModelPublic",
    "ModelSummary",
    "ModelVersionPublic",
    "Proof",
    "RoundPublic",
    "TokenCreate",
    "TokenPublic",
    "TransactionCreate",
    "TransactionPublic",
    "UpdatePublic",
]

HEX_ADDRESS = r"^0x[0-9a-fA-F]{40}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code`` and a human ``message``."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail


class ChallengeCreate(_Strict):
    """Ask for a sign-in challenge for ``address``."""

    address: str = Field(pattern=HEX_ADDRESS, examples=["0x" + "ab" * 20])


class ChallengePublic(BaseModel):
    """The exact text to sign with EIP-191 ``personal_sign``."""

    message: str


class TokenCreate(_Strict):
    """A signed challenge, exchanged for a bearer token."""

    address: str = Field(pattern=HEX_ADDRESS)
    signature: str = Field(pattern=r"^(0x)?[0-9a-fA-F]{130}$", description="65 bytes, hex")


class TokenPublic(BaseModel):
    """A bearer token valid at every miner of the consortium until ``expires_at``."""

    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: int


class Proof(BaseModel):
    """Where a record was written on chain."""

    tx_hash: str
    block_height: int
    block_hash: str
    registrant: str = Field(description="The account that sent the transaction.")


class BlobPublic(BaseModel):
    """A stored artifact."""

    digest: str
    size: int
    created: bool = Field(description="False if the blob was already stored.")


class ChainPublic(BaseModel):
    """The node's view of the chain."""

    chain_id: int
    height: int
    head_hash: str
    registry_address: str


class AccountPublic(BaseModel):
    """An account's next nonce (counting pending transactions) and on-chain roles."""

    address: str
    nonce: int
    roles: list[str]
    role_bits: int


class DatasetPublic(BaseModel):
    """One dataset version."""

    id: int
    name: str
    version: int
    digest: str
    size: int
    media_type: str
    metadata_digest: str | None
    registrant: str
    block: int
    proof: Proof | None


class ModelVersionPublic(BaseModel):
    """One model version (``id`` is the global version id used for lineage)."""

    id: int
    name: str
    version: int
    digest: str
    size: int
    format: str
    parents: list[int]
    datasets: list[int]
    metadata_digest: str | None
    registrant: str
    block: int
    round_id: int | None
    status: Literal["active", "deprecated", "revoked"]
    status_reason: str
    aliases: list[str]
    proof: Proof | None


class ModelSummary(BaseModel):
    """A model name: how many versions, the newest live one, its aliases."""

    name: str
    versions: int
    latest: int | None = Field(description="Global id of the newest non-revoked version.")
    aliases: dict[str, int]


class ModelPublic(ModelSummary):
    """A model with its versions (a page of them, oldest first)."""

    version_list: list[ModelVersionPublic]


class UpdatePublic(BaseModel):
    """A twin's training update in a round."""

    id: int
    round_id: int
    twin: str
    digest: str
    size: int
    samples: int
    kind: Literal["dense", "sparse"]
    metrics_digest: str | None
    block: int
    proof: Proof | None


class RoundPublic(BaseModel):
    """A federated round; ``close_proof`` once it is closed or cancelled."""

    id: int
    model: str
    base_version: int
    min_updates: int
    deadline: int
    opener: str
    opened_block: int
    status: Literal["open", "closed", "cancelled"]
    update_ids: list[int]
    strategy: str | None
    included_update_ids: list[int]
    result_version: int | None
    closer: str | None
    closed_block: int | None
    cancel_reason: str
    proof: Proof | None
    close_proof: Proof | None


class LineagePublic(BaseModel):
    """Everything a version derives from: ancestors, datasets, rounds and their updates."""

    root: int
    versions: list[ModelVersionPublic]
    datasets: list[DatasetPublic]
    rounds: list[RoundPublic]
    updates: list[UpdatePublic]
    truncated: bool = Field(description="True if the walk stopped at its size bound.")


class TransactionCreate(_Strict):
    """A signed raw transaction (EIP-2718 or legacy), hex encoded."""

    raw: str = Field(pattern=r"^(0x)?([0-9a-fA-F]{2})+$", max_length=2 + 2 * 128 * 1024)


class EventPublic(BaseModel):
    """A decoded ModelRegistry event of a transaction."""

    name: str
    log_index: int
    args: dict[str, Any]


class TransactionPublic(BaseModel):
    """A transaction's fate: ``pending`` (admitted, not yet committed) or its receipt."""

    tx_hash: str
    status: Literal["pending", "committed", "reverted"]
    block_height: int | None = None
    block_hash: str | None = None
    index: int | None = None
    sender: str | None = None
    to: str | None = None
    gas_used: int | None = None
    events: list[EventPublic] = []
