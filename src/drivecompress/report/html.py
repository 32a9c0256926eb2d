"""report.html: summary table with ratios, trade-off plots, per-class recall deltas, gate, machine, recipe."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import yaml

from drivecompress.pipeline.gate import noise_sentence
from drivecompress.report.plots import recall_deltas, tradeoff
from drivecompress.utils.io import atomic_write_text

ROWS = [
    ("accuracy", "top-1 accuracy", lambda v: f"{100 * v:.2f}%"),
    ("min_safety_critical_recall", "min safety-critical recall", lambda v: f"{100 * v:.2f}%"),
    ("ece", "expected calibration error", lambda v: f"{v:.4f}"),
    ("params", "parameters", lambda v: f"{v:,}"),
    ("macs", "MACs", lambda v: f"{v:,}"),
    ("size_bytes", "size on disk", lambda v: f"{v / 1024:,.1f} KiB"),
    ("latency_ms_p50", "latency p50 (batch 1, 1 thread, side by side)", lambda v: f"{v:.3f} ms"),
    ("latency_ms_p99", "latency p99 (batch 1, 1 thread, side by side)", lambda v: f"{v:.3f} ms"),
    ("throughput_ips", "throughput (batch 64)", lambda v: f"{v:,.0f} img/s"),
    ("corruption_accuracy", "corruption accuracy", lambda v: f"{100 * v:.2f}%"),
    ("adversarial_accuracy", "adversarial accuracy", lambda v: f"{100 * v:.2f}%"),
]
LOWER_IS_BETTER = {"ece", "params", "macs", "size_bytes", "latency_ms_p50", "latency_ms_p99"}

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.pass{color:#1e8449}.fail{color:#c0392b}
.safety{background:#fdecea}pre{background:#f7f7f7;padding:1em;overflow:auto}img{max-width:100%}div>img{max-width:48%}"""


# Marks the body once loaded, with the number of embedded images that failed to decode (browser test hook).
LOAD_CHECK = ("window.addEventListener('load',()=>{const b=[...document.images].filter(i=>!i.naturalWidth).length;"
              "document.body.dataset.brokenImages=b;document.body.dataset.loaded='1';});")


def _ratio(key: str, b: Any, f: Any) -> str:
    if not isinstance(b, int | float) or not isinstance(f, int | float):
        return ""
    if key in ("accuracy", "min_safety_critical_recall", "corruption_accuracy", "adversarial_accuracy"):
        return f"{100 * (f - b):+.2f} pts"
    if not b or not f:
        return ""
    r = b / f if key in LOWER_IS_BETTER else f / b
    if abs(r - 1) < 0.005:
        return "same"
    return f"{r:.2f}x {'better' if r > 1 else 'worse'}"


