"""The paired gate, calibrated on constructed prediction vectors: one image never decides, a systematic
loss always refuses, and the verdict names the rule and the figures."""

import numpy as np
import pytest

from drivecompress.data.classes import CLASS_NAMES, SAFETY_CRITICAL
from drivecompress.pipeline.gate import check_gate, check_targets, holm, mcnemar_one_sided, paired_bound
from drivecompress.pipeline.recipe import Budgets, Targets

SAFETY = sorted(SAFETY_CRITICAL)
BUDGETS = Budgets(max_accuracy_drop=0.5, max_safety_recall_drop=1.0)


def _labels(per_class: int = 60) -> np.ndarray:
    return np.repeat(np.arange(43), per_class)


def _m(pred: np.ndarray, labels: np.ndarray, lat: float = 1.0, size: int = 1000, **kw) -> dict:
    return {"accuracy": float((pred == labels).mean()), "predictions": pred.tolist(), "latency_ms_p50": lat,
            "size_bytes": size, **kw}


def _gate(base, cand, labels, budgets=BUDGETS):
    return check_gate(_m(base, labels), _m(cand, labels), budgets, SAFETY, CLASS_NAMES, labels)


def _flip(pred: np.ndarray, labels: np.ndarray, cls: int, k: int) -> np.ndarray:
    """Make ``k`` correctly predicted images of class ``cls`` wrong, in a copy of ``pred``."""
    out = pred.copy()
    idx = np.flatnonzero((labels == cls) & (out == labels))[:k]
    out[idx] = (labels[idx] + 1) % 43
    return out


def test_identical_model_passes():
    y = _labels()
    base = _flip(y, y, 3, 2)  # a baseline with a few mistakes of its own
    g = _gate(base, base.copy(), y)
    assert g["passed"] and g["violations"] == []
    assert all(r["lost"] == 0 and r["verdict"] == "ok" for r in g["classes"])


def test_one_lost_image_on_a_60_image_class_passes():
    y = _labels()
    g = _gate(y.copy(), _flip(y, y, 19, 1), y)
    row = next(r for r in g["classes"] if r["class"] == 19)
    assert g["passed"], g["violations"]
    assert (row["n"], row["lost"], row["gained"], row["tolerance"]) == (60, 1, 0, 1)


def test_seven_lost_none_gained_on_60_refuses_as_degraded():
    y = _labels()
    g = _gate(y.copy(), _flip(y, y, 19, 7), y)
    assert not g["passed"]
    v = [x for x in g["violations"] if "class 19" in x]
    assert v and "7 of 60 images lost, 0 gained" in v[0] and "net loss 7 > tolerance 1" in v[0]


def test_a_one_point_pooled_drop_on_10000_images_refuses():
    y = np.repeat(np.arange(40), 250)  # 10,000 images; class 40+ unused
    base = y.copy()
    cand = base.copy()
    cand[::100] = (y[::100] + 1) % 40  # 100 images lost, spread over every class: 1 point overall
    g = check_gate(_m(base, y), _m(cand, y), Budgets(max_accuracy_drop=0.5), [], CLASS_NAMES, y)
    assert not g["passed"] and "all test images: degraded, accuracy -1.00 points" in g["violations"][0]
    g1 = check_gate(_m(base, y), _m(cand, y), Budgets(max_accuracy_drop=1.0), [], CLASS_NAMES, y)
    assert not g1["passed"] and "cannot be certified with 10000 test images" in g1["violations"][0]


def test_a_systematic_loss_refuses_even_within_the_net_tolerance():
    y = np.repeat(np.arange(43), 2000)
    g = _gate(y.copy(), _flip(y, y, 14, 15), y, Budgets(max_safety_recall_drop=1.0))
    row = next(r for r in g["classes"] if r["class"] == 14)
    assert row["net_loss"] == 15 < row["tolerance"] == 20
    assert not g["passed"] and "systematic loss" in g["violations"][0] and row["p_holm"] < 0.05


def test_losses_balanced_by_gains_pass():
    y = _labels()
    idx = np.flatnonzero(y == 9)
    base, cand = y.copy(), y.copy()
    base[idx[:4]] = 10  # the baseline misses 4 "no passing" images the candidate gets right ...
    cand[idx[-4:]] = 10  # ... and the candidate misses 4 others
    row = next(r for r in _gate(base, cand, y)["classes"] if r["class"] == 9)
    assert (row["lost"], row["gained"], row["verdict"]) == (4, 4, "ok")


def test_statistics_on_known_values():
    assert mcnemar_one_sided(7, 0) == pytest.approx(0.5**7)
    assert mcnemar_one_sided(1, 0) == 0.5 and mcnemar_one_sided(0, 3) == 1.0
    assert mcnemar_one_sided(3, 1) == pytest.approx(5 / 16)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    d, lo = paired_bound(lost=10, gained=0, n=1000, confidence=0.95)
    assert d == -0.01 and lo == pytest.approx(-0.01 - 1.6449 * np.sqrt((0.01 - 1e-4) / 1000), rel=1e-3)


def test_non_finite_or_missing_evidence_never_passes():
    y = _labels()
    nan = _m(y, y)
    nan["accuracy"] = float("nan")
    assert not check_gate(_m(y, y), nan, BUDGETS, SAFETY, CLASS_NAMES, y)["passed"]
    no_preds = {k: v for k, v in _m(y, y).items() if k != "predictions"}
    g = check_gate(_m(y, y), no_preds, BUDGETS, SAFETY, CLASS_NAMES, y)
    assert not g["passed"] and "predictions" in g["violations"][0]


