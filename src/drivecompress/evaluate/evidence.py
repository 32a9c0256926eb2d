"""Paired evidence behind the gate: is a class's loss more than the candidate's own flips explain?

Every compressed model disagrees with its baseline on some images; a 10x network does on 1.5-3% of them. A
per-class rule that counts lost images against a fixed tolerance therefore refuses models of exactly the
baseline's quality (the withdrawn rule of issue #16 did so 93-99.8% of the time). The rule here asks instead
whether a class lost more than the candidate's *own* flip pattern on the *other* classes predicts:

- propensity: the rate at which the candidate loses the baseline's right answers, by bins of the baseline's
  true-class probability (edges at quantiles over its right answers: a label-smoothed baseline never reaches
  0.99), shrunk towards the overall rate, estimated leaving the tested class out;
- clustering: losses come in physical signs (tracks of ~30 frames), so the null draws each sign's losses
  from a beta-binomial with the within-sign correlation the candidate's losses show over all classes (all,
  not the others only: a candidate whose one clustered loss is a whole sign in the tested class shows that
  clustering nowhere else, and a null blind to it refuses equal-quality candidates that flip whole signs);
- gains are credited as observed (a model that fixes none of a class's baseline errors is not suspicious);
- p = P(L_null >= lost - gained - allowance), Holm over all classes as one family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.stats import betabinom

CONFIDENCE_BINS = 8  # quantile bins of the baseline's true-class probability over its right answers
PSEUDO_LOSSES = 2.0  # each bin's observed/expected loss ratio is shrunk towards 1 by this many losses' worth
MAX_CORRELATION = 0.95  # cap on the within-sign correlation of losses (1 would make a sign one coin flip)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adj, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adj[i] = running
    return adj


def cluster_bound(diff: np.ndarray, groups: np.ndarray | None, confidence: float) -> tuple[float, float]:
    """(mean, one-sided lower confidence bound) of per-image differences, with a cluster-robust standard error:
    nine lost frames of one sign move the bound as one sign's worth of evidence, not nine."""
    n = len(diff)
    if n == 0:
        return 0.0, -math.inf
    d = float(diff.mean())
    g = np.arange(n) if groups is None else np.unique(groups, return_inverse=True)[1]
    sums = np.bincount(g, weights=diff - d)
    k = len(sums)
    var = float((sums**2).sum()) / n**2 * (k / (k - 1) if k > 1 else 1.0)
    return d, d - NormalDist().inv_cdf(confidence) * math.sqrt(var)


@dataclass(frozen=True)
class FlipModel:
    """Per-image inputs of the null: which bin each image falls in and the lost/right counts per (class, bin)."""

    bins: np.ndarray  # bin index per image
    lost_cb: np.ndarray  # (classes, bins) lost counts among the baseline's right answers
    right_cb: np.ndarray  # (classes, bins) the baseline's right answers

    @classmethod
    def fit(cls, base_ok: np.ndarray, lost: np.ndarray, labels: np.ndarray, num_classes: int,
            base_probability: np.ndarray | None) -> FlipModel:
        if base_probability is None or not base_ok.any():
            bins, nb = np.zeros(len(labels), np.int64), 1
        else:
            q = np.quantile(base_probability[base_ok], np.linspace(0, 1, CONFIDENCE_BINS + 1)[1:-1])
            edges = np.unique(q)
            bins, nb = np.digitize(base_probability, edges), len(edges) + 1
        flat = labels * nb + bins
        size = num_classes * nb
        lost_cb = np.bincount(flat[lost], minlength=size).reshape(num_classes, nb)
        right_cb = np.bincount(flat[base_ok], minlength=size).reshape(num_classes, nb)
        return cls(bins=bins, lost_cb=lost_cb, right_cb=right_cb)

    def rates_without(self, c: int | None, design_effect: float = 1.0) -> np.ndarray:
        """Per-bin loss rate of the baseline's right answers, class ``c`` left out (None: every class).

        The overall rate carries half a pseudo-loss counted in independent units (a whole sign's worth of
        images when losses cluster, ``design_effect``), so that 'no flips elsewhere' is never certainty; each
        bin's rate is the overall rate times its observed/expected ratio shrunk towards 1 by
        ``PSEUDO_LOSSES``, so a bin with few losses says little."""
        lost, right = self.lost_cb.sum(0), self.right_cb.sum(0)
        if c is not None:
            lost, right = lost - self.lost_cb[c], right - self.right_cb[c]
        overall = (lost.sum() + 0.5 * design_effect) / (right.sum() + design_effect)
        relative = (lost + PSEUDO_LOSSES) / (right * lost.sum() / max(1, right.sum()) + PSEUDO_LOSSES)
        scale = right.sum() / max(1e-12, float((right * relative).sum()))
        return np.clip(overall * relative * scale, 0.0, 1.0)


