"""What a search call writes: the Pareto front re-measured serially, the phase times (kept across resumed calls)
and ``pareto.json`` / ``report.html``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch.nn as nn

from drivecompress.data.api import Data
from drivecompress.data.transforms import deploy_input
from drivecompress.distill.step import OnnxTeacher
from drivecompress.evaluate.latency import side_by_side
from drivecompress.export.onnx import export_onnx
from drivecompress.search.config import SearchConfig
from drivecompress.search.meter import reference_ratio
from drivecompress.utils.io import atomic_write_json


def study_span(study: Any) -> float:
    """Seconds during which at least one trial of the study ran (the union of the trials' start-to-end
    intervals, as the storage recorded them): the proxy phase's time over every call and worker, without the
    idle time between a search and its resumption and without counting two parallel workers twice."""
    spans = sorted((t.datetime_start, t.datetime_complete) for t in study.get_trials(deepcopy=False)
                   if t.datetime_start and t.datetime_complete)
    total, end = 0.0, None
    for start, stop in spans:
        if end is None or start > end:
            total, end = total + (stop - start).total_seconds(), stop
        elif stop > end:
            total, end = total + (stop - end).total_seconds(), stop
    return round(total, 1)


def previous_doc(out: Path) -> dict[str, Any]:
    """The ``pareto.json`` an earlier call wrote ({} if none): a resumed call keeps the times it recorded."""
    try:
        doc = json.loads((out / "pareto.json").read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def summarize(study: Any, out: Path, data: Data, cfg: SearchConfig, seconds: float,
              teacher: nn.Module | None = None, phases: dict[str, float] | None = None) -> dict[str, Any]:
    """The Pareto front, its int8 latencies re-measured serially in interleaved rounds (with the teacher's fp32
    ONNX in the same rounds, so each speed-up is a ratio measured side by side), as JSON and HTML."""
    from optuna.trial import TrialState

    front = sorted(study.best_trials, key=lambda t: t.values[1])
    paths = {f"{t.number:04d}": out / "trials" / f"{t.number:04d}" / "int8.onnx" for t in front}
    paths = {k: p for k, p in paths.items() if p.exists()}
    if paths and isinstance(teacher, OnnxTeacher):  # the user's own graph is the reference, as it is
        paths["teacher"] = teacher.path
    elif paths and teacher is not None:
        paths["teacher"] = export_onnx(teacher, out / "teacher_fp32.onnx", deploy_input(data.val.x[:32])).path
    if paths and (out / "latency_reference.onnx").is_file():  # written by the workers (meter.py)
        paths["reference"] = out / "latency_reference.onnx"
    t0 = time.perf_counter()
    again = side_by_side(paths, data.input_shape, runs=2 * cfg.latency_runs, rounds=10) if paths else {}
    phases = phases if phases is not None else {}
    phases["remeasure_s"] = round(time.perf_counter() - t0, 1)
    ref = again.get("teacher", {}).get("latency_ms_p50")

    def speedup(t: Any) -> float | None:
        lat = again.get(f"{t.number:04d}", {}).get("latency_ms_p50")
        return round(ref / lat, 3) if ref and lat else None

    rows = [{"trial": t.number, "proxy_accuracy": t.values[0], "int8_latency_ms": t.values[1],
             "int8_latency_ms_serial": _steady(again, f"{t.number:04d}"),
             "int8_latency_ms_serial_raw": again.get(f"{t.number:04d}", {}).get("latency_ms_p50"),
             "int8_latency_ms_raw": t.user_attrs.get("int8_latency_ms_raw"),  # before the reference (meter.py)
             "speedup_vs_teacher_fp32": speedup(t),
             "int8_bytes": int(t.values[2]), "macs": t.user_attrs.get("macs"), "spec": t.user_attrs.get("spec"),
             "retried_from": t.system_attrs.get("failed_trial")} for t in front]
    states = [t.state for t in study.trials]
    counts = {s.name.lower(): states.count(s) for s in TrialState if states.count(s)}
    screened = sum(1 for t in study.trials if "screened_ms" in t.user_attrs)
    if screened:  # pruned before training, by --max-latency-ms: seconds each, not among the trials asked for
        counts["screened_by_latency"] = screened
    doc = {"trials": counts,
           "families": study.user_attrs.get("families") or list(cfg.families),
           "worker_seconds": round(seconds, 1), "phases": phases, "teacher_fp32_latency_ms": ref,
           "latency_trial_vs_serial": _latency_error(rows), "pareto": rows}
    atomic_write_json(out / "pareto.json", doc)
    write_html(doc, study, out / "report.html")
    return doc


def _steady(again: dict[str, dict[str, Any]], key: str) -> float | None:
    """A re-measured graph's latency as the search counts it (meter.py): its median per-round ratio to the
    reference int8 graph times the reference's quietest round, so that the finalists are picked against
    ``max_latency_ms`` on the same footing as the screen; its raw p50 when the study has no reference graph
    (a search from before 2026-11-29)."""
    if key not in again:
        return None
    if "reference" not in again:
        return again[key]["latency_ms_p50"]
    return round(reference_ratio(again, key) * min(again["reference"]["round_medians_ms"]), 5)


def _latency_error(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How far the latency a trial measured (possibly while other workers trained) is from the serial
    re-measurement: the search ranks by the former, so its error is the latency model's error."""
    pairs = [(r["int8_latency_ms"], r["int8_latency_ms_serial"]) for r in rows if r["int8_latency_ms_serial"]]
    if not pairs:
        return None
    rel = [abs(a - b) / b for a, b in pairs]
    return {"n": len(pairs), "median_abs_error_pct": round(100 * statistics.median(rel), 1),
            "max_abs_error_pct": round(100 * max(rel), 1)}


