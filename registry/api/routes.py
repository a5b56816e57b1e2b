"""Read routes over the registry's records: models, datasets, rounds; and sign-in.

Handlers are thin: they parse the path, ask a :class:`~registry.api.records.RecordReader`
(all reads at one committed head) and return the pydantic record. Every record carries
its on-chain proof point (``proof``). Pages are ``offset``/``limit`` (at most 1000).
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from contracts import VersionStatus
from node.blobs import ArtifactDigest
from node.chain.types import Address
from registry.api.blobs import blob_response
from registry.api.deps import Context, CurrentMember, json_body, json_body_schema
from registry.api.records import RecordReader
from registry.api.schemas import (
    ChallengeCreate,
    ChallengePublic,
    DatasetPublic,
    ErrorBody,
    LineagePublic,
    ModelPublic,
    ModelSummary,
    ModelVersionPublic,
    RoundPublic,
    TokenCreate,
    TokenPublic,
    UpdatePublic,
)

__all__ = ["auth_router", "records_router"]

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 422)
}
_MAX_ID: Final = 2**256 - 1

auth_router = APIRouter(prefix="/auth", tags=["auth"])
records_router = APIRouter(responses=_ERRORS)

Offset = Annotated[int, Query(ge=0, le=2**63 - 1, description="Items to skip.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Items to return at most.")]
Name = Annotated[str, Path(min_length=1, max_length=64, description="A model or dataset name")]
Ref = Annotated[
    str,
    Path(min_length=1, max_length=80, description="A version number, an alias, or `latest`"),
]
RecordId = Annotated[int, Path(ge=1, le=_MAX_ID)]


def _records(context: Context, _member: CurrentMember) -> RecordReader:
    # depends on the caller: no read of the chain before the token is checked
    return RecordReader(context)


Records = Annotated[RecordReader, Depends(_records)]


# ---------------------------------------------------------------- auth


@auth_router.post(
    "/challenge",
    response_model=ChallengePublic,
    responses=_ERRORS,
    openapi_extra=json_body_schema(ChallengeCreate),
    summary="Start signing in: the text to sign",
)
def challenge(
    context: Context, body: Annotated[ChallengeCreate, Depends(json_body(ChallengeCreate))]
) -> ChallengePublic:
    """A single-use challenge bound to the address (EIP-191 personal_sign it)."""
    address = Address(bytes.fromhex(body.address[2:]))
    return ChallengePublic(message=context.auth.challenge(address))


@auth_router.post(
    "/token",
    response_model=TokenPublic,
    responses=_ERRORS,
    openapi_extra=json_body_schema(TokenCreate),
    summary="Finish signing in: a bearer token",
)
def token(
    context: Context, body: Annotated[TokenCreate, Depends(json_body(TokenCreate))]
) -> TokenPublic:
    """Exchange the signed challenge for a token (401 bad signature, 403 no role)."""
    address = Address(bytes.fromhex(body.address[2:]))
    issued, expires_at = context.auth.token(address, body.signature)
    return TokenPublic(token=issued, expires_at=expires_at)


# ---------------------------------------------------------------- models


@records_router.get("/models", response_model=list[ModelSummary], tags=["models"])
def list_models(
    records: Records, _member: CurrentMember, offset: Offset = 0, limit: Limit = 100
) -> list[ModelSummary]:
    """Model names in order of first registration, with their newest live version."""
    return [records.model_summary(name) for name in records.model_names(offset, limit)]


@records_router.get("/models/{name}", response_model=ModelPublic, tags=["models"])
def get_model(
    name: Name, records: Records, _member: CurrentMember, offset: Offset = 0, limit: Limit = 100
) -> ModelPublic:
    """A model and a page of its versions (oldest first)."""
    summary = records.model_summary(name)
    versions = records.model_versions(name, offset, limit)
    return ModelPublic(**summary.model_dump(), version_list=versions)


@records_router.get(
    "/models/{name}/versions/{ref}", response_model=ModelVersionPublic, tags=["models"]
)
def get_model_version(
    name: Name, ref: Ref, records: Records, _member: CurrentMember
) -> ModelVersionPublic:
    """One version: ``ref`` is a number, an alias or ``latest`` (never revoked)."""
    return records.version(records.resolve_version(name, ref))


@records_router.get(
    "/models/{name}/versions/{ref}/artifact",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 416: {}},
    tags=["models"],
)
async def get_model_artifact(
    name: Name, ref: Ref, request: Request, context: Context, _member: CurrentMember
) -> Response:
    """The version's weights, streamed like ``GET /v1/blobs/{digest}``."""

    def resolve() -> tuple[int, ArtifactDigest, str]:
        records = RecordReader(context)
        version_id = records.resolve_version(name, ref)
        record = records.reader.version(version_id)
        return version_id, record.digest, VersionStatus(record.status).name.lower()

    version_id, digest, status = await run_in_threadpool(resolve)
    headers = {"X-TwinChain-Version-Id": str(version_id), "X-TwinChain-Version-Status": status}
    return await blob_response(request, context, digest, headers)