def correlation_terms(lost: np.ndarray, base_ok: np.ndarray, p: np.ndarray, labels: np.ndarray,
                      groups: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the moment estimator's numerator and denominator of the within-sign correlation of losses:
    sum over signs of ((L - E)^2 - V) and of V (m - 1), where L, E, V are a sign's lost count, expected count
    and Bernoulli variance over the baseline's right answers and m their number."""
    g = np.unique(groups, return_inverse=True)[1]
    k = int(g.max()) + 1 if len(g) else 0
    w = base_ok.astype(float)
    L = np.bincount(g, weights=lost & base_ok, minlength=k)
    E = np.bincount(g, weights=p * w, minlength=k)
    V = np.bincount(g, weights=p * (1 - p) * w, minlength=k)
    m = np.bincount(g, weights=w, minlength=k)
    cls = np.zeros(k, np.int64)
    cls[g] = labels  # a sign's class (tracks lie within one class)
    num = np.bincount(cls, weights=(L - E) ** 2 - V, minlength=num_classes)
    den = np.bincount(cls, weights=V * np.maximum(m - 1, 0), minlength=num_classes)
    return num, den


def null_tail(p: np.ndarray, groups: np.ndarray | None, rho: float, k: int) -> float:
    """P(L >= k) where L sums each sign's losses: beta-binomial with the sign's size, mean propensity and
    correlation ``rho`` (independent Bernoulli draws when rho is 0 or signs are unknown)."""
    if k <= 0:
        return 1.0
    if k > len(p):
        return 0.0
    if groups is None or rho <= 0:
        groups = np.arange(len(p))
    g = np.unique(groups, return_inverse=True)[1]
    sizes = np.bincount(g)
    means = np.clip(np.bincount(g, weights=p) / sizes, 1e-12, 1 - 1e-12)
    pmf = np.ones(1)
    for size in np.unique(sizes):
        sel = means[sizes == size]
        if size == 1:
            parts = np.stack([1 - sel, sel], 1)
        else:
            shape = 1 / rho - 1
            parts = betabinom.pmf(np.arange(size + 1)[None, :], size, sel[:, None] * shape,
                                  (1 - sel[:, None]) * shape)
        for row in parts:  # index k holds P(L >= k): exact tails, no 1 - (1 - tiny) cancellation
            full = np.convolve(pmf, row)
            pmf = np.append(full[:k], full[k:].sum()) if len(full) > k else full
    return float(min(1.0, pmf[k])) if len(pmf) > k else 0.0


def per_class_evidence(base_pred: np.ndarray, cand_pred: np.ndarray, labels: np.ndarray, num_classes: int,
                       budget_points: float, base_probability: np.ndarray | None = None,
                       groups: np.ndarray | None = None) -> list[dict]:
    """One row per class: n, lost, gained, physical signs (all, lost), allowance, expected losses under the
    null, the within-sign correlation used, and the one-sided p-value (raw and Holm-adjusted over all classes)."""
    base_ok, cand_ok = base_pred == labels, cand_pred == labels
    lost, gained = base_ok & ~cand_ok, ~base_ok & cand_ok
    model = FlipModel.fit(base_ok, lost, labels, num_classes, base_probability)
    rho, deff = 0.0, 1.0
    if groups is not None:
        num, den = correlation_terms(lost, base_ok, model.rates_without(None)[model.bins], labels, groups, num_classes)
        rho = float(np.clip(num.sum() / den.sum(), 0.0, MAX_CORRELATION)) if den.sum() > 0 else 0.0
        per_sign = np.bincount(np.unique(groups[base_ok], return_inverse=True)[1])
        deff = 1.0 + ((per_sign**2).sum() / max(1, per_sign.sum()) - 1.0) * rho
    rows = []
    for c in range(num_classes):
        m = labels == c
        right = m & base_ok
        n, n_lost, n_gained = int(m.sum()), int(lost[m].sum()), int(gained[m].sum())
        allowance = budget_points / 100 * n
        p_img = model.rates_without(c, deff)[model.bins[right]]
        k = math.ceil(n_lost - n_gained - allowance - 1e-9)
        p = null_tail(p_img, None if groups is None else groups[right], rho, k)
        signs = (len(np.unique(groups[m])), len(np.unique(groups[m & lost]))) if groups is not None else (n, n_lost)
        rows.append({"class": c, "n": n, "lost": n_lost, "gained": n_gained, "signs": signs[0],
                     "signs_lost": signs[1], "allowance": round(allowance, 3),
                     "expected_lost": round(float(p_img.sum()), 3), "correlation": round(rho, 4), "p_value": p})
    for row, adj in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        row["p_holm"] = adj
    return rows
