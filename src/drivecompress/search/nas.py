"""Architecture search with Optuna: networks designed for the runtime instead of pruned into it.

Each trial samples a ResNet-family network (stem width, where the resolution first drops, per-stage widths in
multiples of 16 — the CPU's channel blocks — and depths), trains it briefly with distillation from the teacher
on a subset (the *proxy*), quantizes it to int8 and measures its batch-1 latency on ONNX Runtime on this CPU.
Three objectives — proxy accuracy (max), int8 latency (min), int8 size (min) — go to Optuna's NSGA-II; a trial
whose proxy accuracy after its first epoch is hopeless is pruned.

Workers: every ``drivecompress search`` process pointed at the same storage is a worker on the same study
(an SQLite file on one host, a PostgreSQL/MySQL URL across hosts); Optuna hands out distinct trials. The
storage records heartbeats: a killed worker's trial goes stale, is failed after the grace period and re-queued
with the same parameters (``RetryFailedTrialCallback``), so no sampled architecture is lost. Trial latencies
taken while other workers train are noisy; the Pareto set is re-measured serially at the end.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from drivecompress.data.api import Data
from drivecompress.data.transforms import deploy_input
from drivecompress.distill.step import DistillConfig, Distiller
from drivecompress.errors import BadInputError
from drivecompress.evaluate.complexity import count_macs
from drivecompress.evaluate.latency import side_by_side
from drivecompress.export.onnx import export_onnx
from drivecompress.models import build_model
from drivecompress.quant.ptq import PTQConfig, quantize_ptq
from drivecompress.train.loop import TrainConfig, fit
from drivecompress.utils.io import atomic_write_json

STUDY = "drivecompress-search"


class SearchConfig(BaseModel):
    """The search's budget and proxy. ``quick`` shrinks everything to seconds (tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trials: int = Field(40, ge=1, description="finished trials in the study (all workers together)")
    budget_minutes: float | None = Field(None, gt=0, description="stop this worker after this long")
    proxy_images: int = Field(6000, ge=16)
    proxy_epochs: int = Field(3, ge=1)
    val_images: int = Field(2000, ge=16)
    min_first_epoch_accuracy: float | None = Field(
        None, ge=0, le=1, description="prune a trial below this after epoch 1; default: twice chance (2 / classes). "
        "A fixed 20% pruned every trial on GTSRB: after one proxy epoch of 6,000 images all were at 15-18%")
    calibration_images: int = Field(128, ge=8)
    latency_runs: int = Field(300, ge=10)
    heartbeat_seconds: int = Field(30, ge=1)
    grace_seconds: int = Field(90, ge=2)
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw: Any) -> SearchConfig:
        return cls(**{"proxy_images": 256, "proxy_epochs": 1, "val_images": 128, "calibration_images": 16,
                      "latency_runs": 20, "min_first_epoch_accuracy": 0.0, "heartbeat_seconds": 1,
                      "grace_seconds": 4, "quick": True, **kw})


def sample_spec(trial: Any, num_classes: int, input_norm: dict[str, Any] | None, quick: bool) -> dict[str, Any]:
    """A ResNet-family network from the trial's choices (widths in multiples of 16)."""
    widths = ([16, 32], [16, 32], [32, 48]) if quick else ([16, 32, 48], [32, 48, 64, 96], [48, 64, 96, 128])
    stem = trial.suggest_categorical("stem", [16] if quick else [16, 32])
    first_stride = trial.suggest_categorical("first_stride", [1, 2])
    stages, cin = [], stem
    for i, choices in enumerate(widths):
        w = trial.suggest_categorical(f"width{i}", choices)
        depth = trial.suggest_int(f"depth{i}", 1, 1 if quick else 2)
        stride = first_stride if i == 0 else 2
        stages.append({"stride": stride, "out": w, "mids": [w] * depth, "projection": stride != 1 or cin != w})
        cin = w
    spec = {"arch": "resnet", "stem": stem, "stages": stages, "num_classes": num_classes}
    if input_norm:
        spec["input_norm"] = input_norm
    return spec


