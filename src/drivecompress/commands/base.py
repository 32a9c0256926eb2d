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


def config_from_flags(cls: Any, args: argparse.Namespace, fields: tuple[str, ...], **extra: Any) -> Any:
    """Build the pydantic config ``cls`` from the flags named like its ``fields`` (``proxy_epochs`` is
    ``--proxy-epochs``), so its bounds stay the only ones (API and CLI alike), while a refused value is reported
    under the flag the user typed: ``--proxy-epochs: must be greater than or equal to 1 (got 0)``. Flags left
    unset (``None``) keep the config's defaults; ``extra`` are values that come from no flag of that name (a
    refused one is named ``Config.field``). A rule across fields (no location) has its field names written as
    flags."""
    import re

    from pydantic import ValidationError

    from drivecompress.errors import BadInputError

    values = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    try:
        return cls(**values, **extra)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = str(e["loc"][0]) if e["loc"] else ""
        msg = e["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if not field:
            msg = re.sub(r"\b(" + "|".join(map(re.escape, values)) + r")\b",
                         lambda m: "--" + m.group(1).replace("_", "-"), msg) if values else msg
            raise BadInputError(msg) from exc
        # a value from ``extra`` has no flag of its name: report it under the config's field
        name = f"--{field.replace('_', '-')}" if field in values else f"{cls.__name__}.{field}"
        raise BadInputError(f"{name}: {msg} (got {e['input']!r})") from exc
