"""Command line: parse, call the library, print. Results go to stdout (``--json``: one object), progress
and logs to stderr. Exit codes (DESIGN.md): 0 ok, 2 bad input, 3 gate refused, 1 anything else."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from drivecompress.commands.base import _COMMANDS
from drivecompress.errors import BadInputError, GateRefusedError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="GTSRB npz (default: $DRIVECOMPRESS_DATA, ../shared/datasets/gtsrb32.npz, data/)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, or cuda[:N]")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for training and accuracy/throughput runs (default: all cores); give two "
                        "jobs sharing a machine half each. Batch-1 latency is always measured on 1 thread")


def build_parser() -> argparse.ArgumentParser:
    from drivecompress import commands  # noqa: F401  (registers the subcommands)

    parser = argparse.ArgumentParser(
        prog="drivecompress",
        description="Compress traffic-sign perception models and measure them on ONNX Runtime: accuracy, "
        "safety-critical recall, size, MACs, latency, throughput, calibration.",
        epilog="MODEL is a checkpoint folder (model.safetensors + model.json), an .onnx file, 'baseline' "
        "(the shipped baseline) or 'searched' (the shipped searched model: searched/MODEL_CARD.md). Exit codes: "
        "0 ok, 2 bad input, 3 gate refused, 1 other error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (add_args, handler, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        if not getattr(p, "_no_common", False):
            _common(p)
        p.set_defaults(_handler=handler)
    return parser


def _flatten(result: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts become dotted keys; long float lists a one-line summary (the JSON keeps everything)."""
    rows: list[tuple[str, str]] = []
    for k, v in result.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, key + ".")
        elif isinstance(v, float):
            rows.append((key, f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"))
        elif isinstance(v, int) and not isinstance(v, bool):
            rows.append((key, f"{v:,}"))
        elif isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            rows.append((key, "\n".join(v)))  # violations, targets: one per line
        elif isinstance(v, list) and len(v) > 8 and all(isinstance(x, float) for x in v):
            worst = min(range(len(v)), key=lambda i: v[i] if v[i] == v[i] else 2.0)
            rows.append((key, f"{len(v)} values, min {v[worst]:.4f} (class {worst})"))
        else:
            rows.append((key, str(v)))
    return rows


def _print_human(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")  # wrapped, never cut with '…' (paths)
    for k, v in _flatten(result):
        table.add_row(k, v)
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    nproc = getattr(args, "nproc_per_node", None)
    nproc = 1 if nproc is None else nproc  # 0 is an error below, not "one process"
    if nproc < 1:
        print("drivecompress: error: --nproc-per-node must be >= 1", file=sys.stderr)
        return 2
    from drivecompress.train import distributed as ddp

    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        return ddp.launch(argv, nproc)  # torchrun re-runs this command in nproc processes
    try:
        rc = _run(args)
    finally:
        if ddp.active():
            ddp.dist.destroy_process_group()
    return ddp.report_exit(rc)


def _run(args: argparse.Namespace) -> int:
    from drivecompress.train import distributed as ddp

    try:
        if getattr(args, "threads", None) is not None:
            from drivecompress.utils.device import limit_threads

            try:
                limit_threads(args.threads)
            except ValueError as exc:
                raise BadInputError(f"--{exc}") from None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from drivecompress.utils.device import select_device

            ddp.init_from_env(select_device(getattr(args, "device", None)))
        result = args._handler(args)
    except BadInputError as exc:
        if ddp.is_main():
            print(f"drivecompress: error: {exc}", file=sys.stderr)
        return 2
    except GateRefusedError as exc:
        refused = getattr(exc, "summary", None)
        if refused is not None:
            _emit(args, refused)  # the figures first, then the verdict as the last line
            sys.stdout.flush()
        if ddp.is_main():
            print(f"drivecompress: gate refused: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("drivecompress: interrupted", file=sys.stderr)
        return 130
    _emit(args, result)
    return 0


def _emit(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from drivecompress.train import distributed as ddp

    if not ddp.is_main():
        return
    if getattr(args, "json", False):
        print(json.dumps(jsonable(result), default=str, allow_nan=False))
    elif result:
        _print_human(result)


def jsonable(obj: Any) -> Any:
    """JSON has no NaN: a value that is not a finite number (e.g. the recall of a class with no test image)
    becomes null, so ``--json`` always prints valid JSON."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj
