"""``/v1/audit/...``: the audit queries over REST, for AUDITOR members.

Mounted on every miner with the registry API (:func:`registry.api.app.create_v1_app`
includes :data:`router`). The index of a miner lives in its data directory
(``<data_dir>/audit/index.db``, see :mod:`registry.audit.index`); it is opened on the
first audit request and brought up to date lazily before each one (two single-row reads
when nothing was committed since). The index reads the chain store read-only; the
answers are the chain's, never the miner's opinion.

Routes (all ``GET``, bearer token of an AUDITOR; 401 without or with a bad token, 403
for a member without the AUDITOR role, 404 for an unknown model/ref/round/address/epoch,
422 for malformed parameters, 409 when the index disagrees with the chain store):

- ``/audit/status`` — indexed height, chain head, engine, epoch length;
- ``/audit/history/{model}`` — ``?since=&until=`` (ISO-8601 or unix seconds),
  ``?from_block=&to_block=``;
- ``/audit/lineage/{model}/{ref}`` (and ``/audit/lineage/{model}`` for ``latest``) —
  ``?format=json|dot|svg|mermaid``;
- ``/audit/actors/{address}`` — with the time and block filters;
- ``/audit/rounds/{round_id}`` — filters, ``?format=json|dot|svg|mermaid``;
- ``/audit/validators`` — ``?epoch=E`` for one epoch, every epoch otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from contracts import Role
from node.auth import Principal
from node.chain.genesis import Genesis
from node.errors import Forbidden, InvalidInput, NotFound
from registry.api.deps import Context, CurrentMember, RegistryContext
from registry.api.errors import Unprocessable
from registry.api.schemas import ErrorBody
from registry.audit.graph import lineage_graph, render, round_graph
from registry.audit.index import AuditIndex, default_index_path
from registry.audit.queries import AuditQueries, Filters

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422)
}
_MEDIA: Final = {
    "dot": "text/vnd.graphviz; charset=utf-8",
    "svg": "image/svg+xml",
    "mermaid": "text/plain; charset=utf-8",
}

router = APIRouter(prefix="/audit", tags=["audit"], responses=_ERRORS)

#: One index per chain store file, shared by every app serving it.
_indexes: dict[str, AuditIndex] = {}
_indexes_lock = threading.Lock()
T = TypeVar("T")


def auditor(principal: CurrentMember) -> Principal:
    """The caller, if it holds the AUDITOR role (403 otherwise)."""
    if principal.roles & Role.AUDITOR == 0:
        raise Forbidden(f"0x{bytes(principal.address).hex()} is not an AUDITOR")
    return principal


Auditor = Annotated[Principal, Depends(auditor)]


def _source(context: RegistryContext) -> tuple[Path, Genesis]:
    """The chain store file and genesis behind the node view (a miner or a local node)."""
    view: Any = context.view
    replica = getattr(view, "replica", None)
    store = getattr(replica, "store", None) or getattr(view, "store", None)
    genesis = getattr(replica, "genesis", None) or getattr(view, "genesis", None)
    genesis = getattr(genesis, "config", genesis)  # GenesisState -> Genesis
    path = getattr(store, "path", None)
    if path is None or not isinstance(genesis, Genesis):
        raise NotFound("this node has no local chain store to audit")
    return Path(path), genesis


def _index(context: RegistryContext) -> AuditIndex:
    """The context's index, opened once and updated to the chain head."""
    chain_db, genesis = _source(context)
    key = str(chain_db.resolve())
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None:
            index = AuditIndex(chain_db, genesis, default_index_path(chain_db.parent))
            _indexes[key] = index
    index.update()
    return index


def _queries(context: Context) -> AuditQueries:
    return AuditQueries(_index(context))


Queries = Annotated[AuditQueries, Depends(_queries)]


def _unprocessable(call: Callable[[], T]) -> T:
    """Bad input found while querying is a 422, like FastAPI's own validation errors."""
    try:
        return call()
    except InvalidInput as exc:
        if isinstance(exc, Unprocessable):
            raise
        raise Unprocessable(str(exc)) from None


def _filters(
    since: Annotated[
        str | None, Query(max_length=64, description="ISO-8601 or unix seconds, inclusive")
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, description="ISO-8601 or unix seconds, inclusive")
    ] = None,
    from_block: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    to_block: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Filters:
    return _unprocessable(lambda: Filters.parse(since, until, from_block, to_block))


Filter = Annotated[Filters, Depends(_filters)]
Model = Annotated[str, PathParam(min_length=1, max_length=64, description="A model name")]
Format = Annotated[
    Literal["json", "dot", "svg", "mermaid"], Query(description="json, or a picture format")
]


def _picture(text: str, fmt: str) -> Response:
    return Response(text, media_type=_MEDIA[fmt])


@router.get("/status", summary="Index and chain heights")
def status(_: Auditor, context: Context) -> dict[str, Any]:
    """How far the index is, and the chain's parameters."""
    index = _index(context)
    return {
        "indexed_height": index.indexed_height,
        "chain_height": index.chain_height(),
        "engine": index.engine,
        "epoch_length": index.epoch_length,
        "genesis_hash": index.genesis_hash,
    }


@router.get("/history/{model}", summary="Every registration, alias move, deprecation, revocation")
def history(_: Auditor, queries: Queries, model: Model, filters: Filter) -> dict[str, Any]:
    """A model's history with who, when, transaction and block of each event."""
    return _unprocessable(lambda: queries.history(model, filters)).to_json()


@router.get("/lineage/{model}", summary="Lineage of the latest live version")
def lineage_latest(_: Auditor, queries: Queries, model: Model, format: Format = "json") -> Any:
    """Same as ``/lineage/{model}/latest``."""
    return lineage(_, queries, model, "latest", format)


@router.get("/lineage/{model}/{ref}", summary="The DAG behind a model version")
def lineage(
    _: Auditor,
    queries: Queries,
    model: Model,
    ref: Annotated[
        str,
        PathParam(min_length=1, max_length=80, description="A version number, alias or latest"),
    ],
    format: Format = "json",
) -> Any:
    """Parents, aggregates (round → included updates → twins) and datasets."""
    result = _unprocessable(lambda: queries.lineage(model, ref))
    if format == "json":
        return result.to_json()
    return _picture(render(lineage_graph(result), format), format)


@router.get("/actors/{address}", summary="Everything an account did, in order")
def actor(
    _: Auditor,
    queries: Queries,
    address: Annotated[str, PathParam(min_length=1, max_length=64)],
    filters: Filter,
) -> dict[str, Any]:
    """Registrations, updates, rounds, role changes, proposals, stakes and votes."""
    return _unprocessable(lambda: queries.actor(address, filters)).to_json()


@router.get("/rounds/{round_id}", summary="A federated round, update by update")
def round_(
    _: Auditor,
    queries: Queries,
    round_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)],
    filters: Filter,
    format: Format = "json",
) -> Any:
    """Open, every update (twin, samples, digest), close (strategy, result) or cancel."""
    result = _unprocessable(lambda: queries.round(round_id, filters))
    if format == "json":
        return result.to_json()
    return _picture(render(round_graph(result), format), format)


@router.get("/validators", summary="The validator set of each epoch and how it was chosen")
def validators(
    _: Auditor,
    queries: Queries,
    epoch: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> dict[str, Any]:
    """Read from the state at each epoch's boundary block, with the events behind changes."""
    found = _unprocessable(lambda: queries.validators(epoch))
    return {"engine": queries.index.engine, "epochs": [e.to_json() for e in found]}
