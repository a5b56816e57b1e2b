"""ModelRegistry: datasets, model versions and lineage, aliases, deprecation, revocation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from contracts import VersionStatus
from tests.contracts.net import TestNet, assert_reverts, digest

NO_META = b"\x00" * 32
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


def add_dataset(net: TestNet, name: str, label: str, sender: str = "publisher") -> int:
    fn = net.registry.functions.registerDataset(name, digest(label), 1000, "text/csv", NO_META)
    return int(net.result_of(fn, sender))


def add_model(
    net: TestNet,
    name: str,
    label: str,
    parents: Sequence[int] = (),
    datasets: Sequence[int] = (),
    sender: str = "publisher",
) -> int:
    fn = net.registry.functions.registerModel(
        name, digest(label), 4096, "safetensors", list(parents), list(datasets), digest("meta")
    )
    return int(net.result_of(fn, sender))


def revoke(net: TestNet, version_id: int, reason: str = "poisoned") -> None:
    net.send(net.registry.functions.revokeVersion(version_id, reason), "publisher")


# ---------------------------------------------------------------- initialize


def test_initialize_works_only_once(net: TestNet) -> None:
    fn = net.registry.functions.initialize(net.membership.address)
    assert_reverts(net, fn, "outsider", "already initialized")


def test_initialize_binds_membership_and_logs_it(net: TestNet) -> None:
    registry = net.deploy_fresh("ModelRegistry")
    receipt = net.send(registry.functions.initialize(net.membership.address), "admin0")
    assert net.event(receipt, registry, "Initialized") == {
        "initializer": net.accounts["admin0"],
        "membership": net.membership.address,
    }
    assert registry.functions.membership().call() == net.membership.address
    assert registry.functions.initialized().call() is True


@pytest.mark.parametrize(
    ("membership", "reason"),
    [(ZERO_ADDRESS, "zero membership address"), ("twin0", "membership has no code")],
)
def test_initialize_rejects_a_bad_membership(net: TestNet, membership: str, reason: str) -> None:
    registry = net.deploy_fresh("ModelRegistry")
    fn = registry.functions.initialize(net.accounts.get(membership, membership))
    assert_reverts(net, fn, "outsider", reason)


def test_uninitialized_registry_refuses_writes(net: TestNet) -> None:
    registry = net.deploy_fresh("ModelRegistry")
    fn = registry.functions.registerDataset("d", digest("d"), 1, "text/csv", NO_META)
    assert_reverts(net, fn, "publisher", "not initialized")


# ---------------------------------------------------------------- datasets


def test_dataset_versions_count_up_per_name(net: TestNet) -> None:
    r = net.registry.functions
    assert [add_dataset(net, n, n + str(i)) for i, n in enumerate(["cifar", "cifar", "mnist"])] == [
        1,
        2,
        3,
    ]
    assert [r.datasetId("cifar", v).call() for v in (1, 2, 3)] == [1, 2, 0]
    assert (r.datasetVersions("cifar").call(), r.datasetVersions("mnist").call()) == (2, 1)
    assert r.datasetCount().call() == 3
    assert r.datasetIdByDigest(digest("cifar1")).call() == 2
    assert r.datasetIdByDigest(digest("nothing")).call() == 0


def test_dataset_record_and_event_carry_everything(net: TestNet) -> None:
    fn = net.registry.functions.registerDataset(
        "traffic", digest("t"), 77, "application/parquet", digest("card")
    )
    receipt = net.send(fn, "twin0")  # a twin may register the data it collected
    expected = {
        "name": "traffic",
        "version": 1,
        "digest": digest("t"),
        "size": 77,
        "media_type": "application/parquet",
        "metadata_digest": digest("card"),
        "registrant": net.accounts["twin0"],
        "block": receipt["blockNumber"],
    }
    assert net.record(net.registry, "getDataset", 1) == expected
    event = net.event(receipt, net.registry, "DatasetRegistered")
    assert event == {"dataset_id": 1, **expected}


@pytest.mark.parametrize("sender", ["miner0", "auditor", "admin0", "outsider"])
def test_dataset_registration_requires_publisher_or_twin(net: TestNet, sender: str) -> None:
    fn = net.registry.functions.registerDataset("d", digest("d"), 1, "text/csv", NO_META)
    assert_reverts(net, fn, sender, "not a PUBLISHER or TWIN")


@pytest.mark.parametrize(
    ("name", "blob", "size", "media_type", "reason"),
    [
        ("", digest("d"), 1, "text/csv", "empty name"),
        ("d", NO_META, 1, "text/csv", "empty digest"),
        ("d", digest("d"), 0, "text/csv", "zero size"),
        ("d", digest("d"), 1, "", "empty media type"),
    ],
)
def test_dataset_with_missing_fields_rejected(
    net: TestNet, name: str, blob: bytes, size: int, media_type: str, reason: str
) -> None:
    fn = net.registry.functions.registerDataset(name, blob, size, media_type, NO_META)
    assert_reverts(net, fn, "publisher", reason)


def test_duplicate_dataset_digest_rejected(net: TestNet) -> None:
    add_dataset(net, "cifar", "same")
    fn = net.registry.functions.registerDataset("other", digest("same"), 5, "x/y", NO_META)
    assert_reverts(net, fn, "publisher", "digest already registered")


@pytest.mark.parametrize("dataset_id", [0, 1])
def test_unknown_dataset_lookup_rejected(net: TestNet, dataset_id: int) -> None:
    with pytest.raises(Exception, match="unknown dataset"):
        net.registry.functions.getDataset(dataset_id).call()


# ---------------------------------------------------------------- model versions


def test_model_versions_record_lineage_and_datasets(net: TestNet) -> None:
    ds = add_dataset(net, "cifar", "c")
    v1 = add_model(net, "resnet", "r1")
    fn = net.registry.functions.registerModel(
        "resnet", digest("r2"), 4096, "safetensors", [v1], [ds], digest("card2")
    )
    v2 = fn.call({"from": net.accounts["publisher"]})
    receipt = net.send(fn, "publisher")
    expected = {
        "name": "resnet",
        "version": 2,
        "digest": digest("r2"),
        "size": 4096,
        "format": "safetensors",
        "parents": [v1],
        "datasets": [ds],
        "metadata_digest": digest("card2"),
        "registrant": net.accounts["publisher"],
        "block": receipt["blockNumber"],
        "round_id": 0,
    }
    record = net.record(net.registry, "getVersion", v2)
    assert record == {**expected, "status": VersionStatus.ACTIVE, "status_reason": ""}
    assert net.event(receipt, net.registry, "ModelVersionRegistered") == {
        "version_id": v2,
        **expected,
    }
    r = net.registry.functions
    assert (v1, v2) == (1, 2)
    assert [r.versionId("resnet", v).call() for v in (1, 2, 3)] == [1, 2, 0]
    assert r.versionIdByDigest(digest("r2")).call() == 2
    assert (r.modelVersions("resnet").call(), r.versionCount().call()) == (2, 2)


def test_models_are_enumerated_in_order_of_first_registration(net: TestNet) -> None:
    add_model(net, "b-model", "b1")
    add_model(net, "a-model", "a1")
    add_model(net, "b-model", "b2")
    r = net.registry.functions
    assert r.modelCount().call() == 2
    assert [r.modelNameAt(i).call() for i in range(2)] == ["b-model", "a-model"]
    with pytest.raises(Exception, match="index out of range"):
        r.modelNameAt(2).call()


def test_parents_may_span_models_and_be_several(net: TestNet) -> None:
    base = add_model(net, "foundation", "f1")
    other = add_model(net, "teacher", "t1")
    child = add_model(net, "edge-net", "e1", parents=[base, other])
    assert net.record(net.registry, "getVersion", child)["parents"] == [base, other]


@pytest.mark.parametrize("sender", ["twin0", "miner0", "admin0", "outsider"])
def test_model_registration_requires_publisher(net: TestNet, sender: str) -> None:
    fn = net.registry.functions.registerModel("m", digest("m"), 1, "onnx", [], [], NO_META)
    assert_reverts(net, fn, sender, "not a PUBLISHER")


@pytest.mark.parametrize(
    ("name", "blob", "size", "fmt", "reason"),
    [
        ("", digest("m"), 1, "onnx", "empty name"),
        ("m", NO_META, 1, "onnx", "empty digest"),
        ("m", digest("m"), 0, "onnx", "zero size"),
        ("m", digest("m"), 1, "", "empty format"),
    ],
)
def test_model_with_missing_fields_rejected(
    net: TestNet, name: str, blob: bytes, size: int, fmt: str, reason: str
) -> None:
    fn = net.registry.functions.registerModel(name, blob, size, fmt, [], [], NO_META)
    assert_reverts(net, fn, "publisher", reason)


def test_duplicate_model_digest_rejected(net: TestNet) -> None:
    add_model(net, "resnet", "same")
    fn = net.registry.functions.registerModel("vit", digest("same"), 1, "onnx", [], [], NO_META)
    assert_reverts(net, fn, "publisher", "digest already registered")


@pytest.fixture(scope="class")
def lineage(session_net: TestNet) -> Iterator[TestNet]:
    """Dataset 1; model versions 1 (live) and 2 (revoked)."""
    with session_net.isolated():
        add_dataset(session_net, "cifar", "c")
        add_model(session_net, "resnet", "r1")
        revoke(session_net, add_model(session_net, "resnet", "r2"))
        yield session_net


class TestBadLineageRejected:
    @pytest.mark.parametrize(
        ("parents", "datasets", "reason"),
        [
            ([0], [], "unknown version"),
            ([9], [], "unknown version"),
            ([1, 1], [], "duplicate parent"),
            ([2], [], "parent version revoked"),
            ([], [0], "unknown dataset"),
            ([], [9], "unknown dataset"),
            ([], [1, 1], "duplicate dataset"),
        ],
    )
    def test_rejected(
        self, lineage: TestNet, parents: list[int], datasets: list[int], reason: str
    ) -> None:
        fn = lineage.registry.functions.registerModel(
            "m", digest("m"), 1, "onnx", parents, datasets, NO_META
        )
        assert_reverts(lineage, fn, "publisher", reason)


@pytest.mark.parametrize("version_id", [0, 1])
def test_unknown_version_lookup_rejected(net: TestNet, version_id: int) -> None:
    with pytest.raises(Exception, match="unknown version"):
        net.registry.functions.getVersion(version_id).call()


# ---------------------------------------------------------------- aliases


def test_alias_moves_by_transaction(net: TestNet) -> None:
    v1, v2 = add_model(net, "resnet", "r1"), add_model(net, "resnet", "r2")
    r = net.registry.functions
    first = net.send(r.setAlias("resnet", "production", v1), "publisher")
    second = net.send(r.setAlias("resnet", "production", v2), "publisher2")
    moves = [net.event(rc, net.registry, "AliasMoved") for rc in (first, second)]
    assert [(m["previous_version_id"], m["version_id"]) for m in moves] == [(0, v1), (v1, v2)]
    assert moves[1]["actor"] == net.accounts["publisher2"]
    assert (moves[1]["model"], moves[1]["alias"]) == ("resnet", "production")
    assert moves[1]["block"] == second["blockNumber"]
    assert r.aliasOf("resnet", "production").call() == v2
    assert r.aliasOf("resnet", "staging").call() == 0
    assert r.aliases("resnet").call() == ["production"]


@pytest.mark.parametrize("sender", ["twin0", "miner0", "admin0"])
def test_alias_changes_require_publisher(net: TestNet, sender: str) -> None:
    v1 = add_model(net, "resnet", "r1")
    net.send(net.registry.functions.setAlias("resnet", "production", v1), "publisher")
    r = net.registry.functions
    assert_reverts(net, r.setAlias("resnet", "staging", v1), sender, "not a PUBLISHER")
    assert_reverts(net, r.clearAlias("resnet", "production"), sender, "not a PUBLISHER")


@pytest.fixture(scope="class")
def aliased(session_net: TestNet) -> Iterator[TestNet]:
    """resnet v1 (id 1, aliased "staging"), resnet v2 (id 2, revoked), vit v1 (id 3)."""
    with session_net.isolated():
        v1 = add_model(session_net, "resnet", "r1")
        revoke(session_net, add_model(session_net, "resnet", "r2"))
        add_model(session_net, "vit", "v1")
        session_net.send(
            session_net.registry.functions.setAlias("resnet", "staging", v1), "publisher"
        )
        yield session_net


class TestBadAliasRejected:
    @pytest.mark.parametrize(
        ("model", "alias", "version_id", "reason"),
        [
            ("resnet", "", 1, "empty alias"),
            ("resnet", "production", 0, "unknown version"),
            ("resnet", "production", 9, "unknown version"),
            ("vit", "production", 1, "version not of this model"),
            ("resnet", "production", 2, "version revoked"),
            ("resnet", "staging", 1, "alias already points to this version"),
        ],
    )
    def test_rejected(
        self, aliased: TestNet, model: str, alias: str, version_id: int, reason: str
    ) -> None:
        fn = aliased.registry.functions.setAlias(model, alias, version_id)
        assert_reverts(aliased, fn, "publisher", reason)


def test_alias_count_per_model_is_bounded(net: TestNet) -> None:
    v1 = add_model(net, "resnet", "r1")
    for i in range(16):
        net.send(net.registry.functions.setAlias("resnet", f"a{i}", v1), "publisher")
    fn = net.registry.functions.setAlias("resnet", "one-too-many", v1)
    assert_reverts(net, fn, "publisher", "too many aliases")
    net.send(
        net.registry.functions.setAlias("resnet", "a3", add_model(net, "resnet", "r2")), "publisher"
    )


def test_clear_alias_removes_it(net: TestNet) -> None:
    v1 = add_model(net, "resnet", "r1")
    r = net.registry.functions
    for alias in ("production", "staging", "canary"):
        net.send(r.setAlias("resnet", alias, v1), "publisher")
    receipt = net.send(r.clearAlias("resnet", "staging"), "publisher")
    move = net.event(receipt, net.registry, "AliasMoved")
    assert (move["alias"], move["previous_version_id"], move["version_id"]) == ("staging", v1, 0)
    assert r.aliasOf("resnet", "staging").call() == 0
    assert r.aliases("resnet").call() == ["production", "canary"]
    assert_reverts(net, r.clearAlias("resnet", "staging"), "publisher", "unknown alias")


def test_revoking_a_version_clears_aliases_pointing_at_it(net: TestNet) -> None:
    v1, v2 = add_model(net, "resnet", "r1"), add_model(net, "resnet", "r2")
    r = net.registry.functions
    for alias, target in (("production", v2), ("staging", v1), ("canary", v2)):
        net.send(r.setAlias("resnet", alias, target), "publisher")
    receipt = net.send(r.revokeVersion(v2, "backdoor found"), "admin0")
    moves = net.events(receipt, net.registry, "AliasMoved")
    assert [(m["alias"], m["previous_version_id"], m["version_id"]) for m in moves] == [
        ("production", v2, 0),
        ("canary", v2, 0),
    ]
    assert r.aliases("resnet").call() == ["staging"]
    assert [r.aliasOf("resnet", a).call() for a in ("production", "staging", "canary")] == [
        0,
        v1,
        0,
    ]


# ---------------------------------------------------------------- deprecation, revocation


def test_deprecate_then_revoke_a_version(net: TestNet) -> None:
    v1 = add_model(net, "resnet", "r1")
    r = net.registry.functions
    receipt = net.send(r.deprecateVersion(v1, "superseded"), "publisher")
    assert net.event(receipt, net.registry, "VersionDeprecated") == {
        "version_id": v1,
        "actor": net.accounts["publisher"],
        "name": "resnet",
        "version": 1,
        "reason": "superseded",
        "block": receipt["blockNumber"],
    }
    record = net.record(net.registry, "getVersion", v1)
    assert (record["status"], record["status_reason"]) == (VersionStatus.DEPRECATED, "superseded")
    receipt = net.send(r.revokeVersion(v1, "poisoned"), "admin1")
    revoked = net.event(receipt, net.registry, "VersionRevoked")
    assert (revoked["actor"], revoked["reason"]) == (net.accounts["admin1"], "poisoned")
    record = net.record(net.registry, "getVersion", v1)
    assert (record["status"], record["status_reason"]) == (VersionStatus.REVOKED, "poisoned")


@pytest.mark.parametrize("function", ["deprecateVersion", "revokeVersion"])
@pytest.mark.parametrize(
    ("sender", "version_id", "reason_arg", "reason"),
    [
        ("twin0", 1, "r", "not a PUBLISHER or ADMIN"),
        ("miner0", 1, "r", "not a PUBLISHER or ADMIN"),
        ("publisher", 0, "r", "unknown version"),
        ("publisher", 9, "r", "unknown version"),
        ("publisher", 1, "", "empty reason"),
    ],
)
def test_status_change_rejects_bad_calls(
    net: TestNet, function: str, sender: str, version_id: int, reason_arg: str, reason: str
) -> None:
    add_model(net, "resnet", "r1")
    fn = getattr(net.registry.functions, function)(version_id, reason_arg)
    assert_reverts(net, fn, sender, reason)


def test_status_moves_only_forward(net: TestNet) -> None:
    v1 = add_model(net, "resnet", "r1")
    r = net.registry.functions
    net.send(r.deprecateVersion(v1, "old"), "publisher")
    assert_reverts(net, r.deprecateVersion(v1, "old"), "publisher", "version already deprecated")
    revoke(net, v1)
    assert_reverts(net, r.deprecateVersion(v1, "old"), "publisher", "version revoked")
    assert_reverts(net, r.revokeVersion(v1, "again"), "publisher", "version already revoked")


def test_latest_skips_revoked_but_not_deprecated_versions(net: TestNet) -> None:
    v1, v2, v3 = (add_model(net, "resnet", f"r{i}") for i in (1, 2, 3))
    latest = net.registry.functions.latest
    assert latest("resnet").call() == v3
    revoke(net, v3)
    assert latest("resnet").call() == v2
    net.send(net.registry.functions.deprecateVersion(v2, "slow"), "publisher")
    assert latest("resnet").call() == v2
    revoke(net, v2)
    revoke(net, v1)
    with pytest.raises(Exception, match="no live version"):
        latest("resnet").call()
    with pytest.raises(Exception, match="unknown model"):
        latest("vit").call()
