"""``/v1/audit/...`` on running miners: AUDITOR only, answers from chain data, precise errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest

from tests.audit.conftest import AuditHistory
from tests.audit.history import MODEL

pytestmark = pytest.mark.timeout(600)
MINER = 2  # not the miner the history's transactions were sent to


def _get(h: AuditHistory, path: str, token: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(
        f"{h.net.url(MINER)}/v1/audit{path}", params=params, headers=headers, timeout=30
    )


@pytest.fixture(scope="module")
def auditor(audit_history: AuditHistory) -> str:
    return audit_history.net.token(MINER, "auditor-0")


def test_auditor_reads_history_lineage_actor_round_and_validators(
    audit_history: AuditHistory, auditor: str
) -> None:
    h, e = audit_history, audit_history.expected
    status = _get(h, "/status", auditor)
    assert status.status_code == 200 and status.json()["engine"] == "pbft"
    assert status.json()["indexed_height"] >= e.change_epoch * e.epoch_length

    history = _get(h, f"/history/{MODEL}", auditor)
    assert history.status_code == 200, history.text
    registered = [
        ev["tx_hash"] for ev in history.json()["events"] if ev["name"] == "ModelVersionRegistered"
    ]
    assert registered == [entry[1].tx_hash for entry in e.versions.values()]

    lineage = _get(h, f"/lineage/{MODEL}/production", auditor).json()
    assert lineage["version_id"] == e.versions[2][0]
    latest = _get(h, f"/lineage/{MODEL}", auditor).json()
    assert latest["version_id"] == e.versions[4][0] and [r["id"] for r in latest["rounds"]] == [
        1,
        2,
    ]

    twin = _get(h, f"/actors/{e.accounts['twin-0']}", auditor).json()
    assert [ev["name"] for ev in twin["events"]] == ["GenesisMember", "UpdatePushed"]

    rnd = _get(h, "/rounds/1", auditor).json()
    assert rnd["round"]["result_version"] == e.rounds[1]["result"]
    assert [u["id"] for u in rnd["updates"]] == e.rounds[1]["included"]

    window = _get(
        h,
        f"/history/{MODEL}",
        auditor,
        from_block=e.rounds[1]["close"].block,
        to_block=e.rounds[1]["close"].block,
    ).json()
    assert [ev["tx_hash"] for ev in window["events"]] == [e.rounds[1]["close"].tx_hash]

    sets = _get(h, "/validators", auditor, epoch=e.change_epoch)
    assert sets.status_code == 200
    (epoch,) = sets.json()["epochs"]
    assert epoch["removed"] == [e.removed_miner] and e.removed_miner not in epoch["members"]


def test_pictures_come_in_every_format(audit_history: AuditHistory, auditor: str) -> None:
    h = audit_history
    svg = _get(h, f"/lineage/{MODEL}/latest", auditor, format="svg")
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    ids = {g.get("id") for g in ET.fromstring(svg.text).iter("{http://www.w3.org/2000/svg}g")}
    assert {f"v{v[0]}" for n, v in h.expected.versions.items() if n <= 4} <= ids
    dot = _get(h, "/rounds/2", auditor, format="dot")
    assert dot.status_code == 200 and dot.text.startswith("digraph")
    assert dot.headers["content-type"].startswith("text/vnd.graphviz")
    mermaid = _get(h, f"/lineage/{MODEL}/1", auditor, format="mermaid")
    assert mermaid.status_code == 200 and mermaid.text.startswith("flowchart LR")


def test_audit_routes_need_an_auditor_token(audit_history: AuditHistory) -> None:
    h = audit_history
    none = _get(h, f"/history/{MODEL}", None)
    assert none.status_code == 401 and none.json()["error"]["message"] == "no token"
    forged = _get(h, f"/history/{MODEL}", "tc1.eyJhIjoxfQ.AAAA")
    assert forged.status_code == 401
    publisher = h.net.token(MINER, "publisher-0")
    refused = _get(h, f"/history/{MODEL}", publisher)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"].endswith("is not an AUDITOR")
    assert _get(h, "/validators", h.net.token(MINER, "admin-0")).status_code == 403


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/history/nope", {}, 404, "unknown model 'nope'"),
        (f"/lineage/{MODEL}/staging", {}, 404, "has no alias 'staging'"),
        (f"/lineage/{MODEL}/99", {}, 404, "has no version 99"),
        ("/rounds/99", {}, 404, "unknown round 99"),
        ("/actors/0x" + "ab" * 20, {}, 404, "no recorded activity"),
        ("/validators", {"epoch": 10**9}, 404, "not determined yet"),
        ("/actors/0x1234", {}, 422, "not an address"),
        (f"/history/{MODEL}", {"since": "tomorrow"}, 422, "neither unix seconds nor"),
        (f"/history/{MODEL}", {"from_block": 9, "to_block": 3}, 422, "is after"),
        (f"/history/{MODEL}", {"from_block": -1}, 422, "from_block"),
        (f"/lineage/{MODEL}/latest", {"format": "png"}, 422, "format"),
        ("/rounds/0", {}, 422, "round_id"),
        (f"/lineage/{MODEL}/{'x' * 33}", {}, 422, "alias must be 1 to 32 bytes"),
    ],
)
def test_bad_requests_get_precise_errors(
    audit_history: AuditHistory,
    auditor: str,
    path: str,
    params: dict[str, Any],
    status: int,
    message: str,
) -> None:
    response = _get(audit_history, path, auditor, **params)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
