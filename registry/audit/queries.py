"""Audit queries over the index: history, lineage, actor, round, validators.

Every query reads :class:`~registry.audit.index.AuditIndex` only (chain data, no node)
and returns frozen dataclasses with a ``to_json()`` form (addresses and hashes as
lowercase ``0x`` hex, times as unix seconds). What each returns:

- :meth:`AuditQueries.history` — every registration, alias move, deprecation and
  revocation of a model, each with who (tx sender and the event's actor), when (block
  timestamp), the transaction hash and the block height and hash;
- :meth:`AuditQueries.lineage` — the DAG back from ``model@ref`` (a version number, an
  alias or ``latest`` — the REST API's rules: ``latest`` and aliases never name a revoked
  version) through parents; for each aggregate its round, the updates it included and
  the twins who pushed them; the datasets every version was trained on;
- :meth:`AuditQueries.actor` — everything an account did (or had done to it: a role
  grant, a vote for it), in chain order;
- :meth:`AuditQueries.round` — a round's opening, every update, and its close (strategy,
  included updates, result version) or cancellation;
- :meth:`AuditQueries.validators` — the committee of each epoch, read from the state at
  the boundary block the miners read it from, and the events that changed it.

History, actor and round take a :class:`Filters` (time range and block range).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from contracts import Role
from node.errors import InvalidInput, NotFound
from registry.audit.index import AuditIndex

__all__ = [
    "ActorReport",
    "AuditQueries",
    "DatasetNode",
    "Event",
    "Filters",
    "History",
    "Lineage",
    "RoundNode",
    "RoundReport",
    "UpdateNode",
    "ValidatorEpoch",
    "VersionNode",
    "parse_address",
    "parse_time",
]

_STATUS: Final = ("active", "deprecated", "revoked")
_ROUND_STATUS: Final = ("open", "closed", "cancelled")
_KIND: Final = ("dense", "sparse")
_HISTORY_EVENTS: Final = (
    "ModelVersionRegistered",
    "AliasMoved",
    "VersionDeprecated",
    "VersionRevoked",
)
_MAX_NAME: Final = 64
_MAX_ALIAS: Final = 32


def _to_json(value: Any) -> Any:
    # Faster than dataclasses.asdict (no deep copies): results are built fresh per query.
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is not None:
        return {name: _to_json(getattr(value, name)) for name in fields}
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


class _Json:
    """``to_json()`` for the result dataclasses."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        result: dict[str, Any] = _to_json(self)
        return result


# ---------------------------------------------------------------- input parsing


def parse_time(text: str | int | None, what: str = "time") -> int | None:
    """Unix seconds from an int, a decimal string, or an ISO-8601 date/time (UTC if no
    zone is given). Raises :class:`InvalidInput` with the offending text."""
    if text is None or isinstance(text, int):
        return text
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{what} {text!r} is neither unix seconds nor an ISO-8601 date/time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def parse_address(text: str) -> str:
    """A ``0x`` + 40 hex digit address, lowercased; InvalidInput otherwise."""
    value = text.strip()
    body = value[2:] if value[:2] in ("0x", "0X") else ""
    if len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise InvalidInput(f"not an address (0x + 40 hex digits): {text!r}")
    return "0x" + body.lower()


def _check_name(text: str, what: str, limit: int) -> str:
    size = len(text.encode("utf-8", errors="replace"))
    if size == 0 or size > limit:
        raise InvalidInput(f"{what} must be 1 to {limit} bytes of UTF-8, got {size}")
    return text


@dataclass(frozen=True)
class Filters:
    """Time range (unix seconds, inclusive) and block range (inclusive); None = open."""

    since: int | None = None
    until: int | None = None
    from_block: int | None = None
    to_block: int | None = None

    @classmethod
    def parse(
        cls,
        since: str | int | None = None,
        until: str | int | None = None,
        from_block: int | None = None,
        to_block: int | None = None,
    ) -> Filters:
        """Parse and check a filter (InvalidInput on an empty or negative range)."""
        f = cls(parse_time(since, "--since"), parse_time(until, "--until"), from_block, to_block)
        for name, value in (("from block", from_block), ("to block", to_block)):
            if value is not None and value < 0:
                raise InvalidInput(f"{name} must be >= 0, got {value}")
        if f.since is not None and f.until is not None and f.since > f.until:
            raise InvalidInput(f"--since ({f.since}) is after --until ({f.until})")
        if from_block is not None and to_block is not None and from_block > to_block:
            raise InvalidInput(f"--from-block {from_block} is after --to-block {to_block}")
        return f

    def sql(self, alias: str = "e") -> tuple[str, list[Any]]:
        """``AND ...`` clauses and their parameters."""
        clauses, params = [], []
        for column, op, value in (
            ("timestamp", ">=", self.since),
            ("timestamp", "<=", self.until),
            ("height", ">=", self.from_block),
            ("height", "<=", self.to_block),
        ):
            if value is not None:
                clauses.append(f" AND {alias}.{column} {op} ?")
                params.append(value)
        return "".join(clauses), params