class _Objective:
    def __init__(self, teacher: nn.Module, data: Data, out: Path, cfg: SearchConfig, device: torch.device) -> None:
        self.teacher, self.data, self.out, self.cfg, self.device = teacher, data, out, cfg, device
        self.train = data.train.head(cfg.proxy_images, seed=cfg.seed)
        self.val = data.val.head(cfg.val_images, seed=cfg.seed)
        self.calib = deploy_input(data.train.head(cfg.calibration_images, seed=cfg.seed + 1).x)
        self.norm = teacher.spec().get("input_norm") if hasattr(teacher, "spec") else None

    def __call__(self, trial: Any) -> tuple[float, float, float]:
        import optuna

        spec = sample_spec(trial, self.data.num_classes, self.norm, self.cfg.quick)
        model = build_model(copy.deepcopy(spec))
        trial.set_user_attr("spec", spec)
        trial.set_user_attr("macs", count_macs(model, self.data.input_shape))
        tc = TrainConfig(epochs=self.cfg.proxy_epochs, lr=0.05, schedule="cosine", warmup_frac=0.0, batch_size=128,
                         seed=self.cfg.seed, label_smoothing=0.0)
        dist = Distiller(model, self.teacher, DistillConfig(temperature=4.0, alpha=0.9), self.device,
                         self.data.example_input())

        def prune_hopeless(rec: dict[str, float]) -> None:
            floor = self.cfg.min_first_epoch_accuracy
            floor = 2.0 / self.data.num_classes if floor is None else floor
            if rec["epoch"] == 1 and rec["val_acc"] < floor:
                raise optuna.TrialPruned(f"proxy accuracy {rec['val_acc']:.3f} after one epoch")

        t0 = time.perf_counter()
        try:
            result = fit(model, self.train, self.val, tc, self.device, loss_fn=dist.loss_fn(),
                         description=f"trial {trial.number}", on_epoch=prune_hopeless)
        finally:
            dist.close()
        folder = self.out / "trials" / f"{trial.number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        fp32 = export_onnx(model, folder / "fp32.onnx", deploy_input(self.val.x[:32])).path
        int8 = folder / "int8.onnx"
        quantize_ptq(fp32, int8, self.calib, PTQConfig(calibration_images=len(self.calib)))
        lat = side_by_side({"int8": int8}, self.data.input_shape, runs=self.cfg.latency_runs, rounds=1,
                           warmup=10)["int8"]["latency_ms_p50"]
        trial.set_user_attr("train_seconds", round(time.perf_counter() - t0, 1))
        return float(result.best_val_accuracy), float(lat), float(int8.stat().st_size)


def open_study(storage: str, cfg: SearchConfig, create: bool) -> Any:
    """The study in ``storage`` (an RDB URL), with heartbeats so that a killed worker's trial is retried."""
    import optuna
    import sqlalchemy.exc
    from optuna import storages

    # Optuna 4.9 renamed the callback and its keyword; the old names still work but warn
    new_names = "heartbeat_stale_trial_callback" in inspect.signature(storages.RDBStorage).parameters
    retry_kw = "heartbeat_stale_trial_callback" if new_names else "failed_trial_callback"
    retry_cls = getattr(storages, "RetryHeartbeatStaleTrialCallback" if new_names else "RetryFailedTrialCallback")
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; that is not the user's news
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                store = storages.RDBStorage(storage, heartbeat_interval=cfg.heartbeat_seconds,
                                            grace_period=cfg.grace_seconds, **{retry_kw: retry_cls(max_retry=2)})
            break
        except Exception as exc:  # sqlalchemy raises its own types for a bad URL
            # two workers started together on a new file both create the schema; the loser sees the winner's
            # alembic_version row (IntegrityError) or its write lock: the schema is there on the next attempt
            racing = isinstance(exc, sqlalchemy.exc.IntegrityError) or (
                isinstance(exc, sqlalchemy.exc.OperationalError) and "locked" in str(exc))
            if not racing or attempt == 4:
                raise BadInputError(f"--storage {storage}: cannot open ({str(exc).splitlines()[0][:160]})") from exc
            time.sleep(0.5 * (attempt + 1))
    sampler = optuna.samplers.NSGAIISampler(seed=cfg.seed, population_size=8 if cfg.quick else 16)
    if not create:
        try:
            return optuna.load_study(study_name=STUDY, storage=store, sampler=sampler)
        except KeyError as exc:
            raise BadInputError(f"--storage {storage}: holds no search study to resume") from exc
    return optuna.create_study(study_name=STUDY, storage=store, sampler=sampler, load_if_exists=True,
                               directions=["maximize", "minimize", "minimize"])


