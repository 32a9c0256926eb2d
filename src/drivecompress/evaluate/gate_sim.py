"""Constructed predictions for calibrating the gate: a test set shaped like GTSRB's (its class counts, 30-frame
tracks, a baseline right on ~98% with a label-smoothed confidence) and candidates that are exactly as good as
the baseline but disagree with it (three nulls), or that lose a given class (power). Shared by the calibration
tests and ``benchmarks/bench_gate_calibration.py`` so that both measure the same thing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: GTSRB's test images per class (every count a multiple of its 30-frame tracks).
GTSRB_TEST_COUNTS = (60, 720, 750, 450, 660, 630, 150, 450, 450, 480, 660, 420, 690, 720, 270, 210, 150, 360, 390,
                     60, 90, 90, 120, 150, 90, 480, 180, 60, 150, 90, 150, 270, 60, 210, 120, 390, 120, 60, 690, 90,
                     90, 60, 90)
TRACK = 30
NULLS = ("uniform", "confidence", "tracks")


@dataclass(frozen=True)
class World:
    """Labels, physical signs, the baseline's predictions and its true-class probability."""

    y: np.ndarray
    groups: np.ndarray
    base_pred: np.ndarray
    base_prob: np.ndarray

    @property
    def base_ok(self) -> np.ndarray:
        return self.base_pred == self.y

    def predictions(self, ok: np.ndarray) -> np.ndarray:
        """Predictions with this correctness: right answers are the label, wrong ones the next class."""
        k = int(self.y.max()) + 1
        return np.where(ok, self.y, (self.y + 1) % k)


def gtsrb_like(seed: int = 0, counts: Sequence[int] = GTSRB_TEST_COUNTS) -> World:
    """Tracks differ in difficulty (a hard sign is hard in all its frames); the baseline is right where its
    true-class probability is highest, ~98% of the images, and never above 0.975 (label smoothing), its
    right answers' median 0.93 as the shipped baseline's."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    groups = np.arange(len(y)) // TRACK
    hardness = rng.beta(0.55, 11.0, size=groups.max() + 1)
    noise = 0.07 * rng.random(len(y)) ** 2 + hardness[groups] * rng.exponential(1.0, len(y)) * 1.7
    prob = np.clip(0.975 - noise, 0.001, 0.975)
    ok = prob > 0.45
    return World(y=y, groups=groups, base_pred=np.where(ok, y, (y + 1) % len(counts)), base_prob=prob)


def equal_quality(world: World, q: float, null: str, rng: np.random.Generator) -> np.ndarray:
    """Correctness of a candidate as good as the baseline in expectation, disagreeing on a fraction ``q``:
    ``uniform`` flips any image alike; ``confidence`` loses the baseline's unsure right answers more often
    (rate proportional to 1 - its probability); ``tracks`` flips whole physical signs together (a sign is hit
    with the rate that gives ``q``, then each of its frames flips with probability 0.8)."""
    ok = world.base_ok
    n_lose = q / 2 * len(ok)
    if null == "tracks":
        hit = rng.random(world.groups.max() + 1) < q / 2 / 0.8  # losses q/2, gains as many
        flip = hit[world.groups] & (rng.random(len(ok)) < 0.8)
        lose = flip & ok
        gain_rate = min(1.0, lose.sum() / max(1, (~ok).sum()))
        return ok ^ (lose | (~ok & (rng.random(len(ok)) < gain_rate)))
    weight = np.where(ok, 1.0 if null == "uniform" else 1.0 - world.base_prob, 0.0)
    p_lose = np.clip(weight * n_lose / weight.sum(), 0, 1)
    p_gain = min(1.0, n_lose / max(1, (~ok).sum()))
    return ok ^ np.where(ok, rng.random(len(ok)) < p_lose, rng.random(len(ok)) < p_gain)


def lose_in_class(world: World, cand_ok: np.ndarray, cls: int, lost: int, rng: np.random.Generator,
                  spread: bool = True, gained: int | None = None, unsure_first: bool = False) -> np.ndarray:
    """``cand_ok`` with ``lost`` more of class ``cls``'s baseline-right images lost: spread round-robin over the
    class's physical signs, or all in one sign (as many as it holds); ``gained`` fixes the class's gains (e.g.
    0 for "7 lost, 0 gained"); ``unsure_first`` loses the images the baseline was least sure of."""
    out = cand_ok.copy()
    m = world.y == cls
    if gained is not None:
        out[m & ~world.base_ok] = False
        wrong = np.flatnonzero(m & ~world.base_ok)
        out[rng.permutation(wrong)[:gained]] = True
    pool = np.flatnonzero(m & world.base_ok & out)
    if unsure_first:
        pick = pool[np.argsort(world.base_prob[pool])][:lost]
    elif spread:
        by_sign = [rng.permutation(pool[world.groups[pool] == s]) for s in np.unique(world.groups[pool])]
        order = [s[i] for i in range(max(map(len, by_sign))) for s in by_sign if i < len(s)]
        pick = np.asarray(order[:lost], np.int64)
    else:
        signs = np.unique(world.groups[pool])
        biggest = signs[np.argmax([(world.groups[pool] == s).sum() for s in signs])]
        pick = rng.permutation(pool[world.groups[pool] == biggest])[:lost]
    out[pick] = False
    return out


def drop_everywhere(world: World, cand_ok: np.ndarray, points: float, rng: np.random.Generator) -> np.ndarray:
    """``cand_ok`` with ``points`` of accuracy more lost, uniformly over the baseline's right answers."""
    out = cand_ok.copy()
    pool = np.flatnonzero(world.base_ok & out)
    out[rng.permutation(pool)[: round(points / 100 * len(out))]] = False
    return out