@records_router.get("/models/{name}/lineage", response_model=LineagePublic, tags=["models"])
def get_lineage(
    name: Name,
    records: Records,
    _member: CurrentMember,
    ref: Annotated[str, Query(min_length=1, max_length=80)] = "latest",
) -> LineagePublic:
    """Ancestors, datasets, rounds and contributing updates of ``name`` at ``ref``."""
    return records.lineage(records.resolve_version(name, ref))


# ---------------------------------------------------------------- datasets


@records_router.get("/datasets", response_model=list[DatasetPublic], tags=["datasets"])
def list_datasets(
    records: Records, _member: CurrentMember, offset: Offset = 0, limit: Limit = 100
) -> list[DatasetPublic]:
    """Dataset versions by id, oldest first."""
    count = records.reader.count("datasetCount")
    return [records.dataset(i) for i in range(offset + 1, min(count, offset + limit) + 1)]


@records_router.get("/datasets/{name}", response_model=list[DatasetPublic], tags=["datasets"])
def get_dataset(name: Name, records: Records, _member: CurrentMember) -> list[DatasetPublic]:
    """Every version of a dataset."""
    return records.dataset_versions(name)


@records_router.get(
    "/datasets/{name}/versions/{ref}", response_model=DatasetPublic, tags=["datasets"]
)
def get_dataset_version(
    name: Name, ref: Ref, records: Records, _member: CurrentMember
) -> DatasetPublic:
    """One dataset version: ``ref`` is a number or ``latest``."""
    return records.dataset(records.resolve_dataset(name, ref))


@records_router.get(
    "/datasets/{name}/versions/{ref}/artifact",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 416: {}},
    tags=["datasets"],
)
async def get_dataset_artifact(
    name: Name, ref: Ref, request: Request, context: Context, _member: CurrentMember
) -> Response:
    """The dataset's bytes, streamed like ``GET /v1/blobs/{digest}``."""

    def resolve() -> tuple[int, ArtifactDigest]:
        records = RecordReader(context)
        dataset_id = records.resolve_dataset(name, ref)
        return dataset_id, records.reader.dataset(dataset_id).digest

    dataset_id, digest = await run_in_threadpool(resolve)
    headers = {"X-TwinChain-Dataset-Id": str(dataset_id)}
    return await blob_response(request, context, digest, headers)


# ---------------------------------------------------------------- rounds


@records_router.get("/rounds", response_model=list[RoundPublic], tags=["rounds"])
def list_rounds(
    records: Records,
    _member: CurrentMember,
    offset: Offset = 0,
    limit: Limit = 100,
    status: Annotated[str | None, Query(pattern="^(open|closed|cancelled)$")] = None,
) -> list[RoundPublic]:
    """Rounds ``offset + 1 .. offset + limit`` by id, optionally only those in ``status``."""
    count = records.reader.count("roundCount")
    rounds = [records.round(i) for i in range(offset + 1, min(count, offset + limit) + 1)]
    return [r for r in rounds if status is None or r.status == status]


@records_router.get("/rounds/{round_id}", response_model=RoundPublic, tags=["rounds"])
def get_round(round_id: RecordId, records: Records, _member: CurrentMember) -> RoundPublic:
    """One round."""
    return records.round(round_id)


@records_router.get(
    "/rounds/{round_id}/updates", response_model=list[UpdatePublic], tags=["rounds"]
)
def get_round_updates(
    round_id: RecordId, records: Records, _member: CurrentMember
) -> list[UpdatePublic]:
    """Every update pushed to the round, in push order."""
    return [records.update(u) for u in records.reader.round(round_id).update_ids]


@records_router.get("/updates/{update_id}", response_model=UpdatePublic, tags=["rounds"])
def get_update(update_id: RecordId, records: Records, _member: CurrentMember) -> UpdatePublic:
    """One training update."""
    return records.update(update_id)


@records_router.get("/versions/{version_id}", response_model=ModelVersionPublic, tags=["models"])
def get_version_by_id(
    version_id: RecordId, records: Records, _member: CurrentMember
) -> ModelVersionPublic:
    """A model version by its global id (as lineage and rounds name them)."""
    return records.version(version_id)
