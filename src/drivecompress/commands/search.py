"""``drivecompress search``: architecture search with Optuna, int8 latency measured on this CPU."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drivecompress.commands.base import command


@command("search", "Search network architectures (ResNet and MobileNetV2 families) for this CPU: each trial "
         "trains a sampled network briefly with distillation from --teacher (the proxy), quantizes it to int8 and "
         "measures its batch-1 latency on ONNX Runtime; Optuna's NSGA-II trades proxy accuracy, latency and size. "
         "Several processes given the same --storage are workers on one study (SQLite file on one host, "
         "PostgreSQL URL across hosts); a killed worker's trial is retried. Writes DIR/pareto.json and "
         "DIR/report.html (Pareto front, latencies re-measured serially).")
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default="baseline",
                   help="checkpoint folder, .onnx file (teaches through ONNX Runtime: logits only), 'baseline' "
                        "(default) or 'searched'")
    p.add_argument("--out", required=True, type=Path, help="search folder (trials, study.db, report)")
    p.add_argument("--trials", type=int, help="finished trials in the study, all workers together (default 40)")
    p.add_argument("--budget-minutes", type=float,
                   help="stop this worker after M minutes (checked after every proxy epoch: a trial still training "
                        "then is pruned and marked stopped_by_budget)")
    p.add_argument("--storage", help="Optuna RDB URL shared by the workers (default sqlite:///DIR/study.db)")
    p.add_argument("--resume", action="store_true", help="join/continue the existing study (it must exist)")
    p.add_argument("--finalists", type=int, metavar="K",
                   help="then train the K Pareto candidates with the best proxy accuracy fully (distillation + QAT), "
                        "measure and gate them like compress (DIR/finalists/NNNN/run); the fastest passed one's "
                        "recipe is written to DIR/recipe.yaml. With --resume and --trials at most the study's finished "
                        "trials: this phase only")
    p.add_argument("--min-speedup", type=float, metavar="X",
                   help="finalists only among candidates at least X times faster (int8) than the teacher's fp32, "
                        "as re-measured serially after the proxy phase. Leave a margin of a few percent: the "
                        "fully trained finalist is measured again later (1%% slower here, 10.00x -> 9.91x) and "
                        "the teacher's own timing moved 2.7%% between two runs")
    p.add_argument("--max-latency-ms", type=float, metavar="MS",
                   help="the latency budget, int8 batch-1, one thread, this machine, on a quiet machine (every "
                        "network is timed against a fixed reference int8 graph in the same rounds and counted as "
                        "that ratio x the reference's quietest timing; DIR/latency_reference.onnx): a sampled "
                        "network is timed untrained first and not trained if over MS by more than 10%% (seconds "
                        "instead of minutes per such network; they do not count toward --trials), and finalists "
                        "are only candidates at most MS as re-measured serially. Unlike --min-speedup it does not "
                        "move with the teacher's own timing. Both may be given")
    p.add_argument("--final-epochs", type=int, metavar="N", help="distillation epochs of a finalist (default 30)")
    p.add_argument("--final-swa-epochs", type=int, metavar="N",
                   help="of those, the last N weight-averaged (default a quarter, at most 8; the shipped searched/ "
                        "averaged 24 of 120)")
    p.add_argument("--final-teacher", action="append", default=[], metavar="MODEL",
                   help="a checkpoint folder or .onnx file that teaches the finalists instead of --teacher "
                        "(repeatable: several teach as one ensemble, the mean of their logits); the finalists are "
                        "still measured and gated against --teacher")
    p.add_argument("--proxy-epochs", type=int, metavar="N",
                   help="proxy training epochs per trial (default 3; 6 with --proxy-images 12000 ranked two fully "
                   "trained students correctly where 3 did not, at about 4x the time: README)")
    p.add_argument("--proxy-images", type=int, metavar="N", help="proxy training subset per trial (default 6000)")
    p.add_argument("--enqueue", action="append", default=[], metavar="JSON",
                   help="a network to try first, as the search's parameters (repeatable), e.g. the shipped "
                        "student's layout: '{\"family\": \"resnet\", \"stem\": 16, \"first_stride\": 2, "
                        "\"full_res_block\": false, \"width0\": 48, \"depth0\": 1, \"width1\": 64, "
                        "\"depth1\": 1, \"width2\": 96, \"depth2\": 1}'")
    p.add_argument("--families", metavar="LIST",
                   help="network families searched, comma-separated: resnet, mobilenetv2 (default both; a study "
                        "keeps its families). resnet alone: on this CPU the MobileNet finalists trained 2-3x "
                        "slower for less accuracy")
    p.add_argument("--seed", type=int, metavar="N",
                   help="seed of the new study's sampler and of the proxy's training subset (default 0): the same "
                        "command and seed find the same trials; workers joining a study draw their own")
    p.add_argument("--quick", action="store_true", help="tiny space, tiny proxy: seconds per trial (tests)")


@_args.bind
def _run(a: argparse.Namespace) -> dict[str, Any]:
    from drivecompress.api import as_data
    from drivecompress.commands.base import config_from_flags
    from drivecompress.search.nas import SearchConfig, search
    from drivecompress.utils.device import select_device

    if a.families is not None:  # "resnet,mobilenetv2"; the config names a bad or repeated one under the flag
        a.families = [f.strip() for f in a.families.split(",") if f.strip()]
    cfg = config_from_flags(SearchConfig.quick_config if a.quick else SearchConfig, a,
                            ("trials", "budget_minutes", "finalists", "min_speedup", "max_latency_ms", "final_epochs",
                             "final_swa_epochs", "proxy_epochs", "proxy_images", "families", "seed"))
    if a.enqueue:
        cfg = cfg.model_copy(update={"enqueue": [_params(j) for j in a.enqueue]})
    if a.final_teacher:
        cfg = cfg.model_copy(update={"final_teacher": list(a.final_teacher)})
    # search() loads and checks the MODEL itself (an .onnx teaches through ONNX Runtime), as for an API caller
    doc = search(a.teacher, as_data(a.data), a.out, cfg, storage=a.storage, resume=a.resume,
                 device=select_device(a.device))
    best = max(doc["pareto"], key=lambda r: r["proxy_accuracy"]) if doc["pareto"] else {}
    res = {"report": str(a.out / "report.html"), "trials": doc["trials"], "pareto_size": len(doc["pareto"]),
           "phases_s": doc.get("phases"),
           "most_accurate": {k: best.get(k) for k in ("trial", "proxy_accuracy", "int8_latency_ms", "int8_bytes")}}
    if "finalists" in doc:
        res["finalists"] = [{k: r[k] for k in ("trial", "accuracy", "speedup", "size_reduction", "gate_passed")}
                            for r in doc["finalists"]]
        res["spearman_proxy_vs_full"], res["chosen"] = doc["spearman_proxy_vs_full"], doc["chosen"]
    return res


def _params(text: str) -> dict[str, Any]:
    """One ``--enqueue`` value: a JSON object of the search's parameter names."""
    import json

    from drivecompress.errors import BadInputError

    try:
        params = json.loads(text)
    except ValueError as exc:
        raise BadInputError(f"--enqueue {text!r}: not JSON ({exc})") from exc
    if not isinstance(params, dict) or not params:
        raise BadInputError(f"--enqueue {text!r}: expected a JSON object of the search's parameters")
    return params