def search(teacher: nn.Module, data: Data, out: str | Path, cfg: SearchConfig | None = None, *,
           storage: str | None = None, resume: bool = False, device: torch.device | None = None) -> dict[str, Any]:
    """Run (or join) the architecture search; returns the Pareto front re-measured serially, written to
    ``out/pareto.json`` and ``out/report.html``."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    cfg = cfg or SearchConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study = open_study(storage, cfg, create=not resume)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    study.optimize(_Objective(teacher.cpu().eval(), data, out, cfg, device or torch.device("cpu")),
                   n_trials=cfg.trials, timeout=cfg.budget_minutes * 60 if cfg.budget_minutes else None,
                   callbacks=[MaxTrialsCallback(cfg.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))],
                   catch=(RuntimeError,))
    return summarize(study, out, data, cfg, time.perf_counter() - t0, teacher=teacher)


def summarize(study: Any, out: Path, data: Data, cfg: SearchConfig, seconds: float,
              teacher: nn.Module | None = None) -> dict[str, Any]:
    """The Pareto front, its int8 latencies re-measured serially in interleaved rounds (with the teacher's fp32
    ONNX in the same rounds, so each speed-up is a ratio measured side by side), as JSON and HTML."""
    from optuna.trial import TrialState

    front = sorted(study.best_trials, key=lambda t: t.values[1])
    paths = {f"{t.number:04d}": out / "trials" / f"{t.number:04d}" / "int8.onnx" for t in front}
    paths = {k: p for k, p in paths.items() if p.exists()}
    if paths and teacher is not None:
        paths["teacher"] = export_onnx(teacher, out / "teacher_fp32.onnx", deploy_input(data.val.x[:32])).path
    again = side_by_side(paths, data.input_shape, runs=cfg.latency_runs) if paths else {}
    ref = again.get("teacher", {}).get("latency_ms_p50")

    def speedup(t: Any) -> float | None:
        lat = again.get(f"{t.number:04d}", {}).get("latency_ms_p50")
        return round(ref / lat, 3) if ref and lat else None

    rows = [{"trial": t.number, "proxy_accuracy": t.values[0], "int8_latency_ms": t.values[1],
             "int8_latency_ms_serial": again.get(f"{t.number:04d}", {}).get("latency_ms_p50"),
             "speedup_vs_teacher_fp32": speedup(t),
             "int8_bytes": int(t.values[2]), "macs": t.user_attrs.get("macs"), "spec": t.user_attrs.get("spec"),
             "retried_from": t.system_attrs.get("failed_trial")} for t in front]
    states = [t.state for t in study.trials]
    doc = {"trials": {s.name.lower(): states.count(s) for s in TrialState if states.count(s)},
           "worker_seconds": round(seconds, 1), "teacher_fp32_latency_ms": ref, "pareto": rows}
    atomic_write_json(out / "pareto.json", doc)
    _write_html(doc, study, out / "report.html")
    return doc


def _write_html(doc: dict[str, Any], study: Any, path: Path) -> None:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.trials if t.values]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.scatter([t.values[1] for t in done], [100 * t.values[0] for t in done], s=14, alpha=0.5, label="trials")
    front = doc["pareto"]
    ax.plot([r["int8_latency_ms"] for r in front], [100 * r["proxy_accuracy"] for r in front], "o-", color="C3",
            label="Pareto front")
    ax.set_xlabel("int8 batch-1 latency p50, ms (ONNX Runtime)")
    ax.set_ylabel("proxy accuracy, %")
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    img = base64.b64encode(buf.getvalue()).decode()
    def serial(r: dict[str, Any]) -> str:
        if r["int8_latency_ms_serial"] is None:
            return ""
        x = r.get("speedup_vs_teacher_fp32")
        return f"{r['int8_latency_ms_serial']:.3f}" + (f" ({x:.2f}x)" if x else "")

    rows = "".join(
        f"<tr><td>{r['trial']}</td><td>{100 * r['proxy_accuracy']:.2f}%</td><td>{r['int8_latency_ms']:.3f}</td>"
        f"<td>{serial(r)}</td><td>{r['int8_bytes']:,}</td><td>{r['macs'] or 0:,}</td>"
        f"<td><code>{json.dumps(r['spec'])}</code></td></tr>" for r in front)
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>drivecompress search</title><h1>Architecture search</h1>"
        f"<p>Trials: {doc['trials']}; this worker ran {doc['worker_seconds']} s.</p>"
        f"<img src='data:image/png;base64,{img}'><table border=1 cellpadding=3><tr><th>trial</th><th>proxy acc</th>"
        "<th>int8 ms (trial)</th><th>int8 ms re-measured serially (speed-up vs the teacher's fp32, same rounds)</th>"
        "<th>int8 bytes</th><th>MACs</th>"
        f"<th>network</th></tr>{rows}</table>", encoding="utf-8")
