"""The safety gate: compare the candidate with the baseline image by image (paired), refuse what the evidence
shows got worse, and pass what the candidate's own noise explains.

The policy (issue #52, the owner's decision; the statistics are in ``evaluate/evidence.py``):
1. ``max_accuracy_drop`` B points, pooled over all test images: paired non-inferiority, the burden of proof on
   the candidate. The one-sided lower bound (``confidence``) of the accuracy difference must stay above -B; a
   point estimate below -B is *degraded*, an estimate within budget whose bound is not is *cannot be
   certified*. The standard error is cluster-robust over physical signs (tracks) when they are known.
2. ``max_safety_recall_drop`` B points: the same pooled test over the safety-critical images; and per class
   (every class of the data, one Holm family): refuse a net loss beyond the class's allowance (B% of its
   images) that the candidate's flip pattern on the other classes cannot explain (adjusted p < ``significance``;
   the burden of proof on the evidence). Safety-critical classes refuse; the others warn, unless
   ``gate_all_classes``.
3. The unit of evidence is the physical sign: test tracks given as ``groups`` or recovered for GTSRB; without
   them images count as independent and the verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from drivecompress.evaluate.evidence import cluster_bound, per_class_evidence
from drivecompress.pipeline.recipe import Budgets, Targets

NOISE_TRIALS = 200  # simulations behind a verdict's noise level


def pooled_rule(label: str, bp: np.ndarray, fp: np.ndarray, y: np.ndarray, mask: np.ndarray,
                groups: np.ndarray | None, budget: float, conf: float) -> tuple[dict[str, Any], str | None]:
    """Paired non-inferiority over the images of ``mask``: (row, violation or None)."""
    b, c = bp[mask] == y[mask], fp[mask] == y[mask]
    lost, gained, n = int((b & ~c).sum()), int((~b & c).sum()), int(mask.sum())
    signs = None if groups is None else groups[mask]
    d, lo = cluster_bound(c.astype(float) - b.astype(float), signs, conf)
    row = {"scope": label, "n": n, "lost": lost, "gained": gained, "difference_points": 100 * d,
           "lower_bound_points": 100 * lo, "budget_points": budget, "confidence": conf,
           "units": "physical signs" if groups is not None else "images"}
    if d < -budget / 100:
        return row | {"verdict": "degraded"}, (
            f"{label}: degraded, accuracy {100 * d:+.2f} points ({lost} images lost, {gained} gained of {n}), "
            f"budget -{budget:.2f}")
    if lo < -budget / 100:
        return row | {"verdict": "cannot be certified"}, (
            f"{label}: cannot be certified with {n} test images: {100 * d:+.2f} points, but the {100 * conf:.0f}% "
            f"lower bound {100 * lo:+.2f} is below -{budget:.2f} ({lost} lost, {gained} gained)")
    return row | {"verdict": "ok"}, None


def class_sentence(r: dict[str, Any], budget: float, significance: float) -> str:
    """One refused or warned class in words: the counts, the signs, the allowance and the evidence."""
    kind = "safety-critical" if r["safety_critical"] else "not safety-critical"
    return (f"class {r['class']} ({r['name']}, {kind}): {r['lost']} of {r['n']} images lost, {r['gained']} gained, "
            f"in {r['signs_lost']} of {r['signs']} physical signs; allowance {r['allowance']:.1f} images "
            f"({budget:g} points); the candidate's flips elsewhere predict {r['expected_lost']:.1f} lost "
            f"(within-sign correlation {r['correlation']:.2f}); p = {r['p_value']:.2g}, Holm-adjusted "
            f"{r['p_holm']:.2g} < {significance:g}")


def class_rows(bp: np.ndarray, fp: np.ndarray, y: np.ndarray, budgets: Budgets, safety: Sequence[int],
               names: Sequence[str], base_probability: np.ndarray | None, groups: np.ndarray | None
               ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Per-class rows sorted by adjusted p, the violations (refusing classes) and the warnings (the others)."""
    budget = budgets.max_safety_recall_drop
    k = max(len(names), int(max(y.max(initial=-1), bp.max(initial=-1), fp.max(initial=-1))) + 1)
    rows = per_class_evidence(bp, fp, y, k, budget, base_probability, groups)
    rows = [r for r in rows if r["n"] > 0]
    bad, warn = [], []
    for r in rows:
        r["name"] = names[r["class"]] if r["class"] < len(names) else str(r["class"])
        r["safety_critical"] = r["class"] in set(safety)
        significant = r["p_holm"] < budgets.significance
        refuses = significant and (r["safety_critical"] or budgets.gate_all_classes)
        r["verdict"] = "refused" if refuses else ("warning" if significant else "ok")
        if significant:
            (bad if refuses else warn).append(class_sentence(r, budget, budgets.significance))
    rows.sort(key=lambda r: (r["p_holm"], r["p_value"], r["class"]))
    return rows, bad, warn


