from drivecompress.pipeline.gate import check_gate
from drivecompress.pipeline.recipe import Budgets


def _m(acc=0.98, recall=None, lat=1.0, size=1000, **kw):
    return {"accuracy": acc, "per_class_recall": recall or [0.98] * 43, "latency_ms_p50": lat,
            "size_bytes": size, **kw}


def test_passes_within_budgets():
    g = check_gate(_m(), _m(acc=0.977, lat=0.3), Budgets(max_accuracy_drop=0.5, max_safety_recall_drop=1.0,
                                                          max_latency_ms=0.5, max_size_bytes=2000))
    assert g == {"passed": True, "violations": []}


def test_each_violation_is_reported_with_figures():
    rec = [0.98] * 43
    rec[14] = 0.95  # stop sign loses 3 points
    rec[16] = 0.50  # not safety-critical: ignored by the safety budget
    g = check_gate(_m(), _m(acc=0.97, recall=rec, lat=2.0, size=5000),
                   Budgets(max_accuracy_drop=0.5, max_safety_recall_drop=1.0, max_latency_ms=1.5,
                           max_size_bytes=4000))
    assert not g["passed"] and len(g["violations"]) == 4
    text = " | ".join(g["violations"])
    assert "accuracy dropped 1.00 points (98.00% -> 97.00%), budget 0.50" in text
    assert "class 14 (stop) dropped 3.00 points" in text and "class 16" not in text
    assert "2.000 ms exceeds 1.500 ms" in text and "5,000 bytes exceeds 4,000 bytes" in text


def test_unmeasured_metric_never_passes():
    g = check_gate(_m(), _m(), Budgets(max_corruption_accuracy_drop=2.0))
    assert not g["passed"] and "not measured" in g["violations"][0]
    g = check_gate(_m(corruption_accuracy=0.9), _m(corruption_accuracy=0.89), Budgets(max_corruption_accuracy_drop=2.0))
    assert g["passed"]


def test_no_budgets_passes():
    assert check_gate(_m(), _m(acc=0.1), Budgets())["passed"]


def test_targets_report_shortfall():
    from drivecompress.pipeline.gate import check_targets
    from drivecompress.pipeline.recipe import Targets

    rows = check_targets(_m(lat=3.0, size=8000), _m(acc=0.975, lat=1.0, size=2000),
                         Targets(min_latency_speedup=6, min_size_reduction=4, max_accuracy_drop=0.3))
    assert [r["met"] for r in rows] == [False, True, False]
    assert rows[0]["achieved"] == "3.00x" and rows[0]["shortfall"] == "2.00x more speed-up needed"
    assert rows[2]["shortfall"] == "0.20 points over"
