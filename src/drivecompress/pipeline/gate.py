"""The safety gate: compare the candidate with the baseline image by image (paired), so that one flipped
image never decides and a systematic loss always refuses.

Budget semantics (the names are kept from the first gate; the meaning is now statistical):
- ``max_safety_recall_drop`` B points, per safety-critical class of n test images with ``lost`` images the
  baseline got right and the candidate gets wrong and ``gained`` the reverse:
    1. net-loss tolerance: ``lost - gained <= max(1, floor(B/100 * n))`` images, else the class *degraded*;
    2. exact one-sided McNemar test of the loss (``P(X >= lost)``, ``X ~ Binomial(lost + gained, 1/2)``),
       Holm-corrected over the safety-critical classes: a significant loss (adjusted p < ``significance``)
       is *systematic* and refuses, whatever its size;
    3. pooled over all safety-critical images: paired non-inferiority (below).
- ``max_accuracy_drop`` B points, pooled over all test images: the paired difference of accuracy
  ``d = (gained - lost) / N`` with standard error ``sqrt(((lost + gained)/N - d^2) / N)``; its one-sided
  lower confidence bound (``confidence``, default 95%) must stay above ``-B``. A point estimate already below
  ``-B`` is *degraded*; a point estimate within budget whose bound is not is *cannot be certified with this
  many test images*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from drivecompress.pipeline.recipe import Budgets, Targets

NOISE_TRIALS = 200  # simulations behind a verdict's noise level (about a second on the full test set)


def mcnemar_one_sided(lost: int, gained: int) -> float:
    """Exact one-sided McNemar p-value that the candidate is worse: P(X >= lost), X ~ Bin(lost + gained, 1/2)."""
    n = lost + gained
    if n == 0 or lost == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, k) for k in range(lost, n + 1)) / 2.0**n)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adj, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adj[i] = running
    return adj


def paired_bound(lost: int, gained: int, n: int, confidence: float) -> tuple[float, float]:
    """(difference, one-sided lower confidence bound) of accuracy, candidate minus baseline, as fractions."""
    if n == 0:
        return 0.0, -math.inf
    d = (gained - lost) / n
    var = max(0.0, (lost + gained) / n - d * d)
    return d, d - NormalDist().inv_cdf(confidence) * math.sqrt(var / n)


def paired_counts(base_pred: np.ndarray, cand_pred: np.ndarray, labels: np.ndarray, classes: np.ndarray | None = None
                  ) -> tuple[int, int, int]:
    """(lost, gained, n) over the images of ``classes`` (all images when None)."""
    m = np.ones(len(labels), bool) if classes is None else np.isin(labels, classes)
    b, c = base_pred[m] == labels[m], cand_pred[m] == labels[m]
    return int((b & ~c).sum()), int((~b & c).sum()), int(m.sum())


def _pooled(label: str, lost: int, gained: int, n: int, budget: float,
            conf: float) -> tuple[dict[str, Any], str | None]:
    d, lo = paired_bound(lost, gained, n, conf)
    row = {"scope": label, "n": n, "lost": lost, "gained": gained, "difference_points": 100 * d,
           "lower_bound_points": 100 * lo, "budget_points": budget, "confidence": conf}
    if d < -budget / 100:
        return row | {"verdict": "degraded"}, (
            f"{label}: degraded, accuracy {100 * d:+.2f} points ({lost} images lost, {gained} gained of {n}), "
            f"budget -{budget:.2f}")
    if lo < -budget / 100:
        return row | {"verdict": "cannot be certified"}, (
            f"{label}: cannot be certified with {n} test images: {100 * d:+.2f} points, but the {100 * conf:.0f}% "
            f"lower bound {100 * lo:+.2f} is below -{budget:.2f} ({lost} lost, {gained} gained)")
    return row | {"verdict": "ok"}, None


def class_evidence(base_pred: np.ndarray, cand_pred: np.ndarray, labels: np.ndarray, classes: Sequence[int],
                   names: Sequence[str], budget: float, significance: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Per class: n, lost, gained, tolerance, McNemar p (raw and Holm-adjusted), verdict; and the violations."""
    rows = []
    for c in classes:
        lost, gained, n = paired_counts(base_pred, cand_pred, labels, np.array([c]))
        rows.append({"class": int(c), "name": names[c] if c < len(names) else str(c), "n": n, "lost": lost,
                     "gained": gained, "net_loss": lost - gained,
                     "tolerance": max(1, math.floor(budget / 100 * n)), "p_value": mcnemar_one_sided(lost, gained)})
    for row, p in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        row["p_holm"] = p
    v = []
    for r in rows:
        what = f"class {r['class']} ({r['name']}): {r['lost']} of {r['n']} images lost, {r['gained']} gained"
        if r["p_holm"] < significance:
            r["verdict"] = "systematic loss"
            v.append(f"{what}: systematic loss (McNemar p = {r['p_value']:.2g}, Holm-adjusted {r['p_holm']:.2g} "
                     f"< {significance:g})")
        elif r["net_loss"] > r["tolerance"]:
            r["verdict"] = "degraded"
            v.append(f"{what}: degraded, net loss {r['net_loss']} > tolerance {r['tolerance']} "
                     f"(budget {budget:g} points of {r['n']}, at least 1 image)")
        else:
            r["verdict"] = "ok"
    return rows, v


