"""Rich progress bar for training (on stderr, so ``--json`` stdout stays clean)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """Epoch/step bar showing running loss, accuracy, last validation accuracy and ETA."""

    def __init__(self, description: str, epochs: int, steps_per_epoch: int, enabled: bool = True) -> None:
        self.epochs, self.steps, self.enabled = epochs, steps_per_epoch, enabled
        self.epoch, self.val = 0, float("nan")
        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not enabled,
            refresh_per_second=2,
        )
        self.task = self.progress.add_task(description, total=epochs * steps_per_epoch, info="")
        self.description = description

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def advance(self, loss: float, acc: float) -> None:
        val = "-" if self.val != self.val else f"{self.val:.4f}"
        info = f"epoch {self.epoch + 1}/{self.epochs} loss {loss:.3f} acc {acc:.3f} val {val}"
        self.progress.update(self.task, advance=1, info=info)

    def end_epoch(self, val_acc: float) -> None:
        self.val = val_acc
        self.epoch += 1
        if self.enabled and not self.progress.console.is_terminal:
            # Non-interactive (logs, CI): one line per epoch instead of a redrawn bar.
            self.progress.console.print(f"{self.description}: epoch {self.epoch}/{self.epochs} val_acc {val_acc:.4f}")