NO_FILTER: Final = Filters()

# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Event(_Json):
    """One indexed contract event (or a synthetic ``GenesisMember`` at height 0)."""

    seq: int
    name: str
    contract: str
    block: int
    block_hash: str
    timestamp: int
    tx_hash: str | None
    sender: str | None  # the transaction's signer
    actor: str | None  # the account the event names as acting
    log_index: int
    args: dict[str, Any]


@dataclass(frozen=True)
class History(_Json):
    """Every version registration, alias move, deprecation and revocation of a model."""

    model: str
    events: tuple[Event, ...]


@dataclass(frozen=True)
class VersionNode(_Json):
    """A model version in a lineage."""

    id: int
    name: str
    version: int
    digest: str
    size: int
    format: str
    status: str
    status_reason: str
    registrant: str
    block: int
    tx_hash: str
    round_id: int | None
    parents: tuple[int, ...]
    datasets: tuple[int, ...]


@dataclass(frozen=True)
class DatasetNode(_Json):
    """A dataset version a lineage version was trained on."""

    id: int
    name: str
    version: int
    digest: str
    size: int
    media_type: str
    registrant: str
    block: int
    tx_hash: str


@dataclass(frozen=True)
class UpdateNode(_Json):
    """A twin's update pushed to a round."""

    id: int
    round_id: int
    twin: str
    digest: str
    size: int
    samples: int
    kind: str
    block: int
    tx_hash: str
    included: bool


@dataclass(frozen=True)
class RoundNode(_Json):
    """A federated round (in a lineage: one whose aggregate is an ancestor)."""

    id: int
    model: str
    base_version: int
    status: str
    min_updates: int
    deadline: int
    opener: str
    open_block: int
    open_tx: str
    strategy: str | None
    result_version: int | None
    included_update_ids: tuple[int, ...]
    closer: str | None
    close_block: int | None
    close_tx: str | None
    cancel_reason: str | None


@dataclass(frozen=True)
class Lineage(_Json):
    """The DAG behind ``model@ref``: versions (root first), parent edges, rounds,
    included updates, the twins who pushed them, and datasets."""

    model: str
    ref: str
    version_id: int
    versions: tuple[VersionNode, ...]
    edges: tuple[tuple[int, int], ...]  # (child, parent)
    rounds: tuple[RoundNode, ...]
    updates: tuple[UpdateNode, ...]
    twins: tuple[str, ...]
    datasets: tuple[DatasetNode, ...]


@dataclass(frozen=True)
class ActorReport(_Json):
    """Everything an account did or had done to it, in chain order."""

    address: str
    roles_at_genesis: tuple[str, ...]
    events: tuple[Event, ...]
    relations: tuple[tuple[str, ...], ...]  # per event: sender / actor / subject


@dataclass(frozen=True)
class RoundReport(_Json):
    """A round: its record, every update pushed, and the events (open, updates, close or
    cancel) in chain order."""

    round: RoundNode
    updates: tuple[UpdateNode, ...]
    events: tuple[Event, ...]


