"""Subcommand definitions (arguments + handler), one file per command family; cli.py stays thin."""

from drivecompress.commands import data, demo, evaluate, quantize, train  # noqa: F401