def paired_rules(bp: np.ndarray, fp: np.ndarray, y: np.ndarray, budgets: Budgets, safety: Sequence[int] = (),
                 names: Sequence[str] = ()) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The accuracy budgets on per-image predictions: ``({"classes", "pooled"} rows, violations)``; one
    function for the verdict and for ``noise_level``'s simulated candidates, so both apply the same rules."""
    out: dict[str, list[dict[str, Any]]] = {"classes": [], "pooled": []}
    v: list[str] = []
    conf = budgets.confidence
    if budgets.max_accuracy_drop is not None:
        row, bad = _pooled("all test images", *paired_counts(bp, fp, y), budgets.max_accuracy_drop, conf)
        out["pooled"].append(row)
        v += [bad] if bad else []
    if budgets.max_safety_recall_drop is not None and safety:
        cls = sorted(int(c) for c in safety)
        out["classes"], bad_cls = class_evidence(bp, fp, y, cls, names, budgets.max_safety_recall_drop,
                                                 budgets.significance)
        row, bad = _pooled("safety-critical images", *paired_counts(bp, fp, y, np.array(cls)),
                           budgets.max_safety_recall_drop, conf)
        out["pooled"].append(row)
        v += bad_cls + ([bad] if bad else [])
    return out, v


def equal_quality_candidate(base_ok: np.ndarray, q: float, rng: np.random.Generator) -> np.ndarray:
    """Per-image correctness of a simulated candidate exactly as good as the baseline in expectation that
    disagrees with it on a fraction ``q`` of the images: each right image is lost with probability q/2 and
    wrong images are gained so that expected gains equal expected losses."""
    p_lose = q / 2
    p_gain = min(1.0, p_lose * base_ok.sum() / max(1, (~base_ok).sum()))
    return base_ok ^ np.where(base_ok, rng.random(len(base_ok)) < p_lose, rng.random(len(base_ok)) < p_gain)


CONFIDENCE_EDGES = (0.5, 0.7, 0.9, 0.99)  # bins of the baseline's true-class probability for flip propensities
PSEUDO_IMAGES = 20.0  # each bin's flip rate is shrunk towards the overall rate by this many images' worth


