#pragma version ~=0.4.3
"""
@title TwinChain ModelRegistry
@notice Datasets, model versions with lineage, aliases, deprecation and revocation,
        and federated-learning rounds whose aggregate becomes a new model version.
@dev Theory of operation.

    Only digests (SHA-256 of the off-chain blob, as bytes32), sizes and lineage live
    here; the blobs live in the miners' content-addressed store.

    Identifiers. Every record gets a global id counting from 1 (0 means "none"):
    dataset ids, version ids, round ids, update ids. Names carry a per-name version
    counter too (`my-model` v1, v2, ...); `versionId(name, version)` and
    `datasetId(name, version)` translate. Everything else -- parents, base versions,
    alias targets, round results -- refers to model versions by GLOBAL VERSION ID,
    which may belong to another model name (a fine-tune of a foundation model).

    Digests are unique per kind: a dataset digest, a model-version digest and an
    update digest may each be registered once ("digest already registered").

    Version status: ACTIVE=0 -> DEPRECATED=1 -> REVOKED=2 (ACTIVE may go straight to
    REVOKED; nothing comes back). A revoked version cannot be a parent, a round base
    or an alias target; revoking one clears every alias of its model that pointed to
    it (an AliasMoved event to 0 for each). `latest(name)` skips revoked versions.

    Rounds: OPEN=0 -> CLOSED=1 (by a MINER, with the aggregate) or CANCELLED=2. An
    update may be pushed while the round is open and block.number <= deadline. A
    round may close once it holds min_updates updates or once the deadline has
    passed; the result is registered as a new version of the round's model, whose
    single parent is the base version and whose format is the base's format.

    Loops are bounded by the DynArray caps below; the only scan over history is the
    `latest` view, which walks back from the newest version over at most
    MAX_LATEST_SCAN versions (if that many newest versions are all revoked it
    reverts "no live version").
"""


interface IMembership:
    def rolesOf(account: address) -> uint256: view


ADMIN: constant(uint256) = 1
MINER: constant(uint256) = 2
TWIN: constant(uint256) = 4
PUBLISHER: constant(uint256) = 8

ACTIVE: constant(uint256) = 0
DEPRECATED: constant(uint256) = 1
REVOKED: constant(uint256) = 2

ROUND_OPEN: constant(uint256) = 0
ROUND_CLOSED: constant(uint256) = 1
ROUND_CANCELLED: constant(uint256) = 2

DENSE: constant(uint256) = 0
SPARSE: constant(uint256) = 1

MAX_NAME: constant(uint256) = 64
MAX_MEDIA_TYPE: constant(uint256) = 64
MAX_FORMAT: constant(uint256) = 32
MAX_ALIAS: constant(uint256) = 32
MAX_REASON: constant(uint256) = 256
MAX_STRATEGY: constant(uint256) = 32
MAX_PARENTS: constant(uint256) = 8
MAX_DATASETS: constant(uint256) = 16
MAX_ALIASES: constant(uint256) = 16
MAX_UPDATES: constant(uint256) = 128
MAX_LATEST_SCAN: constant(uint256) = 4096


struct Dataset:
    name: String[MAX_NAME]
    version: uint256
    digest: bytes32
    size: uint256
    media_type: String[MAX_MEDIA_TYPE]
    metadata_digest: bytes32
    registrant: address
    block: uint256

struct ModelVersion:
    name: String[MAX_NAME]
    version: uint256
    digest: bytes32
    size: uint256
    format: String[MAX_FORMAT]
    parents: DynArray[uint256, MAX_PARENTS]
    datasets: DynArray[uint256, MAX_DATASETS]
    metadata_digest: bytes32
    registrant: address
    block: uint256
    round_id: uint256
    status: uint256
    status_reason: String[MAX_REASON]

