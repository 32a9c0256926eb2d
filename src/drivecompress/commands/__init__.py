"""Subcommand definitions (arguments + handler), one file per command family; cli.py stays thin."""

from drivecompress.commands import (  # noqa: F401
    compress,
    data,
    demo,
    evaluate,
    gate,
    robustness,
    search,
    train,
    unpack,
)
