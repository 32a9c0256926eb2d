"""``drivecompress robustness MODEL``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from drivecompress.commands.base import command


@command("robustness", "Measure MODEL's robustness: accuracy under 14 weather/sensor corruptions at severities "
         "1-5 (and safety-critical recall under them), FGSM/PGD accuracy at eps 1,2,4,8/255, ECE and a "
         "reliability diagram. Uses a fixed seeded test subset (500 images; 256 for attacks) unless --full.")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="checkpoint folder, .onnx file, 'baseline' or 'searched'")
    p.add_argument("--source", help="float checkpoint an .onnx MODEL came from: adversarial examples are crafted "
                   "on it and transferred (without it, an ONNX model gets no adversarial figures)")
    p.add_argument("--full", action="store_true", help="use the whole test set (slow)")
    p.add_argument("--quick", action="store_true", help="a first look in seconds: 100 images, 3 corruptions at "
                   "severities 1/3/5, FGSM/PGD at 8/255 on 64 images")
    p.add_argument("--pgd-steps", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for robustness.json, contact_sheet.png, reliability.png")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.data.api import Data
    from drivecompress.errors import BadInputError
    from drivecompress.evaluate.loading import load_model_arg
    from drivecompress.evaluate.robustness import RobustnessConfig, robustness_report

    if a.pgd_steps < 1:
        raise BadInputError("--pgd-steps must be >= 1")
    model = load_model_arg(a.model)
    source, transfer = model.module, False
    if a.source:
        src = load_model_arg(a.source)
        if src.module is None:
            raise BadInputError(f"--source {a.source}: must be a checkpoint folder, 'baseline' or 'searched'")
        source, transfer = src.module, model.module is None
    data = Data.from_npz(a.data)
    model.check_against(data)
    test = data.test
    if a.full and a.quick:
        raise BadInputError("--full and --quick exclude each other")
    cfg = RobustnessConfig(corruption_images=None if a.full else 500, attack_images=None if a.full else 256,
                           pgd_steps=a.pgd_steps, seed=a.seed, safety_critical=tuple(sorted(data.safety_critical)))
    if a.quick:
        cfg = dataclasses.replace(cfg, corruption_images=100, attack_images=64, severities=(1, 3, 5),
                                  corruptions=("fog", "gaussian_noise", "motion_blur"), epsilons=(8,))
    rep = robustness_report(model.predictor(), test, cfg, source, transfer, progress=True)
    if a.out:
        write_artifacts(rep, test.head(2, seed=a.seed), a.out, cfg.seed)
    return {"model": str(model.source), **rep} if a.json else _summary(str(model.source), rep)


def _summary(name: str, rep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": name, "clean_accuracy": rep["clean_accuracy"], "ece": rep["ece"],
                           "corruption_accuracy": rep["corruption_accuracy"],
                           "min_safety_recall_under_corruption": rep["min_safety_recall_under_corruption"]}
    for k, accs in rep["corruptions"].items():
        out[f"corruption.{k}"] = " ".join(f"{100 * v:.1f}" for v in accs)
    adv = rep["adversarial"]
    out["adversarial.method"] = adv["method"]
    for kind in ("fgsm", "pgd"):
        if kind in adv:
            out[f"adversarial.{kind}"] = " ".join(f"{e}:{100 * v:.1f}" for e, v in adv[kind].items())
    return out


def write_artifacts(rep: dict[str, Any], sample, out: Path, seed: int) -> None:
    """robustness.json, a corruption contact sheet and the reliability diagram, for people and reports."""
    import base64

    from drivecompress.data.corruptions import corrupt
    from drivecompress.data.transforms import deploy_input
    from drivecompress.report.plots import contact_sheet, reliability_diagram
    from drivecompress.utils.io import atomic_write, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "robustness.json", rep)
    x = deploy_input(sample.x)
    rows = [[x[0]] + [corrupt(x, name, s, sample.sizes, seed)[0] for s in range(1, 6)] for name in rep["corruptions"]]
    png = contact_sheet(rows)
    atomic_write(out / "contact_sheet.png", lambda p: p.write_bytes(png))
    rel = base64.b64decode(reliability_diagram(rep["reliability"], "reliability"))
    atomic_write(out / "reliability.png", lambda p: p.write_bytes(rel))