def side_by_side_metrics(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Baseline and final metrics with the speed figures of the interleaved side-by-side measurement where it
    was taken: one speed-up figure per page (the per-stage figures were taken minutes apart and drift)."""
    sbs = report.get("side_by_side_latency") or {}
    return report["baseline"] | sbs.get("baseline", {}), report["final"] | sbs.get("final", {})


def summary_table(base: dict[str, Any], final: dict[str, Any]) -> str:
    rows = ['<table id="summary"><tr><th>metric</th><th>baseline</th><th>final</th><th>change</th></tr>']
    for key, label, fmt in ROWS:
        b, f = base.get(key), final.get(key)
        if b is None and f is None:
            continue
        show = lambda v, fmt=fmt: fmt(v) if v is not None else "not measured"  # noqa: E731
        rows.append(f"<tr><td>{label}</td><td>{show(b)}</td><td>{show(f)}</td><td>{_ratio(key, b, f)}</td></tr>")
    return "\n".join(rows) + "</table>"


def steps_table(report: dict[str, Any]) -> str:
    rows = ["<table><tr><th>stage</th><th>type</th><th>seconds</th><th>accuracy</th><th>MACs</th>"
            "<th>size KiB</th><th>p50 ms</th><th>img/s</th></tr>"]
    stages = [("input model", "-", 0, report["baseline"])] + [
        (s["name"], s["type"], s["seconds"], s["metrics"]) for s in report["steps"]]
    for name, kind, sec, m in stages:
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{kind}</td><td>{sec}</td><td>{100 * m['accuracy']:.2f}%"
                    f"</td><td>{_cell('macs', m.get('macs'))}</td><td>{m['size_bytes'] / 1024:,.1f}</td>"
                    f"<td>{m['latency_ms_p50']:.3f}</td><td>{m['throughput_ips']:,.0f}</td></tr>")
    return "\n".join(rows) + "</table>"


def class_info(report: dict[str, Any]) -> tuple[list[str], frozenset[int]]:
    """Class names and the safety-critical set the run used (from the data, recorded in the report)."""
    k = len(report["baseline"]["per_class_recall"])
    info = report.get("classes") or {}
    return list(info.get("names") or [str(c) for c in range(k)]), frozenset(info.get("safety_critical", []))


def safety_table(base: dict[str, Any], final: dict[str, Any], names: list[str], safety: frozenset[int]) -> str:
    rows = ["<table><tr><th>class</th><th>baseline recall</th><th>final recall</th><th>change</th></tr>"]
    for c in range(len(base["per_class_recall"])):
        b, f = base["per_class_recall"][c], final["per_class_recall"][c]
        cls = ' class="safety"' if c in safety else ""
        rows.append(f"<tr{cls}><td>{c} {html.escape(names[c])}{' ⚠' if cls else ''}</td>"
                    f"<td>{100 * b:.2f}%</td><td>{100 * f:.2f}%</td><td>{100 * (f - b):+.2f}</td></tr>")
    return "\n".join(rows) + "</table>"


def robustness_table(base: dict[str, Any], final: dict[str, Any]) -> str:
    """Mean accuracy over severities 1-5 per corruption, baseline vs final: what compression cost in safety."""
    if "robustness" not in base or "robustness" not in final:
        return ""
    rows = ["<h2>Robustness</h2><table><tr><th>corruption (mean of severities 1-5)</th><th>baseline</th>"
            "<th>final</th><th>change</th></tr>"]
    bc, fc = base["robustness"]["corruptions"], final["robustness"]["corruptions"]
    for name in sorted(bc, key=lambda n: sum(fc[n]) - sum(bc[n])):
        b, f = sum(bc[name]) / len(bc[name]), sum(fc[name]) / len(fc[name])
        rows.append(f"<tr><td>{name}</td><td>{100 * b:.2f}%</td><td>{100 * f:.2f}%</td>"
                    f"<td>{100 * (f - b):+.2f}</td></tr>")
    adv = final["robustness"]["adversarial"]
    return "\n".join(rows) + f"</table><p>Adversarial examples: {html.escape(adv.get('method', ''))}.</p>"


def _cell(key: str, v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "yes" if v is True else "" if v is None else "no"
    if isinstance(v, float) and ("accuracy" in key or key in ("target", "sparsity")):
        return f"{100 * v:.2f}%"
    if isinstance(v, int) and v >= 10_000:
        return f"{v:,}"
    return html.escape(f"{v:.4g}" if isinstance(v, float) else str(v))


def step_details(report: dict[str, Any]) -> str:
    """What happened inside each step: per-iteration accuracy of pruning schedules, real per-layer sparsity,
    layers kept in float. The numbers come from the step's own notes in report.json."""
    out = []
    for s in report["steps"]:
        notes, parts = s.get("notes") or {}, []
        hist = [h for h in notes.get("history", []) if isinstance(h, dict)]
        if hist:
            keys = list(dict.fromkeys(k for h in hist for k in h))
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{_cell(k, h.get(k))}</td>" for k in keys) + "</tr>" for h in hist)
                + "</table>")
        if "conv_sparsity" in notes:
            parts.append(f"<p>Convolution weights that are zero: <b>{100 * notes['conv_sparsity']:.2f}%</b></p>")
        if notes.get("layer_sparsity"):
            parts.append("<table><tr><th>layer</th><th>zero weights</th></tr>" + "".join(
                f"<tr><td>{html.escape(k)}</td><td>{100 * v:.2f}%</td></tr>"
                for k, v in notes["layer_sparsity"].items()) + "</table>")
        if isinstance(notes.get("archive"), dict):
            parts.append(archive_table(report, s))
        if "kept_float" in notes:
            kept = ", ".join(notes["kept_float"]) or "none"
            parts.append(f"<p>Layers kept in float: {html.escape(kept)}</p>")
        if notes.get("kept_float_ops"):
            parts.append(f"<p>Operator types kept in float (every node of the type): "
                         f"{html.escape(', '.join(notes['kept_float_ops']))}</p>")
        if notes.get("sensitivity_steps"):
            parts.append("<table><tr><th>kept in float</th><th>validation accuracy</th></tr>" + "".join(
                f"<tr><td>{html.escape(str(st['kept_float']))}</td><td>{100 * st['accuracy']:.2f}%</td></tr>"
                for st in notes["sensitivity_steps"]) + "</table>")
        if parts:
            out.append(f"<h3>{html.escape(s['name'])} ({html.escape(s['type'])})</h3>" + "".join(parts))
    return ("<h2>Inside each step</h2>" + "\n".join(out)) if out else ""


