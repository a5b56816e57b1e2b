"""The architectural boundaries of DESIGN.md, enforced by walking every import.

- ``node.consensus`` is sans-IO: no asyncio, sockets, clocks, threads, randomness,
  subprocesses or py-evm; it may not import other ``node`` packages (it is the core).
- ``node`` never imports ``registry`` (the registry sits on top of the node).
- Only ``registry.client`` (and tests/bench) build web3 objects for remote nodes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN_IN_CONSENSUS = {
    "asyncio",
    "socket",
    "ssl",
    "time",
    "datetime",
    "threading",
    "multiprocessing",
    "random",
    "secrets",
    "subprocess",
    "selectors",
    "select",
    "eth",
    "web3",
    "eth_tester",
    "node.chain",
    "node.net",
    "node.rpc",
    "node.daemon",
    "registry",
    "sqlite3",
    "os",
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _violations(package: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_consensus_is_sans_io() -> None:
    assert _violations("node.consensus", FORBIDDEN_IN_CONSENSUS) == []


def test_node_never_imports_registry() -> None:
    assert _violations("node", {"registry"}) == []


@pytest.mark.parametrize("package", ["node", "registry"])
def test_only_the_client_builds_web3_objects(package: str) -> None:
    offenders = [v for v in _violations(package, {"web3"}) if not v.startswith("registry/client")]
    assert offenders == []


def test_the_boundary_walker_sees_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import asyncio\nfrom time import monotonic\nfrom . import sibling\n")
    assert _imports(probe) == ["asyncio", "time"]
