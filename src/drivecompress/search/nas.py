"""Architecture search with Optuna: networks designed for the runtime instead of pruned into it.

Each trial samples a network of one of two families, ResNet basic blocks or MobileNetV2 inverted residuals (stem
width, where the resolution first drops, per-stage widths in multiples of 16 — the CPU's channel blocks —, depths,
and for MobileNetV2 expansion ratios and kernel sizes), trains it briefly with distillation from the teacher
on a subset (the *proxy*), quantizes it to int8 and measures its batch-1 latency on ONNX Runtime on this CPU.
Three objectives — proxy accuracy (max), int8 latency (min), int8 size (min) — go to Optuna's NSGA-II; a trial
whose proxy accuracy after its first epoch is hopeless is pruned.

Workers: every ``drivecompress search`` process pointed at the same storage is a worker on the same study
(an SQLite file on one host, a PostgreSQL/MySQL URL across hosts); Optuna hands out distinct trials. The
storage records heartbeats: a killed worker's trial goes stale, is failed after the grace period and re-queued
with the same parameters (``RetryFailedTrialCallback``), so no sampled architecture is lost. Trial latencies
taken while other workers train are noisy, and one graph's timing drifts by tens of percent within minutes on a
shared VM: each network is timed against a fixed reference int8 graph in the same rounds (search/meter.py), and
the Pareto set is re-measured serially at the end.
"""

from __future__ import annotations

import inspect
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from drivecompress.data.api import Data
from drivecompress.distill.step import DistillConfig, Distiller, teacher_module
from drivecompress.distill.student import student_norm
from drivecompress.errors import BadInputError
from drivecompress.evaluate.complexity import count_macs
from drivecompress.models import build_model
from drivecompress.quant.ptq import PTQConfig
from drivecompress.quant.quantize import quantize
from drivecompress.search.config import SCREEN_MARGIN, SearchConfig
from drivecompress.search.meter import ReferenceMeter, untrained_latency
from drivecompress.search.space import FAMILIES, check_enqueued, sample_spec
from drivecompress.search.summary import previous_doc, study_span, summarize, write_html
from drivecompress.train.loop import TrainConfig, fit
from drivecompress.utils.io import atomic_write_json

STUDY = "drivecompress-search"

SCREEN_CAP = 10


def proxy_train(spec: dict[str, Any], teacher: nn.Module, data: Data, cfg: SearchConfig, device: torch.device,
                on_epoch: Any = None, description: str = "proxy") -> tuple[nn.Module, float]:
    """The search's proxy for one network: built from ``spec``, trained ``cfg.proxy_epochs`` epochs on a seeded
    ``cfg.proxy_images`` subset with distillation from ``teacher``; returns the model and its best accuracy on
    a ``cfg.val_images`` validation subset. Public so that the proxy can be checked against full trainings of
    known networks (benchmarks/bench_proxy.py), not only inside a search.

    The initial weights come from ``cfg.seed`` too (``fit`` seeds only the subset, batch order and
    augmentation): built from whatever the process had drawn before, the same network and seed scored 61.75%
    in a search and 64.05% in bench_proxy, a 2-3 point spread on top of the seed-to-seed one."""
    model = build_model(spec, seed=cfg.seed)
    tc = TrainConfig(epochs=cfg.proxy_epochs, lr=0.05, schedule="cosine", warmup_frac=0.0, batch_size=128,
                     seed=cfg.seed, label_smoothing=0.0)
    dist = Distiller(model, teacher, DistillConfig(temperature=4.0, alpha=0.9), device, data.example_input())
    try:
        result = fit(model, data.train.head(cfg.proxy_images, seed=cfg.seed), data.val.head(cfg.val_images,
                     seed=cfg.seed), tc, device, loss_fn=dist.loss_fn(), description=description, on_epoch=on_epoch)
    finally:
        dist.close()
    return model, float(result.best_val_accuracy)


