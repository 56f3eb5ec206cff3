"""What `rulec apply` keeps on disk: the lock, the journal and the saved previous state.

Layout of the state directory (/var/lib/rulec by default):
  lock          flock()ed for the whole of an apply or rollback (holds the holder's pid)
  journal.json  the apply in progress: its id, target, the step reached; absent when none is
  pending/      the host's rules as they were before the apply in progress
  previous/     the state before the last completed apply (what `rulec rollback` restores)
  confirm       written by `rulec confirm`: the id of the apply it confirms
  outcome       the last apply's id and whether its rules were kept or put back
Every file is written to a temporary name, synced and renamed, so a crash leaves the old
version or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = "/var/lib/rulec"


class StateError(Exception):
    """The state directory cannot be used (permissions, another apply holds the lock)."""


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateDir:
    def __init__(self, path: str | Path = DEFAULT_STATE_DIR) -> None:
        self.path = Path(path)
        self.journal_path = self.path / "journal.json"
        self.pending = self.path / "pending"
        self.previous = self.path / "previous"
        self.confirm_path = self.path / "confirm"
        self.outcome_path = self.path / "outcome"

    def create(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def locked(self, wait: float) -> Iterator[None]:
        """Hold the lock, waiting up to `wait` seconds for another apply to finish."""
        self.create()
        lock = self.path / "lock"
        handle = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "unknown"
                        raise StateError(
                            f"another rulec apply or rollback (pid {holder}) holds {lock}; "
                            f"waited {wait:g} s (--wait to wait longer)") from None
                    time.sleep(0.05)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # releases the flock

    # -- the journal ----------------------------------------------------------------------

    def journal(self) -> dict[str, Any] | None:
        try:
            text = self.journal_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise StateError(f"{self.journal_path} is not a rulec journal: {exc}") from exc
        if not isinstance(value, dict) or "id" not in value or "step" not in value:
            raise StateError(f"{self.journal_path} is not a rulec journal")
        return value

    def record(self, journal: dict[str, Any], step: str) -> None:
        """The step reached, durably, before the step's effects begin."""
        journal["step"] = step
        write_atomic(self.journal_path, json.dumps(journal, indent=1, sort_keys=True) + "\n")

    def finish(self, *, keep: bool) -> None:
        """The apply is over: its saved state becomes `previous` (`keep`, after a completed
        apply) or is dropped (after a rollback), and the journal goes."""
        journal = self.journal()
        if journal is not None:
            write_atomic(self.outcome_path,
                         f"{journal['id']} {'kept' if keep else 'put back'}\n")
        if keep and self.pending.exists():
            if self.previous.exists():
                shutil.rmtree(self.previous)
            os.replace(self.pending, self.previous)
        elif self.pending.exists():
            shutil.rmtree(self.pending)
        with contextlib.suppress(FileNotFoundError):
            self.confirm_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.journal_path.unlink()
        _sync_dir(self.path)

    # -- saved states -----------------------------------------------------------------------

    def save(self, files: dict[str, str], meta: dict[str, Any]) -> None:
        """The host's rules before anything is loaded, in `pending/`."""
        if self.pending.exists():
            shutil.rmtree(self.pending)
        tmp = self.path / ".pending.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(mode=0o700)
        for name, text in files.items():
            write_atomic(tmp / name, text)
        write_atomic(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.pending)
        _sync_dir(self.path)

    @staticmethod
    def load(where: Path) -> tuple[dict[str, str], dict[str, Any]]:
        meta = json.loads((where / "meta.json").read_text(encoding="utf-8"))
        files = {p.name: p.read_text(encoding="utf-8") for p in where.iterdir()
                 if p.name != "meta.json" and not p.name.startswith(".")}
        return files, meta

    # -- confirmation -----------------------------------------------------------------------

    def confirm(self, settle: float | None = 10.0) -> str:
        """`rulec confirm`: confirm the apply waiting for it, and wait (up to `settle` s;
        None: not at all, for a caller holding the lock) for its waiter to keep the rules; its
        id. StateError if none waits, or if its deadline came first and the rules went back."""
        journal = self.journal()
        if journal is None or journal.get("step") != "awaiting-confirmation":
            raise StateError(f"no rulec apply is waiting for confirmation (state {self.path})")
        apply_id = str(journal["id"])
        write_atomic(self.confirm_path, f"{apply_id}\n")
        if settle is None:
            return apply_id
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            current = self.journal()
            if current is None or current["id"] != apply_id:
                break
            time.sleep(0.05)
        else:
            raise StateError(f"apply {apply_id} was confirmed but its waiter has not kept the "
                             f"rules within {settle:g} s: is it still running?")
        try:
            outcome = self.outcome_path.read_text(encoding="utf-8").split()
        except FileNotFoundError:
            outcome = []
        if outcome[:1] != [apply_id] or outcome[1:] != ["kept"]:
            raise StateError(f"apply {apply_id}: its deadline came before the confirmation; "
                             "the saved state was put back")
        return apply_id

    def confirmed(self, apply_id: str) -> bool:
        try:
            return self.confirm_path.read_text(encoding="utf-8").strip() == apply_id
        except FileNotFoundError:
            return False
