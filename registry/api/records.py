"""Registry records as the API serves them: contract state plus on-chain proof points.

A :class:`RecordReader` reads everything at one committed head, so the records of one
answer are mutually consistent. The proof of a record (transaction hash, block height
and hash, registrant) comes from the event the contract logged when it was written: the
record's own ``block`` field names the block, and the log index narrows it to the event
with the record's id as its first indexed topic — one indexed lookup per record.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from contracts import RoundStatus, VersionStatus
from node.chain.types import Address, Hash32
from node.errors import InvalidInput, NotFound
from registry.api.contract import (
    REGISTRY_ADDRESS_BYTES,
    DatasetRecord,
    RoundRecord,
    UpdateRecord,
    VersionRecord,
    decode_event,
    event_topic,
)
from registry.api.deps import RegistryContext
from registry.api.schemas import (
    DatasetPublic,
    LineagePublic,
    ModelSummary,
    ModelVersionPublic,
    Proof,
    RoundPublic,
    UpdatePublic,
)

__all__ = ["MAX_LINEAGE", "RecordReader", "check_name"]

#: Versions a lineage walk visits at most.
MAX_LINEAGE: Final = 256
_MAX_NAME: Final = 64
_MAX_ALIAS: Final = 32
_STATUS = {
    VersionStatus.ACTIVE: "active",
    VersionStatus.DEPRECATED: "deprecated",
    VersionStatus.REVOKED: "revoked",
}
_ROUND_STATUS = {
    RoundStatus.OPEN: "open",
    RoundStatus.CLOSED: "closed",
    RoundStatus.CANCELLED: "cancelled",
}
_ACTOR = {
    "DatasetRegistered": "registrant",
    "ModelVersionRegistered": "registrant",
    "RoundOpened": "opener",
    "RoundClosed": "closer",
    "RoundCancelled": "actor",
    "UpdatePushed": "twin",
}


def check_name(text: str, what: str, limit: int = _MAX_NAME) -> str:
    """A name the contract can hold: non-empty UTF-8 of at most ``limit`` bytes."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid UTF-8") from None
    if size == 0 or size > limit:
        raise InvalidInput(f"{what} must be 1 to {limit} bytes of UTF-8, got {size}")
    return text


def _number(ref: str) -> int | None:
    """``ref`` as a version number if it is one (ASCII digits, bounded length)."""
    if ref.isascii() and ref.isdigit():
        if len(ref) > 78:  # more than 2**256: no such version
            raise NotFound(f"version {ref[:20]}... does not exist")
        return int(ref)
    return None


