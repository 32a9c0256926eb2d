"""An exclusive lock on a run folder: ``OUT/.lock`` created atomically (O_CREAT | O_EXCL) holding the holder's
pid and host. A second writer is refused with the holder named; a lock whose process is gone (same host) is
stale and taken over, so a killed run never blocks its own ``--resume``."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from drivecompress.errors import BadInputError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``with RunLock(out): ...`` — held for the whole run; released (file removed) on exit, even on errors."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None and self._age() < 5:  # being written right now by its holder
                    holder = {"pid": "?", "host": "?", "since": "just now"}
                elif holder is None or (holder.get("host") == me["host"] and not _alive(int(holder["pid"]))):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise BadInputError(f"{self.path.parent}: in use by another drivecompress (pid {holder.get('pid')} on "
                                    f"{holder.get('host')} since {holder.get('since')}); wait for it to finish, or "
                                    f"remove {self.path} if that process is gone") from None
            except OSError as exc:
                raise BadInputError(f"{self.path.parent}: cannot write the run folder ({exc.strerror})") from exc
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise BadInputError(f"{self.path}: could not take the lock (it keeps reappearing)")

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return float("inf")

    def _holder(self) -> dict | None:
        try:
            doc = json.loads(self.path.read_text())
            return doc if isinstance(doc, dict) and isinstance(doc.get("pid"), int) else None
        except (OSError, ValueError):
            return None  # unreadable or half-written by a killed process: stale

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