struct Round:
    model: String[MAX_NAME]
    base_version: uint256
    min_updates: uint256
    deadline: uint256
    opener: address
    opened_block: uint256
    status: uint256
    update_ids: DynArray[uint256, MAX_UPDATES]
    strategy: String[MAX_STRATEGY]
    included_update_ids: DynArray[uint256, MAX_UPDATES]
    result_version: uint256
    closer: address
    closed_block: uint256
    cancel_reason: String[MAX_REASON]

struct Update:
    round_id: uint256
    twin: address
    digest: bytes32
    size: uint256
    samples: uint256
    kind: uint256
    metrics_digest: bytes32
    block: uint256


event Initialized:
    initializer: indexed(address)
    membership: address

event DatasetRegistered:
    dataset_id: indexed(uint256)
    digest: indexed(bytes32)
    registrant: indexed(address)
    name: String[MAX_NAME]
    version: uint256
    size: uint256
    media_type: String[MAX_MEDIA_TYPE]
    metadata_digest: bytes32
    block: uint256

event ModelVersionRegistered:
    version_id: indexed(uint256)
    digest: indexed(bytes32)
    registrant: indexed(address)
    name: String[MAX_NAME]
    version: uint256
    size: uint256
    format: String[MAX_FORMAT]
    parents: DynArray[uint256, MAX_PARENTS]
    datasets: DynArray[uint256, MAX_DATASETS]
    metadata_digest: bytes32
    round_id: uint256
    block: uint256

event AliasMoved:
    version_id: indexed(uint256)
    previous_version_id: indexed(uint256)
    actor: indexed(address)
    model: String[MAX_NAME]
    alias: String[MAX_ALIAS]
    block: uint256

event VersionDeprecated:
    version_id: indexed(uint256)
    actor: indexed(address)
    name: String[MAX_NAME]
    version: uint256
    reason: String[MAX_REASON]
    block: uint256

event VersionRevoked:
    version_id: indexed(uint256)
    actor: indexed(address)
    name: String[MAX_NAME]
    version: uint256
    reason: String[MAX_REASON]
    block: uint256

event RoundOpened:
    round_id: indexed(uint256)
    base_version: indexed(uint256)
    opener: indexed(address)
    model: String[MAX_NAME]
    min_updates: uint256
    deadline: uint256
    block: uint256

event UpdatePushed:
    update_id: indexed(uint256)
    round_id: indexed(uint256)
    twin: indexed(address)
    digest: bytes32
    size: uint256
    samples: uint256
    kind: uint256
    metrics_digest: bytes32
    block: uint256

event RoundClosed:
    round_id: indexed(uint256)
    version_id: indexed(uint256)
    closer: indexed(address)
    strategy: String[MAX_STRATEGY]
    included_update_ids: DynArray[uint256, MAX_UPDATES]
    result_digest: bytes32
    result_size: uint256
    update_count: uint256
    block: uint256

event RoundCancelled:
    round_id: indexed(uint256)
    actor: indexed(address)
    reason: String[MAX_REASON]
    update_count: uint256
    block: uint256


initialized: public(bool)
membership: public(address)
datasetCount: public(uint256)
versionCount: public(uint256)
modelCount: public(uint256)
roundCount: public(uint256)
updateCount: public(uint256)

_datasets: HashMap[uint256, Dataset]
_dataset_by_digest: HashMap[bytes32, uint256]
_dataset_versions: HashMap[bytes32, uint256]  # keccak256(name) -> latest version number
_dataset_ids: HashMap[bytes32, HashMap[uint256, uint256]]  # keccak256(name) -> version -> id

_versions: HashMap[uint256, ModelVersion]
_version_by_digest: HashMap[bytes32, uint256]
_model_versions: HashMap[bytes32, uint256]  # keccak256(name) -> latest version number
_model_version_ids: HashMap[bytes32, HashMap[uint256, uint256]]
_model_names: HashMap[uint256, String[MAX_NAME]]  # 0-based enumeration

_alias_target: HashMap[bytes32, HashMap[bytes32, uint256]]  # model key -> alias key -> id
_alias_names: HashMap[bytes32, DynArray[String[MAX_ALIAS], MAX_ALIASES]]

