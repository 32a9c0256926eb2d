"""Error types that map to the CLI's exit codes (DESIGN.md: 2 = bad input, 3 = gate refused)."""

from __future__ import annotations

from typing import Any


class BadInputError(ValueError):
    """A user-supplied file, key or value is wrong. The CLI prints it on one line and exits 2."""


class GateRefusedError(RuntimeError):
    """A safety/budget gate refused the result. The CLI exits 3; artifacts are kept. ``report`` is the
    report.json content, so a caller (``--json``, the Python API) still gets the figures and the verdict."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report