class _Objective:
    def __init__(self, teacher: nn.Module, data: Data, out: Path, cfg: SearchConfig, device: torch.device) -> None:
        self.teacher, self.data, self.out, self.cfg, self.device = teacher, data, out, cfg, device
        # the finalists' recipes give their students this normalization too (distill/student.py student_spec)
        self.norm = student_norm(teacher, data.input_shape[0])
        # Optuna's timeout is checked only between trials; a full-size proxy trial takes minutes, so the
        # budget is also checked after every proxy epoch (see after_epoch)
        self.deadline = time.monotonic() + cfg.budget_minutes * 60 if cfg.budget_minutes else None
        self.meter = ReferenceMeter(data, cfg.latency_runs, out, self.norm, seed=cfg.seed)

    def __call__(self, trial: Any) -> tuple[float, float, float]:
        import optuna

        spec = sample_spec(trial, self.data.num_classes, self.norm, self.cfg.quick, self.cfg.families)
        trial.set_user_attr("spec", spec)
        trial.set_user_attr("macs", count_macs(build_model(spec), self.data.input_shape))
        if self.cfg.max_latency_ms is not None:
            self._screen(trial, spec)

        def after_epoch(rec: dict[str, float]) -> None:
            """Prune the trial when the worker's budget ran out, or when it is hopeless after epoch 1."""
            if self.deadline is not None and time.monotonic() > self.deadline:
                trial.set_user_attr("stopped_by_budget", int(rec["epoch"]))
                raise optuna.TrialPruned(f"--budget-minutes ran out after proxy epoch {rec['epoch']}")
            floor = self.cfg.min_first_epoch_accuracy
            floor = 2.0 / self.data.num_classes if floor is None else floor
            if rec["epoch"] == 1 and rec["val_acc"] < floor:
                raise optuna.TrialPruned(f"proxy accuracy {rec['val_acc']:.3f} after one epoch")

        t0 = time.perf_counter()
        model, accuracy = proxy_train(spec, self.teacher, self.data, self.cfg, self.device, on_epoch=after_epoch,
                                      description=f"trial {trial.number}")
        folder = self.out / "trials" / f"{trial.number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        int8 = folder / "int8.onnx"
        quantize(model, self.data, int8, PTQConfig(calibration_images=self.cfg.calibration_images),
                 seed=self.cfg.seed + 1)
        lat = self.meter(int8)
        _record(trial, "int8", lat)
        trial.set_user_attr("train_seconds", round(time.perf_counter() - t0, 1))
        return accuracy, float(lat["ms"]), float(int8.stat().st_size)

    def _screen(self, trial: Any, spec: dict[str, Any]) -> None:
        """Time the network int8 before training it: latency depends on the graph, not on the weights, so a
        network over ``max_latency_ms`` is pruned in seconds instead of after minutes of proxy training (14 of
        the 19 networks runs/search3h trained were over its 10x budget). Marked ``screened_ms``: it does not
        count as one of ``trials``."""
        import optuna

        limit = self.cfg.max_latency_ms * (1 + SCREEN_MARGIN)
        lat = untrained_latency(spec, self.data, self.meter, self.cfg.calibration_images, seed=self.cfg.seed + 1,
                                confirm_over=limit)
        _record(trial, "untrained_int8", lat)
        if lat["first_ms"] > limit:  # timed twice: keep the first figure too
            trial.set_user_attr("untrained_int8_first_latency_ms", round(lat["first_ms"], 4))
        if lat["ms"] > limit:
            trial.set_user_attr("screened_ms", round(lat["ms"], 4))
            raise optuna.TrialPruned(f"int8 {lat['ms']:.3f} ms untrained, over --max-latency-ms "
                                     f"{self.cfg.max_latency_ms}")


def _record(trial: Any, prefix: str, lat: dict[str, float]) -> None:
    """The latency the search uses and what it came from (the graph's own p50, its ratio to the reference and
    the reference's quiet latency at the time), so that a surprising figure can be traced."""
    trial.set_user_attr(f"{prefix}_latency_ms", round(lat["ms"], 4))
    trial.set_user_attr(f"{prefix}_latency_ms_raw", round(lat["raw_ms"], 4))
    trial.set_user_attr(f"{prefix}_reference_ratio", round(lat["ratio"], 4))
    trial.set_user_attr("reference_quiet_ms", round(lat["reference_quiet_ms"], 4))


