"""Subcommand definitions (arguments + handler), one file per command family; cli.py stays thin."""

from drivecompress.commands import compress, data, demo, evaluate, gate, robustness, train, unpack  # noqa: F401
