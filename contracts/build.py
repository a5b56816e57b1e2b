"""Compile every ``contracts/*.vy`` into ``contracts/build/<Name>.json``.

Usage::

    python -m contracts.build           # (re)write the artifacts
    python -m contracts.build --check   # exit 1 if any artifact differs from a fresh compile

The artifacts are checked in and shipped as package data, so nodes and tests never need
the compiler at run time. ``--check`` (and ``tests/contracts/test_artifacts_match_sources.py``)
catch a source edited without rebuilding, a stale compiler, or an orphaned artifact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import vyper
from vyper.compiler.settings import Settings

#: The fork py-evm runs in the node (PragueVM); vyper must not emit newer opcodes.
EVM_VERSION = "prague"

CONTRACTS_DIR = Path(__file__).resolve().parent
BUILD_DIR = CONTRACTS_DIR / "build"

_OUTPUT_FORMATS = ("abi", "bytecode", "bytecode_runtime")


def source_paths(contracts_dir: Path = CONTRACTS_DIR) -> list[Path]:
    """The Vyper sources to compile, sorted by name."""
    return sorted(contracts_dir.glob("*.vy"))


def compile_source(path: Path) -> dict[str, Any]:
    """Compile one Vyper source into the artifact dictionary written to ``build/``."""
    source = path.read_text(encoding="utf-8")
    output = vyper.compile_code(
        source,
        contract_path=path.name,
        output_formats=list(_OUTPUT_FORMATS),
        settings=Settings(evm_version=EVM_VERSION),
    )
    return {
        "name": path.stem,
        "abi": output["abi"],
        "bytecode": _hex(output["bytecode"]),
        "runtime_bytecode": _hex(output["bytecode_runtime"]),
        "source_sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "vyper_version": vyper.__version__,
        "evm_version": EVM_VERSION,
    }


def render(artifact: dict[str, Any]) -> str:
    """Canonical JSON text of an artifact (stable key order, trailing newline)."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def artifact_path(name: str, build_dir: Path = BUILD_DIR) -> Path:
    """Where the artifact of contract ``name`` lives."""
    return build_dir / f"{name}.json"


def build(contracts_dir: Path = CONTRACTS_DIR, build_dir: Path = BUILD_DIR) -> list[Path]:
    """Compile every source and write its artifact; remove orphans. Returns paths written."""
    build_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in source_paths(contracts_dir):
        target = artifact_path(path.stem, build_dir)
        target.write_text(render(compile_source(path)), encoding="utf-8")
        written.append(target)
    for orphan in _orphans(contracts_dir, build_dir):
        orphan.unlink()
    return written


def drift(contracts_dir: Path = CONTRACTS_DIR, build_dir: Path = BUILD_DIR) -> list[str]:
    """Human-readable reasons why the checked-in artifacts differ from a fresh compile.

    An empty list means the artifacts are exactly what the sources compile to.
    """
    problems = []
    for path in source_paths(contracts_dir):
        target = artifact_path(path.stem, build_dir)
        if not target.exists():
            problems.append(f"{target.name}: missing (source {path.name})")
            continue
        fresh = compile_source(path)
        stored = json.loads(target.read_text(encoding="utf-8"))
        changed = sorted(k for k in fresh.keys() | stored.keys() if fresh.get(k) != stored.get(k))
        if changed:
            problems.append(f"{target.name}: differs from a fresh compile in {', '.join(changed)}")
        elif target.read_text(encoding="utf-8") != render(fresh):
            problems.append(f"{target.name}: not in canonical form")
    problems.extend(
        f"{p.name}: no source contracts/{p.stem}.vy" for p in _orphans(contracts_dir, build_dir)
    )
    return problems


def _orphans(contracts_dir: Path, build_dir: Path) -> list[Path]:
    names = {p.stem for p in source_paths(contracts_dir)}
    return sorted(p for p in build_dir.glob("*.json") if p.stem not in names)


def _hex(code: str) -> str:
    return code if code.startswith("0x") else "0x" + code


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m contracts.build",
        description="Compile contracts/*.vy into contracts/build/<Name>.json.",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if any artifact differs from a fresh compile"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(CONTRACTS_DIR, BUILD_DIR)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("artifacts are stale: run `python -m contracts.build`", file=sys.stderr)
            return 1
        print(f"{len(source_paths(CONTRACTS_DIR))} artifacts match their sources")
        return 0
    for target in build(CONTRACTS_DIR, BUILD_DIR):
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