_rounds: HashMap[uint256, Round]
_updates: HashMap[uint256, Update]
_update_by_digest: HashMap[bytes32, uint256]
_update_of: HashMap[uint256, HashMap[address, uint256]]  # round -> twin -> update id
_included: transient(HashMap[uint256, bool])  # duplicate check inside one closeRound


@deploy
def __init__():
    pass


@external
def initialize(membership: address):
    """
    @notice Bind the registry to the Membership contract. Works once.
    """
    assert not self.initialized, "already initialized"
    assert membership != empty(address), "zero membership address"
    assert membership.is_contract, "membership has no code"
    self.initialized = True
    self.membership = membership
    log Initialized(initializer=msg.sender, membership=membership)


@view
@internal
def _roles() -> uint256:
    membership: address = self.membership
    assert membership != empty(address), "not initialized"
    return staticcall IMembership(membership).rolesOf(msg.sender)


# ---------------------------------------------------------------- datasets


@external
def registerDataset(
    name: String[MAX_NAME],
    digest: bytes32,
    size: uint256,
    media_type: String[MAX_MEDIA_TYPE],
    metadata_digest: bytes32,
) -> uint256:
    """
    @notice Register a dataset; its version is the next one for `name`.
    @return The dataset id.
    """
    assert self._roles() & (PUBLISHER | TWIN) != 0, "not a PUBLISHER or TWIN"
    assert len(name) > 0, "empty name"
    assert digest != empty(bytes32), "empty digest"
    assert size > 0, "zero size"
    assert len(media_type) > 0, "empty media type"
    assert self._dataset_by_digest[digest] == 0, "digest already registered"
    key: bytes32 = keccak256(name)
    version: uint256 = self._dataset_versions[key] + 1
    dataset_id: uint256 = self.datasetCount + 1
    self.datasetCount = dataset_id
    self._dataset_versions[key] = version
    self._dataset_ids[key][version] = dataset_id
    self._dataset_by_digest[digest] = dataset_id
    self._datasets[dataset_id] = Dataset(
        name=name,
        version=version,
        digest=digest,
        size=size,
        media_type=media_type,
        metadata_digest=metadata_digest,
        registrant=msg.sender,
        block=block.number,
    )
    log DatasetRegistered(
        dataset_id=dataset_id,
        digest=digest,
        registrant=msg.sender,
        name=name,
        version=version,
        size=size,
        media_type=media_type,
        metadata_digest=metadata_digest,
        block=block.number,
    )
    return dataset_id


# ---------------------------------------------------------------- model versions


@external
def registerModel(
    name: String[MAX_NAME],
    digest: bytes32,
    size: uint256,
    format: String[MAX_FORMAT],
    parents: DynArray[uint256, MAX_PARENTS],
    datasets: DynArray[uint256, MAX_DATASETS],
    metadata_digest: bytes32,
) -> uint256:
    """
    @notice Register a model version; its version is the next one for `name`.
    @param parents Global version ids this version derives from (lineage).
    @param datasets Dataset ids used to train it.
    @return The global version id.
    """
    assert self._roles() & PUBLISHER != 0, "not a PUBLISHER"
    return self._register_version(
        name, digest, size, format, parents, datasets, metadata_digest, 0
    )