def confidence_propensity(base_ok: np.ndarray, cand_ok: np.ndarray, base_probability: np.ndarray
                          ) -> np.ndarray:
    """Per-image flip probabilities of an equal-quality candidate that flips images as this one does *by the
    baseline's confidence*: the candidate's lost rate among the baseline's right images and gained rate among
    its wrong ones, per bin of the baseline's true-class probability (``CONFIDENCE_EDGES``, shrunk towards the
    overall rate), scaled so that expected losses equal expected gains and together equal its discordance.
    Compressed models mostly lose the images the baseline itself barely won, and those cluster in a few classes
    (on the shipped baseline, *general caution* holds 24 of its 113 right answers below p 0.5): a uniform-flip
    null misses that concentration."""
    bins = np.digitize(base_probability, CONFIDENCE_EDGES)
    lost, gained = base_ok & ~cand_ok, ~base_ok & cand_ok
    half = (lost.sum() + gained.sum()) / 2
    out = np.zeros(len(base_ok))
    for side, hit in ((base_ok, lost), (~base_ok, gained)):
        mean = hit.sum() / max(1, side.sum())
        for k in range(len(CONFIDENCE_EDGES) + 1):
            m = side & (bins == k)
            out[m] = (hit[m].sum() + PSEUDO_IMAGES * mean) / (m.sum() + PSEUDO_IMAGES)
        total = out[side].sum()
        out[side] *= half / total if total > 0 else 0.0
    return np.clip(out, 0.0, 1.0)


def noise_level(bp: np.ndarray, fp: np.ndarray, y: np.ndarray, budgets: Budgets, safety: Sequence[int],
                trials: int, seed: int = 0, base_probability: np.ndarray | None = None) -> dict[str, Any]:
    """How often the accuracy budgets would refuse a candidate of the baseline's own quality that disagrees
    with it as often as this one does (``trials`` simulations): what a refusal at this discordance is worth
    as evidence. Reported beside the verdict, never changing it. Two nulls: flips spread uniformly over the
    images, and (given the baseline's true-class probability per image) flips falling on the images the
    baseline was unsure of as often as this candidate's do (``confidence_propensity``)."""
    ok, cok = bp == y, fp == y
    q = float((ok != cok).mean())
    rng, rng_conf = np.random.default_rng(seed), np.random.default_rng(seed + 1)  # one stream per null
    propensity = None if base_probability is None else confidence_propensity(ok, cok, np.asarray(base_probability))
    refused = {"uniform": 0, "confidence": 0}
    for _ in range(trials):
        cands = {"uniform": equal_quality_candidate(ok, q, rng)}
        if propensity is not None:
            cands["confidence"] = ok ^ (rng_conf.random(len(ok)) < propensity)
        for name, c in cands.items():
            refused[name] += bool(paired_rules(bp, np.where(c, y, -1), y, budgets, safety)[1])  # -1: wrong
    out = {"discordance": q, "discordant_images": int((ok != cok).sum()), "trials": trials,
           "equal_quality_refusal_rate": refused["uniform"] / trials if trials else None}
    if propensity is not None:
        out["equal_quality_refusal_rate_by_confidence"] = refused["confidence"] / trials if trials else None
    return out


def noise_sentence(noise: dict[str, Any]) -> str:
    """``noise_level`` in one sentence for the CLI and report.html."""
    rate = noise["equal_quality_refusal_rate"]
    by_conf = noise.get("equal_quality_refusal_rate_by_confidence")
    worst = max(rate, by_conf if by_conf is not None else 0.0)
    return (f"the candidate disagrees with the baseline on {100 * noise['discordance']:.2f}% of the test images "
            f"({noise['discordant_images']}); a candidate of exactly the baseline's quality disagreeing as often "
            f"is refused by these accuracy budgets in {100 * rate:.0f}% of {noise['trials']} simulations"
            + (f", in {100 * by_conf:.0f}% when its flips fall on the images the baseline was unsure of as often "
               f"as this candidate's do" if by_conf is not None else "")
            + (" (so a refusal that rests on a per-class tolerance alone is weak evidence; the lost images and "
               "their baseline probabilities are the evidence to read)" if worst >= 0.2 else ""))


