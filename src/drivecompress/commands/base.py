"""The subcommand registry: ``@command(name, help)`` on a function that adds the arguments, ``.bind`` on the
handler. Kept apart from ``cli.py`` so the commands and the entry point do not import each other."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], dict[str, Any]]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def command(name: str, help_text: str):
    """Register a subcommand: the decorated function adds its arguments; ``handler`` runs it."""

    def deco(add_args: Callable[[argparse.ArgumentParser], None]):
        def bind(handler: Handler) -> Handler:
            _COMMANDS[name] = (add_args, handler, help_text)
            return handler

        add_args.bind = bind  # type: ignore[attr-defined]
        return add_args

    return deco