@internal
def _register_version(
    name: String[MAX_NAME],
    digest: bytes32,
    size: uint256,
    format: String[MAX_FORMAT],
    parents: DynArray[uint256, MAX_PARENTS],
    datasets: DynArray[uint256, MAX_DATASETS],
    metadata_digest: bytes32,
    round_id: uint256,
) -> uint256:
    assert len(name) > 0, "empty name"
    assert digest != empty(bytes32), "empty digest"
    assert size > 0, "zero size"
    assert len(format) > 0, "empty format"
    assert self._version_by_digest[digest] == 0, "digest already registered"
    for i: uint256 in range(len(parents), bound=MAX_PARENTS):
        parent: uint256 = parents[i]
        self._require_version(parent)
        assert self._versions[parent].status != REVOKED, "parent version revoked"
        for j: uint256 in range(i, bound=MAX_PARENTS):
            assert parents[j] != parent, "duplicate parent"
    for i: uint256 in range(len(datasets), bound=MAX_DATASETS):
        dataset_id: uint256 = datasets[i]
        assert dataset_id >= 1 and dataset_id <= self.datasetCount, "unknown dataset"
        for j: uint256 in range(i, bound=MAX_DATASETS):
            assert datasets[j] != dataset_id, "duplicate dataset"

    key: bytes32 = keccak256(name)
    version: uint256 = self._model_versions[key] + 1
    if version == 1:
        self._model_names[self.modelCount] = name
        self.modelCount += 1
    version_id: uint256 = self.versionCount + 1
    self.versionCount = version_id
    self._model_versions[key] = version
    self._model_version_ids[key][version] = version_id
    self._version_by_digest[digest] = version_id
    self._versions[version_id] = ModelVersion(
        name=name,
        version=version,
        digest=digest,
        size=size,
        format=format,
        parents=parents,
        datasets=datasets,
        metadata_digest=metadata_digest,
        registrant=msg.sender,
        block=block.number,
        round_id=round_id,
        status=ACTIVE,
        status_reason="",
    )
    log ModelVersionRegistered(
        version_id=version_id,
        digest=digest,
        registrant=msg.sender,
        name=name,
        version=version,
        size=size,
        format=format,
        parents=parents,
        datasets=datasets,
        metadata_digest=metadata_digest,
        round_id=round_id,
        block=block.number,
    )
    return version_id


@view
@internal
def _require_version(version_id: uint256):
    assert version_id >= 1 and version_id <= self.versionCount, "unknown version"


# ---------------------------------------------------------------- aliases


@external
def setAlias(model: String[MAX_NAME], alias: String[MAX_ALIAS], version_id: uint256):
    """
    @notice Point `model`'s alias (e.g. "production") at one of its versions.
    """
    assert self._roles() & PUBLISHER != 0, "not a PUBLISHER"
    assert len(alias) > 0, "empty alias"
    self._require_version(version_id)
    assert keccak256(self._versions[version_id].name) == keccak256(model), (
        "version not of this model"
    )
    assert self._versions[version_id].status != REVOKED, "version revoked"
    model_key: bytes32 = keccak256(model)
    alias_key: bytes32 = keccak256(alias)
    previous: uint256 = self._alias_target[model_key][alias_key]
    assert previous != version_id, "alias already points to this version"
    if previous == 0:
        assert len(self._alias_names[model_key]) < MAX_ALIASES, "too many aliases"
        self._alias_names[model_key].append(alias)
    self._alias_target[model_key][alias_key] = version_id
    log AliasMoved(
        version_id=version_id,
        previous_version_id=previous,
        actor=msg.sender,
        model=model,
        alias=alias,
        block=block.number,
    )


@external
def clearAlias(model: String[MAX_NAME], alias: String[MAX_ALIAS]):
    """
    @notice Remove an alias of `model`.
    """
    assert self._roles() & PUBLISHER != 0, "not a PUBLISHER"
    model_key: bytes32 = keccak256(model)
    alias_key: bytes32 = keccak256(alias)
    previous: uint256 = self._alias_target[model_key][alias_key]
    assert previous != 0, "unknown alias"
    self._alias_target[model_key][alias_key] = 0
    kept: DynArray[String[MAX_ALIAS], MAX_ALIASES] = []
    for name: String[MAX_ALIAS] in self._alias_names[model_key]:
        if keccak256(name) != alias_key:
            kept.append(name)
    self._alias_names[model_key] = kept
    log AliasMoved(
        version_id=0,
        previous_version_id=previous,
        actor=msg.sender,
        model=model,
        alias=alias,
        block=block.number,
    )