def check_gate(baseline: dict[str, Any], final: dict[str, Any], budgets: Budgets, safety: Sequence[int] = (),
               names: Sequence[str] = (), labels: np.ndarray | None = None, noise_trials: int = 0) -> dict[str, Any]:
    """``{"passed", "violations": [str], "classes": [...], "pooled": [...]}``. A budget whose metric was not
    measured, or a non-finite metric, is a violation: the gate never passes a model on numbers it lacks.
    ``noise_trials`` > 0 adds ``noise`` (``noise_level``): the refusal rate of equal-quality candidates at
    this candidate's discordance with the baseline."""
    v: list[str] = []
    out: dict[str, Any] = {"classes": [], "pooled": []}
    for key in ("accuracy", "latency_ms_p50", "size_bytes"):
        val = final.get(key)
        if val is not None and not (isinstance(val, int | float) and math.isfinite(val)):
            v.append(f"final {key} is not a finite number ({val!r})")
    paired = labels is not None and "predictions" in baseline and "predictions" in final
    wants_paired = budgets.max_accuracy_drop is not None or (budgets.max_safety_recall_drop is not None and safety)
    if wants_paired and not paired:
        v.append("accuracy budgets set but per-image predictions of baseline and final were not measured")
    if paired and not v:
        bp, fp, y = np.asarray(baseline["predictions"]), np.asarray(final["predictions"]), np.asarray(labels)
        if not (len(bp) == len(fp) == len(y)):
            v.append(f"per-image predictions cover {len(bp)} / {len(fp)} images, the test set has {len(y)}")
        else:
            rows, bad = paired_rules(bp, fp, y, budgets, safety, names)
            out |= rows
            v += bad
            tp = baseline.get("true_class_probability")
            tp = np.asarray(tp) if tp is not None and len(tp) == len(y) else None
            if tp is not None:  # lost images the baseline itself won below p 0.5: the weaker evidence
                weak = (bp == y) & (fp != y) & (tp < 0.5)
                for r in out["classes"]:
                    r["lost_baseline_below_half"] = int((weak & (y == r["class"])).sum())
            if noise_trials > 0:
                out["noise"] = noise_level(bp, fp, y, budgets, safety, noise_trials, base_probability=tp)
    if budgets.max_latency_ms is not None and not final.get("latency_ms_p50", math.inf) <= budgets.max_latency_ms:
        v.append(f"batch-1 p50 latency {final.get('latency_ms_p50')} ms exceeds {budgets.max_latency_ms:.3f} ms")
    if budgets.max_size_bytes is not None and not final.get("size_bytes", math.inf) <= budgets.max_size_bytes:
        v.append(f"size {final.get('size_bytes')} bytes exceeds {budgets.max_size_bytes:,} bytes")
    if budgets.max_corruption_accuracy_drop is not None:
        if final.get("corruption_accuracy") is None or baseline.get("corruption_accuracy") is None:
            v.append("corruption accuracy budget set but corruption accuracy was not measured")
        else:
            drop = 100.0 * (baseline["corruption_accuracy"] - final["corruption_accuracy"])
            if not drop <= budgets.max_corruption_accuracy_drop:
                v.append(f"corruption accuracy dropped {drop:.2f} points, budget "
                         f"{budgets.max_corruption_accuracy_drop:.2f}")
    return {"passed": not v, "violations": v, **out}


def _ratio_target(label: str, got: float, goal: float, more: str) -> dict[str, Any]:
    met = got >= goal
    return {"target": label, "achieved": f"{got:.2f}x", "met": met,
            "shortfall": None if met else f"{goal / got:.2f}x more {more} needed"}


def check_targets(baseline: dict[str, Any], final: dict[str, Any], targets: Targets) -> list[dict[str, Any]]:
    """Each target with what was achieved and, when missed, by how much."""
    rows = []
    if targets.min_latency_speedup is not None:
        rows.append(_ratio_target(f"batch-1 latency at least {targets.min_latency_speedup:g}x lower",
                                  baseline["latency_ms_p50"] / final["latency_ms_p50"],
                                  targets.min_latency_speedup, "speed-up"))
    if targets.min_size_reduction is not None:
        rows.append(_ratio_target(f"at least {targets.min_size_reduction:g}x smaller on disk",
                                  baseline["size_bytes"] / final["size_bytes"], targets.min_size_reduction,
                                  "reduction"))
    if targets.max_accuracy_drop is not None:
        drop = 100.0 * (baseline["accuracy"] - final["accuracy"])
        met = drop <= targets.max_accuracy_drop
        rows.append({"target": f"accuracy within {targets.max_accuracy_drop:g} points",
                     "achieved": f"{-drop:+.2f} points", "met": met,
                     "shortfall": None if met else f"{drop - targets.max_accuracy_drop:.2f} points over"})
    return rows