def trained_trials(study: Any) -> tuple[int, int]:
    """(finished trials that count toward ``trials``, trials screened out by latency before training)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    screened = sum(1 for t in done if "screened_ms" in t.user_attrs)
    return len(done) - screened, screened


def _stop_when_enough(cfg: SearchConfig) -> Any:
    """Optuna's MaxTrialsCallback counts every pruned trial; a latency-screened one took seconds and trained
    nothing, so it does not count. A budget that (almost) no network meets stops after SCREEN_CAP x trials
    screened samples instead of sampling forever."""
    def callback(study: Any, trial: Any) -> None:
        trained, screened = trained_trials(study)
        if trained >= cfg.trials:
            study.stop()
        elif screened >= SCREEN_CAP * cfg.trials:
            warnings.warn(f"--max-latency-ms {cfg.max_latency_ms}: {screened} sampled networks were slower; "
                          f"the search stopped with {trained} trained", stacklevel=1)
            study.stop()

    return callback


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
    # a worker joining a study gets its own random stream: with the study's seed, every worker's NSGA-II drew the
    # same first generation, so two workers trained each network twice (checked on Optuna 4: a second worker
    # repeated every trial of the first). The worker that creates the study keeps cfg.seed: the same command
    # finds the same front (two runs of one command here gave identical trials). Who created it is decided by
    # the storage (the study name is unique), not by whether trials exist yet: two workers started together on
    # a new study both saw it empty and both kept the seed.
    if create:
        try:
            study = optuna.create_study(study_name=STUDY, storage=store, sampler=_sampler(cfg, cfg.seed),
                                        directions=["maximize", "minimize", "minimize"])
            study.set_user_attr("families", list(cfg.families))  # _check_families holds later workers to them
            return study
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another worker created it first: join it
    try:
        return optuna.load_study(study_name=STUDY, storage=store, sampler=_sampler(cfg, secrets.randbelow(2**31)))
    except KeyError as exc:
        raise BadInputError(f"--storage {storage}: holds no search study to resume") from exc


def _sampler(cfg: SearchConfig, seed: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8 if cfg.quick else 16)


def _check_families(study: Any, cfg: SearchConfig, storage: str) -> None:
    """A study keeps the families it was created with: a trial that suggests ``family`` from other choices
    fails inside Optuna. Recorded by the creator right after creating it (open_study), so a worker that joins
    an empty study without them waits a moment for them; a study from before families existed searched both."""
    had, deadline = study.user_attrs.get("families"), time.monotonic() + 5
    while had is None and not study.get_trials(deepcopy=False) and time.monotonic() < deadline:
        time.sleep(0.2)
        had = study.user_attrs.get("families")
    if had is None and not study.get_trials(deepcopy=False):  # its creator died before writing them
        study.set_user_attr("families", list(cfg.families))
        return
    had = had or list(FAMILIES)
    if sorted(had) != sorted(cfg.families):
        raise BadInputError(f"--storage {storage}: the study searches families {', '.join(had)}; a worker or "
                            f"resume must search the same (got {', '.join(cfg.families)})")


def search(teacher: nn.Module | str | Path, data: Data, out: str | Path, cfg: SearchConfig | None = None, *,
           storage: str | None = None, resume: bool = False, device: torch.device | None = None) -> dict[str, Any]:
    """Run (or join) the architecture search; returns the Pareto front re-measured serially, written to
    ``out/pareto.json`` and ``out/report.html``. With ``cfg.finalists`` the best candidates are then trained
    fully, quantized and gated (``search/finalize.py``); a study that already has ``cfg.trials`` finished
    trials goes straight to that phase (``--resume --finalists K`` after the workers are done).

    ``teacher``: a module, or a MODEL (checkpoint folder, ``.onnx`` file, ``"baseline"``): an ONNX graph
    teaches through ONNX Runtime (logits only) and is the latency reference as it is."""
    import optuna
    from optuna.trial import TrialState

    cfg = cfg or SearchConfig()
    if not isinstance(teacher, nn.Module):
        from drivecompress.api import as_model

        teacher = teacher_module(as_model(teacher).check_against(data))
    check_enqueued(cfg.enqueue, cfg.quick, cfg.families)  # before anything is written
    if cfg.final_teacher:  # refused now, not after hours of proxy trials
        from drivecompress.pipeline.runner import load_teachers

        load_teachers(cfg.final_teacher, teacher, data, label="--final-teacher")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous = previous_doc(out)  # read before this call's summary replaces it
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study = open_study(storage, cfg, create=not resume)
    _check_families(study, cfg, storage)
    for params in cfg.enqueue:  # a second worker or a resume finds them queued or done: not queued twice
        study.enqueue_trial(params, skip_if_exists=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dev = device or torch.device("cpu")
    t0 = time.perf_counter()
    if trained_trials(study)[0] < cfg.trials:
        study.optimize(_Objective(teacher.cpu().eval(), data, out, cfg, dev),
                       n_trials=cfg.trials * (SCREEN_CAP + 1) if cfg.max_latency_ms else cfg.trials,
                       timeout=cfg.budget_minutes * 60 if cfg.budget_minutes else None,
                       callbacks=[_stop_when_enough(cfg)], catch=(RuntimeError,))
    # the proxy phase over every call and worker (a resumed search adds to it; a finalize-only call keeps it)
    phases = {"search_s": study_span(study)}
    doc = summarize(study, out, data, cfg, time.perf_counter() - t0, teacher=teacher, phases=phases)
    if cfg.finalists:
        from drivecompress.search.finalize import finalize

        recorded = {int(r["trial"]): float(r["seconds"]) for r in previous.get("finalists") or [] if r.get("seconds")}
        proxy = {t.number: t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        doc.update(finalize(teacher.cpu().eval(), data, out, doc["pareto"], cfg, dev, recorded, proxy))
        # the finalists' own times: one read back by a resumed phase keeps the time its training took
        phases["finalists_s"] = round(sum(r["seconds"] for r in doc["finalists"]), 1)
        atomic_write_json(out / "pareto.json", doc)
        write_html(doc, study, out / "report.html")
    return doc