# ---------------------------------------------------------------- deprecation, revocation


@external
def deprecateVersion(version_id: uint256, reason: String[MAX_REASON]):
    """
    @notice Mark a version deprecated (still usable, discouraged).
    """
    assert self._roles() & (PUBLISHER | ADMIN) != 0, "not a PUBLISHER or ADMIN"
    self._require_version(version_id)
    assert len(reason) > 0, "empty reason"
    status: uint256 = self._versions[version_id].status
    assert status != REVOKED, "version revoked"
    assert status != DEPRECATED, "version already deprecated"
    self._versions[version_id].status = DEPRECATED
    self._versions[version_id].status_reason = reason
    log VersionDeprecated(
        version_id=version_id,
        actor=msg.sender,
        name=self._versions[version_id].name,
        version=self._versions[version_id].version,
        reason=reason,
        block=block.number,
    )


@external
def revokeVersion(version_id: uint256, reason: String[MAX_REASON]):
    """
    @notice Revoke a version (e.g. poisoned); aliases pointing at it are cleared.
    """
    assert self._roles() & (PUBLISHER | ADMIN) != 0, "not a PUBLISHER or ADMIN"
    self._require_version(version_id)
    assert len(reason) > 0, "empty reason"
    assert self._versions[version_id].status != REVOKED, "version already revoked"
    self._versions[version_id].status = REVOKED
    self._versions[version_id].status_reason = reason
    model: String[MAX_NAME] = self._versions[version_id].name
    log VersionRevoked(
        version_id=version_id,
        actor=msg.sender,
        name=model,
        version=self._versions[version_id].version,
        reason=reason,
        block=block.number,
    )
    # Keep the invariant "no alias points at a revoked version".
    model_key: bytes32 = keccak256(model)
    kept: DynArray[String[MAX_ALIAS], MAX_ALIASES] = []
    for alias: String[MAX_ALIAS] in self._alias_names[model_key]:
        alias_key: bytes32 = keccak256(alias)
        if self._alias_target[model_key][alias_key] == version_id:
            self._alias_target[model_key][alias_key] = 0
            log AliasMoved(
                version_id=0,
                previous_version_id=version_id,
                actor=msg.sender,
                model=model,
                alias=alias,
                block=block.number,
            )
        else:
            kept.append(alias)
    self._alias_names[model_key] = kept


# ---------------------------------------------------------------- federated rounds


@external
def openRound(
    model: String[MAX_NAME], base_version: uint256, min_updates: uint256, deadline_height: uint256
) -> uint256:
    """
    @notice Open a federated round training `model` from `base_version` (global id).
    @return The round id.
    """
    assert self._roles() & (PUBLISHER | MINER) != 0, "not a PUBLISHER or MINER"
    assert len(model) > 0, "empty name"
    self._require_version(base_version)
    assert self._versions[base_version].status != REVOKED, "base version revoked"
    assert min_updates >= 1, "min_updates must be at least 1"
    assert min_updates <= MAX_UPDATES, "min_updates above cap"
    assert deadline_height > block.number, "deadline not in the future"
    round_id: uint256 = self.roundCount + 1
    self.roundCount = round_id
    self._rounds[round_id].model = model
    self._rounds[round_id].base_version = base_version
    self._rounds[round_id].min_updates = min_updates
    self._rounds[round_id].deadline = deadline_height
    self._rounds[round_id].opener = msg.sender
    self._rounds[round_id].opened_block = block.number
    log RoundOpened(
        round_id=round_id,
        base_version=base_version,
        opener=msg.sender,
        model=model,
        min_updates=min_updates,
        deadline=deadline_height,
        block=block.number,
    )
    return round_id