def test_latency_size_and_corruption_budgets():
    y = _labels()
    g = check_gate(_m(y, y), _m(y, y, lat=2.0, size=5000), Budgets(max_latency_ms=1.5, max_size_bytes=4000))
    assert "2.0 ms exceeds 1.500 ms" in g["violations"][0] and "5000 bytes exceeds 4,000" in g["violations"][1]
    g = check_gate(_m(y, y), _m(y, y), Budgets(max_corruption_accuracy_drop=2.0))
    assert not g["passed"] and "not measured" in g["violations"][0]
    ok = check_gate(_m(y, y, corruption_accuracy=0.9), _m(y, y, corruption_accuracy=0.89),
                    Budgets(max_corruption_accuracy_drop=2.0))
    assert ok["passed"]


def test_no_budgets_passes():
    y = _labels()
    assert check_gate(_m(y, y), _m((y + 1) % 43, y), Budgets())["passed"]


def test_targets_report_shortfall():
    y = _labels()
    base, fin = _m(y, y, lat=3.0, size=8000), _m(y, y, lat=1.0, size=2000)
    fin["accuracy"] = base["accuracy"] - 0.005
    rows = check_targets(base, fin, Targets(min_latency_speedup=6, min_size_reduction=4, max_accuracy_drop=0.3))
    assert [r["met"] for r in rows] == [False, True, False]
    assert rows[0]["achieved"] == "3.00x" and rows[0]["shortfall"] == "2.00x more speed-up needed"
    assert rows[2]["shortfall"] == "0.20 points over"


def test_noise_level_is_reported_beside_the_verdict_and_grows_with_discordance():
    """An identical candidate has no discordance and no simulated refusals; a candidate flipping ~1.5% of
    10,750 images both ways is refused in most equal-quality simulations (the small classes' tolerance is a
    point rule); the figure is a note, the verdict stays the rules' own."""
    from drivecompress.pipeline.gate import equal_quality_candidate, noise_level, noise_sentence

    y = _labels(250)
    base = np.where(np.random.default_rng(0).random(len(y)) < 0.02, (y + 1) % 43, y)  # a 98% baseline
    same = check_gate(_m(base, y), _m(base.copy(), y), BUDGETS, SAFETY, CLASS_NAMES, y, noise_trials=50)
    assert same["passed"] and same["noise"]["discordance"] == 0 and same["noise"]["equal_quality_refusal_rate"] == 0
    rng = np.random.default_rng(1)
    ok = equal_quality_candidate(base == y, 0.015, rng)
    assert 0.01 < float(((base == y) != ok).mean()) < 0.02
    cand = np.where(ok, y, (y + 1) % 43)
    g = check_gate(_m(base, y), _m(cand, y), BUDGETS, SAFETY, CLASS_NAMES, y, noise_trials=100)
    assert g["noise"]["discordant_images"] == int(((base == y) != ok).sum())
    assert g["noise"]["equal_quality_refusal_rate"] > 0.5
    assert "weak evidence" in noise_sentence(g["noise"])
    assert "noise" not in check_gate(_m(base, y), _m(cand, y), BUDGETS, SAFETY, CLASS_NAMES, y)  # opt-in
    again = noise_level(base, cand, y, BUDGETS, SAFETY, 100)  # seeded: the same figure every time
    assert again == g["noise"]


def test_noise_level_by_confidence_sees_losses_clustered_where_the_baseline_was_unsure():
    """A baseline unsure (true-class p 0.3) of 40 of its right answers, all in one 400-image safety class
    (general caution, tolerance 4), sure of everything else; a candidate that loses 10 of those unsure images
    and gains 10 of the baseline's errors elsewhere. Flips spread uniformly rarely land 5 net on that class;
    flips that fall where the baseline was unsure, as this candidate's do, often do: the second null refuses
    far more often, and it is only computed when the baseline's probabilities are known."""
    from drivecompress.pipeline.gate import confidence_propensity, noise_level

    y = _labels(400)
    rng = np.random.default_rng(0)
    base = np.where(rng.random(len(y)) < 0.02, (y + 1) % 43, y)
    base[y == 18] = 18  # general caution: all right, 40 of them barely
    p = np.where(base == y, 0.99, 0.05)
    unsure = np.flatnonzero(y == 18)[:40]
    p[unsure] = 0.3
    cand = base.copy()
    cand[unsure[:10]] = 17
    wrong = np.flatnonzero(base != y)[:10]
    cand[wrong] = y[wrong]
    prop = confidence_propensity(base == y, cand == y, p)
    assert abs(prop.sum() - 20) < 1e-6  # expected flips = the candidate's discordance, half each way
    assert prop[unsure].mean() > 20 * prop[(base == y) & (p > 0.9)].mean()
    n = noise_level(base, cand, y, BUDGETS, SAFETY, 200, base_probability=p)
    assert n["equal_quality_refusal_rate"] < 0.1 < 0.3 < n["equal_quality_refusal_rate_by_confidence"], n
    assert "equal_quality_refusal_rate_by_confidence" not in noise_level(base, cand, y, BUDGETS, SAFETY, 20)
    # the per-class rows count the lost images the baseline itself won below p 0.5 (what `drivecompress gate` prints)
    rows = {r["class"]: r for r in check_gate(_m(base, y, true_class_probability=p.tolist()), _m(cand, y), BUDGETS,
                                               SAFETY, CLASS_NAMES, y)["classes"]}
    assert rows[18]["lost_baseline_below_half"] == 10 and rows[17]["lost_baseline_below_half"] == 0
