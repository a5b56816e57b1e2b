"""`twinchain model|dataset|update|round` through CliRunner against a live node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account import Account
from typer.testing import CliRunner

from registry.cli import app
from registry.fl import encode_dense, save_model
from tests.registry.conftest import MINER, PUBLISHER, TWINS, Key, Live, model_tensors

runner = CliRunner()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, list[str]]:
    """Keystore + password-file options per account."""
    options = {}
    for label, account in (("publisher", PUBLISHER), ("twin", TWINS[0]), ("miner", MINER)):
        keystore = tmp_path / f"{label}.json"
        keystore.write_text(
            json.dumps(Account.encrypt(account.private, "pw", kdf="pbkdf2", iterations=2))
        )
        password = tmp_path / f"{label}.pw"
        password.write_text("pw\n")
        options[label] = ["--keystore", str(keystore), "--password-file", str(password)]
    return options


def run(live: Live, keys: dict[str, list[str]], who: str, *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--url", live.url, *keys[who]])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def as_json(result: Any) -> Any:
    return json.loads(result.stdout)


def test_dataset_and_model_commands(live: Live, keys: dict[str, list[str]], tmp_path: Path) -> None:
    csv = tmp_path / "channels.csv"
    csv.write_text("rssi\n-70\n")
    dataset = as_json(
        run(
            live,
            keys,
            "publisher",
            "dataset",
            "push",
            "channels",
            str(csv),
            "--media-type",
            "text/csv",
            "--json",
        )
    )
    assert dataset["name"] == "channels" and dataset["proof"]["tx_hash"].startswith("0x")
    listed = as_json(run(live, keys, "twin", "dataset", "list", "--json"))
    assert [d["id"] for d in listed] == [dataset["id"]]
    pulled = tmp_path / "pulled.csv"
    run(
        live,
        keys,
        "twin",
        "dataset",
        "pull",
        "channels",
        "--out",
        str(pulled),
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert pulled.read_text() == "rssi\n-70\n"

    weights = tmp_path / "m.safetensors"
    weights.write_bytes(save_model(model_tensors(1)))
    version = as_json(
        run(
            live,
            keys,
            "publisher",
            "model",
            "push",
            "link",
            str(weights),
            "--dataset",
            "channels@1",
            "--alias",
            "production",
            "--json",
        )
    )
    assert version["aliases"] == ["production"] and version["datasets"] == [dataset["id"]]
    models = as_json(run(live, keys, "twin", "model", "list", "--json"))
    assert models == [{"name": "link", "versions": 1, "latest": 1, "aliases": {"production": 1}}]
    shown = as_json(
        run(live, keys, "twin", "model", "show", "link", "--ref", "production", "--json")
    )
    assert shown["digest"] == version["digest"]
    assert "link @ latest" in run(live, keys, "twin", "model", "show", "link").stdout
    out = tmp_path / "pulled.safetensors"
    run(
        live,
        keys,
        "twin",
        "model",
        "pull",
        "link",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert out.read_bytes() == weights.read_bytes()

    other = tmp_path / "m2.safetensors"
    other.write_bytes(save_model(model_tensors(2)))
    run(live, keys, "publisher", "model", "push", "link", str(other), "--parent", "link@1")
    run(live, keys, "publisher", "model", "alias", "link", "production", "2")
    revoked = as_json(
        run(live, keys, "publisher", "model", "revoke", "link", "2", "--reason", "bad", "--json")
    )
    assert revoked["status"] == "revoked"
    missing = run(
        live, keys, "twin", "model", "pull", "link", "--cache-dir", str(tmp_path / "c"), code=1
    )
    assert "has no alias 'production'" in missing.stderr


def test_round_commands(live: Live, keys: dict[str, list[str]], tmp_path: Path) -> None:
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(save_model(model_tensors(1)))
    run(live, keys, "publisher", "model", "push", "link", str(weights), "--alias", "production")
    opened = as_json(
        run(
            live,
            keys,
            "publisher",
            "round",
            "open",
            "link",
            "--min-updates",
            "2",
            "--deadline-blocks",
            "50",
            "--json",
        )
    )
    trained = tmp_path / "trained.safetensors"
    trained.write_bytes(save_model({k: v + np.float32(0.5) for k, v in model_tensors(1).items()}))
    cache = ["--cache-dir", str(tmp_path / "c")]
    first = as_json(
        run(
            live,
            keys,
            "twin",
            "update",
            "push",
            str(opened["id"]),
            str(trained),
            "--samples",
            "10",
            "--sparse-k",
            "2",
            "--json",
            *cache,
        )
    )
    assert first["kind"] == "sparse"
    delta = tmp_path / "delta.safetensors"
    delta.write_bytes(encode_dense({k: np.full_like(v, 0.25) for k, v in model_tensors(1).items()}))
    second_key: Key = TWINS[1]
    keystore = tmp_path / "twin1.json"
    keystore.write_text(
        json.dumps(Account.encrypt(second_key.private, "pw", kdf="pbkdf2", iterations=2))
    )
    keys["twin1"] = ["--keystore", str(keystore), "--password-env", "TWIN1_PW"]
    result = runner.invoke(
        app,
        [
            "update",
            "push",
            str(opened["id"]),
            str(delta),
            "--samples",
            "30",
            "--url",
            live.url,
            *keys["twin1"],
        ],
        env={"TWIN1_PW": "pw"},
    )
    assert result.exit_code == 0, result.stderr
    status = as_json(run(live, keys, "twin", "round", "status", str(opened["id"]), "--json"))
    assert [u["kind"] for u in status["updates"]] == ["sparse", "dense"]
    assert "updates" in run(live, keys, "twin", "round", "status", str(opened["id"])).stdout
    closed = as_json(
        run(
            live,
            keys,
            "miner",
            "round",
            "aggregate",
            str(opened["id"]),
            "--strategy",
            "median",
            "--json",
            *cache,
        )
    )
    assert closed["round_id"] == opened["id"] and closed["parents"] == [1]
    refused = run(live, keys, "twin", "round", "aggregate", str(opened["id"]), *cache, code=1)
    assert "not a MINER" in refused.stderr


def test_usage_errors_exit_2(live: Live, keys: dict[str, list[str]], tmp_path: Path) -> None:
    no_url = runner.invoke(app, ["model", "list", *keys["twin"]])
    assert no_url.exit_code == 2 and "give --url" in no_url.stderr
    no_password = runner.invoke(
        app, ["model", "list", "--url", live.url, "--keystore", keys["twin"][1]]
    )
    assert no_password.exit_code == 2 and "--password-file" in no_password.stderr
    no_network = runner.invoke(
        app, ["model", "list", "--network", str(tmp_path), "--account", "twin-0"]
    )
    assert no_network.exit_code == 1 and "network.json" in no_network.stderr
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("nope")
    bad = runner.invoke(
        app,
        [
            "model",
            "list",
            "--url",
            live.url,
            "--keystore",
            keys["twin"][1],
            "--password-file",
            str(wrong),
        ],
    )
    assert bad.exit_code == 1 and "wrong keystore password" in bad.stderr