@external
def pushUpdate(
    round_id: uint256,
    update_digest: bytes32,
    size: uint256,
    samples: uint256,
    kind: uint256,
    metrics_digest: bytes32,
) -> uint256:
    """
    @notice Push a twin's training update (0 dense delta, 1 sparse top-k) to a round.
    @return The update id.
    """
    assert self._roles() & TWIN != 0, "not a TWIN"
    self._require_open_round(round_id)
    assert block.number <= self._rounds[round_id].deadline, "round deadline passed"
    assert self._update_of[round_id][msg.sender] == 0, "twin already pushed to this round"
    assert update_digest != empty(bytes32), "empty digest"
    assert size > 0, "zero size"
    assert samples > 0, "zero samples"
    assert kind == DENSE or kind == SPARSE, "invalid update kind"
    assert self._update_by_digest[update_digest] == 0, "digest already registered"
    assert len(self._rounds[round_id].update_ids) < MAX_UPDATES, "round full"
    update_id: uint256 = self.updateCount + 1
    self.updateCount = update_id
    self._updates[update_id] = Update(
        round_id=round_id,
        twin=msg.sender,
        digest=update_digest,
        size=size,
        samples=samples,
        kind=kind,
        metrics_digest=metrics_digest,
        block=block.number,
    )
    self._update_by_digest[update_digest] = update_id
    self._update_of[round_id][msg.sender] = update_id
    self._rounds[round_id].update_ids.append(update_id)
    log UpdatePushed(
        update_id=update_id,
        round_id=round_id,
        twin=msg.sender,
        digest=update_digest,
        size=size,
        samples=samples,
        kind=kind,
        metrics_digest=metrics_digest,
        block=block.number,
    )
    return update_id


@external
def closeRound(
    round_id: uint256,
    strategy: String[MAX_STRATEGY],
    included_update_ids: DynArray[uint256, MAX_UPDATES],
    result_digest: bytes32,
    result_size: uint256,
) -> uint256:
    """
    @notice Record a round's aggregate and register it as a new model version.
    @return The global version id of the aggregate.
    """
    assert self._roles() & MINER != 0, "not a MINER"
    self._require_open_round(round_id)
    update_count: uint256 = len(self._rounds[round_id].update_ids)
    assert (
        update_count >= self._rounds[round_id].min_updates
        or block.number > self._rounds[round_id].deadline
    ), "min updates not reached before deadline"
    assert len(strategy) > 0, "empty strategy"
    assert len(included_update_ids) > 0, "no updates included"
    for update_id: uint256 in included_update_ids:
        assert self._updates[update_id].round_id == round_id, "update not in round"
        assert not self._included[update_id], "duplicate update"
        self._included[update_id] = True
    base: uint256 = self._rounds[round_id].base_version
    assert self._versions[base].status != REVOKED, "base version revoked"
    version_id: uint256 = self._register_version(
        self._rounds[round_id].model,
        result_digest,
        result_size,
        self._versions[base].format,
        [base],
        [],
        empty(bytes32),
        round_id,
    )
    self._rounds[round_id].status = ROUND_CLOSED
    self._rounds[round_id].strategy = strategy
    self._rounds[round_id].included_update_ids = included_update_ids
    self._rounds[round_id].result_version = version_id
    self._rounds[round_id].closer = msg.sender
    self._rounds[round_id].closed_block = block.number
    log RoundClosed(
        round_id=round_id,
        version_id=version_id,
        closer=msg.sender,
        strategy=strategy,
        included_update_ids=included_update_ids,
        result_digest=result_digest,
        result_size=result_size,
        update_count=update_count,
        block=block.number,
    )
    return version_id


@external
def cancelRound(round_id: uint256, reason: String[MAX_REASON]):
    """
    @notice Abandon an open round (e.g. its base was revoked, or nobody showed up).
    """
    assert self._roles() & (PUBLISHER | MINER) != 0, "not a PUBLISHER or MINER"
    self._require_open_round(round_id)
    assert len(reason) > 0, "empty reason"
    self._rounds[round_id].status = ROUND_CANCELLED
    self._rounds[round_id].cancel_reason = reason
    self._rounds[round_id].closer = msg.sender
    self._rounds[round_id].closed_block = block.number
    log RoundCancelled(
        round_id=round_id,
        actor=msg.sender,
        reason=reason,
        update_count=len(self._rounds[round_id].update_ids),
        block=block.number,
    )


