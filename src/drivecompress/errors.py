"""Error types that map to the CLI's exit codes (DESIGN.md: 2 = bad input, 3 = gate refused)."""


class BadInputError(ValueError):
    """A user-supplied file, key or value is wrong. The CLI prints it on one line and exits 2."""


class GateRefusedError(RuntimeError):
    """A safety/budget gate refused the result. The CLI exits 3; artifacts are kept."""