def paired_rules(bp: np.ndarray, fp: np.ndarray, y: np.ndarray, budgets: Budgets, safety: Sequence[int] = (),
                 names: Sequence[str] = (), base_probability: np.ndarray | None = None,
                 groups: np.ndarray | None = None) -> tuple[dict[str, Any], list[str]]:
    """The accuracy budgets on per-image predictions: ``({"classes", "pooled", "warnings"}, violations)``; one
    function for the verdict and for ``noise_level``'s simulated candidates, so both apply the same rules."""
    out: dict[str, Any] = {"classes": [], "pooled": [], "warnings": []}
    v: list[str] = []
    conf = budgets.confidence
    every = np.ones(len(y), bool)
    if budgets.max_accuracy_drop is not None:
        row, bad = pooled_rule("all test images", bp, fp, y, every, groups, budgets.max_accuracy_drop, conf)
        out["pooled"].append(row)
        v += [bad] if bad else []
    if budgets.max_safety_recall_drop is not None:
        out["classes"], bad_cls, out["warnings"] = class_rows(bp, fp, y, budgets, safety, names, base_probability,
                                                              groups)
        v += bad_cls
        if safety:
            mask = np.isin(y, sorted(int(c) for c in safety))
            row, bad = pooled_rule("safety-critical images", bp, fp, y, mask, groups, budgets.max_safety_recall_drop,
                               conf)
            out["pooled"].append(row)
            v += [bad] if bad else []
    return out, v


def equal_quality_candidate(base_ok: np.ndarray, q: float, rng: np.random.Generator) -> np.ndarray:
    """Per-image correctness of a simulated candidate exactly as good as the baseline in expectation that
    disagrees with it on a fraction ``q`` of the images: each right image is lost with probability q/2 and
    wrong images are gained so that expected gains equal expected losses."""
    p_lose = q / 2
    p_gain = min(1.0, p_lose * base_ok.sum() / max(1, (~base_ok).sum()))
    return base_ok ^ np.where(base_ok, rng.random(len(base_ok)) < p_lose, rng.random(len(base_ok)) < p_gain)


PROPENSITY_BINS = 8  # quantile bins of the baseline's confidence for the shaped null of ``noise_level``
PSEUDO_IMAGES = 20.0


def confidence_propensity(base_ok: np.ndarray, cand_ok: np.ndarray, base_probability: np.ndarray
                          ) -> np.ndarray:
    """Per-image flip probabilities of an equal-quality candidate that flips images as this one does *by the
    baseline's confidence*: the candidate's lost rate among the baseline's right images and gained rate among
    its wrong ones, per quantile bin of the baseline's true-class probability (shrunk towards the overall
    rate), scaled so that expected losses equal expected gains and together equal its discordance."""
    q = np.quantile(base_probability, np.linspace(0, 1, PROPENSITY_BINS + 1)[1:-1])
    bins = np.digitize(base_probability, np.unique(q))
    lost, gained = base_ok & ~cand_ok, ~base_ok & cand_ok
    half = (lost.sum() + gained.sum()) / 2
    out = np.zeros(len(base_ok))
    for side, hit in ((base_ok, lost), (~base_ok, gained)):
        mean = hit.sum() / max(1, side.sum())
        for k in range(bins.max(initial=0) + 1):
            m = side & (bins == k)
            out[m] = (hit[m].sum() + PSEUDO_IMAGES * mean) / (m.sum() + PSEUDO_IMAGES)
        total = out[side].sum()
        out[side] *= half / total if total > 0 else 0.0
    return np.clip(out, 0.0, 1.0)


