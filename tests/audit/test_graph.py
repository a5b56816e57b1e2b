"""Lineage and round pictures of the real history: DOT, Mermaid, and an SVG that parses."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from registry.audit.graph import lineage_graph, render, round_graph
from registry.audit.index import AuditIndex
from registry.audit.queries import AuditQueries, Lineage
from tests.audit.conftest import AuditHistory
from tests.audit.history import MODEL

pytestmark = pytest.mark.timeout(600)
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def queries(
    audit_history: AuditHistory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuditQueries]:
    e = audit_history.expected
    index = AuditIndex.open(e.data_dirs[2], e.genesis, tmp_path_factory.mktemp("g") / "i.db")
    index.update()
    yield AuditQueries(index)
    index.close()


@pytest.fixture(scope="module")
def lineage(queries: AuditQueries) -> Lineage:
    return queries.lineage(MODEL, "latest")


def _node_ids(svg: str) -> set[str]:
    root = ET.fromstring(svg)  # valid XML, or this raises
    assert root.tag == f"{SVG}svg"
    return {
        g.attrib["id"]
        for g in root.iter(f"{SVG}g")
        if "node" in g.attrib.get("class", "").split() and "id" in g.attrib
    }


def test_lineage_svg_is_valid_xml_with_a_node_for_every_version_and_twin(
    lineage: Lineage,
) -> None:
    svg = render(lineage_graph(lineage), "svg")
    ids = _node_ids(svg)
    assert len(lineage.versions) == 4 and len(lineage.twins) == 3
    assert {f"v{v.id}" for v in lineage.versions} <= ids
    assert {f"t{t}" for t in lineage.twins} <= ids
    assert {f"u{u.id}" for u in lineage.updates} | {f"r{r.id}" for r in lineage.rounds} <= ids
    assert {f"d{d.id}" for d in lineage.datasets} <= ids
    root = ET.fromstring(svg)
    edges = {
        (g.attrib["data-source"], g.attrib["data-target"])
        for g in root.iter(f"{SVG}g")
        if g.attrib.get("class") == "edge"
    }
    for r in lineage.rounds:
        assert (f"v{r.base_version}", f"r{r.id}") in edges
        assert (f"r{r.id}", f"v{r.result_version}") in edges
    for u in lineage.updates:
        assert (f"t{u.twin}", f"u{u.id}") in edges and (f"u{u.id}", f"r{u.round_id}") in edges
    assert render(lineage_graph(lineage), "svg") == svg  # deterministic


def test_lineage_dot_and_mermaid_name_every_node_and_edge(lineage: Lineage) -> None:
    graph = lineage_graph(lineage)
    dot = render(graph, "dot")
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    for v in lineage.versions:
        assert f'"v{v.id}" [label="{v.name} v{v.version}' in dot
    for t in lineage.twins:
        assert f'"t{t}" [' in dot
    assert dot.count(" -> ") == len(graph.edges)
    assert '[label="aggregate"]' in dot and '[label="trained on"]' in dot
    mermaid = render(graph, "mermaid")
    assert mermaid.startswith("flowchart LR\n")
    labels = re.findall(r"^  n\d+[\[\(\{]+\"(.*?)\"[\]\)\}]+$", mermaid, re.MULTILINE)
    assert len(labels) == len(graph.nodes)
    for v in lineage.versions:
        assert any(label.startswith(f"{v.name} v{v.version}<br/>") for label in labels)
    assert len(re.findall(r"^  n\d+ --", mermaid, re.MULTILINE)) == len(graph.edges)


def test_round_picture_shows_base_updates_twins_and_result(
    audit_history: AuditHistory, queries: AuditQueries
) -> None:
    report = queries.round(1)
    rec = audit_history.expected.rounds[1]
    ids = _node_ids(render(round_graph(report), "svg"))
    assert {f"v{rec['base']}", "r1", f"v{rec['result']}"} <= ids
    assert {f"u{u[0]}" for u in rec["updates"]} | {f"t{u[1]}" for u in rec["updates"]} <= ids
    cancelled = render(round_graph(queries.round(3)), "dot")
    assert "round 3 of link (cancelled)" in cancelled