def archive_table(report: dict[str, Any], step: dict[str, Any]) -> str:
    """Deep Compression's size table (per layer and in total: fp32 -> pruned -> shared -> Huffman) with the
    test accuracy after each stage: the baseline, the step before sharing, the model decoded from the archive."""
    a = step["notes"]["archive"]
    i = report["steps"].index(step)
    before = report["steps"][i - 1]["metrics"] if i > 0 else report["baseline"]
    cols = ("params", "nonzero", "bits", "fp32_bytes", "pruned_bytes", "shared_bytes", "huffman_bytes")
    rows = [[html.escape(r["layer"])] + [f"{r[c]:,}" for c in cols] for r in a["layers"]]
    t = a["total"]
    rows.append(["<b>all shared layers</b>"] + [f"<b>{t[c]:,}</b>" if c in t else "" for c in cols])
    acc = (f"<p>Test accuracy: fp32 {100 * report['baseline']['accuracy']:.2f}% &rarr; before sharing "
           f"{100 * before['accuracy']:.2f}% &rarr; decoded from the archive {100 * step['metrics']['accuracy']:.2f}% "
           "(Huffman coding is lossless). ")
    onnx = (f"Archive {a['archive_bytes']:,} B (all tensors, structure, checksum) vs the fp32 ONNX "
            f"{a['fp32_onnx_bytes']:,} B: <b>{a['reduction_vs_fp32_onnx']}x smaller</b>; "
            if "fp32_onnx_bytes" in a else f"Archive {a['archive_bytes']:,} B; ")
    return (acc + onnx + f"decoded in {a.get('decode_seconds', float('nan')):.2f} s.</p>"
            "<table><tr><th>layer</th>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def targets_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = ["<h2>Targets</h2><table><tr><th>target</th><th>achieved</th><th>verdict</th></tr>"]
    for r in rows:
        verdict = '<span class="pass">met</span>' if r["met"] else f'<span class="fail">short: {r["shortfall"]}</span>'
        out.append(f"<tr><td>{html.escape(r['target'])}</td><td>{r['achieved']}</td><td>{verdict}</td></tr>")
    return "\n".join(out) + "</table>"


def side_by_side_line(report: dict[str, Any]) -> str:
    """The latencies the ratios use: baseline and final measured in interleaved rounds in one run."""
    sbs = report.get("side_by_side_latency")
    if not sbs:
        return ""
    b, f = sbs["baseline"], sbs["final"]
    st = report.get("side_by_side_stability") or {}
    quiet = ""
    if st.get("round_ratios"):
        quiet = (f" Speed-up per round {st['round_ratios']}, spread {100 * st['spread']:.0f}%"
                 + ("." if st["quiet"] else
                    ': <span class="fail">not a quiet measurement</span>, re-measure with nothing else running.'))
    return (f"<p>Measured side by side (interleaved rounds, batch 1, one thread): baseline p50 "
            f"{b['latency_ms_p50']:.3f} ms, final {f['latency_ms_p50']:.3f} ms "
            f"({b['latency_ms_p50'] / f['latency_ms_p50']:.2f}x); medians of the rounds "
            f"{b['round_medians_ms']} vs {f['round_medians_ms']} ms.{quiet}</p>")


_FAIL = ' class="fail"'


def gate_evidence(report: dict[str, Any], missed_png: str | None) -> str:
    """Per class (sorted by adjusted p): n, images lost and gained, physical signs lost, allowance, the losses
    the candidate's flips elsewhere predict, p (raw, Holm), verdict; the warnings;
    the pooled non-inferiority rows; the gate's noise level at this discordance; and thumbnails of the
    safety-critical images the model now gets wrong, with the baseline's confidence in them."""
    gate = report["gate"]
    out = []
    if gate.get("pooled"):
        out.append("<table><tr><th>scope</th><th>n</th><th>lost</th><th>gained</th><th>difference</th>"
                   "<th>lower bound</th><th>budget</th><th>verdict</th></tr>" + "".join(
                       f"<tr><td>{html.escape(r['scope'])}</td><td>{r['n']}</td><td>{r['lost']}</td>"
                       f"<td>{r['gained']}</td><td>{r['difference_points']:+.2f} pts</td>"
                       f"<td>{r['lower_bound_points']:+.2f} pts</td><td>-{r['budget_points']:g} pts</td>"
                       f"<td>{html.escape(r['verdict'])}</td></tr>" for r in gate["pooled"]) + "</table>")
    if gate.get("noise"):
        out.append(f"<p><b>Noise level:</b> {html.escape(noise_sentence(gate['noise']))}.</p>")
    if gate.get("evidence_units"):
        out.append(f"<p><b>Unit of evidence:</b> {html.escape(gate['evidence_units'])}.</p>")
    for w in gate.get("warnings") or []:
        out.append(f"<p><b>Warning</b> (not safety-critical, does not refuse): {html.escape(w)}</p>")
    if gate.get("classes"):  # sorted by adjusted p: the strongest evidence first
        out.append('<table id="gate-classes"><tr><th>class</th><th>n</th><th>lost</th><th>gained</th>'
                   "<th>signs lost / signs</th><th>allowance</th><th>expected lost</th><th>p</th><th>Holm p</th>"
                   "<th>verdict</th></tr>" + "".join(
                       f"<tr{_FAIL if r['verdict'] == 'refused' else ''}><td>{r['class']} "
                       f"{html.escape(r['name'])}{' (safety-critical)' if r.get('safety_critical') else ''}</td>"
                       f"<td>{r['n']}</td><td>{r['lost']}</td><td>{r['gained']}</td>"
                       f"<td>{r['signs_lost']} / {r['signs']}</td><td>{r['allowance']:.1f}</td>"
                       f"<td>{r['expected_lost']:.1f}</td><td>{r['p_value']:.3g}</td>"
                       f"<td>{r['p_holm']:.3g}</td><td>{html.escape(r['verdict'])}</td></tr>"
                       for r in gate["classes"] if r["lost"] or r["gained"] or r["verdict"] != "ok") + "</table>")
    missed = report.get("newly_missed_safety") or []
    if missed and missed_png:
        known = [m["baseline_probability"] for m in missed if "baseline_probability" in m]
        unsure = (f" {sum(q < 0.5 for q in known)} of them the baseline itself got right with a true-class "
                  "probability below 0.5 (near coin flips that other models also lose; a loss of an image the "
                  "baseline was sure of is the stronger evidence)." if known else "")
        out.append(f"<p>{len(missed)} safety-critical test image(s) the baseline got right and the final model "
                   f"gets wrong (true → predicted).{unsure}</p>"
                   f'<img alt="newly missed safety-critical images" src="data:image/png;base64,{missed_png}">')
    elif "newly_missed_safety" in report:
        out.append("<p>No safety-critical test image that the baseline got right is missed by the final model.</p>")
    return "\n".join(out)


def render(report: dict[str, Any], missed_png: str | None = None) -> str:
    base, final, gate = report["baseline"], report["final"], report["gate"]
    names, safety = class_info(report)
    points = [("input", base)] + [(s["name"], s["metrics"]) for s in report["steps"]]
    verdict = ('<p class="pass"><b>PASSED</b>: every budget is met.</p>' if gate["passed"] else
               '<p class="fail"><b>REJECTED</b>:</p><ul>' + "".join(
                   f"<li class='fail'>{html.escape(v)}</li>" for v in gate["violations"]) + "</ul>")
    mach = report.get("machine", {})
    img = '<img alt="{}" src="data:image/png;base64,{}">'
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>drivecompress report</title><style>{CSS}</style></head><body>
<h1>drivecompress report</h1>
<p>Input model: <code>{html.escape(str(report.get('model', '')))}</code> — final artifact:
<code>{html.escape(str(report.get('artifact', '')))}</code></p>
<h2>Summary: baseline vs final</h2>{summary_table(*side_by_side_metrics(report))}
<p><b>Speed on ONNX Runtime:</b> {html.escape(report.get("speed_verdict", "not measured"))}.</p>
{side_by_side_line(report)}
<h2>Safety gate</h2>{verdict}
{gate_evidence(report, missed_png)}
{targets_table(report.get("targets", []))}
{robustness_table(base, final)}
<h2>Every stage</h2>{steps_table(report)}
{step_details(report)}
<h2>Trade-offs</h2><div style="display:flex;flex-wrap:wrap;gap:1em">
{img.format("accuracy vs latency", tradeoff(points, "latency_ms_p50", "latency p50, batch 1, 1 thread (ms)"))}
{img.format("accuracy vs size", tradeoff(points, "size_bytes", "size on disk (KiB)"))}</div>
<h2>Per-class recall change</h2>
{img.format("recall deltas", recall_deltas(base["per_class_recall"], final["per_class_recall"], safety))}
{safety_table(base, final, names, safety)}
<h2>Machine</h2><pre>{html.escape(json.dumps(mach, indent=2))}</pre>
<h2>Recipe</h2><pre>{html.escape(yaml.safe_dump(report.get('recipe', {}), sort_keys=False))}</pre>
<script>{LOAD_CHECK}</script>
</body></html>"""


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    """Write report.html; the thumbnails of newly missed images come from ``missed_safety.png.b64`` beside it."""
    path = Path(path)
    b64 = path.parent / "missed_safety.png.b64"
    return atomic_write_text(path, render(report, b64.read_text() if b64.exists() else None))