@view
@internal
def _require_open_round(round_id: uint256):
    assert round_id >= 1 and round_id <= self.roundCount, "unknown round"
    status: uint256 = self._rounds[round_id].status
    assert status != ROUND_CLOSED, "round closed"
    assert status != ROUND_CANCELLED, "round cancelled"


# ---------------------------------------------------------------- views


@view
@external
def getDataset(dataset_id: uint256) -> Dataset:
    assert dataset_id >= 1 and dataset_id <= self.datasetCount, "unknown dataset"
    return self._datasets[dataset_id]


@view
@external
def datasetId(name: String[MAX_NAME], version: uint256) -> uint256:
    """
    @notice Id of dataset `name` version `version`, 0 if there is none.
    """
    return self._dataset_ids[keccak256(name)][version]


@view
@external
def datasetIdByDigest(digest: bytes32) -> uint256:
    return self._dataset_by_digest[digest]


@view
@external
def datasetVersions(name: String[MAX_NAME]) -> uint256:
    """
    @notice Number of versions of dataset `name` (= its latest version number).
    """
    return self._dataset_versions[keccak256(name)]


@view
@external
def getVersion(version_id: uint256) -> ModelVersion:
    self._require_version(version_id)
    return self._versions[version_id]


@view
@external
def versionId(name: String[MAX_NAME], version: uint256) -> uint256:
    """
    @notice Global id of model `name` version `version`, 0 if there is none.
    """
    return self._model_version_ids[keccak256(name)][version]


@view
@external
def versionIdByDigest(digest: bytes32) -> uint256:
    return self._version_by_digest[digest]


@view
@external
def modelVersions(name: String[MAX_NAME]) -> uint256:
    """
    @notice Number of versions of model `name` (= its latest version number).
    """
    return self._model_versions[keccak256(name)]


@view
@external
def modelNameAt(index: uint256) -> String[MAX_NAME]:
    """
    @notice Model names in order of first registration, index from 0.
    """
    assert index < self.modelCount, "index out of range"
    return self._model_names[index]


@view
@external
def latest(name: String[MAX_NAME]) -> uint256:
    """
    @notice Global id of the newest non-revoked version of `name`.
    @dev Looks at the newest MAX_LATEST_SCAN versions at most.
    """
    key: bytes32 = keccak256(name)
    count: uint256 = self._model_versions[key]
    assert count > 0, "unknown model"
    for i: uint256 in range(min(count, MAX_LATEST_SCAN), bound=MAX_LATEST_SCAN):
        version_id: uint256 = self._model_version_ids[key][count - i]
        if self._versions[version_id].status != REVOKED:
            return version_id
    raise "no live version"


@view
@external
def aliasOf(model: String[MAX_NAME], alias: String[MAX_ALIAS]) -> uint256:
    """
    @notice Global version id the alias points at, 0 if unset. Never a revoked version.
    """
    return self._alias_target[keccak256(model)][keccak256(alias)]


@view
@external
def aliases(model: String[MAX_NAME]) -> DynArray[String[MAX_ALIAS], MAX_ALIASES]:
    return self._alias_names[keccak256(model)]


@view
@external
def getRound(round_id: uint256) -> Round:
    assert round_id >= 1 and round_id <= self.roundCount, "unknown round"
    return self._rounds[round_id]


@view
@external
def getUpdate(update_id: uint256) -> Update:
    assert update_id >= 1 and update_id <= self.updateCount, "unknown update"
    return self._updates[update_id]


@view
@external
def updateIdByDigest(digest: bytes32) -> uint256:
    return self._update_by_digest[digest]


@view
@external
def updateOf(round_id: uint256, twin: address) -> uint256:
    """
    @notice The update `twin` pushed to `round_id`, 0 if none.
    """
    return self._update_of[round_id][twin]
