import numpy as np
import pytest

from drivecompress.data.classes import SAFETY_CRITICAL
from drivecompress.evaluate.accuracy import (
    accuracy,
    accuracy_by_size,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    per_class_recall,
)


def _calibrated(n_per_conf: int = 1000):
    """A toy predictor that is perfectly calibrated: among predictions made with confidence p, exactly a
    fraction p is right (p in {0.6, 0.8, 1.0}, each bin-aligned)."""
    probs, labels = [], []
    for p, n_right in ((0.6, 600), (0.8, 800), (1.0, 1000)):
        for i in range(n_per_conf):
            row = np.full(43, (1 - p) / 42)
            row[0] = p
            probs.append(row)
            labels.append(0 if i < n_right else 1)
    return np.array(probs), np.array(labels)


def test_ece_zero_for_perfectly_calibrated_predictor():
    probs, labels = _calibrated()
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_overconfident_predictor():
    probs, labels = _calibrated()
    labels = np.where(np.arange(len(labels)) % 2 == 0, 1, labels)  # halve accuracy in every bin
    # bin conf 0.6: acc 0.3 -> 0.3; conf 0.8: acc 0.4 -> 0.4; conf 1.0: acc 0.5 -> 0.5; mean 0.4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4, abs=1e-9)


def test_per_class_recall_on_known_confusion():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 2, 2, 2])
    rec = per_class_recall(pred, labels, num_classes=4)
    assert rec[:3] == [0.75, 0.5, 1.0]
    assert np.isnan(rec[3])  # no samples: NaN, never a fake 0 or 1
    cm = confusion_matrix(pred, labels, num_classes=4)
    assert cm[0].tolist() == [3, 1, 0, 0] and cm[1].tolist() == [1, 1, 0, 0] and cm.sum() == 10
    assert accuracy(pred, labels) == 0.8


def test_accuracy_by_size_bins():
    labels = np.array([1, 1, 1, 1])
    pred = np.array([1, 0, 1, 1])
    sizes = np.array([10, 12, 15, 32])
    out = accuracy_by_size(pred, labels, sizes)
    assert out["<14px"] == {"accuracy": 0.5, "count": 2}
    assert out["14-20px"]["accuracy"] == 1.0 and out["20-32px"]["count"] == 1


def test_classification_metrics_keys_and_safety_minimum():
    labels = np.repeat(np.arange(43), 2)
    logits = np.eye(43)[labels] * 10
    logits[0] = np.eye(43)[5] * 10  # one "speed limit 20" misread as "speed limit 80"
    m = classification_metrics(logits, labels, np.full(86, 25), SAFETY_CRITICAL)
    assert m["accuracy"] == pytest.approx(85 / 86)
    assert len(m["per_class_recall"]) == 43 and m["per_class_recall"][0] == 0.5
    assert m["min_safety_critical_recall"] == 0.5
    assert 0 <= m["ece"] < 0.05
    p = m["true_class_probability"]  # softmax of 10 on the true class vs 0 on 42 others: 0.998
    assert len(p) == 86 and p[1] == pytest.approx(0.998, abs=1e-3) and p[0] == pytest.approx(0.0, abs=1e-3)
