"""Latency (batch 1, one thread, warm-up, p50/p99 over many runs) and throughput (batch 64, all threads).

ONNX models get their own ORT sessions with the thread count fixed, so numbers are comparable across
models measured in the same run; PyTorch modules run with ``torch.set_num_threads`` set the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from drivecompress.evaluate.predictor import OnnxPredictor, TorchPredictor
from drivecompress.utils.device import available_threads


@dataclass(frozen=True)
class SpeedConfig:
    """How hard to measure: defaults give stable p50 within a few % on this 2-core machine."""

    warmup: int = 50
    runs: int = 500
    throughput_batch: int = 64
    throughput_seconds: float = 3.0
    threads_latency: int = 1
    threads_throughput: int | None = None  # None: all cores


@contextmanager
def _torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _time_calls(fn: Callable[[], object], warmup: int, runs: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return times * 1000.0


def _throughput(fn: Callable[[], object], batch: int, seconds: float) -> float:
    for _ in range(3):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def measure_speed(model: nn.Module | str | Path, cfg: SpeedConfig | None = None,
                  input_shape: tuple[int, ...] | None = None) -> dict[str, float]:
    """``latency_ms_p50``, ``latency_ms_p99`` (batch 1, 1 thread) and ``throughput_ips`` (batch 64).

    ``input_shape`` (C, H, W) is read from an ONNX file when it fixes it; a module needs it given."""
    cfg = cfg or SpeedConfig()
    all_threads = cfg.threads_throughput or available_threads()
    rng = np.random.default_rng(0)
    if input_shape is None and not isinstance(model, nn.Module):
        input_shape = OnnxPredictor(model).input_shape
    if input_shape is None:
        raise ValueError("measure_speed: input_shape (C, H, W) is needed for this model")
    x1 = rng.random((1, *input_shape), dtype=np.float32)
    xb = rng.random((cfg.throughput_batch, *input_shape), dtype=np.float32)
    if isinstance(model, nn.Module):
        pred = TorchPredictor(model, "cpu")
        with _torch_threads(cfg.threads_latency):
            lat = _time_calls(lambda: pred(x1), cfg.warmup, cfg.runs)
        with _torch_threads(all_threads):
            ips = _throughput(lambda: pred(xb), cfg.throughput_batch, cfg.throughput_seconds)
    else:
        one = OnnxPredictor(model, threads=cfg.threads_latency)
        lat = _time_calls(lambda: one(x1), cfg.warmup, cfg.runs)
        many = OnnxPredictor(model, threads=all_threads)
        ips = _throughput(lambda: many(xb), cfg.throughput_batch, cfg.throughput_seconds)
    return {
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "throughput_ips": float(ips),
    }


def side_by_side(paths: dict[str, Path], input_shape: tuple[int, ...], runs: int = 500, rounds: int = 5,
                 warmup: int = 50, throughput_seconds: float = 0.0,
                 throughput_batch: int = 64) -> dict[str, dict[str, float]]:
    """Batch-1, one-thread latency of several ONNX models measured in interleaved rounds (A, B, A, B, ...):
    on a shared or frequency-scaling CPU a burst of noise then hits every model alike, so the ratio holds even
    when the absolute numbers drift. Per model: p50 and p99 over all rounds, and the median of the rounds.
    With ``throughput_seconds`` > 0 each round also runs every model at ``throughput_batch`` on all cores for
    its share of that time, and ``throughput_ips`` is added (a run's baseline throughput taken at its start,
    while other work ran, once gave a 69x "throughput ratio" for a 9.6x latency ratio)."""
    preds = {k: OnnxPredictor(p, threads=1) for k, p in paths.items()}
    x = np.random.default_rng(0).random((1, *input_shape), dtype=np.float32)
    times: dict[str, list[np.ndarray]] = {k: [] for k in paths}
    for p in preds.values():
        _time_calls(lambda p=p: p(x), warmup, 0)
    many = {}
    if throughput_seconds > 0:
        xb = np.random.default_rng(0).random((throughput_batch, *input_shape), dtype=np.float32)
        many = {k: OnnxPredictor(p, threads=available_threads()) for k, p in paths.items()}
    images = dict.fromkeys(paths, 0.0)
    seconds = dict.fromkeys(paths, 0.0)
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for k, p in preds.items():
            times[k].append(_time_calls(lambda p=p: p(x), 0, per_round))
        for k, m in many.items():
            share = throughput_seconds / rounds
            ips = _throughput(lambda m=m: m(xb), throughput_batch, share)
            images[k] += ips * share
            seconds[k] += share
    out = {}
    for k, ts in times.items():
        allt = np.concatenate(ts)
        out[k] = {"latency_ms_p50": float(np.percentile(allt, 50)), "latency_ms_p99": float(np.percentile(allt, 99)),
                  "round_medians_ms": [round(float(np.median(t)), 4) for t in ts]}
        if k in many:
            out[k]["throughput_ips"] = images[k] / seconds[k]
    return out


#: Per-round latency ratios spreading more than this (max - min over the median) mean the machine was busy.
QUIET_SPREAD = 0.30


def ratio_stability(sbs: dict[str, dict[str, Any]], base: str = "baseline", new: str = "final",
                    limit: float = QUIET_SPREAD) -> dict[str, Any]:
    """How far to trust a side-by-side speed-up: the ratio of ``base`` to ``new`` in every interleaved round and
    its spread. Two files of one graph measured 5.9x and 6.3x on a drifting VM while their rounds swung from
    0.36 to 0.59 ms; a spread above ``limit`` says "re-measure with nothing else running" instead of letting
    one noisy figure stand."""
    b, n = sbs[base]["round_medians_ms"], sbs[new]["round_medians_ms"]
    per_round = [x / y for x, y in zip(b, n, strict=True) if y > 0]
    if not per_round:
        return {"round_ratios": [], "spread": None, "quiet": False}
    mid = float(np.median(per_round))
    spread = (max(per_round) - min(per_round)) / mid
    return {"round_ratios": [round(r, 3) for r in per_round], "spread": round(spread, 3), "quiet": spread <= limit}
