"""The demo's 6G twin task: link-quality prediction from synthetic channel measurements.

Each sample is one measurement a base-station twin sees for a user link: SNR (dB),
distance (km), user speed (m/s), a blockage flag, the carrier band (FR1 or FR2) and the
interference level. The label says whether the link keeps its target throughput over the
next interval. Ground truth is a fixed nonlinear function plus noise, so the task is
learnable but not linear; everything is generated from seeds, so the data (and the whole
demo) is the same on every run.

Twins are **non-IID**: each sits in a different cell (urban micro, highway, factory...),
which shifts its distance, speed, blockage and band distributions — the reason federated
rounds help over any single twin's data.

The model is a small MLP (6 -> 16 -> 1, tanh, sigmoid) held as a dict of float32 NumPy
tensors: exactly what is saved as safetensors and registered on chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("snr_db", "distance_km", "speed_mps", "blocked", "fr2", "interference")
HIDDEN = 16
Model = dict[str, np.ndarray]


@dataclass(frozen=True)
class Cell:
    """How one twin's environment skews the measurements it sees."""

    name: str
    distance_km: float  # mean user distance
    speed_mps: float  # mean user speed
    blockage: float  # probability of a blocked link
    fr2: float  # share of FR2 (mmWave) links
    interference: float  # mean interference level


CELLS = (
    Cell("urban-micro", 0.15, 1.5, 0.35, 0.7, 0.6),
    Cell("highway", 0.9, 30.0, 0.05, 0.2, 0.2),
    Cell("factory", 0.08, 0.5, 0.5, 0.9, 0.8),
    Cell("suburban", 0.6, 8.0, 0.1, 0.1, 0.3),
    Cell("stadium", 0.2, 0.8, 0.25, 0.6, 0.9),
    Cell("rail", 1.2, 45.0, 0.15, 0.3, 0.25),
    Cell("campus", 0.3, 2.0, 0.2, 0.5, 0.4),
)


def measurements(cell: Cell, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled samples from ``cell`` (features standardised, labels 0/1)."""
    rng = np.random.default_rng(seed)
    distance = rng.gamma(2.0, cell.distance_km / 2.0, n)
    speed = np.abs(rng.normal(cell.speed_mps, cell.speed_mps / 3 + 0.5, n))
    blocked = (rng.random(n) < cell.blockage).astype(np.float64)
    fr2 = (rng.random(n) < cell.fr2).astype(np.float64)
    interference = np.clip(rng.normal(cell.interference, 0.2, n), 0, 1.5)
    path_loss = 20 * np.log10(distance + 0.01) + fr2 * (12 + 25 * blocked) + 6 * blocked
    snr = 30 - path_loss * 0.6 - 8 * interference + rng.normal(0, 3, n)
    # ground truth: enough SNR, penalised by Doppler at FR2 and by interference
    margin = 0.35 * snr - 0.04 * speed * (1 + 2 * fr2) - 2.5 * interference - 6.0
    labels = (margin + rng.normal(0, 1.0, n) > 0).astype(np.float32)
    x = np.stack([snr / 20, distance, speed / 30, blocked, fr2, interference], axis=1)
    return x.astype(np.float32), labels


def initial_model(seed: int = 0) -> Model:
    """Small random weights (deterministic)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.normal(0, 0.5, (len(FEATURES), HIDDEN))).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": (rng.normal(0, 0.5, (HIDDEN, 1))).astype(np.float32),
        "b2": np.zeros(1, np.float32),
    }


def _forward(model: Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.tanh(x @ model["w1"] + model["b1"])
    logits = (h @ model["w2"] + model["b2"])[:, 0]
    return h, 1.0 / (1.0 + np.exp(-logits))


def train(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float = 0.3,
    batch: int = 64,
    seed: int = 0,
) -> Model:
    """Mini-batch gradient descent on the cross-entropy; returns a new model."""
    m = {k: v.astype(np.float64).copy() for k, v in model.items()}
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            xb, yb = x[idx].astype(np.float64), y[idx].astype(np.float64)
            h = np.tanh(xb @ m["w1"] + m["b1"])
            p = 1.0 / (1.0 + np.exp(-(h @ m["w2"] + m["b2"])[:, 0]))
            g = (p - yb)[:, None] / len(idx)
            gh = (g @ m["w2"].T) * (1 - h**2)
            m["w2"] -= lr * h.T @ g
            m["b2"] -= lr * g.sum(axis=0)
            m["w1"] -= lr * xb.T @ gh
            m["b1"] -= lr * gh.sum(axis=0)
    return {k: v.astype(np.float32) for k, v in m.items()}


def accuracy(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of correct predictions."""
    _, p = _forward(model, x)
    return float(np.mean((p > 0.5) == (y > 0.5)))


def delta(new: Model, base: Model) -> Model:
    """``new - base`` per tensor (a dense training update)."""
    return {k: (new[k] - base[k]).astype(np.float32) for k in base}


def global_test_set(n: int = 4000, seed: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Held-out measurements from every cell: how a model does across the network."""
    parts = [measurements(c, n // len(CELLS), seed + i) for i, c in enumerate(CELLS)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
