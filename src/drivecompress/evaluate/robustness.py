"""Robustness and calibration of any Predictor: corruptions x severities, FGSM/PGD, ECE + reliability.

Runs on a fixed, seeded test subset by default (a whole report in under ~3 minutes here); the same code
measures the fp32 teacher, a pruned module and the int8 ONNX artifact. Adversarial examples need gradients:
for a PyTorch model they are crafted on it (white-box); for an ONNX model they are crafted on its float source
when one is given and transferred, and the report says which was done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from drivecompress.data.corruptions import CORRUPTIONS, corrupt
from drivecompress.data.dataset import LabeledImages
from drivecompress.data.transforms import deploy_input
from drivecompress.evaluate.accuracy import expected_calibration_error, min_recall, per_class_recall, softmax
from drivecompress.evaluate.attacks import fgsm, pgd
from drivecompress.evaluate.predictor import Predictor

EPSILONS = (1, 2, 4, 8)  # in 1/255 units


@dataclass(frozen=True)
class RobustnessConfig:
    corruption_images: int | None = 500
    attack_images: int | None = 256
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    corruptions: tuple[str, ...] = tuple(CORRUPTIONS)
    epsilons: tuple[int, ...] = EPSILONS
    pgd_steps: int = 7
    seed: int = 0
    batch_size: int = 256
    safety_critical: tuple[int, ...] = ()


def _predict(predictor: Predictor, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([predictor(x[i : i + batch]) for i in range(0, len(x), batch)])


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram's data)."""
    conf, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    return [{"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int((idx == b).sum()),
             "confidence": float(conf[idx == b].mean()) if (idx == b).any() else float("nan"),
             "accuracy": float(correct[idx == b].mean()) if (idx == b).any() else float("nan")} for b in range(n_bins)]


def corruption_table(predictor: Predictor, data: LabeledImages, cfg: RobustnessConfig,
                     tick: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Accuracy per corruption x severity, its mean, and safety-critical recall under corruption."""
    x = deploy_input(data.x)
    table: dict[str, list[float]] = {}
    preds, labels, k = [], [], 0
    for name in cfg.corruptions:
        table[name] = []
        for sev in cfg.severities:
            logits = _predict(predictor, corrupt(x, name, sev, data.sizes, cfg.seed), cfg.batch_size)
            p, k = logits.argmax(1), logits.shape[1]
            table[name].append(float((p == data.y).mean()))
            tick(f"{name} severity {sev}")
            preds.append(p)
            labels.append(data.y)
    rec = per_class_recall(np.concatenate(preds), np.concatenate(labels), k)
    return {
        "corruptions": table,
        "corruption_accuracy": float(np.mean([np.mean(v) for v in table.values()])),
        "safety_recall_under_corruption": {str(c): rec[c] for c in sorted(cfg.safety_critical)},
        "min_safety_recall_under_corruption": min_recall(rec, sorted(cfg.safety_critical)),
    }


def adversarial(target: Predictor, source: nn.Module, data: LabeledImages, cfg: RobustnessConfig,
                transfer: bool, tick: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """FGSM and PGD accuracy at each eps; crafted on ``source`` and evaluated on ``target``."""
    x = torch.as_tensor(deploy_input(data.x))
    y = torch.as_tensor(data.y)
    source = source.cpu().eval()
    out: dict[str, Any] = {"method": "transfer from the float source model" if transfer else "white-box",
                           "pgd_steps": cfg.pgd_steps, "fgsm": {}, "pgd": {}}
    for eps_px in cfg.epsilons:
        eps = eps_px / 255.0
        for name, attack in (("fgsm", fgsm), ("pgd", pgd)):
            advs = []
            for i in range(0, len(x), cfg.batch_size):
                xb, yb = x[i : i + cfg.batch_size], y[i : i + cfg.batch_size]
                advs.append(attack(source, xb, yb, eps) if name == "fgsm" else
                            pgd(source, xb, yb, eps, steps=cfg.pgd_steps, seed=cfg.seed + i))
            adv = torch.cat(advs).numpy()
            out[name][f"{eps_px}/255"] = float((_predict(target, adv, cfg.batch_size).argmax(1) == data.y).mean())
            tick(f"{name} eps {eps_px}/255")
    out["adversarial_accuracy"] = out["pgd"][f"{max(cfg.epsilons)}/255"] if cfg.epsilons else None
    return out


def robustness_report(predictor: Predictor, test: LabeledImages, cfg: RobustnessConfig,
                      source: nn.Module | None = None, transfer: bool = False,
                      progress: bool = False) -> dict[str, Any]:
    """Everything for one model: clean accuracy, ECE + reliability, corruptions, adversarial. ``progress``
    shows a bar on stderr (a full run takes minutes)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    attacks = source is not None and bool(cfg.epsilons)
    total = len(cfg.corruptions) * len(cfg.severities) + (2 * len(cfg.epsilons) if attacks else 0)
    bar = Progress(TextColumn("[bold]robustness"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[what]}"),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task("robustness", total=total, what="")

        def tick(what: str) -> None:
            bar.update(task, advance=1, what=what)

        sub_c = test.head(cfg.corruption_images, seed=cfg.seed)
        logits = _predict(predictor, deploy_input(sub_c.x), cfg.batch_size)
        probs = softmax(logits.astype(np.float64))
        rep: dict[str, Any] = {
            "images": {"corruption": len(sub_c)},
            "clean_accuracy": float((logits.argmax(1) == sub_c.y).mean()),
            "ece": expected_calibration_error(probs, sub_c.y),
            "reliability": reliability(probs, sub_c.y),
            **corruption_table(predictor, sub_c, cfg, tick),
        }
        if attacks:
            sub_a = test.head(cfg.attack_images, seed=cfg.seed)
            rep["images"]["adversarial"] = len(sub_a)
            rep["adversarial"] = adversarial(predictor, source, sub_a, cfg, transfer, tick)
            rep["adversarial_accuracy"] = rep["adversarial"]["adversarial_accuracy"]
        else:
            rep["adversarial"] = {"method": "not run: an ONNX model without its float source has no gradients"}
    return rep
