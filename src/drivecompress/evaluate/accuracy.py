"""Accuracy-type metrics from logits and labels: pure functions, tested on hand-made cases."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from drivecompress.data.gtsrb import SIZE_BINS


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy from predicted class ids."""
    return float((pred == labels).mean()) if len(labels) else float("nan")


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def per_class_recall(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Recall of each class (NaN for a class with no samples, so it is never mistaken for 0 or 1)."""
    cm = confusion_matrix(pred, labels, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    return [float(v) for v in rec]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| weighted by bin mass."""
    if len(labels) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def accuracy_by_size(pred: np.ndarray, labels: np.ndarray, sizes: np.ndarray) -> dict[str, dict[str, float]]:
    """Accuracy per sign-size bin (small signs are where accuracy is won or lost on this npz)."""
    out = {}
    for name, lo, hi in SIZE_BINS:
        m = (sizes >= lo) & (sizes < hi)
        out[name] = {"accuracy": accuracy(pred[m], labels[m]), "count": int(m.sum())}
    return out


def min_recall(recall: list[float], classes: Iterable[int]) -> float | None:
    """Lowest recall over ``classes`` that have test images (None when there is none)."""
    vals = [recall[c] for c in classes if recall[c] == recall[c]]
    return float(min(vals)) if vals else None


def classification_metrics(logits: np.ndarray, labels: np.ndarray, sizes: np.ndarray | None = None,
                           safety_critical: Iterable[int] = ()) -> dict:
    """The accuracy block of a report's metrics (DESIGN.md keys); the class count is the logits' width.

    ``predictions`` (the predicted class of every image, in order) lets the gate compare two models image by
    image instead of only their rates; ``true_class_probability`` (3 decimals) shows which of a baseline's
    right answers were near coin flips, the images a compressed model most often loses."""
    pred = logits.argmax(axis=1)
    recall = per_class_recall(pred, labels, logits.shape[1])
    probs = softmax(logits.astype(np.float64))
    m = {
        "accuracy": accuracy(pred, labels),
        "per_class_recall": recall,
        "ece": expected_calibration_error(probs, labels),
        "min_safety_critical_recall": min_recall(recall, sorted(safety_critical)),
        "predictions": [int(p) for p in pred],
        "true_class_probability": [round(float(q), 3) for q in probs[np.arange(len(labels)), labels]],
    }
    if sizes is not None:
        m["accuracy_by_size"] = accuracy_by_size(pred, labels, sizes)
    return m
