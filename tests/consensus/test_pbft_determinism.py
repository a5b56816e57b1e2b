"""PBFT is deterministic: nothing it emits depends on hash randomisation (set/dict order)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import hashlib
from tests.consensus.pbft_harness import Cluster
c = Cluster(4)
c.down.add(0)  # a view change, NEW-VIEW and re-proposals
c.stop_at = 4
c.run_until(lambda: min(c.heights()[1:]) >= 4)
h = hashlib.sha256()
for r in c.replicas:
    for m in r.sent:
        h.update(m.encode())
    h.update(r.hard_state or b"")
print(h.hexdigest())
"""


def _fingerprint(hash_seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_same_inputs_give_the_same_bytes_under_any_hash_seed() -> None:
    assert _fingerprint("1") == _fingerprint("4242")