def noise_level(bp: np.ndarray, fp: np.ndarray, y: np.ndarray, budgets: Budgets, safety: Sequence[int],
                trials: int, seed: int = 0, base_probability: np.ndarray | None = None,
                groups: np.ndarray | None = None) -> dict[str, Any]:
    """How often these budgets would refuse a candidate of the baseline's own quality that disagrees with it
    as often as this one does (``trials`` simulations): what a refusal at this discordance is worth as
    evidence. Reported beside the verdict, never changing it. Two nulls: flips spread uniformly over the
    images, and (given the baseline's true-class probability per image) flips falling on the images the
    baseline was unsure of as often as this candidate's do."""
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
            rules = paired_rules(bp, np.where(c, y, -1), y, budgets, safety, (), base_probability, groups)
            refused[name] += bool(rules[1])  # -1: a wrong answer
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
            f"is refused by these budgets in {100 * rate:.0f}% of {noise['trials']} simulations"
            + (f", in {100 * by_conf:.0f}% when its flips fall on the images the baseline was unsure of as often "
               f"as this candidate's do" if by_conf is not None else "")
            + (" (a refusal at this noise level is weak evidence: read the lost images)" if worst >= 0.2 else ""))


def check_gate(baseline: dict[str, Any], final: dict[str, Any], budgets: Budgets, safety: Sequence[int] = (),
               names: Sequence[str] = (), labels: np.ndarray | None = None, noise_trials: int = 0,
               groups: np.ndarray | None = None, groups_how: str | None = None) -> dict[str, Any]:
    """``{"passed", "violations": [str], "warnings": [str], "classes": [...], "pooled": [...], "evidence_units"}``.
    A budget whose metric was not measured, or a non-finite metric, is a violation: the gate never passes a
    model on numbers it lacks. ``groups`` gives each test image's physical sign (``groups_how`` says where they
    came from); without them images are treated as independent and the verdict says so. ``noise_trials`` > 0
    adds ``noise`` (``noise_level``): the refusal rate of equal-quality candidates at this discordance."""
    v: list[str] = []
    out: dict[str, Any] = {"classes": [], "pooled": [], "warnings": []}
    for key in ("accuracy", "latency_ms_p50", "size_bytes"):
        val = final.get(key)
        if val is not None and not (isinstance(val, int | float) and math.isfinite(val)):
            v.append(f"final {key} is not a finite number ({val!r})")
    paired = labels is not None and "predictions" in baseline and "predictions" in final
    wants_paired = budgets.max_accuracy_drop is not None or budgets.max_safety_recall_drop is not None
    if wants_paired and not paired:
        v.append("accuracy budgets set but per-image predictions of baseline and final were not measured")
    if paired and not v:
        bp, fp, y = np.asarray(baseline["predictions"]), np.asarray(final["predictions"]), np.asarray(labels)
        if groups is not None and len(groups) != len(y):
            v.append(f"test groups cover {len(groups)} images, the test set has {len(y)}")
        elif not (len(bp) == len(fp) == len(y)):
            v.append(f"per-image predictions cover {len(bp)} / {len(fp)} images, the test set has {len(y)}")
        else:
            out["evidence_units"] = (f"physical signs ({groups_how or 'given'}): {len(np.unique(groups))} signs "
                                     f"in {len(y)} images" if groups is not None else
                                     "images, treated as independent (no test groups given)")
            tp = baseline.get("true_class_probability")
            tp = np.asarray(tp) if tp is not None and len(tp) == len(y) else None
            rows, bad = paired_rules(bp, fp, y, budgets, safety, names, tp, groups)
            out |= rows
            v += bad
            if tp is not None:  # lost images the baseline itself won below p 0.5: the weaker evidence
                weak = (bp == y) & (fp != y) & (tp < 0.5)
                for r in out["classes"]:
                    r["lost_baseline_below_half"] = int((weak & (y == r["class"])).sum())
            if noise_trials > 0:
                out["noise"] = noise_level(bp, fp, y, budgets, safety, noise_trials, base_probability=tp,
                                           groups=groups)
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
