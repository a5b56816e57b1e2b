"""``audit export`` round-trips: an export of a real chain re-verifies offline, and a
modified, missing or unlisted file — or a forged block inside a consistent manifest — is
detected."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.chain.genesis import load_genesis
from registry.audit.bundle import BundleError
from registry.audit.export import check_export
from registry.cli import app
from tests.audit.verify_chain import EPOCH, BuiltChain, build_chain

pytestmark = pytest.mark.timeout(600)

runner = CliRunner()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_chain(tmp_path_factory.mktemp("audit-chain"))


@pytest.fixture(scope="module")
def exported(chain: BuiltChain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole chain of miner 0 with artifacts, written by the CLI."""
    out = tmp_path_factory.mktemp("exports") / "full"
    result = runner.invoke(
        app,
        [
            "audit",
            "export",
            str(out),
            "--from",
            "0",
            "--artifacts",
            "--data-dir",
            str(chain.data_dirs[0]),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _check(path: Path, chain: BuiltChain, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["audit", "check", str(path), "--genesis", str(chain.genesis), *extra]
    )
    return result.exit_code, result.output


def test_export_round_trips_and_reverifies_offline(
    chain: BuiltChain, exported: Path, tmp_path: Path
) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["from"] == 0 and manifest["to"] >= chain.head
    listed = {f["path"]: f for f in manifest["files"]}
    for name, entry in listed.items():
        data = (exported / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]
    artifacts = [p for p in listed if p.startswith("artifacts/")]
    # the model, two updates and the aggregate the round produced
    assert len(artifacts) >= 4
    # handed over: only the export and genesis.json are needed
    moved = _copy(exported, tmp_path / "handed-over")
    genesis = Path(shutil.copy(chain.genesis, tmp_path / "genesis.json"))
    result = runner.invoke(app, ["audit", "check", str(moved), "--genesis", str(genesis), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["blocks_checked"] == manifest["to"] + 1
    assert "0x" + chain.removed.hex() not in report["validator_sets"][str(chain.shrunk_epoch)]
    reexecuted = check_export(moved, load_genesis(genesis), reexecute=True)
    assert reexecuted.ok, reexecuted.failure


def test_partial_range_export_verifies_through_the_validator_change(
    chain: BuiltChain, tmp_path: Path
) -> None:
    start = (chain.shrunk_epoch - 1) * EPOCH + 2
    out = tmp_path / "part"
    result = runner.invoke(
        app,
        [
            "audit",
            "verify",
            "--data-dir",
            str(chain.data_dirs[1]),
            "--to",
            str(chain.head),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "audit",
            "export",
            str(out),
            "--from",
            str(start),
            "--to",
            str(chain.head),
            "--data-dir",
            str(chain.data_dirs[1]),
        ],
    )
    assert result.exit_code == 0, result.output
    code, output = _check(out, chain)
    assert code == 0, output
    assert f"blocks {start}..{chain.head} verified" in output
    verified = runner.invoke(
        app, ["audit", "verify", "--export", str(out), "--genesis", str(chain.genesis)]
    )
    assert verified.exit_code == 0, verified.output


def test_modified_missing_or_unlisted_files_are_detected(
    chain: BuiltChain, exported: Path, tmp_path: Path
) -> None:
    modified = _copy(exported, tmp_path / "modified")
    blocks = next((modified / "blocks").iterdir())
    text = blocks.read_text()
    blocks.write_text(text.replace('"status":1', '"status":0', 1))
    code, output = _check(modified, chain)
    assert code == 1 and f"blocks/{blocks.name}: sha256" in output

    missing = _copy(exported, tmp_path / "missing")
    victim = next((missing / "artifacts").iterdir())
    victim.unlink()
    code, output = _check(missing, chain)
    assert code == 1 and f"artifacts/{victim.name}: listed in the manifest but missing" in output

    unlisted = _copy(exported, tmp_path / "unlisted")
    (unlisted / "blocks" / "extra.jsonl").write_text("{}\n")
    code, output = _check(unlisted, chain)
    assert code == 1 and "blocks/extra.jsonl: present but not listed" in output


def test_forged_block_with_a_rewritten_manifest_still_fails(
    chain: BuiltChain, exported: Path, tmp_path: Path
) -> None:
    """The manifest is custody, not proof: a forger who rewrites a transaction and updates
    the manifest's digest is caught by the chain checks, at the block's height."""
    forged = _copy(exported, tmp_path / "forged")
    manifest = json.loads((forged / "manifest.json").read_text())
    blocks = next((forged / "blocks").iterdir())
    lines = blocks.read_text().splitlines()
    target = "0x" + chain.close_tx.hex()
    height = -1
    for i, line in enumerate(lines):
        block = json.loads(line)
        for tx in block["transactions"]:
            if tx["hash"] == target:
                raw = tx["raw"]
                tx["raw"] = raw[:-2] + ("00" if raw[-2:] != "00" else "01")
                height = block["height"]
        lines[i] = json.dumps(block, separators=(",", ":"))
    assert height > 0
    blocks.write_text("\n".join(lines) + "\n")
    data = blocks.read_bytes()
    for entry in manifest["files"]:
        if entry["path"] == f"blocks/{blocks.name}":
            entry["sha256"], entry["size"] = hashlib.sha256(data).hexdigest(), len(data)
    (forged / "manifest.json").write_text(json.dumps(manifest))
    code, output = _check(forged, chain)
    assert code == 1
    assert f"FAILED at block {height} (transactions)" in output

    swapped = _copy(exported, tmp_path / "swapped-artifact")
    victim = next((swapped / "artifacts").iterdir())
    victim.write_bytes(b"poisoned weights")
    manifest = json.loads((swapped / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == f"artifacts/{victim.name}":
            entry["sha256"] = hashlib.sha256(b"poisoned weights").hexdigest()
            entry["size"] = len(b"poisoned weights")
    (swapped / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="content does not match its sha256 name"):
        check_export(swapped, load_genesis(chain.genesis))


def test_export_rejects_bad_input(chain: BuiltChain, exported: Path, tmp_path: Path) -> None:
    data = str(chain.data_dirs[0])
    cases = [
        ([str(tmp_path / "a"), "--from", "5", "--to", "2"], "bad range"),
        ([str(tmp_path / "b"), "--to", "999999"], "bad range"),
        ([str(exported)], "must be missing or empty"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["audit", "export", *args, "--data-dir", data])
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    code, output = _check(tmp_path, chain)
    assert code == 2 and "no manifest.json" in output  # not an export at all