def write_html(doc: dict[str, Any], study: Any, path: Path) -> None:
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
    err = doc.get("latency_trial_vs_serial")
    err_html = (f"<p>Latency used by the search (measured in each trial) vs re-measured serially: median error "
                f"{err['median_abs_error_pct']}%, max {err['max_abs_error_pct']}% over {err['n']} front members "
                "(no lookup table: every candidate itself is measured).</p>" if err else "")
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>drivecompress search</title><h1>Architecture search</h1>"
        f"<p>Trials: {doc['trials']}; this worker ran {doc['worker_seconds']} s. Phases (s): "
        f"{json.dumps(doc.get('phases', {}))}.</p>{err_html}{_finalists_html(doc)}"
        f"<img src='data:image/png;base64,{img}'><table border=1 cellpadding=3><tr><th>trial</th><th>proxy acc</th>"
        "<th>int8 ms (trial)</th><th>int8 ms re-measured serially (speed-up vs the teacher's fp32, same rounds)</th>"
        "<th>int8 bytes</th><th>MACs</th>"
        f"<th>network</th></tr>{rows}</table>", encoding="utf-8")


def _finalists_html(doc: dict[str, Any]) -> str:
    rows = doc.get("finalists")
    if not rows:
        return ""
    rho = doc.get("spearman_proxy_vs_full")
    body = "".join(
        f"<tr><td>{r['trial']}</td><td>{100 * r['proxy_accuracy']:.2f}%</td>"
        f"<td>{100 * (r['accuracy'] or 0):.2f}% ({r['accuracy_delta_points'] or 0:+.2f})</td>"
        f"<td>{r['speedup'] or 0:.2f}x</td><td>{r['size_reduction'] or 0:.2f}x</td>"
        f"<td>{'passed' if r['gate_passed'] else 'refused (' + str(len(r['violations'])) + ')'}</td>"
        f"<td>{r['seconds']}</td><td><a href='finalists/{r['trial']:04d}/run/report.html'>report</a>, "
        f"<a href='finalists/{r['trial']:04d}/recipe.yaml'>recipe</a></td></tr>" for r in rows)
    return ("<h2>Finalists: trained fully, int8 (QAT), gated</h2><p>Spearman rank correlation of proxy accuracy "
            f"and full-training accuracy: {'n/a (fewer than 3 finalists)' if rho is None else f'{rho:.2f}'}; "
            f"chosen: {doc.get('chosen')}.</p><table border=1 cellpadding=3><tr><th>trial</th><th>proxy</th>"
            "<th>full accuracy (vs teacher)</th><th>int8 speed-up</th><th>smaller</th><th>gate</th><th>s</th>"
            f"<th>run</th></tr>{body}</table>")