class RecordReader:
    """Reads registry records at the current head (one instance per request)."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context
        self.head = context.view.head()
        self.reader = context.reader(self.head)
        self._aliases: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------ proofs

    def proof(self, event: str, record_id: int, block: int) -> Proof | None:
        """The proof point of the ``event`` that wrote record ``record_id`` in ``block``."""
        if block > self.head.height:
            return None
        topic = Hash32(record_id.to_bytes(32, "big"))
        logs = self.context.view.logs(
            block,
            block,
            [Address(REGISTRY_ADDRESS_BYTES)],
            [Hash32(event_topic(event)), topic],
            limit=64,
        )
        for entry in logs:
            decoded = decode_event(entry.log.topics, entry.log.data)
            if decoded is None:
                continue
            return Proof(
                tx_hash="0x" + bytes(entry.tx_hash).hex(),
                block_height=entry.block_height,
                block_hash="0x" + bytes(entry.block_hash).hex(),
                registrant=str(decoded.args[_ACTOR[event]]),
            )
        return None

    # ------------------------------------------------------------ models

    def aliases(self, model: str) -> dict[str, int]:
        """Alias -> global version id of ``model``."""
        if model not in self._aliases:
            self._aliases[model] = {
                alias: self.reader.alias_of(model, alias) for alias in self.reader.aliases(model)
            }
        return self._aliases[model]

    def version(self, version_id: int) -> ModelVersionPublic:
        """A model version by global id."""
        return self._version(self.reader.version(version_id))

    def _version(self, r: VersionRecord) -> ModelVersionPublic:
        aliases = sorted(a for a, target in self.aliases(r.name).items() if target == r.id)
        return ModelVersionPublic(
            id=r.id,
            name=r.name,
            version=r.version,
            digest=str(r.digest),
            size=r.size,
            format=r.format,
            parents=list(r.parents),
            datasets=list(r.datasets),
            metadata_digest=str(r.metadata_digest) if r.metadata_digest else None,
            registrant=r.registrant,
            block=r.block,
            round_id=r.round_id or None,
            status=_STATUS[VersionStatus(r.status)],  # type: ignore[arg-type]
            status_reason=r.status_reason,
            aliases=aliases,
            proof=self.proof("ModelVersionRegistered", r.id, r.block),
        )

    def resolve_version(self, name: str, ref: str) -> int:
        """Global id of ``name`` at ``ref``: a version number, an alias or ``latest``.

        ``latest`` and aliases never resolve to a revoked version (the contract keeps
        that invariant); an explicit number does, and the record says it is revoked.
        """
        check_name(name, "model name")
        # One contract call on the way to a version; whether the model exists at all is
        # asked only to word a refusal (an unknown model is "unknown model" whatever ref).
        if ref == "latest":
            try:
                return self.reader.latest(name)
            except NotFound:
                self._known_model(name)
                raise NotFound(f"model {name!r} has no live (non-revoked) version") from None
        number = _number(ref)
        if number is not None:
            version_id = self.reader.version_id(name, number) if number > 0 else 0
            if version_id == 0:
                self._known_model(name)
                raise NotFound(f"model {name!r} has no version {number}")
            return version_id
        try:
            check_name(ref, "alias", _MAX_ALIAS)
        except InvalidInput:
            self._known_model(name)
            raise
        version_id = self.reader.alias_of(name, ref)
        if version_id == 0:
            self._known_model(name)
            raise NotFound(f"model {name!r} has no alias {ref!r}")
        return version_id

    def _known_model(self, name: str) -> None:
        """NotFound "unknown model" unless ``name`` has a version."""
        if self.reader.model_versions(name) == 0:
            raise NotFound(f"unknown model {name!r}")

    def model_summary(self, name: str) -> ModelSummary:
        """Version count, newest live version and aliases of ``name``."""
        check_name(name, "model name")
        count = self.reader.model_versions(name)
        if count == 0:
            raise NotFound(f"unknown model {name!r}")
        try:
            latest: int | None = self.reader.latest(name)
        except NotFound:
            latest = None
        return ModelSummary(name=name, versions=count, latest=latest, aliases=self.aliases(name))

    def model_versions(self, name: str, offset: int, limit: int) -> list[ModelVersionPublic]:
        """Versions ``offset + 1 .. offset + limit`` of ``name``."""
        count = self.reader.model_versions(name)
        numbers = range(offset + 1, min(count, offset + limit) + 1)
        return [self.version(self.reader.version_id(name, n)) for n in numbers]

    def model_names(self, offset: int, limit: int) -> list[str]:
        """Model names in order of first registration."""
        count = self.reader.count("modelCount")
        return [self.reader.model_name_at(i) for i in range(offset, min(count, offset + limit))]

    # ------------------------------------------------------------ datasets

    def dataset(self, dataset_id: int) -> DatasetPublic:
        """A dataset version by id."""
        return self._dataset(self.reader.dataset(dataset_id))

    def _dataset(self, r: DatasetRecord) -> DatasetPublic:
        return DatasetPublic(
            id=r.id,
            name=r.name,
            version=r.version,
            digest=str(r.digest),
            size=r.size,
            media_type=r.media_type,
            metadata_digest=str(r.metadata_digest) if r.metadata_digest else None,
            registrant=r.registrant,
            block=r.block,
            proof=self.proof("DatasetRegistered", r.id, r.block),
        )

    def resolve_dataset(self, name: str, ref: str) -> int:
        """Id of dataset ``name`` at ``ref``: a version number or ``latest``."""
        check_name(name, "dataset name")
        count = self.reader.dataset_versions(name)
        if count == 0:
            raise NotFound(f"unknown dataset {name!r}")
        if ref == "latest":
            return self.reader.dataset_id(name, count)
        number = _number(ref)
        if number is None:
            raise NotFound(f"dataset {name!r} has no version {ref!r} (a number or 'latest')")
        dataset_id = self.reader.dataset_id(name, number) if number > 0 else 0
        if dataset_id == 0:
            raise NotFound(f"dataset {name!r} has no version {number}")
        return dataset_id

    def dataset_versions(self, name: str) -> list[DatasetPublic]:
        """Every version of dataset ``name``, oldest first."""
        check_name(name, "dataset name")
        count = self.reader.dataset_versions(name)
        if count == 0:
            raise NotFound(f"unknown dataset {name!r}")
        return [self.dataset(self.reader.dataset_id(name, n)) for n in range(1, count + 1)]

    # ------------------------------------------------------------ rounds and updates

    def round(self, round_id: int) -> RoundPublic:
        """A round by id."""
        return self._round(self.reader.round(round_id))

    def _round(self, r: RoundRecord) -> RoundPublic:
        status = RoundStatus(r.status)
        ended = status != RoundStatus.OPEN
        close_event = "RoundClosed" if status == RoundStatus.CLOSED else "RoundCancelled"
        return RoundPublic(
            id=r.id,
            model=r.model,
            base_version=r.base_version,
            min_updates=r.min_updates,
            deadline=r.deadline,
            opener=r.opener,
            opened_block=r.opened_block,
            status=_ROUND_STATUS[status],  # type: ignore[arg-type]
            update_ids=list(r.update_ids),
            strategy=r.strategy or None,
            included_update_ids=list(r.included_update_ids),
            result_version=r.result_version or None,
            closer=r.closer if ended else None,
            closed_block=r.closed_block if ended else None,
            cancel_reason=r.cancel_reason,
            proof=self.proof("RoundOpened", r.id, r.opened_block),
            close_proof=self.proof(close_event, r.id, r.closed_block) if ended else None,
        )

    def update(self, update_id: int) -> UpdatePublic:
        """A training update by id."""
        return self._update(self.reader.update(update_id))

    def _update(self, r: UpdateRecord) -> UpdatePublic:
        return UpdatePublic(
            id=r.id,
            round_id=r.round_id,
            twin=r.twin,
            digest=str(r.digest),
            size=r.size,
            samples=r.samples,
            kind="sparse" if r.kind == 1 else "dense",
            metrics_digest=str(r.metrics_digest) if r.metrics_digest else None,
            block=r.block,
            proof=self.proof("UpdatePushed", r.id, r.block),
        )

    # ------------------------------------------------------------ lineage

    def lineage(self, root: int) -> LineagePublic:
        """Ancestors of version ``root`` (breadth first), their datasets, and for
        versions produced by a round, the round and every update it included."""
        versions: dict[int, ModelVersionPublic] = {}
        datasets: dict[int, DatasetPublic] = {}
        rounds: dict[int, RoundPublic] = {}
        updates: dict[int, UpdatePublic] = {}
        queue: deque[int] = deque([root])
        truncated = False
        while queue:
            version_id = queue.popleft()
            if version_id in versions:
                continue
            if len(versions) >= MAX_LINEAGE:
                truncated = True
                break
            version = versions[version_id] = self.version(version_id)
            queue.extend(version.parents)
            for dataset_id in version.datasets:
                if dataset_id not in datasets:
                    datasets[dataset_id] = self.dataset(dataset_id)
            if version.round_id and version.round_id not in rounds:
                round_ = rounds[version.round_id] = self.round(version.round_id)
                for update_id in round_.included_update_ids:
                    updates.setdefault(update_id, self.update(update_id))
        return LineagePublic(
            root=root,
            versions=list(versions.values()),
            datasets=sorted(datasets.values(), key=lambda d: d.id),
            rounds=sorted(rounds.values(), key=lambda r: r.id),
            updates=sorted(updates.values(), key=lambda u: u.id),
            truncated=truncated,
        )
