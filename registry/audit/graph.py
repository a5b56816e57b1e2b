"""Pictures of lineage and rounds: Graphviz DOT, Mermaid, and SVG drawn here.

A query result becomes a :class:`Graph` (typed nodes, labelled edges), which renders as

- **DOT** (:meth:`Graph.to_dot`) for Graphviz (``dot -Tpdf``), left to right;
- **Mermaid** (:meth:`Graph.to_mermaid`) — a ``flowchart LR`` to paste into Markdown
  reports (GitHub, GitLab and most wikis render it);
- **SVG** (:meth:`Graph.to_svg`) — drawn in Python, so no Graphviz binary is needed
  anywhere: a layered layout where a node's column is the length of the longest path
  reaching it (datasets and twins first, then versions, updates, rounds, aggregates),
  nodes in a column ordered by kind and id, straight edges with arrowheads. The same
  graph always gives the same bytes. Every node is a ``<g class="node">`` whose ``id``
  is the node id (``v3``, ``d1``, ``r2``, ``u7``, ``t0x…``) with a ``<title>``.

Node ids: ``v<version id>``, ``d<dataset id>``, ``r<round id>``, ``u<update id>``,
``t<twin address>``. Edges point from what was used to what was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from node.errors import InvalidInput
from registry.audit.queries import Lineage, RoundReport

__all__ = ["FORMATS", "Edge", "Graph", "Node", "lineage_graph", "render", "round_graph"]

#: Picture formats (``json`` is the query result itself, handled by callers).
FORMATS: Final = ("dot", "svg", "mermaid")

_KIND_ORDER: Final = {"dataset": 0, "twin": 1, "version": 2, "update": 3, "round": 4}
_STYLE: Final = {
    # kind: (DOT shape, fill, stroke)
    "dataset": ("cylinder", "#e8f4fd", "#2b7bb9"),
    "version": ("box", "#eef8ee", "#2e7d32"),
    "revoked": ("box", "#fdecea", "#c62828"),
    "deprecated": ("box", "#fff8e1", "#ef6c00"),
    "round": ("hexagon", "#f3e5f5", "#6a1b9a"),
    "update": ("note", "#fafafa", "#616161"),
    "twin": ("ellipse", "#e0f7fa", "#00838f"),
}


@dataclass(frozen=True)
class Node:
    """A picture node: ``id`` (see the module docstring), kind, label lines, style key."""

    id: str
    kind: str
    label: tuple[str, ...]
    style: str


@dataclass(frozen=True)
class Edge:
    """``source`` was used to make ``target``."""

    source: str
    target: str
    label: str = ""


@dataclass
class Graph:
    """Typed nodes and labelled edges, renderable as DOT, Mermaid or SVG."""

    title: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, node: Node) -> None:
        """Add a node (the first one with an id wins)."""
        self.nodes.setdefault(node.id, node)

    def link(self, source: str, target: str, label: str = "") -> None:
        """Add an edge between two known nodes (once)."""
        edge = Edge(source, target, label)
        if source in self.nodes and target in self.nodes and edge not in self.edges:
            self.edges.append(edge)

    # ------------------------------------------------------------ layout

    def ranks(self) -> dict[str, int]:
        """Column of each node: the longest path from a node with no incoming edge."""
        incoming: dict[str, list[str]] = {n: [] for n in self.nodes}
        for e in self.edges:
            incoming[e.target].append(e.source)
        rank: dict[str, int] = {}

        def visit(node: str, trail: frozenset[str]) -> int:
            if node in rank:
                return rank[node]
            if node in trail:  # a cycle cannot happen on chain data; stay finite anyway
                return 0
            preds = incoming[node]
            value = 0 if not preds else 1 + max(visit(p, trail | {node}) for p in preds)
            rank[node] = value
            return value

        for node in sorted(self.nodes):
            visit(node, frozenset())
        return rank

    def _ordered(self) -> list[Node]:
        def key(n: Node) -> tuple[int, int, str]:
            digits = n.id[1:]
            number = int(digits) if digits.isdigit() else 0
            return (_KIND_ORDER.get(n.kind, 9), number, n.id)

        return sorted(self.nodes.values(), key=key)

    # ------------------------------------------------------------ renderers

    def to_dot(self) -> str:
        """Graphviz DOT text."""
        lines = [
            f"digraph {_dot_id(self.title)} {{",
            "  rankdir=LR;",
            '  node [fontname="Helvetica", fontsize=10, style=filled];',
            '  edge [fontname="Helvetica", fontsize=9];',
            f"  label={_dot_string(self.title)}; labelloc=t;",
        ]
        for n in self._ordered():
            shape, fill, stroke = _STYLE[n.style]
            label = "\\n".join(_dot_escape(x) for x in n.label)
            lines.append(
                f'  "{n.id}" [label="{label}", shape={shape}, fillcolor="{fill}", '
                f'color="{stroke}"];'
            )
        for e in self.edges:
            extra = f" [label={_dot_string(e.label)}]" if e.label else ""
            lines.append(f'  "{e.source}" -> "{e.target}"{extra};')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """Mermaid ``flowchart LR`` text."""
        ids = {n.id: f"n{i}" for i, n in enumerate(self._ordered())}
        lines = ["flowchart LR", f"  %% {self.title}"]
        shapes = {
            "dataset": ('[("', '")]'),
            "version": ('["', '"]'),
            "round": ('{{"', '"}}'),
            "update": ('["', '"]'),
            "twin": ('(["', '"])'),
        }
        for n in self._ordered():
            left, right = shapes.get(n.kind, ('["', '"]'))
            text = "<br/>".join(_mermaid_escape(x) for x in n.label)
            lines.append(f"  {ids[n.id]}{left}{text}{right}")
        for e in self.edges:
            arrow = f"-- {_mermaid_escape(e.label)} -->" if e.label else "-->"
            lines.append(f"  {ids[e.source]} {arrow} {ids[e.target]}")
        for style in sorted({n.style for n in self.nodes.values()}):
            _, fill, stroke = _STYLE[style]
            lines.append(f"  classDef {style} fill:{fill},stroke:{stroke}")
        for n in self._ordered():
            lines.append(f"  class {ids[n.id]} {n.style}")
        return "\n".join(lines) + "\n"

    def to_svg(self) -> str:
        """A standalone SVG document (see the module docstring for the layout)."""
        width, height, gap_x, gap_y, line_h = 190, 0, 70, 24, 14
        ranks = self.ranks()
        columns: dict[int, list[Node]] = {}
        for n in self._ordered():
            columns.setdefault(ranks[n.id], []).append(n)
        box: dict[str, tuple[float, float, float, float]] = {}
        total_h = 0.0
        for col in sorted(columns):
            y = 40.0
            for n in columns[col]:
                node_h = 12 + line_h * len(n.label)
                box[n.id] = (20 + col * (width + gap_x), y, float(width), float(node_h))
                y += node_h + gap_y
            total_h = max(total_h, y)
        total_w = 20 + (max(columns, default=0) + 1) * (width + gap_x)
        height = int(total_h) + 20
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" '
            f'viewBox="0 0 {total_w} {height}" font-family="Helvetica, Arial, sans-serif" '
            'font-size="11">',
            f"<title>{escape(self.title)}</title>",
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
            f'<text x="20" y="22" font-size="14" font-weight="bold">{escape(self.title)}</text>',
        ]
        for e in self.edges:
            sx, sy, sw, sh = box[e.source]
            tx, ty, _, th = box[e.target]
            x1, y1, x2, y2 = sx + sw, sy + sh / 2, tx, ty + th / 2
            if tx <= sx:  # same or earlier column: route from the bottom edge
                x1, y1, x2, y2 = sx + sw / 2, sy + sh, tx + sw / 2, ty
            out.append(
                f'<g class="edge" data-source={quoteattr(e.source)} '
                f"data-target={quoteattr(e.target)}>"
                f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                'stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>'
                + (
                    f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 3:.1f}" '
                    f'text-anchor="middle" fill="#555" font-size="9">{escape(e.label)}</text>'
                    if e.label
                    else ""
                )
                + "</g>"
            )
        for n in self._ordered():
            x, y, w, h = box[n.id]
            _, fill, stroke = _STYLE[n.style]
            radius = h / 2 if n.kind == "twin" else 6.0
            texts = "".join(
                f'<text x="{x + w / 2:.1f}" y="{y + 16 + i * line_h:.1f}" text-anchor="middle"'
                + (' font-weight="bold"' if i == 0 else "")
                + f">{escape(line)}</text>"
                for i, line in enumerate(n.label)
            )
            out.append(
                f"<g class={quoteattr('node ' + n.kind)} id={quoteattr(n.id)} "
                f"data-kind={quoteattr(n.kind)}><title>{escape(' '.join(n.label))}</title>"
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                f'rx="{radius:.1f}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
                f"{texts}</g>"
            )
        out.append("</svg>")
        return "\n".join(out) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _dot_string(text: str) -> str:
    return f'"{_dot_escape(text)}"'


def _dot_id(text: str) -> str:
    return _dot_string(text)


def _mermaid_escape(text: str) -> str:
    # Mermaid labels in quotes: entity-encode what would end the label or start markup.
    return (
        text.replace("&", "&amp;")
        .replace('"', "#quot;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\n", " ")
    )


def _short(value: str, keep: int = 10) -> str:
    return value if len(value) <= keep + 4 else f"{value[: keep + 2]}…"


def _twin_node(address: str) -> Node:
    return Node(f"t{address}", "twin", ("twin", _short(address, 12)), "twin")


def lineage_graph(lineage: Lineage) -> Graph:
    """The lineage DAG: datasets → versions, parent → child, twin → update → round →
    aggregate version, base version → round."""
    graph = Graph(f"lineage of {lineage.model}@{lineage.ref} (version id {lineage.version_id})")
    for d in lineage.datasets:
        graph.add(
            Node(f"d{d.id}", "dataset", (f"{d.name} v{d.version}", _short(d.digest)), "dataset")
        )
    for v in lineage.versions:
        style = v.status if v.status in ("revoked", "deprecated") else "version"
        label = [f"{v.name} v{v.version}", f"id {v.id} · {v.status}", _short(v.digest)]
        graph.add(Node(f"v{v.id}", "version", tuple(label), style))
    for r in lineage.rounds:
        graph.add(Node(f"r{r.id}", "round", (f"round {r.id}", r.strategy or r.status), "round"))
    for u in lineage.updates:
        graph.add(
            Node(
                f"u{u.id}", "update", (f"update {u.id}", f"{u.kind}, {u.samples} samples"), "update"
            )
        )
        graph.add(_twin_node(u.twin))
    for v in lineage.versions:
        for did in v.datasets:
            graph.link(f"d{did}", f"v{v.id}", "trained on")
        for parent in v.parents:
            if v.round_id is None:
                graph.link(f"v{parent}", f"v{v.id}", "parent")
    for r in lineage.rounds:
        graph.link(f"v{r.base_version}", f"r{r.id}", "base")
        if r.result_version is not None:
            graph.link(f"r{r.id}", f"v{r.result_version}", "aggregate")
    for u in lineage.updates:
        graph.link(f"t{u.twin}", f"u{u.id}", "pushed")
        graph.link(f"u{u.id}", f"r{u.round_id}")
    return graph


def round_graph(report: RoundReport) -> Graph:
    """One round: base version → round ← updates ← twins; round → result version."""
    r = report.round
    graph = Graph(f"round {r.id} of {r.model} ({r.status})")
    graph.add(
        Node(f"v{r.base_version}", "version", ("base", f"version id {r.base_version}"), "version")
    )
    graph.add(Node(f"r{r.id}", "round", (f"round {r.id}", r.strategy or r.status), "round"))
    graph.link(f"v{r.base_version}", f"r{r.id}", "base")
    for u in report.updates:
        style = "update" if u.included or r.status != "closed" else "deprecated"
        graph.add(
            Node(
                f"u{u.id}",
                "update",
                (f"update {u.id}", f"{u.kind}, {u.samples} samples")
                + (() if u.included or r.status != "closed" else ("not included",)),
                style,
            )
        )
        graph.add(_twin_node(u.twin))
        graph.link(f"t{u.twin}", f"u{u.id}", "pushed")
        graph.link(f"u{u.id}", f"r{r.id}", "included" if u.included else "")
    if r.result_version is not None:
        graph.add(
            Node(
                f"v{r.result_version}",
                "version",
                ("result", f"version id {r.result_version}"),
                "version",
            )
        )
        graph.link(f"r{r.id}", f"v{r.result_version}", "aggregate")
    return graph


def render(graph: Graph, fmt: str) -> str:
    """``graph`` as ``dot``, ``svg`` or ``mermaid`` text."""
    if fmt == "dot":
        return graph.to_dot()
    if fmt == "svg":
        return graph.to_svg()
    if fmt == "mermaid":
        return graph.to_mermaid()
    raise InvalidInput(f"unknown picture format {fmt!r}; expected one of {', '.join(FORMATS)}")