@dataclass(frozen=True)
class ValidatorEpoch(_Json):
    """The validator set (committee) of one epoch and how it was chosen."""

    epoch: int
    first_height: int
    last_height: int
    #: the block whose state decided the set (None: the genesis set, epochs 0 and 1)
    boundary_height: int | None
    members: tuple[str, ...]
    set_hash: str
    #: ``validator_set_hash`` the epoch's first block carries (None: not yet indexed)
    header_set_hash: str | None
    source: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    #: the events between the previous boundary and this one that explain the set
    changes: tuple[Event, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- queries

_EVENT_COLUMNS: Final = (
    "e.seq, e.name, e.contract, e.height, b.hash, e.timestamp, e.tx_hash, e.sender, "
    "e.actor, e.log_index, e.args"
)
_VERSION_COLUMNS: Final = (
    "v.id, v.name, v.version, v.digest, v.size, v.format, v.status, v.status_reason, "
    "v.registrant, v.height, v.tx_hash, v.round_id"
)
_ROUND_COLUMNS: Final = (
    "r.id, r.model, r.base_version, r.status, r.min_updates, r.deadline, r.opener, "
    "r.open_height, r.open_tx, r.strategy, r.result_version, r.closer, r.close_height, "
    "r.close_tx, r.cancel_reason"
)
_UPDATE_COLUMNS: Final = (
    "u.id, u.round_id, u.twin, u.digest, u.size, u.samples, u.kind, u.height, u.tx_hash, u.included"
)
_ANCESTORS: Final = (
    "WITH RECURSIVE anc(id) AS (SELECT ? UNION "
    "SELECT p.parent FROM version_parents p JOIN anc ON p.child = anc.id) "
)


def _event(row: Sequence[Any]) -> Event:
    return Event(
        seq=row[0],
        name=row[1],
        contract=row[2],
        block=row[3],
        block_hash=row[4],
        timestamp=row[5],
        tx_hash=row[6],
        sender=row[7],
        actor=row[8],
        log_index=row[9],
        args=json.loads(row[10]),
    )


def _update(row: Sequence[Any]) -> UpdateNode:
    return UpdateNode(
        id=row[0],
        round_id=row[1],
        twin=row[2],
        digest=row[3],
        size=row[4],
        samples=row[5],
        kind=_KIND[row[6]] if 0 <= row[6] < len(_KIND) else str(row[6]),
        block=row[7],
        tx_hash=row[8],
        included=bool(row[9]),
    )


def _included_by_round(updates: Sequence[UpdateNode]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for u in updates:
        if u.included:
            found.setdefault(u.round_id, []).append(u.id)
    return found


class AuditQueries:
    """The queries, over one :class:`AuditIndex` (they read; call ``index.update()``
    first to see the newest blocks)."""

    def __init__(self, index: AuditIndex) -> None:
        self.index = index

    def _events(self, where: str, params: Sequence[Any], filters: Filters) -> list[Event]:
        extra, extra_params = filters.sql()
        rows = self.index.query(
            f"SELECT {_EVENT_COLUMNS} FROM events e JOIN blocks b ON b.height = e.height "
            f"WHERE {where}{extra} ORDER BY e.seq",
            [*params, *extra_params],
        )
        return [_event(r) for r in rows]

    # ------------------------------------------------------------ history

    def history(self, model: str, filters: Filters = NO_FILTER) -> History:
        """Every version registration, alias move, deprecation and revocation of ``model``."""
        _check_name(model, "model name", _MAX_NAME)
        self._require_model(model)
        names = ",".join("?" * len(_HISTORY_EVENTS))
        events = self._events(
            f"e.model = ? AND e.name IN ({names})", [model, *_HISTORY_EVENTS], filters
        )
        return History(model, tuple(events))

    def _require_model(self, model: str) -> None:
        if not self.index.query("SELECT 1 FROM versions WHERE name = ? LIMIT 1", (model,)):
            raise NotFound(f"unknown model {model!r}")

    # ------------------------------------------------------------ lineage

    def resolve(self, model: str, ref: str) -> int:
        """Global version id of ``model@ref``: a version number, an alias or ``latest``
        (``latest`` and aliases never name a revoked version)."""
        _check_name(model, "model name", _MAX_NAME)
        self._require_model(model)
        if ref == "latest":
            row = self.index.query(
                "SELECT id FROM versions WHERE name = ? AND status != 2 "
                "ORDER BY version DESC LIMIT 1",
                (model,),
            )
            if not row:
                raise NotFound(f"model {model!r} has no live (non-revoked) version")
            return int(row[0][0])
        if ref.isascii() and ref.isdigit():
            if len(ref) > 20:
                raise NotFound(f"model {model!r} has no version {ref[:20]}...")
            row = self.index.query(
                "SELECT id FROM versions WHERE name = ? AND version = ?", (model, int(ref))
            )
            if not row:
                raise NotFound(f"model {model!r} has no version {ref}")
            return int(row[0][0])
        _check_name(ref, "alias", _MAX_ALIAS)
        row = self.index.query(
            "SELECT version_id FROM aliases WHERE model = ? AND alias = ?", (model, ref)
        )
        if not row:
            raise NotFound(f"model {model!r} has no alias {ref!r}")
        return int(row[0][0])

    def lineage(self, model: str, ref: str = "latest") -> Lineage:
        """The DAG behind ``model@ref`` (see the module docstring)."""
        root = self.resolve(model, ref)
        q = self.index.query
        version_rows = q(
            f"{_ANCESTORS}SELECT {_VERSION_COLUMNS} FROM versions v JOIN anc ON v.id = anc.id "
            "ORDER BY v.id DESC",
            (root,),
        )
        ids = json.dumps([r[0] for r in version_rows])
        edges = q(
            "SELECT p.child, p.parent, p.position FROM version_parents p "
            "WHERE p.child IN (SELECT value FROM json_each(?)) ORDER BY p.child DESC, p.position",
            (ids,),
        )
        links = q(
            "SELECT d.version_id, d.dataset_id FROM version_datasets d "
            "WHERE d.version_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY d.version_id DESC, d.position",
            (ids,),
        )
        parents: dict[int, list[int]] = {}
        for child, parent, _ in edges:
            parents.setdefault(child, []).append(parent)
        trained_on: dict[int, list[int]] = {}
        for vid, did in links:
            trained_on.setdefault(vid, []).append(did)
        versions = [
            VersionNode(
                id=r[0],
                name=r[1],
                version=r[2],
                digest=r[3],
                size=r[4],
                format=r[5],
                status=_STATUS[r[6]],
                status_reason=r[7],
                registrant=r[8],
                block=r[9],
                tx_hash=r[10],
                round_id=r[11],
                parents=tuple(parents.get(r[0], ())),
                datasets=tuple(trained_on.get(r[0], ())),
            )
            for r in version_rows
        ]
        made_by = json.dumps(sorted({r[11] for r in version_rows if r[11] is not None}))
        round_rows = q(
            f"SELECT {_ROUND_COLUMNS} FROM rounds r "
            "WHERE r.id IN (SELECT value FROM json_each(?)) ORDER BY r.id",
            (made_by,),
        )
        round_ids = [r[0] for r in round_rows]
        updates = self._updates(round_ids, included_only=True)
        included = _included_by_round(updates)
        rounds = [self._round_node(r, included.get(r[0], ())) for r in round_rows]
        dataset_ids = sorted({d for _, d in links})
        dataset_rows = (
            q(
                "SELECT id, name, version, digest, size, media_type, registrant, height, tx_hash "
                f"FROM datasets WHERE id IN ({','.join('?' * len(dataset_ids))}) ORDER BY id",
                dataset_ids,
            )
            if dataset_ids
            else []
        )
        twins = sorted({u.twin for u in updates})
        return Lineage(
            model=model,
            ref=ref,
            version_id=root,
            versions=tuple(versions),
            edges=tuple((c, p) for c, p, _ in edges),
            rounds=tuple(rounds),
            updates=tuple(updates),
            twins=tuple(twins),
            datasets=tuple(DatasetNode(*r) for r in dataset_rows),
        )

    def _updates(self, round_ids: Sequence[int], *, included_only: bool) -> list[UpdateNode]:
        if not round_ids:
            return []
        extra = " AND u.included = 1" if included_only else ""
        rows = self.index.query(
            f"SELECT {_UPDATE_COLUMNS} FROM updates u "
            f"WHERE u.round_id IN (SELECT value FROM json_each(?)){extra} "
            "ORDER BY u.round_id, u.id",
            (json.dumps(list(round_ids)),),
        )
        return [_update(r) for r in rows]

    @staticmethod
    def _round_node(r: Sequence[Any], included: Sequence[int]) -> RoundNode:
        return RoundNode(
            id=r[0],
            model=r[1],
            base_version=r[2],
            status=_ROUND_STATUS[r[3]],
            min_updates=r[4],
            deadline=r[5],
            opener=r[6],
            open_block=r[7],
            open_tx=r[8],
            strategy=r[9],
            result_version=r[10],
            included_update_ids=tuple(included),
            closer=r[11],
            close_block=r[12],
            close_tx=r[13],
            cancel_reason=r[14],
        )

    # ------------------------------------------------------------ actor

    def actor(self, address: str, filters: Filters = NO_FILTER) -> ActorReport:
        """Everything ``address`` did (tx sender or the event's actor) or had done to it
        (``subject``: a role granted, a proposal about it, a vote for it), in order."""
        account = parse_address(address)
        extra, extra_params = filters.sql()
        rows = self.index.query(
            f"SELECT {_EVENT_COLUMNS}, group_concat(a.relation) FROM event_accounts a "
            "JOIN events e ON e.seq = a.seq JOIN blocks b ON b.height = e.height "
            f"WHERE a.address = ?{extra} GROUP BY e.seq ORDER BY e.seq",
            [account, *extra_params],
        )
        if not rows and not self.index.query(
            "SELECT 1 FROM event_accounts WHERE address = ? LIMIT 1", (account,)
        ):
            raise NotFound(f"no recorded activity of {account}")
        genesis_roles: tuple[str, ...] = ()
        genesis = self.index.query(
            "SELECT e.args FROM event_accounts a JOIN events e ON e.seq = a.seq "
            "WHERE a.address = ? AND e.name = 'GenesisMember'",
            (account,),
        )
        if genesis:
            bits = int(json.loads(genesis[0][0])["roles"])
            genesis_roles = tuple(r.name for r in Role if bits & r and r.name is not None)
        return ActorReport(
            address=account,
            roles_at_genesis=genesis_roles,
            events=tuple(_event(r[:-1]) for r in rows),
            relations=tuple(tuple(sorted(str(r[-1]).split(","))) for r in rows),
        )

    # ------------------------------------------------------------ round

    def round(self, round_id: int, filters: Filters = NO_FILTER) -> RoundReport:
        """A round's record, every update pushed to it, and its events."""
        if round_id < 1:
            raise InvalidInput(f"round ids start at 1, got {round_id}")
        rows = self.index.query(
            f"SELECT {_ROUND_COLUMNS} FROM rounds r WHERE r.id = ?", (round_id,)
        )
        if not rows:
            raise NotFound(f"unknown round {round_id}")
        updates = self._updates([round_id], included_only=False)
        events = self._events("e.round_id = ?", [round_id], filters)
        included = _included_by_round(updates).get(round_id, [])
        return RoundReport(self._round_node(rows[0], included), tuple(updates), tuple(events))

    # ------------------------------------------------------------ validators

    def validators(self, epoch: int | None = None) -> tuple[ValidatorEpoch, ...]:
        """The validator set of ``epoch`` (or of every epoch known so far), how it was
        chosen, and what changed against the previous epoch."""
        e_len = self.index.epoch_length
        if epoch is not None and epoch < 0:
            raise InvalidInput(f"epoch must be >= 0, got {epoch}")
        where, params = ("WHERE epoch BETWEEN ? AND ?", [epoch - 1, epoch]) if epoch else ("", [])
        if epoch == 0:
            where, params = "WHERE epoch = 0", []
        rows = self.index.query(
            "SELECT epoch, boundary_height, members, set_hash, header_set_hash, source "
            f"FROM epochs {where} ORDER BY epoch",
            params,
        )
        if epoch is not None and not any(r[0] == epoch for r in rows):
            raise NotFound(
                f"the set of epoch {epoch} is not determined yet: its boundary block "
                f"{(epoch - 1) * e_len} is not indexed (indexed height "
                f"{self.index.indexed_height})"
            )
        result: list[ValidatorEpoch] = []
        previous: tuple[str, ...] | None = None
        for number, boundary, members_json, set_hash, header_hash, source in rows:
            members = tuple(json.loads(members_json))
            if epoch is not None and number != epoch:
                previous = members
                continue
            before = previous if previous is not None else members
            result.append(
                ValidatorEpoch(
                    epoch=number,
                    first_height=number * e_len,
                    last_height=(number + 1) * e_len - 1,
                    boundary_height=boundary,
                    members=members,
                    set_hash=set_hash,
                    header_set_hash=header_hash,
                    source=source,
                    added=tuple(m for m in members if m not in before),
                    removed=tuple(m for m in before if m not in members),
                    changes=tuple(self._set_changes(number)),
                )
            )
            previous = members
        return tuple(result)

    def _set_changes(self, epoch: int) -> list[Event]:
        """Events in ``((k-2)E, (k-1)E]`` that can change the set of epoch ``k``:
        MINER role changes with their proposals; for DPoS also every Election event."""
        if epoch < 2:
            return []
        e_len = self.index.epoch_length
        low, high = (epoch - 2) * e_len, (epoch - 1) * e_len
        window = Filters(from_block=low + 1, to_block=high)
        roles = [
            ev
            for ev in self._events(
                "e.contract = 'Membership' AND e.name IN ('RoleGranted', 'RoleRevoked')",
                [],
                window,
            )
            if int(ev.args.get("role", 0)) & Role.MINER
        ]
        proposals = sorted({int(ev.args["proposal_id"]) for ev in roles})
        found = {ev.seq: ev for ev in roles}
        if proposals:
            marks = ",".join("?" * len(proposals))
            for ev in self._events(f"e.proposal_id IN ({marks})", proposals, NO_FILTER):
                found[ev.seq] = ev
        if self.index.engine == "dpos":
            for ev in self._events("e.contract = 'Election'", [], window):
                found[ev.seq] = ev
        return [found[s] for s in sorted(found)]
